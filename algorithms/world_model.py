"""The latent world model that V-MAIL and CMIL share: a recurrent state-space model (RSSM).

Latent state: a deterministic GRU state ``deter`` (h) and a Gaussian stochastic state ``stoch``
(z); the features the actor, critics and discriminator see are ``concat(z, h)``.

  prior (imagination)   h_t = GRU(h_{t-1}, f(z_{t-1}, a_{t-1}))     z_t ~ p_k(z | h_t)
  posterior (filtering) z_t ~ q(z | h_t, embed(o_t))

``p_k`` is one of K prior heads (an ensemble on the shared recurrent output, CMIL's uncertainty
estimate; K = 1 for V-MAIL). Every step of a training sequence or an imagined rollout draws one
head at random for the whole batch, and the KL term trains the head that was drawn (as the CMIL
reference does). ``disagreement(h)`` is the standard deviation across the K heads' prior means,
averaged over latent dimensions: CMIL's penalty ``u``. The K heads are stored as stacked weights
and evaluated with one matmul plus one ``bmm`` (no Python loop over heads).

The recurrent cell is DreamerV2's layer-normed GRU (CMIL) or a plain GRU (``gru="plain"``,
Dreamer v1's, V-MAIL); the CNN has its own activation (``cnn_activation``: Dreamer v1 uses ReLU
there and ELU elsewhere).

Loss: reconstruction (Gaussian with unit variance: half the squared error, summed over the
observation) + KL(posterior || prior) with KL balancing and free nats. There is no reward head.
States go through MLP encoder/decoder (standardised with the demos' mean and std by
``algorithms.obs_norm.Standardizer``); 64x64 pixels
through the shared ``ConvEncoder`` and a transposed-convolution decoder.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms.nets import ConvEncoder, EnsembleLinear, activation, mlp, preprocess_image, random_shift
from algorithms.obs_norm import Standardizer
from algorithms.optim import clip_and_step, make_optimizer


# ---------------------------------------------------------------------------------------- parts
def std_from_raw(raw: torch.Tensor, kind: str, min_std: float) -> torch.Tensor:
    if kind == "softplus":
        return F.softplus(raw) + min_std
    if kind == "sigmoid2":
        return 2.0 * torch.sigmoid(raw / 2.0) + min_std
    raise ValueError(f"unknown std activation {kind!r} (softplus, sigmoid2)")


def gaussian_kl(mean_q, std_q, mean_p, std_p) -> torch.Tensor:
    """KL(N(mean_q, std_q) || N(mean_p, std_p)) summed over the last axis."""
    var_ratio = (std_q / std_p) ** 2
    t = ((mean_q - mean_p) / std_p) ** 2
    return 0.5 * (var_ratio + t - 1.0 - torch.log(var_ratio)).sum(-1)


class NormGRUCell(nn.Module):
    """GRU cell with layer norm on the gates and the update gate biased towards keeping the state
    (DreamerV2's cell): update = sigmoid(u - 1), h' = update * tanh(r * c) + (1 - update) * h.
    As in the reference, the gates' dense layer has a bias even before the norm, and the norm
    has Keras's epsilon (1e-3)."""

    def __init__(self, inp: int, size: int, norm: bool = True, update_bias: float = -1.0):
        super().__init__()
        self.layer = nn.Linear(inp + size, 3 * size)
        self.norm = nn.LayerNorm(3 * size, eps=1e-3) if norm else nn.Identity()
        self.update_bias = update_bias

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        parts = self.norm(self.layer(torch.cat([x, h], -1)))
        reset, cand, update = parts.chunk(3, -1)
        cand = torch.tanh(torch.sigmoid(reset) * cand)
        update = torch.sigmoid(update + self.update_bias)
        return update * cand + (1.0 - update) * h


GRU_KINDS = ("norm", "plain")


def gru_cell(kind: str, inp: int, size: int) -> nn.Module:
    """The recurrent cell of the RSSM: ``"norm"``, DreamerV2's layer-normed cell (CMIL's), or
    ``"plain"``, a standard GRU (Dreamer v1's Keras ``GRUCell``, which V-MAIL uses: reset gate
    applied after the recurrent matmul, as ``nn.GRUCell`` does), initialised as Keras does it:
    glorot-uniform input weights, orthogonal recurrent weights, zero biases."""
    if kind == "norm":
        return NormGRUCell(inp, size)
    if kind == "plain":
        cell = nn.GRUCell(inp, size)
        nn.init.xavier_uniform_(cell.weight_ih)
        nn.init.orthogonal_(cell.weight_hh)
        nn.init.zeros_(cell.bias_ih)
        nn.init.zeros_(cell.bias_hh)
        return cell
    raise ValueError(f"unknown GRU kind {kind!r}; known: {', '.join(GRU_KINDS)}")


class EnsemblePrior(nn.Module):
    """K prior heads h -> hidden -> (mean, std) of z: two stacked-weight layers
    (``nets.EnsembleLinear``), evaluated for one head, one head per step, or every head."""

    def __init__(self, k: int, deter: int, hidden: int, stoch: int, act: str, std_act: str,
                 min_std: float):
        super().__init__()
        self.k, self.stoch, self.std_act, self.min_std = k, stoch, std_act, min_std
        self.act = activation(act)()
        self.inp = EnsembleLinear(k, deter, hidden)
        self.out = EnsembleLinear(k, hidden, 2 * stoch)

    def _stats(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = out.float().chunk(2, -1)  # float32 statistics under bf16 autocast
        return mean, std_from_raw(raw, self.std_act, self.min_std)

    def head(self, h: torch.Tensor, k: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior of head ``k`` (an int, or a 0-d tensor on the device) for a batch h (N, deter)."""
        if isinstance(k, torch.Tensor):  # index_select: indexing with a 0-d tensor would read it on the host
            k = k.reshape(1)
            pick = lambda p: p.index_select(0, k)[0]  # noqa: E731
        else:
            pick = lambda p: p[k]  # noqa: E731
        x = self.act(torch.addmm(pick(self.inp.bias)[0], h, pick(self.inp.weight)))
        return self._stats(torch.addmm(pick(self.out.bias)[0], x, pick(self.out.weight)))

    def per_step(self, h: torch.Tensor, ks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (L, N, deter) with head ks[t] at step t -> mean, std (L, N, stoch)."""
        x = self.act(torch.baddbmm(self.inp.bias[ks], h, self.inp.weight[ks]))
        return self._stats(torch.baddbmm(self.out.bias[ks], x, self.out.weight[ks]))

    def all_means(self, h: torch.Tensor) -> torch.Tensor:
        """Prior means of every head: h (N, deter) -> (K, N, stoch)."""
        n, d = h.shape
        w1 = self.inp.weight
        x = h @ w1.permute(1, 0, 2).reshape(d, -1)  # one matmul for all heads' first layer
        x = self.act(x.view(n, self.k, -1).transpose(0, 1) + self.inp.bias)
        return torch.baddbmm(self.out.bias[:, :, : self.stoch], x, self.out.weight[:, :, : self.stoch])


class RSSM(nn.Module):
    def __init__(self, act_dim: int, embed_dim: int, deter: int = 400, stoch: int = 360,
                 hidden: int = 400, ensemble: int = 10, act: str = "elu", std_act: str = "sigmoid2",
                 min_std: float = 0.1, gru: str = "norm"):
        super().__init__()
        if ensemble < 1:
            raise ValueError(f"ensemble size must be >= 1, got {ensemble}")
        self.deter, self.stoch, self.ensemble = deter, stoch, ensemble
        self.std_act, self.min_std = std_act, min_std
        self.act = activation(act)()
        # img_in(z, a) = W_z z + W_a a + b, split so the action part is computed for a whole sequence
        self.img_z = nn.Linear(stoch, hidden)
        self.img_a = nn.Linear(act_dim, hidden, bias=False)
        self.img_z.glorot_fans = self.img_a.glorot_fans = (stoch + act_dim, hidden)  # nets.keras_init_
        self.cell = gru_cell(gru, hidden, deter)
        self.prior = EnsemblePrior(ensemble, deter, hidden, stoch, act, std_act, min_std)
        # posterior hidden = act(W_h h + W_e e + b), the embedding part computed for a whole sequence
        self.obs_h = nn.Linear(deter, hidden, bias=False)
        self.obs_e = nn.Linear(embed_dim, hidden)
        self.obs_h.glorot_fans = self.obs_e.glorot_fans = (deter + embed_dim, hidden)
        self.obs_out = nn.Linear(hidden, 2 * stoch)

    @property
    def feat_dim(self) -> int:
        return self.deter + self.stoch

    def initial(self, n: int, device=None) -> dict[str, torch.Tensor]:
        z = torch.zeros(n, self.stoch, device=device)
        return {"deter": torch.zeros(n, self.deter, device=device), "stoch": z, "mean": z,
                "std": torch.ones(n, self.stoch, device=device)}

    @staticmethod
    def feat(state: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([state["stoch"], state["deter"]], -1)

    def _posterior(self, deter, e_part, noise=None):
        x = self.act(self.obs_h(deter) + e_part)
        mean, raw = self.obs_out(x).float().chunk(2, -1)
        std = std_from_raw(raw, self.std_act, self.min_std)
        stoch = mean if noise is None else mean + std * noise
        return stoch, mean, std

    def observe(self, embed: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor,
                state: dict | None = None, sample: bool = True):
        """Filter a batch of sequences: embed (B, L, E), action (B, L, A) (row t holds a_{t-1}),
        is_first (B, L). Returns (post, prior): post has deter, stoch, mean, std (B, L, .);
        prior has mean, std (B, L, stoch) from one randomly drawn head per step (and ``heads``)."""
        b, n_steps = action.shape[:2]
        if state is None:
            state = self.initial(b, action.device)
        keep = (1.0 - is_first.float()).unsqueeze(-1)  # (B, L, 1)
        a_part = self.img_a(action) * keep
        e_part = self.obs_e(embed)
        noise = torch.randn(b, n_steps, self.stoch, device=action.device) if sample else None
        deter, stoch = state["deter"], state["stoch"]
        deters, stochs, means, stds = [], [], [], []
        for t in range(n_steps):
            m = keep[:, t]
            deter, stoch = deter * m, stoch * m
            x = self.act(self.img_z(stoch) + a_part[:, t])
            deter = self.cell(x, deter)
            stoch, mean, std = self._posterior(deter, e_part[:, t], None if noise is None else noise[:, t])
            deters.append(deter), stochs.append(stoch), means.append(mean), stds.append(std)
        deter_seq = torch.stack(deters, 0)  # (L, B, D)
        heads = torch.randint(self.ensemble, (n_steps,), device=action.device)
        p_mean, p_std = self.prior.per_step(deter_seq, heads)
        post = {"deter": deter_seq.transpose(0, 1), "stoch": torch.stack(stochs, 1),
                "mean": torch.stack(means, 1), "std": torch.stack(stds, 1)}
        prior = {"mean": p_mean.transpose(0, 1), "std": p_std.transpose(0, 1), "heads": heads}
        return post, prior

    def img_step(self, state: dict, action: torch.Tensor, head: int, sample: bool = True) -> dict:
        x = self.act(self.img_z(state["stoch"]) + self.img_a(action))
        deter = self.cell(x, state["deter"])
        mean, std = self.prior.head(deter, head)
        stoch = mean + std * torch.randn_like(mean) if sample else mean
        return {"deter": deter, "stoch": stoch, "mean": mean, "std": std}

    def obs_step(self, state: dict, prev_action: torch.Tensor, embed: torch.Tensor,
                 is_first: torch.Tensor | None = None, sample: bool = True,
                 generator: torch.Generator | None = None) -> dict:
        """One filtering step for acting: (state, a_{t-1}, embed(o_t)) -> posterior state, its z
        sampled (noise from ``generator``, else torch's global one) or the posterior mean."""
        if is_first is not None:
            m = (1.0 - is_first.float()).unsqueeze(-1)
            state = {k: v * m for k, v in state.items()}
            prev_action = prev_action * m
        x = self.act(self.img_z(state["stoch"]) + self.img_a(prev_action))
        deter = self.cell(x, state["deter"])
        noise = (torch.randn(deter.shape[0], self.stoch, device=deter.device, generator=generator)
                 if sample else None)
        stoch, mean, std = self._posterior(deter, self.obs_e(embed), noise)
        return {"deter": deter, "stoch": stoch, "mean": mean, "std": std}

    def disagreement(self, deter: torch.Tensor) -> torch.Tensor:
        """Std across the K prior means, averaged over latent dims: (..., deter) -> (...).
        Zero when K == 1 or when all heads agree."""
        lead = deter.shape[:-1]
        if self.ensemble == 1:
            return deter.new_zeros(lead)
        means = self.prior.all_means(deter.reshape(-1, deter.shape[-1])).float()  # (K, N, stoch)
        var = ((means - means.mean(0)) ** 2).mean(0)  # population variance across heads
        # exactly 0 where all heads agree, with a finite gradient there (sqrt's slope is infinite at 0)
        std = torch.sqrt(var.clamp_min(1e-12)) * (var > 0)
        return std.mean(-1).reshape(lead)


class ConvDecoder(nn.Module):
    """features -> (B, 3, 64, 64) image means: a dense layer to 32*depth channels at 1x1, then
    transposed convolutions with stride 2 (kernels 5, 5, 6, 6 give 5, 13, 30, 64 pixels)."""

    def __init__(self, feat_dim: int, depth: int = 48, kernels: Sequence[int] = (5, 5, 6, 6),
                 act: str = "elu"):
        super().__init__()
        self.depth = depth
        self.inp = nn.Linear(feat_dim, 32 * depth)
        layers: list[nn.Module] = []
        ch = 32 * depth
        for i, k in enumerate(kernels):
            last = i == len(kernels) - 1
            out = 3 if last else depth * 2 ** (len(kernels) - i - 2)
            layers.append(nn.ConvTranspose2d(ch, out, k, stride=2))
            if not last:
                layers.append(activation(act)())
            ch = out
        self.net = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        lead = feat.shape[:-1]
        x = self.inp(feat).reshape(-1, 32 * self.depth, 1, 1)
        x = self.net(x)
        return x.reshape(*lead, *x.shape[1:])


class WorldModel(nn.Module):
    """Encoder + RSSM + decoder with their optimiser. ``cfg`` needs the world-model fields of
    ``algorithms.latent_agent.LatentConfig`` (deter, stoch, hidden, ensemble_size, ...)."""

    def __init__(self, obs_shape: Sequence[int], act_dim: int, cfg, obs_mean=None, obs_std=None):
        super().__init__()
        self.cfg = cfg
        self.pixels = len(obs_shape) == 3
        if self.pixels:
            self.encoder = ConvEncoder(depth=cfg.cnn_depth, kernels=tuple(cfg.encoder_kernels),
                                       act=cfg.cnn_activation, image_size=obs_shape[0])
            embed_dim = self.encoder.out_dim
        else:
            d = int(obs_shape[0])
            self.encoder = mlp(d, tuple(cfg.mlp_layers[:-1]), cfg.mlp_layers[-1],
                               act=cfg.activation, out_act=activation(cfg.activation)())
            embed_dim = cfg.mlp_layers[-1]
        self.rssm = RSSM(act_dim, embed_dim, cfg.deter, cfg.stoch, cfg.hidden, cfg.ensemble_size,
                         cfg.activation, cfg.std_act, cfg.min_std, cfg.gru)
        if self.pixels:
            self.decoder = ConvDecoder(self.rssm.feat_dim, cfg.cnn_depth, tuple(cfg.decoder_kernels),
                                       cfg.cnn_activation)
        else:
            self.decoder = mlp(self.rssm.feat_dim, tuple(cfg.mlp_layers), int(obs_shape[0]),
                               act=cfg.activation)
        # states: the shared standardiser (algorithms/obs_norm.py) with the demos' statistics
        self.obs_norm = None if self.pixels else Standardizer(int(obs_shape[0]), obs_mean, obs_std)
        self.opt = make_optimizer(self.parameters(), cfg.model_lr, cfg.adam_eps, cfg.weight_decay)

    @property
    def feat_dim(self) -> int:
        return self.rssm.feat_dim

    # -- observations ---------------------------------------------------------------------------
    def target(self, obs: torch.Tensor) -> torch.Tensor:
        """What the decoder reconstructs: images in [-0.5, 0.5] (C, H, W), or states standardised
        with the demos' statistics (the shared standardiser: std floor, clip at +-10) and then
        squashed with symlog (sign(x) log(1 + |x|)), so that a dimension the demos barely vary (a
        block's rotation, say) cannot blow up the loss online."""
        if self.pixels:
            return preprocess_image(obs)
        x = self.obs_norm(obs)
        return torch.sign(x) * torch.log1p(x.abs()) if self.cfg.symlog_obs else x

    def embed(self, obs: torch.Tensor) -> torch.Tensor:
        if self.pixels:
            return self.encoder(obs)
        return self.encoder(self.target(obs))

    # -- training -------------------------------------------------------------------------------
    def kl_loss(self, post: dict, prior: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """KL balancing: ``balance`` of the gradient trains the prior towards the posterior, the
        rest regularises the posterior; free nats apply to the batch mean (``free_avg``)."""
        cfg = self.cfg
        value = gaussian_kl(post["mean"], post["std"], prior["mean"], prior["std"])
        if cfg.kl_balance == 0.5:
            return torch.clamp(value.mean(), min=cfg.free_nats), value
        lhs = gaussian_kl(post["mean"].detach(), post["std"].detach(), prior["mean"], prior["std"])
        rhs = gaussian_kl(post["mean"], post["std"], prior["mean"].detach(), prior["std"].detach())
        loss = (cfg.kl_balance * torch.clamp(lhs.mean(), min=cfg.free_nats)
                + (1 - cfg.kl_balance) * torch.clamp(rhs.mean(), min=cfg.free_nats))
        return loss, value

    def loss(self, obs: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor):
        if self.pixels and self.cfg.augment:
            b, n = obs.shape[:2]
            obs = random_shift(obs.reshape(b * n, *obs.shape[2:]), self.cfg.shift_pad).reshape(obs.shape)
        post, prior = self.rssm.observe(self.embed(obs), action, is_first)
        kl_loss, kl_value = self.kl_loss(post, prior)
        recon = self.decoder(self.rssm.feat(post)).float()
        err = (recon - self.target(obs)) ** 2
        recon_loss = 0.5 * err.flatten(2).sum(-1).mean()
        loss = recon_loss + self.cfg.kl_scale * kl_loss
        metrics = {"wm_loss": loss.detach(), "recon_loss": recon_loss.detach(),
                   "kl": kl_value.mean().detach()}
        return loss, post, metrics

    def update(self, obs, action, is_first):
        """One gradient step on a batch of sequences; returns the (detached) posterior and metrics."""
        loss, post, metrics = self.loss(obs, action, is_first)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_and_step(self.opt, self.opt.params, self.cfg.grad_clip)
        return {k: v.detach() for k, v in post.items()}, metrics

    @torch.no_grad()
    def filter(self, obs, action, is_first) -> dict[str, torch.Tensor]:
        """The (sampled) posterior of a batch of sequences, without a gradient and without a
        model update: how the latent agents read the expert batch."""
        post, _ = self.rssm.observe(self.embed(obs), action, is_first)
        return post

    def disagreement(self, deter: torch.Tensor) -> torch.Tensor:
        return self.rssm.disagreement(deter)

