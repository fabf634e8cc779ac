"""DAC: Discriminator-Actor-Critic (Kostrikov et al., ICLR 2019), from states or 64x64 pixels.

An off-policy adversarial imitation learner. A discriminator ``D(s, a)`` (MLP 2 x 256 tanh) is
trained with binary cross-entropy, expert = 1 and replay = 0, plus a gradient penalty of weight 10
on random interpolates of expert and replay inputs. A TD3 agent learns from the reward
``log D - log(1 - D)`` (= the discriminator's logit), recomputed with the current discriminator on
every sampled batch. Environment rewards are never used.

Absorbing states (the paper's Section 4.2). Every (encoded) observation gets one indicator
dimension: 0 for a real state, 1 for the absorbing state (whose other features are zero). An
episode that *terminates* (a real terminal, not the time limit) moves to the absorbing state,
which loops on itself under the zero action: a terminating step adds ``(s_T, a_T) -> s_abs`` and
``(s_abs, 0) -> s_abs`` to the replay, and the demos get the same (``algorithms.demos``). The
critic bootstraps everywhere (no done mask); at an absorbing next state the target action is the
zero action; the actor loss skips absorbing states. A *truncated* episode keeps its real next
observation and bootstraps through it. With ``absorbing=False`` terminal transitions use the
usual done mask instead.

Faithful to the reference (google-research/google-research ``dac/``; its defaults are ours): TD3
with twin critics (400-300 ReLU), target policy smoothing (noise 0.2 clipped at 0.5), delayed
actor and target updates every 2 critic updates after the first ``actor_delay`` = 1000 critic
updates, tau 0.005, batch 100, Gaussian exploration noise 0.1, actor gradients clipped at norm 40,
critic/actor/discriminator lr 1e-3 (Adam), one discriminator update per agent update, and:

- the actor's learning rate halves every ``actor_lr_halve_every`` = 1e5 *environment* steps
  (``actor_lr * 0.5 ** (env_steps // 1e5)``, ``actor_lr_at``); the critic's and the
  discriminator's stay constant,
- orthogonal initialisation with zero biases (``orthogonal_init``): gain 1 for every layer of the
  actor, the critics and the discriminator, except the actor's last layer, gain 0.01,
- uniform random actions until the first actor update, and at least for the first
  ``random_steps`` = 1000 environment steps (the reference acts at random while its replay holds
  fewer than 1000 rows *or* its actor has not been updated yet; it picks 1e4 rows by env name for
  HalfCheetah and Ant, which config/locomotion.yaml sets per task),
- the demos subsampled: every ``subsample`` = 20th step of each demo from a random offset per
  demo; the absorbing self-loop of a terminating demo is always kept, with weight 1/20 in the
  discriminator's loss, while the step into the absorbing state is subsampled like any other
  (``algorithms.demos``; the reference adds the absorbing transitions before subsampling and
  exempts only the self-loops from it).

Departures: updates come after every environment step from step ``learning_starts`` = 1000 on
(the reference updates after each episode, as many times as the episode had steps, once its
replay holds 1000 rows, absorbing rows included), and state observations are clipped at +-10
(the shared standardiser's clip). Otherwise they reach the networks raw, as in the reference;
``normalize_obs`` standardises them with the demos' statistics instead
(``algorithms.obs_norm``, the ``dac-std`` variant). That puts the zeroed absorbing state at the
demos' mean, where the discriminator pays it more than a poor live step, and on Ant the policy
then learns to end every episode at once (benchmarks/RESULTS.md, "Why DAC ends its episodes").
Switches for named variants, off by default (not in the paper; RESULTS measures them): SAC as
the learner (``agent="sac"``, ``algorithms.sac``), demo transitions in the agent's batches
(``demo_ratio``, DDPGfD / SQIL style), evaluation with a moving average of the actor's weights
(``eval_ema_tau``).

Pixels: the pixel trunk (``algorithms.nets.PixelTrunk``, PyTorch's default initialisation) belongs
to the critic and is trained by the critic loss only (DrQ style); the actor and the discriminator
read its detached features; random-shift augmentation (``augment``) applies to every sampled frame.

Episodes run to their end; evaluations and checkpoints come at episode boundaries
(``algorithms.clock``), so a checkpoint never holds a mid-episode environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from algorithms import sac
from algorithms.clock import EvalClock, IntervalMeans, reset_seed
from algorithms.demos import transitions
from algorithms.discriminator import Discriminator, bce_loss, gradient_penalty
from algorithms.nets import EnsembleLinear, EnsembleMLP, PixelTrunk, mlp, random_shift
from algorithms.obs_norm import Standardizer, demo_statistics
from algorithms.optim import FlatAdam, FlatTarget
from algorithms.replay import ReplayBuffer
from cmil_bench.config import BaseConfig
from cmil_bench.errors import UserError


@dataclass
class Config(BaseConfig):
    # Budget (environment steps) and evaluation.
    total_steps: int = 200_000
    eval_every: int = 10_000
    # Learner: "td3" (the paper's) or "sac" (algorithms/sac.py; a variant switch).
    agent: str = "td3"
    actor_hidden: tuple[int, ...] = (400, 300)
    critic_hidden: tuple[int, ...] = (400, 300)
    activation: str = "relu"
    actor_lr: float = 1e-3
    # The actor's learning rate halves every this many environment steps (0 = constant); the
    # critic's and the discriminator's never change.
    actor_lr_halve_every: int = field(default=100_000, metadata={"zero_off": True})
    critic_lr: float = 1e-3
    discount: float = 0.99
    tau: float = 0.005
    batch_size: int = 100
    # TD3 target policy smoothing and delayed actor/target updates.
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    # Gaussian exploration noise (TD3) on the policy's action.
    expl_noise: float = 0.1
    actor_grad_clip: float = 40.0
    # Uniform random actions until the first actor update, and at least for the first
    # ``random_steps`` environment steps; no updates before ``learning_starts`` steps.
    random_steps: int = 1_000
    learning_starts: int = 1_000
    # Critic updates before the first actor update (the reference's policy_updates_delay).
    actor_delay: int = 1_000
    # Variant switch. Demo transitions in the agent's batches (not in the paper; 0 = off): this
    # fraction of every critic and actor batch comes from the demos, rewarded by the
    # discriminator like replay rows. The discriminator's negatives stay replay rows only.
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
    # Absorbing states for terminating episodes (see the module docstring).
    absorbing: bool = True
    # Keep every k-th demo transition (random offset per demo; absorbing self-loops always, with
    # weight 1/k); 1 keeps all.
    subsample: int = 20
    # Variant switch. Standardise state observations with the demos' statistics
    # (algorithms/obs_norm.py); the reference feeds raw states.
    normalize_obs: bool = False
    # Pixels only.
    cnn_depth: int = 32
    feature_dim: int = 50
    augment: bool = True
    shift_pad: int = 4
    # Variant switch. Evaluation policy (not in the paper; 0 = off): a moving average of the actor's
    # weights, updated with this rate after every actor update; training uses the live actor.
    eval_ema_tau: float = 0.0

    def __post_validate__(self):
        if self.agent not in ("td3", "sac"):
            raise UserError(f"dac: agent must be 'td3' or 'sac', got {self.agent!r}")
        for name in ("total_steps", "batch_size", "policy_delay", "subsample", "replay_size",
                     "feature_dim", "cnn_depth"):
            if getattr(self, name) <= 0:
                raise UserError(f"dac: {name} must be positive, got {getattr(self, name)!r}")
        for name in ("random_steps", "learning_starts", "actor_delay", "gp_weight", "expl_noise",
                     "policy_noise", "noise_clip", "shift_pad", "actor_lr_halve_every"):
            if getattr(self, name) < 0:
                raise UserError(f"dac: {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.demo_ratio < 1:
            raise UserError(f"dac: demo_ratio must be in [0, 1), got {self.demo_ratio!r}")
        if not 0 <= self.eval_ema_tau <= 1:
            raise UserError(f"dac: eval_ema_tau must be in [0, 1], got {self.eval_ema_tau!r}")
        if not 0 < self.tau <= 1:
            raise UserError(f"dac: tau must be in (0, 1], got {self.tau!r}")
        if not 0 <= self.discount < 1:
            raise UserError(f"dac: discount must be in [0, 1), got {self.discount!r}")


PRESETS = {
    # Scale only (cmil_bench.config.SCALE_KEYS): the default sweep's matched budget and warm-up.
    "cpu": {"total_steps": 2_400, "eval_every": 600, "actor_hidden": (64, 64), "critic_hidden": (64, 64),
            "disc_hidden": (64, 64), "random_steps": 300, "learning_starts": 300, "actor_delay": 300},
    # A few seconds, for tests.
    "smoke": {"total_steps": 600, "eval_every": 300, "eval_episodes": 2, "random_steps": 50,
              "learning_starts": 50, "actor_delay": 10, "batch_size": 16, "actor_hidden": (32,),
              "critic_hidden": (32,), "disc_hidden": (32,), "cnn_depth": 4, "feature_dim": 16,
              "replay_size": 1_000},
}


# ------------------------------------------------------------------------ absorbing states


def step_transitions(obs, action, next_obs, terminated: bool, absorbing: bool = True) -> list[dict]:
    """The replay rows one environment step adds (the layout of ``algorithms.demos.transitions``).

    ``terminated`` is a real terminal (pass ``False`` for a truncation). With ``absorbing`` a
    terminal step becomes ``(obs, action) -> s_abs`` followed by the self-loop ``(s_abs, 0) ->
    s_abs``; the absorbing observation is all zeros with indicator 1. Without it, a terminal step
    is stored with ``terminated = 1`` (the critic's done mask).
    """
    obs = np.asarray(obs)
    action = np.asarray(action, dtype=np.float32)
    if terminated and absorbing:
        zero_obs = np.zeros_like(obs)
        return [
            dict(obs=obs, action=action, next_obs=zero_obs, terminated=0.0, absorbing=0.0,
                 next_absorbing=1.0),
            dict(obs=zero_obs, action=np.zeros_like(action), next_obs=zero_obs, terminated=0.0,
                 absorbing=1.0, next_absorbing=1.0),
        ]
    return [dict(obs=obs, action=action, next_obs=np.asarray(next_obs),
                 terminated=float(bool(terminated)), absorbing=0.0, next_absorbing=0.0)]


def with_indicator(features: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
    """Append the absorbing indicator; an absorbing state's features are zeroed."""
    flag = flag.reshape(-1, 1).to(features.dtype)
    return torch.cat([features * (1.0 - flag), flag], dim=-1)


# ------------------------------------------------------------------------ networks


def orthogonal_init(net: nn.Module, last_gain: float = 1.0) -> None:
    """The reference's initialisation of an MLP (``nn.Linear`` layers, or the stacked
    ``EnsembleLinear`` layers of the twin critics, each member on its own): orthogonal weights of
    gain 1, ``last_gain`` on the last layer, zero biases."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Linear, EnsembleLinear))]
    for i, layer in enumerate(layers):
        gain = last_gain if i == len(layers) - 1 else 1.0
        with torch.no_grad():
            if isinstance(layer, EnsembleLinear):  # weight (members, in, out)
                for w in layer.weight:
                    nn.init.orthogonal_(w, gain)
            else:
                nn.init.orthogonal_(layer.weight, gain)
            layer.bias.zero_()


class Critic(nn.Module):
    """Observation encoder (standardised states, or the pixel trunk) + absorbing indicator, and
    twin Q networks with stacked weights: ``forward`` returns (2, B)."""

    def __init__(self, obs_shape, act_dim: int, cfg: Config, mean=None, std=None):
        super().__init__()
        pixels = len(obs_shape) == 3
        self.pixels = pixels
        self.encoder = (PixelTrunk(obs_shape, cfg.cnn_depth, cfg.feature_dim) if pixels
                        else Standardizer(int(obs_shape[0]), mean, std))
        self.feat_dim = (cfg.feature_dim if pixels else int(obs_shape[0])) + 1
        self.q = EnsembleMLP(2, self.feat_dim + act_dim, cfg.critic_hidden, 1, cfg.activation)
        orthogonal_init(self.q)

    def features(self, obs: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
        return with_indicator(self.encoder(obs), flag)

    def forward(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q(torch.cat([feat, action], dim=-1)).squeeze(-1)


class Actor(nn.Module):
    """TD3's deterministic actor: tanh(MLP(features))."""

    def __init__(self, feat_dim: int, act_dim: int, cfg: Config):
        super().__init__()
        self.net = mlp(feat_dim, cfg.actor_hidden, act_dim, act=cfg.activation)
        orthogonal_init(self.net, last_gain=0.01)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(feat))


# ------------------------------------------------------------------------ agent


class DAC:
    """Networks, optimisers and one update step of DAC."""

    def __init__(self, obs_shape, act_dim: int, cfg: Config, device, mean=None, std=None):
        self.cfg, self.device, self.act_dim = cfg, device, act_dim
        self.critic = Critic(obs_shape, act_dim, cfg, mean, std).to(device)
        feat_dim = self.critic.feat_dim
        if cfg.agent == "sac":
            self.actor = sac.GaussianActor(feat_dim, act_dim, cfg.actor_hidden, cfg.activation,
                                           cfg.sac_min_log_std, cfg.sac_max_log_std).to(device)
            orthogonal_init(self.actor.net, last_gain=0.01)  # as TD3's actor
        else:
            self.actor = Actor(feat_dim, act_dim, cfg).to(device)
        self.disc = Discriminator(feat_dim + act_dim, cfg.disc_hidden, act=cfg.disc_activation).to(device)
        orthogonal_init(self.disc.net)
        self.critic_opt = FlatAdam(self.critic, cfg.critic_lr)
        self.actor_opt = FlatAdam(self.actor, cfg.actor_lr)
        self.disc_opt = FlatAdam(self.disc, cfg.disc_lr)
        self._critic_target = FlatTarget(self.critic)
        self._actor_target = FlatTarget(self.actor)
        self.critic_target, self.actor_target = self._critic_target.module, self._actor_target.module
        self._actor_ema = FlatTarget(self.actor) if cfg.eval_ema_tau > 0 else None
        self.temperature = (sac.Temperature(cfg.sac_init_alpha, cfg.sac_alpha_lr, act_dim, device)
                            if cfg.agent == "sac" else None)
        self.updates = 0  # critic updates
        self.actor_updates = 0
        self.log = IntervalMeans()

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        s = {name: getattr(self, name).state_dict()
             for name in ("critic", "critic_target", "actor", "actor_target", "disc", "critic_opt",
                          "actor_opt", "disc_opt", "log")}
        s.update(updates=self.updates, actor_updates=self.actor_updates)
        if self._actor_ema is not None:
            s["actor_ema"] = self._actor_ema.module.state_dict()
        if self.temperature is not None:
            s["temperature"] = self.temperature.state_dict()
        return s

    def load_state_dict(self, s: dict) -> None:
        for name in ("critic", "critic_target", "actor", "actor_target", "disc", "critic_opt",
                     "actor_opt", "disc_opt", "log"):
            getattr(self, name).load_state_dict(s[name])
        self.updates, self.actor_updates = int(s["updates"]), int(s["actor_updates"])
        if self._actor_ema is not None:
            self._actor_ema.module.load_state_dict(s["actor_ema"])
        if self.temperature is not None:
            self.temperature.load_state_dict(s["temperature"])

    # -- acting --------------------------------------------------------------------------------
    def _features(self, obs: np.ndarray) -> torch.Tensor:
        o = torch.as_tensor(np.ascontiguousarray(obs), device=self.device)
        return self.critic.features(o, torch.zeros(o.shape[0], device=self.device))

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions of the live actor for a batch of (non-absorbing) observations."""
        return self.actor(self._features(obs)).cpu().numpy()

    @torch.no_grad()
    def act_eval(self, obs: np.ndarray) -> np.ndarray:
        """The evaluation policy: the actor, or its moving average (``eval_ema_tau``)."""
        if self._actor_ema is None:
            return self.act(obs)
        return self._actor_ema.module(self._features(obs)).cpu().numpy()

    @torch.no_grad()
    def explore(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A training action for one observation: TD3's action plus Gaussian noise (from ``rng``),
        or SAC's sample (torch's generator)."""
        if self.cfg.agent == "sac":
            return sac.sample_action(self.actor, self._features(obs[None]))[0]
        action = self.act(obs[None])[0]
        if self.cfg.expl_noise > 0:
            action = action + self.cfg.expl_noise * rng.standard_normal(self.act_dim)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # -- learning ------------------------------------------------------------------------------
    def _tensors(self, batch: dict) -> dict:
        return {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}

    def _augment(self, obs: torch.Tensor) -> torch.Tensor:
        return random_shift(obs, self.cfg.shift_pad) if self.critic.pixels and self.cfg.augment else obs

    def update(self, batch: dict, expert: dict | None, n_policy: int | None = None) -> None:
        """One agent update (and a discriminator update when ``expert`` is given). Only the
        first ``n_policy`` rows of ``batch`` (all by default) are the discriminator's negatives."""
        cfg = self.cfg
        b = self._tensors(batch)
        obs, nobs = self._augment(b["obs"]), self._augment(b["next_obs"])
        act, ab, nab = b["action"], b["absorbing"], b["next_absorbing"]
        feat = self.critic.features(obs, ab)
        policy_x = torch.cat([feat.detach(), act], dim=-1)

        # Discriminator: expert = 1, replay = 0, gradient penalty on interpolates.
        if expert is not None:
            e = self._tensors(expert)
            with torch.no_grad():
                efeat = self.critic.features(self._augment(e["obs"]), e["absorbing"])
            expert_x = torch.cat([efeat, e["action"]], dim=-1)
            neg = policy_x[:n_policy]
            bce, acc = bce_loss(self.disc, expert_x, neg, expert_weight=e["weight"])
            gp = gradient_penalty(self.disc, expert_x, neg)
            self.disc_opt.zero_grad()
            (bce + cfg.gp_weight * gp).backward()
            self.disc_opt.step()
            self.log.add(disc_loss=bce, disc_acc=acc, disc_gp=gp)

        # Critic: the TD target with the discriminator's logit as the reward.
        with torch.no_grad():
            reward = self.disc(policy_x)
            nfeat = self.critic_target.features(nobs, nab)
            if cfg.agent == "sac":
                q_next = sac.next_value(self.critic_target, self.actor, nfeat, nab, self.temperature.alpha)
            else:  # TD3: target policy smoothing, zero action at the absorbing state
                noise = (torch.randn_like(act) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
                nact = (self.actor_target(nfeat) + noise).clamp(-1.0, 1.0) * (1.0 - nab).unsqueeze(-1)
                q_next = self.critic_target(nfeat, nact).min(0).values
            not_done = torch.ones_like(reward) if cfg.absorbing else 1.0 - b["terminated"]
            target = reward + cfg.discount * not_done * q_next
        q = self.critic(feat, act)
        critic_loss = (q - target.unsqueeze(0)).pow(2).mean(1).sum()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        self.updates += 1
        self.log.add(critic_loss=critic_loss, q_mean=q.detach().mean(), train_reward=reward.mean())

        # Delayed actor and target updates.
        if self.updates % cfg.policy_delay == 0:
            if self.updates >= cfg.actor_delay:
                self._update_actor(feat.detach(), ab)
            self._critic_target.update(self.critic_opt.param, cfg.tau)
            self._actor_target.update(self.actor_opt.param, cfg.tau)

    def _update_actor(self, feat: torch.Tensor, ab: torch.Tensor) -> None:
        cfg = self.cfg
        w = 1.0 - ab  # no actor loss on absorbing states
        if cfg.agent == "sac":
            actor_loss, logp = sac.actor_loss(self.critic, self.actor, feat, w, self.temperature.alpha)
        else:
            actor_loss = -(self.critic(feat, self.actor(feat))[0] * w).sum() / w.sum().clamp(min=1.0)
        self.actor_opt.zero_grad()
        actor_loss.backward()
        if cfg.actor_grad_clip > 0:
            self.actor_opt.clip_grad_norm(cfg.actor_grad_clip)
        self.actor_opt.step()
        if self._actor_ema is not None:
            self._actor_ema.update(self.actor_opt.param, cfg.eval_ema_tau)
        self.actor_updates += 1
        self.log.add(actor_loss=actor_loss)
        if cfg.agent == "sac":
            self.temperature.update(logp, w)
            self.log.add(alpha=self.temperature.alpha)


# ------------------------------------------------------------------------ training loop


def actor_lr_at(cfg: Config, env_steps: int) -> float:
    """The actor's learning rate for an update made after ``env_steps`` environment steps: halved
    every ``actor_lr_halve_every`` steps (the reference's ``actor_lr * 0.5 ** (steps // 1e5)``)."""
    if cfg.actor_lr_halve_every <= 0:
        return cfg.actor_lr
    return cfg.actor_lr * 0.5 ** (env_steps // cfg.actor_lr_halve_every)


def with_demo_rows(batch: dict, demo_rows: dict, idx: np.ndarray) -> dict:
    """``batch`` followed by the demo transitions ``idx``."""
    return {k: np.concatenate([v, demo_rows[k][idx].astype(v.dtype, copy=False)]) for k, v in batch.items()}


def train(run, cfg: Config) -> None:
    obs_shape, act_dim = run.obs_shape, run.act_dim
    pixels = len(obs_shape) == 3
    obs_dtype = np.uint8 if pixels else np.float32
    mean, std = demo_statistics(run.demos, run.obs_key) if cfg.normalize_obs and not pixels else (None, None)
    agent = DAC(obs_shape, act_dim, cfg, run.device, mean, std)

    fields = {"obs": (obs_shape, obs_dtype), "action": ((act_dim,), np.float32),
              "next_obs": (obs_shape, obs_dtype), "terminated": ((), np.float32),
              "absorbing": ((), np.float32), "next_absorbing": ((), np.float32)}
    replay = ReplayBuffer(min(cfg.replay_size, 2 * cfg.total_steps + 2), fields)

    # Demo transitions (their subsampling offsets come from the run's generator): the
    # discriminator's positives (``expert``) and, with ``demo_ratio``, rows of the agent's batches.
    demos = transitions(run.demos, run.obs_key, cfg.absorbing, cfg.subsample, run.rng)
    demos["obs"], demos["next_obs"] = demos["obs"].astype(obs_dtype), demos["next_obs"].astype(obs_dtype)
    demo_rows = {k: demos[k] for k in fields}
    expert = {k: demos[k] for k in ("obs", "action", "absorbing", "weight")}
    n_expert = len(expert["action"])
    n_demo_rows = int(round(cfg.demo_ratio * cfg.batch_size))
    n_policy = cfg.batch_size - n_demo_rows
    clock = EvalClock(cfg.total_steps, cfg.eval_every)

    env_steps, episodes = 0, 0
    state = run.restore()
    if state is not None:
        agent.load_state_dict(state["agent"])
        replay.load_state_dict(state["replay"])
        clock.load_state_dict(state["clock"])
        env_steps, episodes = state["env_steps"], state["episodes"]
        if clock.done(env_steps) and run.rows:
            return

    def evaluate_and_checkpoint() -> None:
        losses = agent.log.means()
        run.check_finite(losses, agent.updates)
        run.evaluate(agent.act_eval, env_steps, agent.updates,
                     extra={"episodes": episodes, "actor_updates": agent.actor_updates, **losses})
        run.checkpoint({"agent": agent.state_dict(), "replay": replay.state_dict(),
                        "clock": clock.state_dict(), "env_steps": env_steps, "episodes": episodes})

    rng = run.rng
    env = run.make_env()
    with run.progress(cfg.total_steps, initial=env_steps) as bar:
        while not clock.done(env_steps):
            obs, _ = env.reset(seed=reset_seed(rng))
            done = False
            while not done:
                if env_steps < cfg.random_steps or agent.actor_updates == 0:
                    action = rng.uniform(-1.0, 1.0, size=act_dim).astype(np.float32)
                else:
                    action = agent.explore(obs, rng)
                next_obs, _, terminated, truncated, _ = env.step(action)
                done = bool(terminated or truncated)
                for tr in step_transitions(obs, action, next_obs, bool(terminated), cfg.absorbing):
                    replay.add(**tr)
                obs = next_obs
                env_steps += 1
                bar.update(1)
                if env_steps >= cfg.learning_starts:
                    batch = replay.sample(rng, n_policy)
                    if n_demo_rows:
                        batch = with_demo_rows(batch, demo_rows, rng.integers(0, n_expert, size=n_demo_rows))
                    ebatch = {k: v[rng.integers(0, n_expert, size=cfg.batch_size)] for k, v in expert.items()}
                    agent.actor_opt.lr = actor_lr_at(cfg, env_steps)
                    agent.update(batch, ebatch, n_policy)
            episodes += 1
            if clock.due(env_steps):
                evaluate_and_checkpoint()
    env.close()


# Policies ``eval_policy`` can rebuild: the one the run's evaluations used (the actor, or its
# moving average with ``eval_ema_tau``) and the live training actor.
EVAL_POLICIES = ("eval", "live")


def eval_policy(state: dict, cfg: Config, obs_shape, act_dim: int, episode_len: int, device,  # noqa: ARG001
                which: str = "eval"):
    """A checkpoint's evaluation policy (``which="eval"``) or its live actor (``"live"``)."""
    agent = DAC(obs_shape, act_dim, cfg, device)
    agent.load_state_dict(state["agent"])
    return agent.act_eval if which == "eval" else agent.act
