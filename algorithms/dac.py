"""DAC: Discriminator-Actor-Critic (Kostrikov et al., ICLR 2019), from states or 64x64 pixels.

An off-policy adversarial imitation learner. A discriminator ``D(s, a)`` (MLP 2 x 256 tanh) is
trained with binary cross-entropy, expert = 1 and replay = 0, plus a gradient penalty of weight 10
on random interpolates of expert and replay inputs; the agent (TD3 by default, SAC as an option)
learns from the reward ``log D - log(1 - D)`` (= the discriminator's logit), recomputed with the
current discriminator on every sampled batch. Environment rewards are never used.

Absorbing states (the paper's Section 4.2). Every (encoded) observation gets one indicator
dimension: 0 for a real state, 1 for the absorbing state (whose other features are zero). An
episode that *terminates* (``terminated``; a real terminal, not the time limit) does not end in
a zero-value terminal: it moves to the absorbing state, which loops on itself under the zero
action. So a terminating step adds two transitions to the replay,
``(s_T, a_T) -> s_abs`` and ``(s_abs, 0) -> s_abs``, and the demos get the same for every
terminating demo. The critic bootstraps everywhere (no done mask); at an absorbing next state the
target action is the zero action. The discriminator learns the reward of the absorbing state
like any other. A *truncated* episode (time limit) is not terminal: its last transition keeps the
real next observation and bootstraps through it. With ``absorbing=False`` terminal transitions
use the usual done mask instead. The pure functions ``step_transitions`` and
``expert_transitions`` hold that logic.

Faithful to the reference (google-research/dac): TD3 with twin critics, target policy smoothing
(noise 0.2 clipped at 0.5), delayed actor and target updates every 2 critic updates, tau 0.005,
Gaussian exploration noise 0.1, uniform random actions for the first steps, actor gradients
clipped at norm 40, the actor loss skipping absorbing states, critic/actor/discriminator lr
1e-3 (Adam), one discriminator update per agent update. Departures, all switches: updates come
after every environment step (the reference updates after each episode, as many times as the
episode had steps), ``updates_per_step`` sets the update-to-data ratio, state observations are
standardised with the demos' mean and std (``normalize_obs``), and the cpu preset uses smaller
networks, SAC (the paper notes that any off-policy learner fits) and demo rows in the agent's
batches (``cpu-paper`` keeps TD3 without them), and ``task_total_steps`` / ``task_eval_every`` give slow environments smaller
budgets. Optional and off by default (not in the paper): demo transitions in the agent's
batches (``demo_ratio``, DDPGfD / SQIL style), n-step critic targets (``n_step``), a
state-only discriminator (``disc_input="s"``), BC initialisation of the actor
(``bc_init_steps``), a BC term in the actor loss (``bc_weight``) and evaluation with a moving
average of the actor's weights (``eval_ema_tau``; on in the cpu preset). Demo subsampling
(``subsample``; the reference kept every 20th step of 1000-step episodes) is off by default:
our demos are 50-300 steps long and few; when on, absorbing
transitions are always kept and weighted by 1/subsample in the discriminator loss, as in the
reference.

Pixels: the shared CNN encoder (``algorithms.nets.ObsEncoder``) and a linear+LayerNorm+tanh
trunk belong to the critic and are trained by the critic loss only (DrQ style); the actor and the
discriminator read the critic encoder's detached features (plus the absorbing indicator);
random-shift augmentation (``augment``) applies to every sampled frame.

Episodes run to their end; evaluations (and checkpoints) happen at the first episode boundary
after each multiple of ``eval_every`` environment steps, so a checkpoint never holds a
mid-episode environment. Every episode starts from ``reset(seed=...)`` with a seed drawn from the
run's generator, which makes a resumed run continue exactly.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms.discriminator import Discriminator, bce_loss, gradient_penalty, reward_from_logits
from algorithms.nets import ObsEncoder, activation, mlp, random_shift
from algorithms.replay import ReplayBuffer
from cmil_bench.config import BaseConfig
from cmil_bench.errors import UserError


@dataclass
class Config(BaseConfig):
    # Budget (environment steps) and evaluation.
    total_steps: int = 200_000
    eval_every: int = 10_000
    # Per-task budgets, for sweeps that mix cheap and slow environments: "TASK=STEPS" entries
    # (TASK a task name or family) that replace total_steps / eval_every on that task.
    task_total_steps: tuple[str, ...] = ()
    task_eval_every: tuple[str, ...] = ()
    # Agent: "td3" (the paper's) or "sac".
    agent: str = "td3"
    actor_hidden: tuple[int, ...] = (400, 300)
    critic_hidden: tuple[int, ...] = (400, 300)
    activation: str = "relu"
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 100
    # TD3 target policy smoothing and delayed actor/target updates.
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    # Gaussian exploration noise (TD3) on the policy's action.
    expl_noise: float = 0.1
    actor_grad_clip: float = 40.0
    # Uniform random actions for the first steps; no updates before ``learning_starts`` steps.
    random_steps: int = 1_000
    learning_starts: int = 1_000
    # Critic updates before the first actor update (the reference's policy_updates_delay).
    actor_delay: int = 1_000
    # Agent updates per environment step (may be fractional: 0.5 = one update every 2 steps).
    updates_per_step: float = 1.0
    # n-step returns for the critic (not in the paper; 1 = the paper's one-step TD target): the
    # target sums the discriminator rewards of up to ``n_step`` replayed steps of one episode and
    # bootstraps from the state after the last of them (uncorrected for the policy change, as in
    # Rainbow, D4PG and DrQ-v2).
    n_step: int = 1
    # Demo transitions in the agent's batches (not in the paper; 0 = off; DDPGfD / SQIL style):
    # this fraction of every critic and actor batch comes from the demos, rewarded by the
    # discriminator like replay rows, so the critic learns the value of the expert's states,
    # which a young policy seldom reaches. The discriminator's negatives stay replay rows only.
    demo_ratio: float = 0.0
    replay_size: int = 1_000_000
    # SAC only.
    sac_init_alpha: float = 0.1
    sac_alpha_lr: float = 3e-4
    sac_min_log_std: float = -5.0
    sac_max_log_std: float = 2.0
    # Discriminator.
    disc_hidden: tuple[int, ...] = (256, 256)
    disc_activation: str = "tanh"
    disc_lr: float = 1e-3
    gp_weight: float = 10.0
    # One discriminator update every ``disc_every`` agent updates.
    disc_every: int = 1
    reward_form: str = "logit"
    # What the discriminator reads: "sa" (state and action, the paper's) or "s" (state only).
    disc_input: str = "sa"
    # Absorbing states for terminating episodes (see the module docstring).
    absorbing: bool = True
    # Keep every k-th demo transition (random offset per demo); 1 keeps all.
    subsample: int = 1
    # Standardise state observations with the demos' mean and std (std floored at obs_std_min).
    normalize_obs: bool = True
    obs_std_min: float = 1e-2
    obs_clip: float = 10.0
    # Pixels only.
    encoder_depth: int = 32
    feature_dim: int = 50
    augment: bool = True
    shift_pad: int = 4
    # Optional BC initialisation of the actor (not in the paper; 0 = off): ``bc_init_steps`` Adam
    # steps (lr ``actor_lr``, batch ``batch_size``) of mean-squared error between the actor's
    # deterministic action and the expert's on demo transitions, before any environment step.
    bc_init_steps: int = 0
    # Optional BC term in the actor loss (not in the paper; 0 = off; CMIL's actor carries one):
    # ``bc_weight`` x the mean squared error of the actor's deterministic action on the expert
    # batch of the same update (its non-absorbing states).
    bc_weight: float = 0.0
    # Optional evaluation policy (not in the paper; 0 = off): evaluations use an exponential
    # moving average of the actor's weights (Polyak averaging, as for target networks), updated
    # with this rate after every actor update; training and exploration use the live actor.
    # (From pixels the averaged actor reads the live critic encoder's features.)
    eval_ema_tau: float = 0.0

    def __post_validate__(self):
        if self.agent not in ("td3", "sac"):
            raise UserError(f"dac: agent must be 'td3' or 'sac', got {self.agent!r}")
        if self.disc_input not in ("sa", "s"):
            raise UserError(f"dac: disc_input must be 'sa' or 's', got {self.disc_input!r}")
        if self.reward_form not in ("logit", "gail", "prob", "log"):
            raise UserError(f"dac: reward_form must be logit|gail|prob|log, got {self.reward_form!r}")
        for name in ("total_steps", "batch_size", "policy_delay", "disc_every", "subsample", "n_step",
                     "replay_size", "feature_dim", "encoder_depth"):
            if getattr(self, name) <= 0:
                raise UserError(f"dac: {name} must be positive, got {getattr(self, name)!r}")
        for name in ("random_steps", "learning_starts", "actor_delay", "gp_weight", "expl_noise",
                     "policy_noise", "noise_clip", "shift_pad", "bc_init_steps", "bc_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"dac: {name} must be >= 0, got {getattr(self, name)!r}")
        parse_task_values(self.task_total_steps, "task_total_steps", "dac")
        parse_task_values(self.task_eval_every, "task_eval_every", "dac")
        if not 0 <= self.demo_ratio < 1:
            raise UserError(f"dac: demo_ratio must be in [0, 1), got {self.demo_ratio!r}")
        if not self.updates_per_step > 0:
            raise UserError(f"dac: updates_per_step must be positive, got {self.updates_per_step!r}")
        if not 0 <= self.eval_ema_tau <= 1:
            raise UserError(f"dac: eval_ema_tau must be in [0, 1], got {self.eval_ema_tau!r}")
        if not 0 < self.tau <= 1:
            raise UserError(f"dac: tau must be in (0, 1], got {self.tau!r}")
        if not 0 <= self.gamma < 1:
            raise UserError(f"dac: gamma must be in [0, 1), got {self.gamma!r}")


PRESETS = {
    # Default CPU sweep (pointmaze-umaze, fetch-push from states; one core, about a minute a
    # run): small networks and budgets measured to fit. SAC rather than TD3 here: on this budget
    # (12k steps on PointMaze, seeds 1 and 2) TD3's evaluations swung between 0.1 and 0.9 from
    # one evaluation to the next, SAC's rose steadily to 0.76-0.89. A quarter of every agent batch
    # are demo transitions (``demo_ratio``) and learning starts after 500 steps: without them
    # the critic never learns the value of the expert's states in ~7k steps (its Q was about
    # -20 on expert and policy trajectories alike where the discounted discriminator return was
    # +36..+250 vs -15..-85), and fetch-push collapsed to a policy that stands still (final
    # norm_score 0.17 / 0.03 / 0.14 at 7.5k steps; with them 0.84 / 0.47 / 0.51 at 12.5k; on 20 evaluation
    # episodes, 0.88 / 0.56 / 0.52 on the 50 that fetch-push now uses). Evaluations use the
    # actor's moving average (``eval_ema_tau`` 0.002): the same training, scored on 200
    # held-out fetch-push episodes per seed (seeds 0-4), gave 0.72 against the live actor's
    # 0.67 (better on 4 of 5 seeds); on pointmaze-umaze 0.87 either way (benchmarks/RESULTS.md).
    # "cpu-paper" is the same budget with the paper's DAC: TD3, no demo rows, 1000 random steps.
    "cpu": {"agent": "sac", "total_steps": 12_000, "eval_every": 3_000,
            "task_total_steps": ("fetch-push=12500",), "task_eval_every": ("fetch-push=2500",),
            "actor_hidden": (64, 64), "critic_hidden": (64, 64), "disc_hidden": (64, 64),
            "batch_size": 128, "demo_ratio": 0.25, "random_steps": 500, "learning_starts": 500,
            "actor_delay": 250, "eval_ema_tau": 0.002},
    "cpu-paper": {"agent": "td3", "total_steps": 12_000, "eval_every": 3_000,
                  "task_total_steps": ("fetch-push=12500",), "task_eval_every": ("fetch-push=2500",),
                  "actor_hidden": (64, 64), "critic_hidden": (64, 64), "disc_hidden": (64, 64),
                  "batch_size": 128},
    # A few seconds, for tests.
    "smoke": {"total_steps": 600, "eval_every": 300, "eval_episodes": 2, "random_steps": 50,
              "learning_starts": 50, "actor_delay": 10, "batch_size": 16, "actor_hidden": (32,),
              "critic_hidden": (32,), "disc_hidden": (32,), "encoder_depth": 4, "feature_dim": 16,
              "replay_size": 1_000},
}

def parse_task_values(entries, key: str, algo: str) -> dict[str, int]:
    """``("fetch-push=40000", ...)`` -> ``{"fetch-push": 40000}``; UserError on a bad entry."""
    out: dict[str, int] = {}
    for e in entries:
        name, sep, val = str(e).partition("=")
        try:
            n = int(val)
        except ValueError:
            n = 0
        if not sep or not name.strip() or n <= 0:
            raise UserError(f"{algo}: {key} entries must look like TASK=POSITIVE_INT, got {e!r}")
        out[name.strip()] = n
    return out


def _check_task_names(table: dict) -> None:
    """A per-task entry that names no registered task or family is a typo, not a no-op."""
    if not table:
        return
    from envs.registry import get_task, list_tasks

    names = set(list_tasks())
    known = names | {get_task(t).family for t in names}
    unknown = sorted(set(table) - known)
    if unknown:
        raise UserError(f"per-task budget for unknown task or family {', '.join(map(repr, unknown))}; "
                        f"known: {', '.join(sorted(k for k in known if k))}")


def task_budget(cfg, task) -> tuple[int, int]:
    """(total_steps, eval_every) for ``task`` (a TaskSpec): the per-task entries that name the
    task or its family, else the config's own values."""
    def pick(entries, default):
        table = parse_task_values(entries, "task budget", "")
        _check_task_names(table)
        for key in (task.name, getattr(task, "family", "")):
            if key and key in table:
                return table[key]
        return default
    return pick(cfg.task_total_steps, cfg.total_steps), pick(cfg.task_eval_every, cfg.eval_every)


# Replay layout: ``done`` is the zero-value terminal mask (used only without absorbing states),
# ``absorbing`` / ``next_absorbing`` the indicator of obs / next_obs.
EXTRA_FIELDS = ("done", "absorbing", "next_absorbing")
# ``last`` marks the last replay row of an episode (n-step windows stop there).


# ------------------------------------------------------------------------ absorbing states


def step_transitions(obs, action, next_obs, terminated: bool, absorbing: bool = True) -> list[dict]:
    """The replay transitions one environment step adds.

    ``terminated`` is a real terminal (not a time limit: pass ``False`` for a truncation). With
    ``absorbing`` a terminal step becomes ``(obs, action) -> s_abs`` followed by the self-loop
    ``(s_abs, 0) -> s_abs``; the absorbing observation is all zeros with indicator 1. Without
    it, a terminal step is stored with ``done = 1``.
    """
    obs = np.asarray(obs)
    action = np.asarray(action, dtype=np.float32)
    if terminated and absorbing:
        zero_obs = np.zeros_like(obs)
        return [
            dict(obs=obs, action=action, next_obs=zero_obs, done=0.0, absorbing=0.0, next_absorbing=1.0),
            dict(obs=zero_obs, action=np.zeros_like(action), next_obs=zero_obs, done=0.0,
                 absorbing=1.0, next_absorbing=1.0),
        ]
    return [dict(obs=obs, action=action, next_obs=np.asarray(next_obs),
                 done=float(bool(terminated)), absorbing=0.0, next_absorbing=0.0)]


def expert_transitions(demos, obs_key: str, absorbing: bool = True, subsample: int = 1,
                       rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Flatten demos into transitions (the fields of ``step_transitions`` plus ``weight``).

    Terminating demos get their absorbing transitions. With ``subsample = k > 1`` every k-th step
    of each demo is kept from a random offset (drawn from ``rng``); absorbing transitions are
    always kept and weigh 1/k in the discriminator loss (the reference's correction for the
    changed state statistics).
    """
    rows: list[dict] = []
    for tr in demos:
        obs = tr.observations[obs_key]
        n = len(tr)
        keep = np.ones(n, dtype=bool)
        if subsample > 1:
            off = int(rng.integers(subsample)) if rng is not None else 0
            keep = (np.arange(n) + off) % subsample == 0
        for t in range(n):
            last_term = bool(tr.terminated) and t == n - 1
            trs = step_transitions(obs[t], tr.actions[t], obs[t + 1], last_term, absorbing)
            if keep[t]:
                rows.append({**trs[0], "weight": 1.0})
            if len(trs) > 1:
                rows.append({**trs[1], "weight": 1.0 / subsample})
    if not rows:
        raise UserError("dac: the demos hold no transitions")
    out = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
    out["action"] = np.clip(out["action"].astype(np.float32), -1.0, 1.0)
    for k in EXTRA_FIELDS + ("weight",):
        out[k] = out[k].astype(np.float32)
    return out


def with_indicator(features: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
    """Append the absorbing indicator; an absorbing state's features are zeroed."""
    flag = flag.reshape(-1, 1).to(features.dtype)
    return torch.cat([features * (1.0 - flag), flag], dim=-1)


# ------------------------------------------------------------------------ networks


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied with one batched matmul: (n, B, i) -> (n, B, o)."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class TwinQ(nn.Module):
    """Two Q networks evaluated together; ``forward`` returns (2, B)."""

    def __init__(self, in_dim: int, hidden, act: str = "relu", n: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [EnsembleLinear(n, d, h), activation(act)()]
            d = h
        layers.append(EnsembleLinear(n, d, 1))
        self.net = nn.Sequential(*layers)
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(0).expand(self.n, *x.shape)).squeeze(-1)


class Encoder(nn.Module):
    """Observation -> features. States: standardisation with fixed (demo) statistics, clipped.
    Pixels: CNN + linear + LayerNorm + tanh."""

    def __init__(self, obs_shape, cfg: Config, mean=None, std=None):
        super().__init__()
        self.base = ObsEncoder(obs_shape, depth=cfg.encoder_depth)
        self.pixels = self.base.pixels
        if self.pixels:
            self.trunk = nn.Sequential(nn.Linear(self.base.out_dim, cfg.feature_dim),
                                       nn.LayerNorm(cfg.feature_dim), nn.Tanh())
            self.out_dim = cfg.feature_dim
        else:
            d = self.base.out_dim
            self.out_dim = d
            self.register_buffer("mean", torch.zeros(d) if mean is None else torch.as_tensor(mean))
            self.register_buffer("std", torch.ones(d) if std is None else torch.as_tensor(std))
        self.clip = cfg.obs_clip

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.pixels:
            return self.trunk(self.base(obs))
        x = (obs.float() - self.mean) / self.std
        return x.clamp(-self.clip, self.clip)


class Critic(nn.Module):
    def __init__(self, obs_shape, act_dim: int, cfg: Config, mean=None, std=None):
        super().__init__()
        self.encoder = Encoder(obs_shape, cfg, mean, std)
        self.feat_dim = self.encoder.out_dim + 1  # + absorbing indicator
        self.q = TwinQ(self.feat_dim + act_dim, cfg.critic_hidden, cfg.activation)

    def features(self, obs: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
        return with_indicator(self.encoder(obs), flag)

    def forward(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q(torch.cat([feat, action], dim=-1))


class Actor(nn.Module):
    """TD3: tanh(MLP(features)). SAC: tanh-squashed Gaussian."""

    def __init__(self, feat_dim: int, act_dim: int, cfg: Config):
        super().__init__()
        self.sac = cfg.agent == "sac"
        self.net = mlp(feat_dim, cfg.actor_hidden, 2 * act_dim if self.sac else act_dim, act=cfg.activation)
        self.min_log_std, self.max_log_std = cfg.sac_min_log_std, cfg.sac_max_log_std

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """The deterministic action (TD3) or the squashed mean (SAC)."""
        out = self.net(feat)
        if self.sac:
            out = out.chunk(2, dim=-1)[0]
        return torch.tanh(out)

    def sample(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAC: a reparameterised action and its log-probability."""
        mean, log_std = self.net(feat).chunk(2, dim=-1)
        log_std = log_std.clamp(self.min_log_std, self.max_log_std)
        u = mean + log_std.exp() * torch.randn_like(mean)
        a = torch.tanh(u)
        logp = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)  # tanh correction
        return a, logp


def flatten_parameters(module: nn.Module, with_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Move every parameter of ``module`` into one contiguous tensor (and its gradient into
    another), the parameters becoming views of it. Optimiser steps and target-network updates
    then cost a handful of tensor operations instead of a few per parameter, which is most of
    an update's time for the small networks a CPU run affords."""
    params = [p for p in module.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in params]) if params else torch.zeros(0)
    grad = torch.zeros_like(flat) if with_grad else None
    i = 0
    for p in params:
        n = p.numel()
        p.data = flat[i : i + n].view_as(p)
        if with_grad:
            p.grad = grad[i : i + n].view_as(p)
        i += n
    return flat, grad


class FlatAdam:
    """Adam (Kingma and Ba; torch.optim.Adam's update, no weight decay) on a flattened module.

    Gradients accumulate in place into the flat gradient buffer (never set them to None:
    ``zero_grad`` zeroes the buffer); ``clip_grad_norm`` clips the global norm."""

    def __init__(self, module: nn.Module, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.grad = flatten_parameters(module)
        self.lr, self.beta1, self.beta2, self.eps = float(lr), betas[0], betas[1], float(eps)
        self.m = torch.zeros_like(self.param)
        self.v = torch.zeros_like(self.param)
        self.t = 0

    def zero_grad(self) -> None:
        self.grad.zero_()

    def reset(self) -> None:
        """Forget the moment estimates (as a freshly built optimiser)."""
        self.m.zero_()
        self.v.zero_()
        self.t = 0

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        norm = self.grad.norm()
        self.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))
        return norm

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.m.lerp_(self.grad, 1 - b1)
        self.v.mul_(b2).addcmul_(self.grad, self.grad, value=1 - b2)
        denom = (self.v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.t))

    def state_dict(self) -> dict:
        return {"m": self.m.clone(), "v": self.v.clone(), "t": self.t, "lr": self.lr}

    def load_state_dict(self, s: dict) -> None:
        self.m.copy_(s["m"])
        self.v.copy_(s["v"])
        self.t, self.lr = int(s["t"]), float(s["lr"])


class FlatTarget:
    """A target network kept as a flat copy of its source, updated by Polyak averaging."""

    def __init__(self, source: nn.Module):
        self.module = copy.deepcopy(source).requires_grad_(False)
        self.flat, _ = flatten_parameters(self.module, with_grad=False)

    @torch.no_grad()
    def update(self, source_flat: torch.Tensor, tau: float) -> None:
        self.flat.lerp_(source_flat, tau)


# ------------------------------------------------------------------------ agent


class DAC:
    """Networks, optimisers and one update step of DAC."""

    def __init__(self, obs_shape, act_dim: int, cfg: Config, device, mean=None, std=None):
        self.cfg, self.device, self.act_dim = cfg, device, act_dim
        self.critic = Critic(obs_shape, act_dim, cfg, mean, std).to(device)
        feat_dim = self.critic.feat_dim
        self.actor = Actor(feat_dim, act_dim, cfg).to(device)
        disc_dim = feat_dim + (act_dim if cfg.disc_input == "sa" else 0)
        self.disc = Discriminator(disc_dim, cfg.disc_hidden, act=cfg.disc_activation).to(device)
        self.critic_opt = FlatAdam(self.critic, cfg.critic_lr)
        self.actor_opt = FlatAdam(self.actor, cfg.actor_lr)
        self.disc_opt = FlatAdam(self.disc, cfg.disc_lr)
        self._critic_target = FlatTarget(self.critic)
        self._actor_target = FlatTarget(self.actor)
        self.critic_target, self.actor_target = self._critic_target.module, self._actor_target.module
        self._actor_ema = FlatTarget(self.actor) if cfg.eval_ema_tau > 0 else None
        self._alpha = nn.Module()  # SAC's entropy temperature, log-parameterised
        self._alpha.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.sac_init_alpha), device=device))
        self.alpha_opt = FlatAdam(self._alpha, cfg.sac_alpha_lr)
        self.log_alpha = self._alpha.log_alpha
        self.target_entropy = -float(act_dim)
        self.updates = 0  # critic updates
        self.actor_updates = 0
        self.stats: dict[str, torch.Tensor] = {}

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
            "actor": self.actor.state_dict(), "actor_target": self.actor_target.state_dict(),
            "disc": self.disc.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(), "disc_opt": self.disc_opt.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(), "alpha_opt": self.alpha_opt.state_dict(),
            "updates": self.updates, "actor_updates": self.actor_updates,
            **({"actor_ema": self._actor_ema.module.state_dict()} if self._actor_ema else {}),
            "stats": {k: v.detach().clone() for k, v in self.stats.items()},
        }

    def load_state_dict(self, s: dict) -> None:
        for name in ("critic", "critic_target", "actor", "actor_target", "disc", "critic_opt",
                     "actor_opt", "disc_opt", "alpha_opt"):
            getattr(self, name).load_state_dict(s[name])
        with torch.no_grad():
            self.log_alpha.copy_(s["log_alpha"])
        self.updates, self.actor_updates = int(s["updates"]), int(s["actor_updates"])
        if self._actor_ema is not None:
            self._actor_ema.module.load_state_dict(s["actor_ema"])
        self.stats = dict(s["stats"])

    # -- acting --------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions for a batch of (non-absorbing) observations."""
        o = torch.as_tensor(np.ascontiguousarray(obs), device=self.device)
        feat = self.critic.features(o, torch.zeros(o.shape[0], device=self.device))
        return self.actor(feat).cpu().numpy()

    @torch.no_grad()
    def act_eval(self, obs: np.ndarray) -> np.ndarray:
        """The evaluation policy: the actor, or its moving average (``eval_ema_tau``)."""
        if self._actor_ema is None:
            return self.act(obs)
        o = torch.as_tensor(np.ascontiguousarray(obs), device=self.device)
        feat = self.critic.features(o, torch.zeros(o.shape[0], device=self.device))
        return self._actor_ema.module(feat).cpu().numpy()

    @torch.no_grad()
    def sample_action(self, obs: np.ndarray) -> np.ndarray:
        """SAC: actions sampled from the policy (torch's generator)."""
        o = torch.as_tensor(np.ascontiguousarray(obs), device=self.device)
        feat = self.critic.features(o, torch.zeros(o.shape[0], device=self.device))
        return self.actor.sample(feat)[0].cpu().numpy()

    # -- learning ------------------------------------------------------------------------------
    def _to_t(self, batch: dict) -> dict:
        return {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}

    def _disc_x(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.cat([feat, action], dim=-1) if self.cfg.disc_input == "sa" else feat

    def update(self, batch: dict, expert: dict | None, n_policy: int | None = None) -> None:
        """One agent update (and a discriminator update when ``expert`` is given). Only the
        first ``n_policy`` rows of ``batch`` (all by default) are the discriminator's negatives."""
        cfg = self.cfg
        b = self._to_t(batch)
        obs, nobs = b["obs"], b["next_obs"]
        if self.critic.encoder.pixels and cfg.augment:
            obs, nobs = random_shift(obs, cfg.shift_pad), random_shift(nobs, cfg.shift_pad)
        act, ab, nab = b["action"], b["absorbing"], b["next_absorbing"]
        feat = self.critic.features(obs, ab)
        policy_x = self._disc_x(feat.detach(), act)
        bc = None
        if expert is not None:
            e = self._to_t(expert)
            eobs = e["obs"]
            if self.critic.encoder.pixels and cfg.augment:
                eobs = random_shift(eobs, cfg.shift_pad)
            with torch.no_grad():
                efeat = self.critic.features(eobs, e["absorbing"])
            expert_x = self._disc_x(efeat, e["action"])
            bc = (efeat, e["action"], 1.0 - e["absorbing"])
            neg = policy_x[:n_policy]
            bce, acc = bce_loss(self.disc, expert_x, neg, expert_weight=e["weight"])
            gp = gradient_penalty(self.disc, expert_x, neg)
            loss = bce + cfg.gp_weight * gp
            self.disc_opt.zero_grad()
            loss.backward()
            self.disc_opt.step()
            self.stats.update(disc_loss=bce.detach(), disc_acc=acc, disc_gp=gp.detach())

        with torch.no_grad():
            reward = reward_from_logits(self.disc(policy_x), cfg.reward_form)
            if "seq_obs" in b:  # n-step: discounted sum over the window, then bootstrap
                reward, discount = self._window_return(b, reward)
            else:
                discount = torch.full_like(reward, cfg.gamma)
            nfeat = self.critic_target.features(nobs, nab)
            keep = (1.0 - nab).unsqueeze(-1)  # the absorbing state only knows the zero action
            if cfg.agent == "td3":
                noise = (torch.randn_like(act) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
                nact = ((self.actor_target(nfeat) + noise).clamp(-1.0, 1.0)) * keep
                q_next = self.critic_target(nfeat, nact).min(0).values
            else:
                nact, nlogp = self.actor.sample(nfeat)
                nact = nact * keep
                q_next = self.critic_target(nfeat, nact).min(0).values
                q_next = q_next - self.log_alpha.exp() * nlogp * (1.0 - nab)
            not_done = 1.0 - b["done"] if not cfg.absorbing else torch.ones_like(reward)
            target = reward + discount * not_done * q_next
        q = self.critic(feat, act)
        critic_loss = (q - target.unsqueeze(0)).pow(2).mean(1).sum()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        self.updates += 1
        self.stats.update(critic_loss=critic_loss.detach(), q_mean=q.detach().mean(),
                          train_reward=reward.mean())

        if self.updates % cfg.policy_delay == 0:
            if self.updates >= cfg.actor_delay:
                self._update_actor(feat.detach(), ab, bc)
            self._critic_target.update(self.critic_opt.param, cfg.tau)
            self._actor_target.update(self.actor_opt.param, cfg.tau)

    def _window_return(self, b: dict, first_reward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """n-step: ``sum_k gamma^k r_k`` over each window's valid steps (step 0's reward given;
        ``seq_*`` hold steps 1..n-1) and the bootstrap discount ``gamma^m``, m its length."""
        seq_obs, valid = b["seq_obs"], b["seq_valid"]
        B, K = valid.shape
        obs = seq_obs.reshape(B * K, *seq_obs.shape[2:])
        if self.critic.encoder.pixels and self.cfg.augment:
            obs = random_shift(obs, self.cfg.shift_pad)
        feat = self.critic.features(obs, b["seq_absorbing"].reshape(-1))
        x = self._disc_x(feat, b["seq_action"].reshape(B * K, -1))
        rest = reward_from_logits(self.disc(x), self.cfg.reward_form).reshape(B, K) * valid
        r = torch.cat([first_reward.unsqueeze(1), rest], dim=1)
        powers = self.cfg.gamma ** torch.arange(K + 1, device=r.device, dtype=r.dtype)
        return (r * powers).sum(1), self.cfg.gamma ** (1.0 + valid.sum(1))

    def bc_step(self, expert: dict) -> torch.Tensor:
        """One BC step on the actor: MSE of its deterministic action to the expert's (non-absorbing
        expert states only). Updates the actor target to the same weights."""
        e = self._to_t(expert)
        obs = e["obs"]
        if self.critic.encoder.pixels and self.cfg.augment:
            obs = random_shift(obs, self.cfg.shift_pad)
        with torch.no_grad():
            feat = self.critic.features(obs, e["absorbing"])
        loss = self._bc_loss(feat, e["action"], 1.0 - e["absorbing"])
        self.actor_opt.zero_grad()
        loss.backward()
        self.actor_opt.step()
        self._actor_target.flat.copy_(self.actor_opt.param)
        if self._actor_ema is not None:
            self._actor_ema.flat.copy_(self.actor_opt.param)
        return loss.detach()

    def _bc_loss(self, feat: torch.Tensor, action: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Mean (over the weight ``w``) squared error of the deterministic action to ``action``."""
        err = (self.actor(feat) - action).pow(2).sum(-1)
        return (err * w).sum() / w.sum().clamp(min=1.0)

    def _update_actor(self, feat: torch.Tensor, ab: torch.Tensor, bc=None) -> None:
        cfg = self.cfg
        w = 1.0 - ab  # no actor loss on absorbing states
        denom = w.sum().clamp(min=1.0)
        if cfg.agent == "td3":
            q = self.critic(feat, self.actor(feat))[0]
            actor_loss = -(q * w).sum() / denom
        else:
            a, logp = self.actor.sample(feat)
            q = self.critic(feat, a).min(0).values
            alpha = self.log_alpha.exp().detach()
            actor_loss = ((alpha * logp - q) * w).sum() / denom
        if cfg.bc_weight > 0 and bc is not None:
            bc_loss = self._bc_loss(*bc)
            actor_loss = actor_loss + cfg.bc_weight * bc_loss
            self.stats["bc_loss"] = bc_loss.detach()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        if cfg.actor_grad_clip > 0:
            self.actor_opt.clip_grad_norm(cfg.actor_grad_clip)
        self.actor_opt.step()
        if self._actor_ema is not None:
            self._actor_ema.update(self.actor_opt.param, cfg.eval_ema_tau)
        self.actor_updates += 1
        self.stats["actor_loss"] = actor_loss.detach()
        if cfg.agent == "sac":
            alpha_loss = -(self.log_alpha * ((logp.detach() + self.target_entropy) * w)).sum() / denom
            self.alpha_opt.zero_grad()
            alpha_loss.backward()
            self.alpha_opt.step()
            self.stats["alpha"] = self.log_alpha.detach().exp()


# ------------------------------------------------------------------------ training loop


def sample_batch(replay: ReplayBuffer, rng: np.random.Generator, batch_size: int, n_step: int) -> dict:
    """A uniform batch of transitions; with ``n_step > 1`` also the next ``n_step - 1`` steps of
    each one's episode (``seq_obs``, ``seq_action``, ``seq_absorbing``, ``seq_valid``) and, as
    ``next_obs`` / ``next_absorbing`` / ``done``, those of the window's last valid step."""
    idx = replay.sample_indices(rng, batch_size)
    batch = replay.get(idx)
    if n_step <= 1:
        return batch
    rows, valid = replay.windows(idx, n_step)
    rest = replay.get(rows[:, 1:].reshape(-1))
    shape = (len(idx), n_step - 1)
    for k in ("obs", "action", "absorbing"):
        batch["seq_" + k] = rest[k].reshape(*shape, *rest[k].shape[1:])
    batch["seq_valid"] = valid[:, 1:].astype(np.float32)
    end = rows[np.arange(len(idx)), valid.sum(1) - 1]
    for k in ("next_obs", "next_absorbing", "done"):
        batch[k] = replay.data[k][end]
    return batch


def with_demo_rows(batch: dict, demo_rows: dict, idx: np.ndarray) -> dict:
    """``batch`` followed by the demo transitions ``idx`` (one-step rows: an n-step window of
    a demo row has no further valid step; its ``last`` flag is 1)."""
    n = len(idx)
    out = {}
    for k, v in batch.items():
        if k in demo_rows:
            extra = demo_rows[k][idx]
        elif k == "last":
            extra = np.ones(n, v.dtype)
        else:  # seq_*: zeros, seq_valid 0
            extra = np.zeros((n, *v.shape[1:]), v.dtype)
        out[k] = np.concatenate([v, extra.astype(v.dtype, copy=False)])
    return out


def _obs_stats(demos, obs_key: str, cfg: Config):
    if obs_key != "state" or not cfg.normalize_obs:
        return None, None
    s = np.concatenate([t.observations[obs_key] for t in demos]).astype(np.float64)
    return s.mean(0).astype(np.float32), np.maximum(s.std(0), cfg.obs_std_min).astype(np.float32)


def train(run, cfg: Config) -> None:
    dev = run.device
    obs_shape, act_dim = run.obs_shape, run.act_dim
    pixels = len(obs_shape) == 3
    obs_dtype = np.uint8 if pixels else np.float32
    total_steps, eval_every = task_budget(cfg, run.task)
    mean, std = _obs_stats(run.demos, run.obs_key, cfg)
    agent = DAC(obs_shape, act_dim, cfg, dev, mean, std)

    # Expert transitions (their subsampling offsets come from the run's generator).
    expert = expert_transitions(run.demos, run.obs_key, cfg.absorbing, cfg.subsample, run.rng)
    expert["obs"] = expert["obs"].astype(obs_dtype)
    expert["next_obs"] = expert["next_obs"].astype(obs_dtype)
    demo_rows = {k: expert[k] for k in ("obs", "action", "next_obs", "done", "absorbing",
                                        "next_absorbing")}
    expert = {k: expert[k] for k in ("obs", "action", "absorbing", "weight")}
    n_expert = len(expert["action"])
    n_demo_rows = int(round(cfg.demo_ratio * cfg.batch_size))
    n_policy = cfg.batch_size - n_demo_rows

    fields = {"obs": (obs_shape, obs_dtype), "action": ((act_dim,), np.float32),
              "next_obs": (obs_shape, obs_dtype), "done": ((), np.float32),
              "absorbing": ((), np.float32), "next_absorbing": ((), np.float32),
              "last": ((), np.float32)}
    capacity = min(cfg.replay_size, 2 * total_steps + 2)
    replay = ReplayBuffer(capacity, fields)

    env_steps, episodes, credit, next_eval = 0, 0, 0.0, eval_every
    state = run.restore()
    if state is not None:
        agent.load_state_dict(state["agent"])
        replay.load_state_dict(state["replay"])
        env_steps, episodes = state["env_steps"], state["episodes"]
        credit, next_eval = state["credit"], state["next_eval"]
        if env_steps >= total_steps and run.rows:
            return

    def evaluate_and_checkpoint() -> None:
        stats = {k: float(v) for k, v in agent.stats.items()}
        run.check_finite(stats, agent.updates)
        run.evaluate(agent.act_eval, env_steps, agent.updates,
                     extra={"episodes": episodes, "actor_updates": agent.actor_updates, **stats})
        run.checkpoint({"agent": agent.state_dict(), "replay": replay.state_dict(),
                        "env_steps": env_steps, "episodes": episodes, "credit": credit,
                        "next_eval": next_eval})

    rng = run.rng
    if state is None and cfg.bc_init_steps:
        for _ in range(cfg.bc_init_steps):
            idx = rng.integers(0, n_expert, size=cfg.batch_size)
            agent.stats["bc_loss"] = agent.bc_step({k: v[idx] for k, v in expert.items()})
        agent.actor_opt.reset()  # the adversarial phase starts with fresh Adam moments

    env = run.make_env()
    with run.progress(total_steps, initial=env_steps) as bar:
        while env_steps < total_steps:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            done = False
            while not done:
                if env_steps < cfg.random_steps:
                    action = rng.uniform(-1.0, 1.0, size=act_dim).astype(np.float32)
                elif cfg.agent == "td3":
                    action = agent.act(obs[None])[0]
                    if cfg.expl_noise > 0:
                        action = action + cfg.expl_noise * rng.standard_normal(act_dim)
                    action = np.clip(action, -1.0, 1.0).astype(np.float32)
                else:
                    action = agent.sample_action(obs[None])[0]
                next_obs, _, terminated, truncated, _ = env.step(action)
                done = bool(terminated or truncated)
                trs = step_transitions(obs, action, next_obs, bool(terminated), cfg.absorbing)
                for j, tr in enumerate(trs):
                    replay.add(**tr, last=float(done and j == len(trs) - 1))
                obs = next_obs
                env_steps += 1
                bar.update(1)
                if env_steps >= cfg.learning_starts:
                    credit += cfg.updates_per_step
                    while credit >= 1.0:
                        credit -= 1.0
                        batch = sample_batch(replay, rng, n_policy, cfg.n_step)
                        if n_demo_rows:
                            batch = with_demo_rows(batch, demo_rows,
                                                   rng.integers(0, n_expert, size=n_demo_rows))
                        ebatch = None
                        if agent.updates % cfg.disc_every == 0:
                            ebatch = {k: v[rng.integers(0, n_expert, size=cfg.batch_size)]
                                      for k, v in expert.items()}
                        agent.update(batch, ebatch, n_policy)
            episodes += 1
            if env_steps >= next_eval or env_steps >= total_steps:
                while next_eval <= env_steps:
                    next_eval += eval_every
                evaluate_and_checkpoint()
    env.close()


# Policies ``eval_policy`` can rebuild: the one the run's evaluations used (the actor, or its
# moving average with ``eval_ema_tau``) and the live training actor.
EVAL_POLICIES = ("eval", "live")


def eval_policy(state: dict, cfg: Config, obs_shape, act_dim: int, task, device, which: str = "eval"):
    """A checkpoint's evaluation policy (``which="eval"``) or its live actor (``"live"``)."""
    agent = DAC(obs_shape, act_dim, cfg, device)
    agent.load_state_dict(state["agent"])
    return agent.act_eval if which == "eval" else agent.act
