"""The latent imitation agent that CMIL and V-MAIL share: an RSSM world model
(algorithms/world_model.py), an actor-critic that learns in the model's imagination, and a
discriminator on (latent features, action), with the config, the replays and the online loop.

One update (``LatentAgent.train_step``), given a batch of replay sequences and one of expert
sequences:

1. World model: one gradient step on the replay batch alone (``WorldModel.update``), whose
   posterior is reused, detached, below. The expert batch is then filtered by the updated model
   without a gradient (``WorldModel.filter``): its posterior gives the discriminator's positives
   and the BC targets. (The demos are in the replay too, so the model does learn them.)
2. Imagination: from every replay posterior state (or ``imag_starts`` of them), roll the actor's
   reparameterised actions through the prior for ``horizon`` steps (each step draws one prior
   head at random).
3. Reward of an imagined pair x_i = (s_i, a_i): ``imagined_reward(D(x_i + n_i), u(h_{i+1}))``,
   D the discriminator's probability on the same noisy inputs it trains on in this update
   (n_i: one draw of Gaussian noise of std ``disc_noise``, as the reference does) and u the
   ensemble disagreement of the prior that predicts s_{i+1}. Here the reward is ``D``; a method
   changes it by overriding ``imagined_reward`` and ``penalty_weight`` (CMIL: ``D - w * u``,
   algorithms/cmil.py). Real replay pairs get ``D`` on clean inputs.
4. Actor: maximise ``value_mix * Q + (1 - value_mix) * lambda-return`` along the rollout, by
   backpropagating through the (frozen) dynamics, critics and discriminator, plus an entropy
   bonus, plus ``bc_weight`` x the negative log-likelihood of the expert's actions on the expert
   posterior features (``bc_weight`` is 0 here; CMIL sets it).
5. Twin Q critics regress the lambda-return computed with a randomly picked target critic (hard
   copies every ``target_update_every`` updates); with ``critic_real_data`` they also regress
   ``D(s_t, a_t) + discount * V(s_{t+1})`` on real replay transitions, V mixing Q and return as
   above.
6. Discriminator: BCE with expert posterior features + expert actions as positives and every
   imagined pair (features + policy action) as negatives, each term the mean over its set; the
   inputs carry the noise of step 3 (positives get their own draw); optional gradient penalty
   (``gp_weight``) on clean inputs.

Every layer starts as Keras starts it (``weight_init="glorot"``: glorot-uniform weights, zero
biases, as both references, written in Keras, do), and every optimiser multiplies the weights by
``1 - weight_decay`` at each step (algorithms/optim.py). Evaluation acts as training does
(``eval_mode="sample"``: a sampled posterior and a sampled action, the CMIL reference's
``mode="train"``; its noise comes from a generator of its own with a fixed seed, so a checkpoint
scores the same again); ``eval_mode="mean"`` takes the posterior mean and the actor's mean.

``LatentTrainer`` holds an agent, the replays (demos + online episodes, and the demos alone) and
the counters of one run; it runs updates, evaluations with checkpoints, and the online phase
(interact, store whole episodes, update every ``train_every`` env steps). The methods put these
together in their ``train``: algorithms/cmil.py adds offline pre-training and a BC start,
algorithms/vmail.py goes online at once.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch
import torch.nn as nn

from algorithms.clock import EvalClock, IntervalMeans, reset_seed
from algorithms.discriminator import Discriminator, bce_loss, gradient_penalty, reward_from_logits
from algorithms.nets import ACTIVATIONS, EnsembleLinear, EnsembleMLP, keras_init_, mlp
from algorithms.obs_norm import demo_statistics
from algorithms.optim import clip_and_step, make_optimizer
from algorithms.sequence_replay import SequenceReplay
from algorithms.world_model import GRU_KINDS, WorldModel
from cmil_bench.config import BaseConfig
from cmil_bench.errors import UserError

SEED_POLICIES = ("actor", "random")
EVAL_MODES = ("sample", "mean")
WEIGHT_INITS = ("glorot", "torch")
EVAL_NOISE_SEED = 7_919  # seed of the evaluation policy's own generator (eval_mode="sample")
STD_ACTS = ("sigmoid2", "softplus")
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# ----------------------------------------------------------------------------------- config
@dataclass
class LatentConfig(BaseConfig):
    """What the shared latent agent reads. Defaults are the CMIL reference's (victorkolev/cmil
    configs.yaml, DreamerV2 sizes); algorithms/vmail.py sets V-MAIL's where they differ."""

    eval_modes: ClassVar[tuple[str, ...]] = EVAL_MODES  # the values this agent's eval_mode takes

    # --- schedule (env steps; one env step = one action, action repeat 1)
    total_steps: int = 200_000  # env steps of the run
    eval_every: int = 5_000
    seed_steps: int = 5_000  # env steps before online updates start
    seed_policy: str = "actor"  # "actor": the (possibly BC-initialised) policy; "random": uniform
    train_every: int = 5
    updates_per_train: int = 2
    expl_noise: float = 0.0  # Gaussian noise added to sampled training actions
    eval_mode: str = "sample"  # "sample": act as in training (reference); "mean": posterior + actor means
    # --- replay
    replay_size: int = 2_000_000  # env steps kept (demos are never evicted)
    batch_size: int = 32  # replay sequences per update
    expert_batch_size: int = 32  # expert sequences per update
    seq_len: int = 50
    imag_starts: int = 0  # imagine from this many random posterior states of the batch (0 = all)
    # --- world model (RSSM with an ensemble of prior heads)
    deter: int = 400
    stoch: int = 360
    hidden: int = 400
    ensemble_size: int = 10
    activation: str = "elu"
    cnn_activation: str = "elu"  # of the pixel encoder and decoder
    gru: str = "norm"  # recurrent cell: "norm" (DreamerV2's layer-normed GRU) or "plain"
    std_act: str = "sigmoid2"
    min_std: float = 0.1
    free_nats: float = 1.0
    kl_balance: float = 0.8  # share of the KL gradient that trains the prior (0.5 = plain KL)
    kl_scale: float = 1.0
    mlp_layers: tuple[int, ...] = (400, 400, 400, 400)  # state encoder / decoder
    cnn_depth: int = 48
    encoder_kernels: tuple[int, ...] = (4, 4, 4, 4)
    decoder_kernels: tuple[int, ...] = (5, 5, 6, 6)
    normalize_obs: bool = True  # standardise states with the demos' mean and std (else: clip only)
    symlog_obs: bool = True  # then squash them with symlog (encoder input and decoder target)
    augment: bool = False  # random-shift augmentation of pixel sequences for the world model
    shift_pad: int = 4
    model_lr: float = 3e-4
    # --- actor-critic in imagination
    horizon: int = 15
    discount: float = 0.99
    lam: float = 0.95
    value_mix: float = 0.05  # actor objective: value_mix * Q + (1 - value_mix) * lambda-return
    actor_layers: tuple[int, ...] = (400, 400, 400, 400)
    critic_layers: tuple[int, ...] = (400, 400, 400, 400)
    actor_min_std: float = 0.1
    actor_ent: float = 1e-4
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    target_update_every: int = 100  # hard copies of the twin critics
    critic_real_data: bool = True  # critics also regress D + discount * V on real replay transitions
    # --- discriminator on (latent features, action)
    disc_hidden: tuple[int, ...] = (200, 200)
    disc_activation: str = "elu"
    disc_lr: float = 3e-4
    disc_noise: float = 2.5  # std of Gaussian noise on its inputs (training, imagined reward)
    gp_weight: float = 0.0  # gradient-penalty weight
    # --- initialisation, optimisers (Adam; weights times 1 - weight_decay at every step), logging
    weight_init: str = "glorot"  # "glorot": Keras defaults (reference); "torch": PyTorch defaults
    adam_eps: float = 1e-5
    grad_clip: float = 100.0
    weight_decay: float = 1e-6
    log_disagreement_n: int = 256  # rollouts used for the disagreement log when u is not a reward term
    # --- speed switches (off: the plain float32 eager path; on a CPU core neither helps at the cpu
    # sizes, see benchmarks/RESULTS.md "Latent agent speed"; meant for a GPU, benchmarks/gpu_check.sh)
    amp_bf16: bool = False  # updates under bfloat16 autocast (matmuls and convolutions in bf16)
    compile: bool = False  # torch.compile the networks' forward passes (the GRU cell, MLPs, CNNs)

    def __post_validate__(self):
        name = type(self).__module__.rsplit(".", 1)[-1]
        for k in ("total_steps", "train_every", "updates_per_train", "replay_size", "batch_size",
                  "expert_batch_size", "deter", "stoch", "hidden", "ensemble_size", "cnn_depth",
                  "target_update_every", "log_disagreement_n"):
            if getattr(self, k) <= 0:
                raise UserError(f"{name}: {k} must be positive, got {getattr(self, k)}")
        for k in ("seed_steps", "expl_noise", "free_nats", "disc_noise", "gp_weight", "actor_ent",
                  "shift_pad", "imag_starts"):
            if getattr(self, k) < 0:
                raise UserError(f"{name}: {k} must be >= 0, got {getattr(self, k)}")
        if self.seq_len < 3:
            raise UserError(f"{name}: seq_len must be >= 3, got {self.seq_len}")
        if self.horizon < 2:
            raise UserError(f"{name}: horizon must be >= 2, got {self.horizon}")
        for k in ("discount", "lam", "value_mix", "kl_balance"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise UserError(f"{name}: {k} must lie in [0, 1], got {getattr(self, k)}")
        if self.seed_policy not in SEED_POLICIES:
            raise UserError(f"{name}: seed_policy must be one of {SEED_POLICIES}, got {self.seed_policy!r}")
        if self.eval_mode not in self.eval_modes:
            raise UserError(f"{name}: eval_mode must be one of {self.eval_modes}, got {self.eval_mode!r}")
        if self.weight_init not in WEIGHT_INITS:
            raise UserError(f"{name}: weight_init must be one of {WEIGHT_INITS}, got {self.weight_init!r}")
        if not 0.0 <= self.weight_decay < 1.0:
            raise UserError(f"{name}: weight_decay is a per-step factor in [0, 1), got {self.weight_decay}")
        if self.std_act not in STD_ACTS:
            raise UserError(f"{name}: std_act must be one of {STD_ACTS}, got {self.std_act!r}")
        if self.gru not in GRU_KINDS:
            raise UserError(f"{name}: gru must be one of {GRU_KINDS}, got {self.gru!r}")
        for k in ("activation", "cnn_activation", "disc_activation"):
            if getattr(self, k) not in ACTIVATIONS:
                raise UserError(f"{name}: {k} must be one of {tuple(ACTIVATIONS)}, got {getattr(self, k)!r}")
        if len(self.encoder_kernels) != 4 or len(self.decoder_kernels) != 4:
            raise UserError(f"{name}: encoder_kernels and decoder_kernels need 4 entries each")
        if not self.mlp_layers or not self.actor_layers or not self.critic_layers:
            raise UserError(f"{name}: mlp_layers, actor_layers and critic_layers must be non-empty")


# ---------------------------------------------------------------------------- distributions
class TruncNormal:
    """Normal(loc, scale) truncated to [low, high], per dimension; log_prob and entropy sum over
    the last axis. ``rsample`` inverts the CDF, so samples are differentiable in loc and scale."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, low: float = -1.0, high: float = 1.0):
        self.loc, self.scale, self.low, self.high = loc, scale, low, high
        self.alpha = (low - loc) / scale
        self.beta = (high - loc) / scale
        self.cdf_a = torch.special.ndtr(self.alpha)
        self.z = (torch.special.ndtr(self.beta) - self.cdf_a).clamp_min(1e-6)

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(self.loc.shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        p = (self.cdf_a + u * self.z).clamp(1e-6, 1 - 1e-6)
        x = self.loc + self.scale * torch.special.ndtri(p)
        return x.clamp(self.low, self.high)

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.rsample(generator)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.loc) / self.scale
        return (-0.5 * z ** 2 - torch.log(self.scale) - LOG_SQRT_2PI - torch.log(self.z)).sum(-1)

    def entropy(self) -> torch.Tensor:
        pdf = lambda v: torch.exp(-0.5 * v ** 2) / math.sqrt(2 * math.pi)  # noqa: E731
        a, b = self.alpha.clamp(-20, 20), self.beta.clamp(-20, 20)
        ent = (0.5 + LOG_SQRT_2PI + torch.log(self.scale) + torch.log(self.z)
               + (a * pdf(a) - b * pdf(b)) / (2 * self.z))
        return ent.sum(-1)


# ---------------------------------------------------------------------------------- networks
class Actor(nn.Module):
    """features -> truncated normal on [-1, 1] with mean tanh(m) and std 2*sigmoid(s/2) + min_std.
    m and s come from one output layer that stands for the reference's two dense heads."""

    def __init__(self, feat_dim: int, act_dim: int, layers: Sequence[int], act: str, min_std: float):
        super().__init__()
        self.act_dim, self.min_std = act_dim, min_std
        self.net = mlp(feat_dim, tuple(layers), 2 * act_dim, act=act)
        self.net[-1].glorot_fans = (layers[-1], act_dim)  # two heads' fans (nets.keras_init_)

    def forward(self, feat: torch.Tensor) -> TruncNormal:
        mean, raw = self.net(feat).float().chunk(2, -1)  # float: bf16 autocast ends here
        return TruncNormal(torch.tanh(mean), 2.0 * torch.sigmoid(raw / 2.0) + self.min_std)


class ActorCritic(nn.Module):
    """The actor, the twin critics (stacked weights) with their target copy, the discriminator,
    and their optimisers (the update is ``LatentAgent.update_behaviour``)."""

    def __init__(self, feat_dim: int, act_dim: int, cfg: LatentConfig):
        super().__init__()
        self.actor = Actor(feat_dim, act_dim, cfg.actor_layers, cfg.activation, cfg.actor_min_std)
        self.critic = EnsembleMLP(2, feat_dim + act_dim, cfg.critic_layers, 1, act=cfg.activation)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        # no noise of its own: the agent adds cfg.disc_noise to its inputs (LatentAgent.disc_inputs)
        self.disc = Discriminator(feat_dim + act_dim, cfg.disc_hidden, act=cfg.disc_activation)
        self.actor_opt = make_optimizer(self.actor.parameters(), cfg.actor_lr, cfg.adam_eps, cfg.weight_decay)
        self.critic_opt = make_optimizer(self.critic.parameters(), cfg.critic_lr, cfg.adam_eps,
                                         cfg.weight_decay)
        self.disc_opt = make_optimizer(self.disc.parameters(), cfg.disc_lr, cfg.adam_eps, cfg.weight_decay)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))


# --------------------------------------------------------------------------- imagination parts
def lambda_return(reward: torch.Tensor, value: torch.Tensor, discount: float,
                  bootstrap: torch.Tensor, lam: float) -> torch.Tensor:
    """TD(lambda) returns along axis 0: R_t = r_t + g * ((1 - lam) * v_{t+1} + lam * R_{t+1}),
    with v_T = R_T = bootstrap. reward, value: (T, ...); bootstrap: (...)."""
    next_values = torch.cat([value[1:], bootstrap[None]], 0)
    inputs = reward + discount * (1.0 - lam) * next_values
    out, last = [], bootstrap
    for t in reversed(range(reward.shape[0])):
        last = inputs[t] + discount * lam * last
        out.append(last)
    return torch.stack(out[::-1], 0)


def imagine(rssm, actor: Actor, start: dict, horizon: int) -> dict:
    """Roll the actor through the prior from ``start`` (flat states, N each). Returns feat and
    deter (H+1, N, .), action, loc, scale (H, N, A). Actions are reparameterised samples of the
    actor on detached features, so gradients reach the actor through the dynamics."""
    state = start
    feats, deters, actions, locs, scales = [rssm.feat(start)], [start["deter"]], [], [], []
    # the same draws as a host list would give on a CPU; a tensor, so a GPU never waits for it
    heads = torch.randint(rssm.ensemble, (horizon,), device=start["deter"].device)
    for t in range(horizon):
        dist = actor(feats[-1].detach())
        a = dist.rsample()
        state = rssm.img_step(state, a, heads[t])
        feats.append(rssm.feat(state)), deters.append(state["deter"])
        actions.append(a), locs.append(dist.loc), scales.append(dist.scale)
    return {"feat": torch.stack(feats), "deter": torch.stack(deters), "action": torch.stack(actions),
            "loc": torch.stack(locs), "scale": torch.stack(scales)}


def ensemble_member(ens: EnsembleMLP, x: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """Member ``pick`` (a (1,) index tensor, read on the device) of an ``EnsembleMLP`` on x
    (..., in) -> (..., out): the same layers as ``ens(x)[pick]``, without computing the others."""
    lead = x.shape[:-1]
    h = x.reshape(1, -1, x.shape[-1])
    for layer in ens.net:
        if isinstance(layer, EnsembleLinear):
            h = torch.baddbmm(layer.bias.index_select(0, pick), h, layer.weight.index_select(0, pick))
        else:
            h = layer(h)
    return h.reshape(*lead, -1)


def compile_networks(agent: nn.Module) -> None:
    """``torch.compile`` the forward passes of the agent's networks in place (the modules and
    their state dicts stay as they are): the world model's encoder, decoder and GRU cell, and
    the actor's, critics' and discriminator's MLPs. The loops (filtering, imagination) stay in
    Python; each compiled piece fuses its element-wise work."""
    wm, ac = agent.wm, agent.ac
    for m in (wm.encoder, wm.decoder, wm.rssm.cell, ac.actor.net, ac.critic, ac.target_critic, ac.disc.net):
        m.forward = torch.compile(m.forward)


class frozen:
    """Context manager: parameters of the given modules do not require grad inside."""

    def __init__(self, *modules: nn.Module):
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p in self.params:
            p.requires_grad_(True)


# ------------------------------------------------------------------------------------- agent
def sequence_tensors(dev: torch.device, *batches) -> list[torch.Tensor]:
    """obs, action, is_first of numpy sequence batches, concatenated, on ``dev`` (through pinned
    memory, without blocking, on a GPU). A batch already on the device (``to_device``) passes
    through."""
    if len(batches) == 1 and isinstance(batches[0]["obs"], torch.Tensor):
        return [batches[0][k] for k in ("obs", "action", "is_first")]
    out = []
    for k in ("obs", "action", "is_first"):
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate([bt[k] for bt in batches])))
        out.append(x.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else x.to(dev))
    return out


class LatentAgent(nn.Module):
    """World model + actor-critic + discriminator, with all their optimisers.

    A method changes the imagined reward and the actor's BC term through ``penalty_weight``,
    ``imagined_reward`` and ``bc_weight`` (here: reward ``D``, no BC term)."""

    def __init__(self, obs_shape, act_dim: int, cfg: LatentConfig, obs_mean=None, obs_std=None):
        super().__init__()
        self.cfg = cfg
        self.wm = WorldModel(obs_shape, act_dim, cfg, obs_mean, obs_std)
        self.ac = ActorCritic(self.wm.feat_dim, act_dim, cfg)
        if cfg.weight_init == "glorot":
            keras_init_(self)
            self.ac.target_critic.load_state_dict(self.ac.critic.state_dict())
        self._updates: int | None = None  # ac.updates on the host (target copies without a sync)
        if cfg.compile:
            compile_networks(self)

    # -- the method's terms ---------------------------------------------------------------------
    @property
    def penalty_weight(self) -> float:
        """Weight of the disagreement u in the imagined reward; 0: u is only logged."""
        return 0.0

    @property
    def bc_weight(self) -> float:
        """Weight of the expert actions' negative log-likelihood in the actor loss."""
        return 0.0

    def imagined_reward(self, d_prob: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        """Reward of imagined (feature, action) pairs from D's probability and the disagreement."""
        return d_prob

    # -- updates --------------------------------------------------------------------------------
    def tensors(self, *batches):
        """obs, action, is_first of the batches on the agent's device (``sequence_tensors``)."""
        return sequence_tensors(next(self.wm.parameters()).device, *batches)

    def to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        """A numpy sequence batch as tensors on the agent's device (``tensors``)."""
        return dict(zip(("obs", "action", "is_first"), self.tensors(batch)))

    def autocast(self):
        """bfloat16 autocast on the agent's device when ``amp_bf16`` is on (else a no-op)."""
        dev = next(self.wm.parameters()).device
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.cfg.amp_bf16)

    def train_step(self, batch: dict, expert_batch: dict) -> dict[str, torch.Tensor]:
        """One full update on a replay batch and an expert batch (numpy sequences, or tensors from
        ``to_device``): a world-model step on the replay batch alone, then the expert batch
        filtered by the updated model without a gradient, then the behaviour step. Nothing in it
        waits for the device (no ``.item()``, no branch on a tensor's value): the metrics it
        returns are 0-d tensors on the device."""
        with self.autocast():
            return self._train_step(batch, expert_batch)

    def _train_step(self, batch: dict, expert_batch: dict) -> dict[str, torch.Tensor]:
        obs, action, first = self.tensors(batch)
        post, metrics = self.wm.update(obs, action, first)
        e_obs, e_action, e_first = self.tensors(expert_batch)
        ep = self.wm.filter(e_obs, e_action, e_first)
        metrics.update(self.update_behaviour(post, action, ep, e_action))
        with torch.no_grad():
            stride = max(1, ep["deter"].shape[1] // 8)
            metrics["disagreement_demo"] = self.wm.disagreement(ep["deter"][:, ::stride]).mean()
        return metrics

    def bc_loss(self, expert_feat: torch.Tensor, expert_action: torch.Tensor) -> torch.Tensor:
        """NLL of the expert's next action a_t (row t+1) given the posterior features of o_t."""
        return -self.ac.actor(expert_feat[:, :-1]).log_prob(expert_action[:, 1:]).mean()

    def discriminate(self, pair: torch.Tensor) -> torch.Tensor:
        """D(x) of inputs x = concat(features, action) as a probability, with no noise added."""
        return reward_from_logits(self.ac.disc(pair).float(), "prob")  # the module itself adds no noise

    def disc_inputs(self, pair: torch.Tensor) -> torch.Tensor:
        """``pair`` plus one draw of Gaussian noise of std ``disc_noise``: what the discriminator
        trains on, and, for imagined pairs, what the imagined reward reads."""
        if self.cfg.disc_noise == 0:
            return pair
        return pair + self.cfg.disc_noise * torch.randn_like(pair)

    def update_behaviour(self, post: dict, action: torch.Tensor, expert_post: dict,
                         expert_action: torch.Tensor) -> dict[str, torch.Tensor]:
        """One actor, critic and discriminator step; post/expert_post are detached (B, T, .)."""
        cfg, wm, ac = self.cfg, self.wm, self.ac
        b, t = action.shape[:2]
        start = {k: v.reshape(b * t, v.shape[-1]) for k, v in post.items()}
        if 0 < cfg.imag_starts < b * t:  # imagine from a random subset of the posterior states
            idx = torch.randperm(b * t, device=action.device)[: cfg.imag_starts]
            start = {k: v[idx] for k, v in start.items()}
        else:
            idx = None
        real_feat, expert_feat = wm.rssm.feat(post), wm.rssm.feat(expert_post)
        g, lam, h = cfg.discount, cfg.lam, cfg.horizon
        weight = (g ** torch.arange(h - 1, device=action.device, dtype=torch.float32))[:, None]
        penalty_weight, bc_weight = self.penalty_weight, self.bc_weight

        # --- actor: backprop through the frozen dynamics, critics and discriminator
        with frozen(wm, ac.critic, ac.disc):
            seq = imagine(wm.rssm, ac.actor, start, h)
            pair = torch.cat([seq["feat"][:-1], seq["action"]], -1)  # (H, N, F + A)
            noisy_pair = self.disc_inputs(pair)  # the discriminator's negatives below, too
            d_prob = self.discriminate(noisy_pair)
            if penalty_weight != 0:  # u(h_{i+1}): disagreement about the step (s_i, a_i)
                u = wm.disagreement(seq["deter"][1:])
            else:
                with torch.no_grad():  # for the log only, on a slice of the rollouts
                    u = wm.disagreement(seq["deter"][1:, : cfg.log_disagreement_n])
            reward = self.imagined_reward(d_prob, u)
            q = ac.critic(pair).squeeze(-1).float().min(0).values  # (H, N)
            ret = lambda_return(reward[:-1], q[:-1], g, q[-1], lam)
            objective = cfg.value_mix * q[:-1] + (1.0 - cfg.value_mix) * ret
            ent = TruncNormal(seq["loc"][:-1], seq["scale"][:-1]).entropy()
            actor_loss = -(weight * (objective + cfg.actor_ent * ent)).mean()
            bc = self.bc_loss(expert_feat, expert_action)  # logged even when it is not a term
            total = actor_loss + bc_weight * bc if bc_weight != 0 else actor_loss
        ac.actor_opt.zero_grad(set_to_none=True)
        total.backward()
        clip_and_step(ac.actor_opt, ac.actor_opt.params, cfg.grad_clip)

        # --- critics: lambda-returns of a random target critic on the rollouts (+ real transitions)
        pair, reward = pair.detach(), reward.detach()
        with torch.no_grad():
            pick = torch.randint(2, (1,), device=pair.device)  # a random target critic, on the device
            tq = ensemble_member(ac.target_critic, pair, pick).squeeze(-1).float()  # (H, N)
            tret = lambda_return(reward[:-1], tq[:-1], g, tq[-1], lam)
        q_pred = ac.critic(pair[:-1]).squeeze(-1).float()  # (2, H-1, N)
        critic_loss = (weight * (q_pred - tret) ** 2).mean()
        if cfg.critic_real_data:
            with torch.no_grad():
                v_start = (1 - lam) * tq[0] + lam * tret[0]  # V of each imagination start
                if idx is None:
                    v_next = v_start.reshape(b, t)[:, 1:]
                    real_pair = torch.cat([real_feat[:, :-1], action[:, 1:]], -1)
                else:  # only transitions whose next state was an imagination start
                    bi, ti = idx // t, idx % t
                    ok = ti > 0
                    bi, ti, v_next = bi[ok], ti[ok], v_start[ok]
                    real_pair = torch.cat([real_feat[bi, ti - 1], action[bi, ti]], -1)
                r_real = self.discriminate(real_pair)
                target = r_real + g * v_next
            q_real = ac.critic(real_pair).squeeze(-1).float()
            critic_loss = critic_loss + ((q_real - target) ** 2).mean()
        ac.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        clip_and_step(ac.critic_opt, ac.critic_opt.params, cfg.grad_clip)

        # --- discriminator: expert (feat, next action) vs every imagined (feat, policy action), noisy
        pos = torch.cat([expert_feat[:, :-1], expert_action[:, 1:]], -1).reshape(-1, pair.shape[-1])
        neg = noisy_pair.detach().reshape(-1, pair.shape[-1])
        disc_loss, disc_acc = bce_loss(ac.disc, self.disc_inputs(pos), neg)
        if cfg.gp_weight > 0:  # on clean inputs, as many imagined as expert ones, drawn at random
            neg_all = pair.reshape(-1, pair.shape[-1])
            sub = neg_all[torch.randint(neg_all.shape[0], (pos.shape[0],), device=pos.device)]
            disc_loss = disc_loss + cfg.gp_weight * gradient_penalty(ac.disc, pos, sub)
        ac.disc_opt.zero_grad(set_to_none=True)
        disc_loss.backward()
        clip_and_step(ac.disc_opt, ac.disc_opt.params, cfg.grad_clip)

        ac.updates += 1
        if self._updates is None:  # the count on the host, read from the buffer once (no sync later)
            self._updates = int(ac.updates)
        else:
            self._updates += 1
        if self._updates % cfg.target_update_every == 0:
            ac.target_critic.load_state_dict(ac.critic.state_dict())
        return {"actor_loss": actor_loss.detach(), "bc_loss": bc.detach(),
                "critic_loss": critic_loss.detach(), "disc_loss": disc_loss.detach(),
                "disc_acc": disc_acc, "reward_mean": reward.mean(),
                "disc_prob_policy": d_prob.detach().mean(), "disagreement_policy": u.detach().mean(),
                "penalty_mean": (penalty_weight * u.detach()).mean(), "actor_entropy": ent.detach().mean()}

    # -- acting and checkpoints -------------------------------------------------------------------
    def policy(self, mode: str = "eval", expl_noise: float = 0.0, episode_len: int | None = None):
        """``"train"``: sampled posterior and action (torch's global generator), plus Gaussian
        noise of std ``expl_noise``. ``"eval"``: as ``cfg.eval_mode`` says, without exploration
        noise: ``"sample"`` acts as training does, drawing from a generator of its own seeded with
        ``EVAL_NOISE_SEED`` (every evaluation, and a re-evaluation of a checkpoint, draws the
        same noise); ``"mean"`` takes the posterior mean and the actor's mean."""
        if mode == "train":
            return LatentPolicy(self.wm, self.ac.actor, sample=True, expl_noise=expl_noise,
                                episode_len=episode_len)
        if mode != "eval":
            raise ValueError(f"unknown policy mode {mode!r} (train, eval)")
        if self.cfg.eval_mode == "mean":
            return LatentPolicy(self.wm, self.ac.actor, sample=False, episode_len=episode_len)
        dev = next(self.wm.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(EVAL_NOISE_SEED)
        return LatentPolicy(self.wm, self.ac.actor, sample=True, episode_len=episode_len, generator=gen)

    def full_state(self) -> dict:
        return {"modules": self.state_dict(), "wm_opt": self.wm.opt.state_dict(),
                "actor_opt": self.ac.actor_opt.state_dict(), "critic_opt": self.ac.critic_opt.state_dict(),
                "disc_opt": self.ac.disc_opt.state_dict()}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["modules"])
        self._updates = None
        self.wm.opt.load_state_dict(state["wm_opt"])
        self.ac.actor_opt.load_state_dict(state["actor_opt"])
        self.ac.critic_opt.load_state_dict(state["critic_opt"])
        self.ac.disc_opt.load_state_dict(state["disc_opt"])


class LatentPolicy:
    """Acting with a world-model agent: keeps the filtered latent state and the previous action of
    a batch of environments, so it maps observations to actions like a stateless policy.

    ``sample=True`` samples the posterior z and the action (from ``generator``, else torch's
    global generator) and adds Gaussian exploration noise of std ``expl_noise``; ``sample=False``
    takes the posterior mean and the actor's mean. The state resets on ``reset(n)``; without
    explicit resets (e.g. in ``run.evaluate``) it also resets when the batch size changes or every
    ``episode_len`` calls.
    """

    def __init__(self, wm: WorldModel, actor: Actor, sample: bool = False, expl_noise: float = 0.0,
                 episode_len: int | None = None, device=None, generator: torch.Generator | None = None):
        self.wm, self.actor, self.sample, self.expl_noise = wm, actor, sample, expl_noise
        self.episode_len, self.generator = episode_len, generator
        self.device = device if device is not None else next(wm.parameters()).device
        self.state = None
        self.prev_action = None
        self.t = 0

    def reset(self, n: int = 1) -> None:
        self.state = self.wm.rssm.initial(n, self.device)
        self.prev_action = torch.zeros(n, self.actor.act_dim, device=self.device)
        self.t = 0

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        n = len(obs)
        if (self.state is None or self.state["deter"].shape[0] != n
                or (self.episode_len and self.t >= self.episode_len)):
            self.reset(n)
        obs_t = torch.as_tensor(np.ascontiguousarray(obs), device=self.device)
        embed = self.wm.embed(obs_t)
        self.state = self.wm.rssm.obs_step(self.state, self.prev_action, embed, sample=self.sample,
                                           generator=self.generator)
        dist = self.actor(self.wm.rssm.feat(self.state))
        if self.sample:
            action = dist.sample(self.generator)
            if self.expl_noise > 0:
                noise = torch.randn(action.shape, device=action.device, generator=self.generator)
                action = (action + self.expl_noise * noise).clamp(-1, 1)
        else:
            action = dist.mode
        self.prev_action = action
        self.t += 1
        return action.cpu().numpy()


# ----------------------------------------------------------------------------------- trainer
LOGGED = ("wm_loss", "recon_loss", "kl", "actor_loss", "bc_loss", "critic_loss", "disc_loss",
          "disc_acc", "disagreement_policy", "disagreement_demo", "penalty_mean", "reward_mean")


class LatentTrainer:
    """An agent (of class ``agent_cls``), the replays (demos + online episodes, and demos alone)
    and the counters of one run. Every random draw comes from ``run.rng`` or torch's global
    generator, both checkpointed by the harness."""

    def __init__(self, run, cfg: LatentConfig, agent_cls: type[LatentAgent] = LatentAgent):
        self.run, self.cfg = run, cfg
        obs_shape = run.obs_shape
        mean = std = None
        if len(obs_shape) == 1 and cfg.normalize_obs:
            mean, std = demo_statistics(run.demos, run.obs_key)
        self.agent = agent_cls(obs_shape, run.act_dim, cfg, mean, std).to(run.device)
        self.replay = SequenceReplay(cfg.replay_size)
        self.replay.add_trajectories(run.demos, run.obs_key, protected=True)
        self.expert = SequenceReplay(cfg.replay_size)
        self.expert.add_trajectories(run.demos, run.obs_key, protected=True)
        if not self.expert.can_sample(cfg.seq_len):
            longest = max(len(t) + 1 for t in run.demos)
            raise UserError(f"seq_len={cfg.seq_len} is longer than every demo episode (longest has "
                            f"{longest} rows); set seq_len <= {longest}")
        self.env_steps = 0
        self.grad_steps = 0
        self.clock = EvalClock(cfg.total_steps, cfg.eval_every)
        self.losses = IntervalMeans()

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"agent": self.agent.full_state(), "replay": self.replay.state_dict(),
                "env_steps": self.env_steps, "grad_steps": self.grad_steps,
                "clock": self.clock.state_dict(), "losses": self.losses.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_full_state(state["agent"])
        self.replay.load_state_dict(state["replay"])
        self.env_steps = state["env_steps"]
        self.grad_steps = state["grad_steps"]
        self.clock.load_state_dict(state["clock"])
        self.losses.load_state_dict(state["losses"])

    # -- steps ----------------------------------------------------------------------------------
    def log(self, metrics: dict) -> None:
        """Add one step's metrics to the interval means of the next evaluation row."""
        self.losses.add(**metrics)

    def _batches(self) -> tuple[dict, dict]:
        """A replay batch and an expert batch, sampled (in that order, from ``run.rng``) and
        moved to the agent's device."""
        cfg, rng, agent = self.cfg, self.run.rng, self.agent
        batch = self.replay.sample(cfg.batch_size, cfg.seq_len, rng)
        expert = self.expert.sample(cfg.expert_batch_size, cfg.seq_len, rng)
        return agent.to_device(batch), agent.to_device(expert)

    def update(self, n: int = 1) -> None:
        """``n`` full agent updates, each on a replay batch and an expert batch. The next pair
        is sampled (into pinned memory and copied without blocking, on a GPU) right after an
        update is queued, so the host prepares it while the device computes; the replays do not
        change in between, and the draws come in the same order as one update at a time."""
        nxt = self._batches()
        for i in range(n):
            cur = nxt
            self.log(self.agent.train_step(*cur))
            self.grad_steps += 1
            if i + 1 < n:
                nxt = self._batches()

    def evaluate(self) -> dict:
        """One evaluation row (with the interval means of the ``LOGGED`` columns; empty where a
        column was not logged in the interval) and a checkpoint."""
        means = self.losses.means()
        self.run.check_finite({k: means[k] for k in LOGGED if k in means}, self.grad_steps)
        extra = {k: means.get(k, float("nan")) for k in LOGGED}
        extra["replay_steps"] = self.replay.n_steps
        policy = self.agent.policy("eval", episode_len=self.run.task.max_episode_steps)
        row = self.run.evaluate(policy, self.env_steps, self.grad_steps, extra=extra)
        self.run.checkpoint(self.state_dict())
        return row

    def online(self) -> None:
        """Interact until ``total_steps``: whole episodes go to the replay when they end; after
        ``seed_steps``, every ``train_every`` env steps run ``updates_per_train`` updates;
        evaluate (and checkpoint) when the clock says, at episode ends (algorithms/clock.py)."""
        cfg, run, clock = self.cfg, self.run, self.clock
        if clock.done(self.env_steps):
            return
        env = run.make_env()
        policy = self.agent.policy("train", expl_noise=cfg.expl_noise)
        random_seed = cfg.seed_policy == "random"
        with run.progress(cfg.total_steps, initial=self.env_steps) as bar:
            while not clock.done(self.env_steps):
                obs, _ = env.reset(seed=reset_seed(run.rng))
                policy.reset(1)
                observations, actions, done = [obs], [], False
                while not done:
                    if random_seed and self.env_steps < cfg.seed_steps:
                        a = run.rng.uniform(-1, 1, size=run.act_dim).astype(np.float32)
                    else:
                        a = policy(obs[None])[0]
                    obs, _, term, trunc, _ = env.step(a)
                    observations.append(obs), actions.append(a)
                    self.env_steps += 1
                    bar.update(1)
                    if self.env_steps >= cfg.seed_steps and self.env_steps % cfg.train_every == 0:
                        self.update(cfg.updates_per_train)
                    done = term or trunc
                self.replay.add_episode(np.stack(observations), np.stack(actions))
                if clock.due(self.env_steps):
                    row = self.evaluate()
                    bar.set_postfix(score=f"{row['norm_score']:.2f}")
        env.close()


def eval_policy(state: dict, cfg: LatentConfig, obs_shape, act_dim: int, episode_len: int, device,
                which: str = "eval"):  # noqa: ARG001 (the harness signature)
    """The evaluation policy (``LatentAgent.policy("eval")``: as ``cfg.eval_mode`` says) of a
    checkpoint's ``state`` (a ``LatentTrainer.state_dict``); see ``cmil_bench.evaluate``."""
    agent = LatentAgent(obs_shape, act_dim, cfg).to(device)
    agent.load_state_dict(state["agent"]["modules"])
    return agent.policy("eval", episode_len=episode_len)
