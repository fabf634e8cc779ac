"""V-MAIL: variational model-based adversarial imitation learning (Rafailov et al., NeurIPS 2021).

The model-based imitation baseline without conservatism, as its reference code runs it on
DeepMind Control (rmrafailov/VMAIL, ``dm_control/vmail.py`` and ``models.py``: Dreamer v1 with
a discriminator in place of the reward head). No offline phase, no BC term, no uncertainty
penalty.

Acting. The first ``seed_steps`` env steps are whole episodes of uniform random actions (the
reference's prefill; it counts the demos, which it copies into the replay first, towards those
steps: ``seed_steps_include_demos``). Afterwards the actor acts on the filtered latent state (a
sampled posterior) with a sample of its action distribution plus Gaussian noise of std
``expl_noise``, clipped to [-1, 1]. At the first policy step ``pretrain_steps`` updates run, and
then ``updates_per_train`` updates every ``train_every`` env steps.

One update (``Agent.train_step``), on a batch of replay sequences (demos + prefill + online
episodes) and a batch of expert sequences:

1. World model (RSSM with a plain GRU and one prior, ReLU CNN on pixels): reconstruction + KL
   with free nats, on the replay batch only. The expert batch is filtered by the model without a
   gradient.
2. Imagination: from every replay posterior state but each sequence's last (or ``imag_starts``
   of them), roll the actor's reparameterised actions through the prior for ``horizon`` steps.
3. Reward of an imagined pair (s_i, a_i): ``D(s_i, a_i)``, the discriminator's probability.
4. Actor: maximise ``mean_t discount^t R_t`` with ``R_t = sum_{k=t}^{H-2} discount^(k-t) D_k``,
   the lambda-return with lambda = 1 and no bootstrap (``returns``), by backpropagating through
   the frozen dynamics and discriminator. The actor is a tanh-squashed Gaussian (initial std
   ``actor_init_std``) with no entropy bonus.
5. Value: a state-value MLP regresses ``V(s_{t+1})`` on ``R_t`` (weights discount^t). With
   lambda = 1 the return does not read it: the reference trains it and never uses it.
6. Discriminator: BCE with expert posterior features + the expert's next action as positives
   and every imagined pair as negatives, plus ``gp_weight`` x the penalty on the gradient of its
   mean logit *with respect to its parameters* at interpolates of imagined and expert pairs
   (``algorithms.discriminator.parameter_gradient_penalty``).

Every loss is computed with the parameters of the start of the update, and then every part takes
its optimiser step (as the reference's gradient tapes do).

Defaults are the reference's, with env steps counted as the reference counts its steps (frames,
here one per action; the reference's action repeat 2 makes 1000 of its steps 500 actions).
Differences that remain: states go through the shared MLP encoder (the reference is pixels
only); PyTorch's Adam form of epsilon; the evaluation cadence is the harness's; sequences are
sampled by the shared replay (algorithms/sequence_replay.py: episodes uniformly, as the
reference does, but a chunk from the middle of an episode gets a zero previous action in its
first row, where Dreamer v1 feeds the true one to its zero initial state); the evaluation
``mode`` keeps the most likely of ``mode_samples`` samples per environment (the reference
indexes environment 0's choice for all, which is the same with its one environment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms.clock import reset_seed
from algorithms.discriminator import Discriminator, bce_loss, parameter_gradient_penalty
from algorithms.latent_agent import (
    LatentConfig,
    LatentTrainer,
    frozen,
    imagine,
    lambda_return,
    sequence_tensors,
)
from algorithms.nets import keras_init_, mlp
from algorithms.optim import clip_and_step, make_optimizer
from algorithms.world_model import WorldModel
from cmil_bench.errors import UserError

__all__ = ["PRESETS", "Config", "eval_policy", "train"]  # the harness API (cmil_bench.run)

EVAL_MODES = ("mode", "sample", "mean")
EVAL_SEED = 0  # seed of the evaluation policy's own generator (sampled posterior and mode)
ATANH_CLIP = 0.99999997  # the reference's clip before atanh in the tanh bijector's inverse


@dataclass
class Config(LatentConfig):
    # Shared fields are documented in algorithms.latent_agent.LatentConfig; V-MAIL's reference
    # values (dm_control/vmail.py define_config, models.py) where they differ from its defaults.
    # --- schedule (env steps)
    total_steps: int = 500_000
    seed_steps: int = 1_000  # prefill: whole episodes of uniform random actions up to this
    seed_policy: str = "random"
    seed_steps_include_demos: bool = True  # the demos' env steps count towards the prefill
    pretrain_steps: int = 100  # updates at the first policy step (Dreamer v1's `pretrain`)
    train_every: int = 1_000
    updates_per_train: int = 200
    expl_noise: float = 0.3
    # --- replay
    batch_size: int = 128
    expert_batch_size: int = 128
    # --- world model (Dreamer v1's RSSM: deter 200, stoch 30, hidden 200, one prior)
    deter: int = 200
    stoch: int = 30
    hidden: int = 200
    ensemble_size: int = 1
    cnn_activation: str = "relu"
    gru: str = "plain"
    std_act: str = "softplus"
    free_nats: float = 3.0
    kl_balance: float = 0.5  # plain KL
    cnn_depth: int = 32
    model_lr: float = 6e-4
    # --- actor and value in imagination
    lam: float = 1.0  # the DeepMind Control reference's return: lambda 1, no bootstrap
    actor_layers: tuple[int, ...] = (400, 400, 400, 400)
    actor_init_std: float = 5.0  # std of the squashed Gaussian where its std output is 0
    actor_min_std: float = 1e-4
    actor_mean_scale: float = 5.0  # pre-tanh mean = scale * tanh(raw / scale)
    actor_lr: float = 8e-5
    critic_layers: tuple[int, ...] = (400, 400, 400)  # the state-value MLP
    critic_lr: float = 8e-5
    # evaluation: "mode" (the reference: a sampled posterior and the most likely of
    # ``mode_samples`` action samples), "sample" (as in training, without exploration noise) or
    # "mean" (the posterior mean and tanh of the actor's Gaussian mean)
    eval_mode: str = "mode"
    eval_modes: ClassVar[tuple[str, ...]] = EVAL_MODES
    mode_samples: int = 100
    # fields of the shared actor-critic that V-MAIL has no use for (refused when changed)
    value_mix: float = 0.0
    actor_ent: float = 0.0
    critic_real_data: bool = False
    # --- discriminator (2 x 400 ELU), penalty on its parameter gradient
    disc_hidden: tuple[int, ...] = (400, 400)
    disc_lr: float = 8e-5
    disc_noise: float = 0.0
    gp_weight: float = 1.0
    # --- optimisers (TensorFlow's Adam epsilon, global-norm clip 100, no weight decay)
    adam_eps: float = 1e-7
    weight_decay: float = 0.0

    def __post_validate__(self):
        super().__post_validate__()
        for k in ("pretrain_steps",):
            if getattr(self, k) < 0:
                raise UserError(f"vmail: {k} must be >= 0, got {getattr(self, k)}")
        for k in ("actor_init_std", "actor_min_std", "actor_mean_scale", "mode_samples"):
            if getattr(self, k) <= 0:
                raise UserError(f"vmail: {k} must be positive, got {getattr(self, k)}")
        for k in ("value_mix", "actor_ent", "critic_real_data", "target_update_every"):
            default = Config.__dataclass_fields__[k].default
            if getattr(self, k) != default:
                raise UserError(f"vmail: {k} has no effect in V-MAIL (it belongs to CMIL's twin-critic "
                                f"actor-critic); leave it at {default}")


PRESETS = {
    # Scale only (cmil_bench.config.SCALE_KEYS): CPU sizes and the sweep's matched budget.
    "cpu": {
        "total_steps": 2_400, "eval_every": 600,
        "batch_size": 16, "expert_batch_size": 16, "seq_len": 16,
        "deter": 128, "hidden": 128,
        "mlp_layers": (128, 128), "cnn_depth": 16,
        "actor_layers": (128, 128), "critic_layers": (128, 128), "disc_hidden": (128, 128),
        "imag_starts": 48, "log_disagreement_n": 48,
    },
    # A few seconds of sizes.
    "smoke": {
        "total_steps": 120, "eval_every": 60, "eval_episodes": 2, "seed_steps": 20,
        "batch_size": 4, "expert_batch_size": 4, "seq_len": 8,
        "deter": 32, "stoch": 8, "hidden": 32, "mlp_layers": (32,),
        "cnn_depth": 4, "actor_layers": (32,), "critic_layers": (32,), "disc_hidden": (32,),
        "log_disagreement_n": 16,
    },
}


# ------------------------------------------------------------------------------ the actor
class TanhNormal:
    """Normal(loc, scale) squashed by tanh, independent per dimension (Dreamer v1's
    ``tanh_normal``); ``log_prob`` sums over the last axis. ``rsample`` is differentiable in
    loc and scale. ``generator``: an optional ``torch.Generator`` for the draws."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        self.loc, self.scale = loc, scale

    def _noise(self, shape, generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)

    def rsample(self, n: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = self.loc.shape if n is None else (n, *self.loc.shape)
        return torch.tanh(self.loc + self.scale * self._noise(shape, generator))

    @torch.no_grad()
    def sample(self, n: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.rsample(n, generator)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """Density of the squashed sample y: the Gaussian's at x = atanh(y) (y clipped as the
        reference's bijector clips it) less log |d tanh(x)/dx| = 2 (log 2 - x - softplus(-2x))."""
        x = torch.atanh(y.clamp(-ATANH_CLIP, ATANH_CLIP))
        z = (x - self.loc) / self.scale
        normal = -0.5 * z ** 2 - torch.log(self.scale) - 0.5 * math.log(2 * math.pi)
        log_det = 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))
        return (normal - log_det).sum(-1)

    @torch.no_grad()
    def mode(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The reference's mode: of ``n`` samples, the one with the highest density (per row)."""
        samples = self.sample(n, generator)  # (n, ..., A)
        best = self.log_prob(samples).argmax(0)  # (...)
        index = best[None, ..., None].expand(1, *samples.shape[1:])
        return samples.gather(0, index)[0]


class Actor(nn.Module):
    """features -> TanhNormal(mean_scale * tanh(m / mean_scale), softplus(s + c) + min_std), where
    c = log(exp(init_std) - 1) makes the std init_std where s = 0 (Dreamer v1's action model)."""

    def __init__(self, feat_dim: int, act_dim: int, cfg: Config):
        super().__init__()
        self.act_dim = act_dim
        self.net = mlp(feat_dim, tuple(cfg.actor_layers), 2 * act_dim, act=cfg.activation)
        self.raw_init_std = math.log(math.expm1(cfg.actor_init_std))
        self.mean_scale, self.min_std = cfg.actor_mean_scale, cfg.actor_min_std

    def forward(self, feat: torch.Tensor) -> TanhNormal:
        mean, raw = self.net(feat).chunk(2, -1)
        mean = self.mean_scale * torch.tanh(mean / self.mean_scale)
        return TanhNormal(mean, F.softplus(raw + self.raw_init_std) + self.min_std)


# ------------------------------------------------------------------------ the actor's target
def returns(reward: torch.Tensor, value: torch.Tensor | None, discount: float, lam: float) -> torch.Tensor:
    """The reference's imagined returns, (H-1, N), from the rewards D of the imagined pairs
    ``reward`` (H, N) and the values V(s_1..s_{H-1}) ``value`` (H-1, N): the lambda-return of
    the first H-1 rewards with no bootstrap (zero after the last). With lam = 1 (V-MAIL on
    DeepMind Control) it is the discounted sum of D to the end of the horizon and the values
    are not read (``value`` may be None)."""
    r = reward[:-1]
    if value is None:
        if lam != 1.0:
            raise ValueError("returns with lam < 1 read the values")
        value = torch.zeros_like(r)  # multiplied by 1 - lam = 0
    return lambda_return(r, value, discount, torch.zeros_like(r[-1]), lam)


def step_weights(h: int, discount: float, like: torch.Tensor) -> torch.Tensor:
    """discount^t for t = 0..H-2, as a column (H-1, 1): the weight of R_t in the actor and value
    losses (the reference's cumulative product of the continuation probabilities)."""
    return (discount ** torch.arange(h - 1, device=like.device, dtype=like.dtype))[:, None]


# ------------------------------------------------------------------------------- the agent
class Agent(nn.Module):
    """World model, actor, value and discriminator, with their optimisers."""

    def __init__(self, obs_shape, act_dim: int, cfg: Config, obs_mean=None, obs_std=None):
        super().__init__()
        self.cfg = cfg
        self.wm = WorldModel(obs_shape, act_dim, cfg, obs_mean, obs_std)
        feat = self.wm.feat_dim
        self.actor = Actor(feat, act_dim, cfg)
        self.value = mlp(feat, tuple(cfg.critic_layers), 1, act=cfg.activation)
        self.disc = Discriminator(feat + act_dim, cfg.disc_hidden, act=cfg.disc_activation,
                                  input_noise=cfg.disc_noise)
        eps, wd = cfg.adam_eps, cfg.weight_decay
        self.actor_opt = make_optimizer(self.actor.parameters(), cfg.actor_lr, eps, wd)
        self.value_opt = make_optimizer(self.value.parameters(), cfg.critic_lr, eps, wd)
        self.disc_opt = make_optimizer(self.disc.parameters(), cfg.disc_lr, eps, wd)
        if cfg.weight_init == "glorot":  # Keras's defaults (the plain GRU keeps its own, Keras's too)
            keras_init_(self)

    def tensors(self, batch: dict):
        """obs, action, is_first on the agent's device (the shared path: pinned memory on a GPU)."""
        return sequence_tensors(next(self.wm.parameters()).device, batch)

    def to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        """A numpy sequence batch as tensors on the agent's device, for the trainer's prefetch."""
        return dict(zip(("obs", "action", "is_first"), self.tensors(batch)))

    def discriminate(self, pair: torch.Tensor) -> torch.Tensor:
        """D(s, a): the discriminator's probability, without input noise."""
        was = self.disc.training
        self.disc.eval()
        out = torch.sigmoid(self.disc(pair))
        self.disc.train(was)
        return out

    def train_step(self, batch: dict, expert_batch: dict) -> dict[str, torch.Tensor]:
        """One update of every part (numpy sequence batches); returns detached metrics."""
        cfg, wm = self.cfg, self.wm
        g, h = cfg.discount, cfg.horizon

        # 1. world model on the replay batch; its step comes at the end
        obs, action, first = self.tensors(batch)
        wm_loss, post, metrics = wm.loss(obs, action, first)
        wm.opt.zero_grad(set_to_none=True)
        wm_loss.backward()
        with torch.no_grad():  # the expert batch, filtered without a model gradient
            e_obs, e_action, e_first = self.tensors(expert_batch)
            e_post, _ = wm.rssm.observe(wm.embed(e_obs), e_action, e_first)
            e_feat = wm.rssm.feat(e_post)
        start = {k: v[:, :-1].detach().reshape(-1, v.shape[-1]) for k, v in post.items()}
        n = start["deter"].shape[0]
        if 0 < cfg.imag_starts < n:
            idx = torch.randperm(n, device=action.device)[: cfg.imag_starts]
            start = {k: v[idx] for k, v in start.items()}

        # 2-4. imagination and the actor: backprop through the frozen dynamics and discriminator
        with frozen(wm, self.disc, self.value):
            seq = imagine(wm.rssm, self.actor, start, h)
            pair = torch.cat([seq["feat"][:-1], seq["action"]], -1)  # (H, N, F + A)
            reward = self.discriminate(pair)  # (H, N)
            value = self.value(seq["feat"][1:-1]).squeeze(-1) if cfg.lam < 1 else None
            ret = returns(reward, value, g, cfg.lam)  # (H-1, N)
            weight = step_weights(h, g, ret)
            actor_loss = -(weight * ret).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()

        # 5. value: V(s_{t+1}) regresses R_t
        feat, ret = seq["feat"].detach(), ret.detach()
        value_pred = self.value(feat[1:-1]).squeeze(-1)
        value_loss = (weight * 0.5 * (value_pred - ret) ** 2).mean()
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.backward()

        # 6. discriminator: expert (features, next action) vs every imagined pair, + the penalty
        pair = pair.detach()
        pos = torch.cat([e_feat[:, :-1], e_action[:, 1:]], -1).reshape(-1, pair.shape[-1])
        self.disc.train()
        disc_loss, disc_acc = bce_loss(self.disc, pos, pair.reshape(-1, pair.shape[-1]))
        if cfg.gp_weight > 0:
            # interpolates of each imagined pair and an expert pair (the same expert row along
            # the horizon; row i of the rollouts takes expert row i mod the expert rows)
            alpha = torch.rand(*pair.shape[:2], 1, device=pair.device)
            partner = pos[torch.arange(pair.shape[1], device=pair.device) % pos.shape[0]]
            mix = alpha * pair + (1 - alpha) * partner[None]
            penalty = parameter_gradient_penalty(self.disc, mix)
            disc_loss = disc_loss + cfg.gp_weight * penalty
        else:
            penalty = torch.zeros(())
        self.disc_opt.zero_grad(set_to_none=True)
        disc_loss.backward()

        # every part steps with the gradients of the parameters the losses above were computed with
        clip_and_step(wm.opt, wm.parameters(), cfg.grad_clip)
        clip_and_step(self.actor_opt, self.actor.parameters(), cfg.grad_clip)
        clip_and_step(self.value_opt, self.value.parameters(), cfg.grad_clip)
        clip_and_step(self.disc_opt, self.disc.parameters(), cfg.grad_clip)
        metrics.update({"actor_loss": actor_loss.detach(), "critic_loss": value_loss.detach(),
                        "disc_loss": disc_loss.detach(), "disc_acc": disc_acc,
                        "disc_penalty": penalty.detach(), "reward_mean": reward.detach().mean()})
        return metrics

    # -- acting and checkpoints -------------------------------------------------------------------
    def policy(self, mode: str = "eval", expl_noise: float = 0.0, episode_len: int | None = None):
        """``"train"``: sampled posterior and action plus exploration noise (torch's global
        generator); ``"eval"``: as ``cfg.eval_mode`` says, without exploration noise, the draws
        from a generator of the policy's own (so a checkpoint scores the same again)."""
        if mode == "train":
            return Policy(self, "sample", "sample", expl_noise=expl_noise, episode_len=episode_len)
        if mode != "eval":
            raise ValueError(f"unknown policy mode {mode!r} (train, eval)")
        how = self.cfg.eval_mode
        gen = torch.Generator(device=next(self.wm.parameters()).device)
        posterior = "mean" if how == "mean" else "sample"
        return Policy(self, posterior, how, episode_len=episode_len, generator=gen)

    def full_state(self) -> dict:
        return {"modules": self.state_dict(), "wm_opt": self.wm.opt.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "value_opt": self.value_opt.state_dict(),
                "disc_opt": self.disc_opt.state_dict()}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["modules"])
        self.wm.opt.load_state_dict(state["wm_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.value_opt.load_state_dict(state["value_opt"])
        self.disc_opt.load_state_dict(state["disc_opt"])


class Policy:
    """Acting with V-MAIL: keeps the filtered latent state and the previous action of a batch of
    environments, so it maps observations to actions like a stateless policy (the state resets on
    ``reset(n)``, when the batch size changes, or every ``episode_len`` calls).

    ``posterior``: ``"sample"`` (the reference, in training and evaluation) or ``"mean"``.
    ``action``: ``"sample"`` (training: a sample of the actor, plus Gaussian noise of std
    ``expl_noise``, clipped to [-1, 1]), ``"mode"`` (the reference's evaluation: the most likely
    of ``mode_samples`` samples) or ``"mean"`` (tanh of the Gaussian's mean). Draws come from
    ``generator`` (re-seeded with ``EVAL_SEED`` at every ``reset``), else from torch's global
    generator (which the harness checkpoints)."""

    def __init__(self, agent: Agent, posterior: str = "sample", action: str = "mode",
                 expl_noise: float = 0.0, episode_len: int | None = None,
                 generator: torch.Generator | None = None):
        if posterior not in ("sample", "mean") or action not in ("sample", "mode", "mean"):
            raise ValueError(f"unknown policy posterior={posterior!r} or action={action!r}")
        self.wm, self.actor = agent.wm, agent.actor
        self.posterior, self.action, self.expl_noise = posterior, action, expl_noise
        self.mode_samples, self.episode_len, self.generator = agent.cfg.mode_samples, episode_len, generator
        self.device = next(agent.wm.parameters()).device
        self.state, self.prev_action, self.t = None, None, 0

    def reset(self, n: int = 1) -> None:
        self.state = self.wm.rssm.initial(n, self.device)
        self.prev_action = torch.zeros(n, self.actor.act_dim, device=self.device)
        self.t = 0
        if self.generator is not None:
            self.generator.manual_seed(EVAL_SEED)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        n = len(obs)
        if (self.state is None or self.state["deter"].shape[0] != n
                or (self.episode_len and self.t >= self.episode_len)):
            self.reset(n)
        obs_t = torch.as_tensor(np.ascontiguousarray(obs), device=self.device)
        rssm = self.wm.rssm
        state = rssm.obs_step(self.state, self.prev_action, self.wm.embed(obs_t), sample=False)
        if self.posterior == "sample":
            noise = torch.randn(state["mean"].shape, generator=self.generator, device=self.device)
            state["stoch"] = state["mean"] + state["std"] * noise
        self.state = state
        dist = self.actor(rssm.feat(state))
        if self.action == "sample":
            action = dist.sample(generator=self.generator)
            if self.expl_noise > 0:
                noise = torch.randn(action.shape, generator=self.generator, device=self.device)
                action = (action + self.expl_noise * noise).clamp(-1, 1)
        elif self.action == "mode":
            action = dist.mode(self.mode_samples, self.generator)
        else:
            action = torch.tanh(dist.loc)
        self.prev_action = action
        self.t += 1
        return action.cpu().numpy()


# ---------------------------------------------------------------------------- the trainer
class Trainer(LatentTrainer):
    """The shared trainer (replays, counters, evaluations with checkpoints) with V-MAIL's online
    phase: random prefill episodes, then ``pretrain_steps`` updates at the first policy step and
    ``updates_per_train`` every ``train_every`` env steps after it (Dreamer v1's schedule)."""

    def __init__(self, run, cfg: Config):
        super().__init__(run, cfg, Agent)
        self.next_train: int | None = None  # env step of the next updates; None: not yet trained

    def state_dict(self) -> dict:
        return {**super().state_dict(), "next_train": self.next_train}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.next_train = state["next_train"]

    def prefill_steps(self) -> int:
        """Random env steps before the policy acts: ``seed_steps``, less the demos' env steps
        when ``seed_steps_include_demos`` (the reference counts the copied demos)."""
        demo_steps = sum(len(t) for t in self.run.demos) if self.cfg.seed_steps_include_demos else 0
        return max(0, self.cfg.seed_steps - demo_steps)

    def updates_now(self) -> int:
        """How many updates run before the policy acts at this env step."""
        if self.next_train is None:
            self.next_train = self.env_steps + self.cfg.train_every
            return self.cfg.pretrain_steps
        if self.env_steps >= self.next_train:
            self.next_train += self.cfg.train_every
            return self.cfg.updates_per_train
        return 0

    def online(self) -> None:
        """Interact until ``total_steps``; whole episodes go to the replay when they end; an
        episode that starts before the prefill is done takes random actions throughout;
        evaluate (and checkpoint) when the clock says, at episode ends."""
        cfg, run, clock = self.cfg, self.run, self.clock
        if clock.done(self.env_steps):
            return
        env = run.make_env()
        policy = self.agent.policy("train", expl_noise=cfg.expl_noise)
        prefill = self.prefill_steps() if cfg.seed_policy == "random" else 0
        with run.progress(cfg.total_steps, initial=self.env_steps) as bar:
            while not clock.done(self.env_steps):
                obs, _ = env.reset(seed=reset_seed(run.rng))
                policy.reset(1)
                random_episode = self.env_steps < prefill
                observations, actions, done = [obs], [], False
                while not done:
                    if random_episode:
                        a = run.rng.uniform(-1, 1, size=run.act_dim).astype(np.float32)
                    else:
                        for _ in range(self.updates_now()):
                            self.update()
                        a = policy(obs[None])[0]
                    obs, _, term, trunc, _ = env.step(a)
                    observations.append(obs), actions.append(a)
                    self.env_steps += 1
                    bar.update(1)
                    done = term or trunc
                self.replay.add_episode(np.stack(observations), np.stack(actions))
                if clock.due(self.env_steps):
                    row = self.evaluate()
                    bar.set_postfix(score=f"{row['norm_score']:.2f}")
        env.close()


# ---------------------------------------------------------------------------------- harness
def train(run, cfg: Config) -> None:
    trainer = Trainer(run, cfg)
    state = run.restore()
    if state is not None:
        trainer.load_state_dict(state)
    trainer.online()


def eval_policy(state: dict, cfg: Config, obs_shape, act_dim: int, episode_len: int, device,
                which: str = "eval"):  # noqa: ARG001 (the harness signature)
    """The evaluation policy of a checkpoint's ``state`` (a ``Trainer.state_dict``); see
    ``cmil_bench.evaluate``."""
    agent = Agent(obs_shape, act_dim, cfg).to(device)
    agent.load_state_dict(state["agent"]["modules"])
    return agent.policy("eval", episode_len=episode_len)
