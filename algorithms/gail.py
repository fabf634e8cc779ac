"""GAIL: generative adversarial imitation learning (Ho and Ermon, 2016) with a PPO generator,
from states or 64x64 pixels.

Each iteration
  1. collects a rollout of ``rollout_len`` steps in each of ``n_envs`` environments with the
     current Gaussian policy (every environment starts the rollout from ``reset(seed=...)``,
     seeds drawn from the run's generator; an episode that ends inside the rollout is reset the
     same way),
  2. trains the discriminator ``D(s, a)`` (MLP 2 x 100 tanh; binary cross-entropy with expert = 1
     and policy = 0, plus a gradient penalty of weight ``gp_weight`` on interpolates) for
     ``disc_epochs`` passes (``disc_warmup_epochs`` in the first ``disc_warmup_iters``
     iterations),
  3. relabels the rollout with the reward ``log D - log(1 - D)`` (= the logit), divided by a
     running standard deviation of the discounted return (``norm_reward``),
  4. runs PPO: GAE(lambda), advantages standardised once over the whole rollout
     (``normalize_advantages``), clipped surrogate objective, (clipped) value loss, entropy bonus,
     ``ppo_epochs`` passes over shuffled minibatches, global gradient clipping, optional linear
     learning-rate decay.
Time-limit ends (``truncated``) and the rollout's cut bootstrap with the value of the real next
observation; only ``terminated`` ends an episode with zero value.

Observations: ``obs_norm="running"`` standardises state observations with running statistics
(ikostrikov's VecNormalize, through the shared standardiser of ``algorithms.obs_norm``: its floor
and clip); they stay frozen during one iteration (the rollout, the discriminator and PPO all see
the same normalisation, expert states included) and absorb the rollout's observations at its end,
for the first ``obs_norm_iters`` = 11 iterations only: then they are frozen for good. (The
reference updates VecNormalize at every step and calls its ``eval()`` right after the rollout of
iteration j = 10, counting from 0, the end of the discriminator's warm-up: its statistics hold
the rollouts of iterations 0-10, as ours do from iteration 11 on.)
``"demo"`` uses the demos' fixed statistics, ``"none"`` raw states. Pixels: the pixel trunk
(``algorithms.nets.PixelTrunk``) feeds the actor and the critic; the discriminator reads its
detached features, so only PPO trains the encoder; random-shift augmentation (``augment``) applies
to the frames of every discriminator minibatch (not to PPO's, whose probability ratios must
compare the same inputs).

Faithful to ikostrikov/pytorch-a2c-ppo-acktr-gail's GAIL (Adam 3e-4, clip 0.2, 10 PPO epochs of
32 minibatches, advantages standardised over the rollout (eps 1e-5), GAE 0.95, discount 0.99,
value coefficient 0.5, gradient norm 0.5, clipped value loss, 64x64 tanh actor and critic with a
state-independent log-std; discriminator lr 1e-3, batch 128, 5 epochs per iteration after a
100-epoch warm-up in the first 10; reward normalised by the running std of the discounted return;
observation statistics frozen after the warm-up; demos subsampled, every ``subsample`` = 20th
step from a random offset per demo). Departures: several environments (``n_envs``) and rollouts
that restart from fresh resets (so that evaluations and checkpoints fall between iterations with
no environment state to save, and a resumed run continues exactly; with ``rollout_len`` equal to
the episode length, 0 = the task's, non-terminating tasks lose nothing); observation statistics
updated once per iteration rather than at every step; the discriminator sees the executed
(clipped) action. Optional and off by default (not in the paper): behaviour cloning before the
first rollout (``bc_init_steps``) and a BC term in every PPO loss (``bc_weight``), the anchoring
CMIL's actor has, for comparisons that give the model-free learner the same start (the
``gail-bc`` variant).

Evaluations (and checkpoints) come after the first iteration that crosses each multiple of
``eval_every`` environment steps, and after the last (``algorithms.clock``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from algorithms.clock import EvalClock, IntervalMeans, reset_seed
from algorithms.demos import transitions
from algorithms.discriminator import Discriminator, bce_loss, gradient_penalty
from algorithms.nets import PixelTrunk, mlp, random_shift
from algorithms.obs_norm import RunningStatistics
from algorithms.optim import FlatAdam
from cmil_bench.config import BaseConfig
from cmil_bench.errors import UserError


@dataclass
class Config(BaseConfig):
    total_steps: int = 1_000_000
    eval_every: int = 50_000
    # Environments stepped side by side and steps per environment per rollout (0 = episode length).
    n_envs: int = 8
    rollout_len: int = 0
    # PPO.
    lr: float = 3e-4
    lr_decay: bool = True
    adam_eps: float = 1e-5
    discount: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    ppo_epochs: int = 10
    # Minibatches per PPO epoch (the rollout of n_envs * rollout_len steps is split evenly).
    num_minibatches: int = 32
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    grad_clip: float = 0.5
    clip_value_loss: bool = True
    # Standardise the advantages over the whole rollout, once per iteration (not per minibatch).
    norm_adv: bool = True
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0
    # Observation standardisation (states only; algorithms/obs_norm.py): "running" | "demo" | "none".
    obs_norm: str = "running"
    # "running" only: iterations whose rollouts enter the statistics, which are frozen afterwards
    # (the reference's 11: VecNormalize.eval() after the rollout of iteration 10); 0 = never frozen.
    obs_norm_iters: int = 11
    # Discriminator.
    disc_hidden: tuple[int, ...] = (100, 100)
    disc_activation: str = "tanh"
    disc_lr: float = 1e-3
    disc_batch_size: int = 128
    gp_weight: float = 10.0
    disc_epochs: int = 5
    disc_warmup_iters: int = 10
    disc_warmup_epochs: int = 100
    # Cap on discriminator minibatches per epoch (0 = as many as the data allow).
    disc_max_batches: int = 0
    norm_reward: bool = True
    # Keep every k-th demo transition (random offset per demo); 1 keeps all.
    subsample: int = 20
    # Optional behaviour cloning (not in the paper; 0 = off): ``bc_init_steps`` Adam steps of
    # mean-squared error between the policy mean and the expert's actions before the first
    # rollout (lr ``lr``, batch ``disc_batch_size``), and ``bc_weight`` x that error on an expert
    # minibatch added to every PPO loss (as in BC-regularised GAIL, Jena et al. 2020).
    bc_init_steps: int = 0
    bc_weight: float = 0.0
    # Pixels only.
    cnn_depth: int = 32
    feature_dim: int = 50
    augment: bool = True
    shift_pad: int = 4

    def __post_validate__(self):
        if self.obs_norm not in ("running", "demo", "none"):
            raise UserError(f"gail: obs_norm must be running|demo|none, got {self.obs_norm!r}")
        for name in ("total_steps", "n_envs", "ppo_epochs", "num_minibatches", "disc_batch_size",
                     "subsample", "feature_dim", "cnn_depth"):
            if getattr(self, name) <= 0:
                raise UserError(f"gail: {name} must be positive, got {getattr(self, name)!r}")
        for name in ("rollout_len", "disc_epochs", "disc_warmup_iters", "disc_warmup_epochs",
                     "disc_max_batches", "gp_weight", "ent_coef", "vf_coef", "grad_clip",
                     "shift_pad", "bc_init_steps", "bc_weight", "obs_norm_iters"):
            if getattr(self, name) < 0:
                raise UserError(f"gail: {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.discount < 1 or not 0 <= self.gae_lambda <= 1:
            raise UserError(f"gail: discount must be in [0, 1) and gae_lambda in [0, 1], "
                            f"got {self.discount!r}, {self.gae_lambda!r}")


PRESETS = {
    # Scale only (cmil_bench.config.SCALE_KEYS): the default sweep's matched budget (README, "Budgets").
    "cpu": {"total_steps": 2_400, "eval_every": 600, "n_envs": 2, "num_minibatches": 4},
    # A few seconds, for tests.
    "smoke": {"total_steps": 240, "eval_every": 120, "eval_episodes": 2, "n_envs": 2,
              "rollout_len": 60, "num_minibatches": 4, "disc_batch_size": 32, "hidden": (16,),
              "disc_hidden": (16,), "cnn_depth": 4, "feature_dim": 16},
}


# ------------------------------------------------------------------------ pieces


def discounted_return_scale(rewards: np.ndarray, dones: np.ndarray, rms: RunningStatistics,
                            gamma: float) -> np.ndarray:
    """Feed the running discounted return of each environment (rows = time) into ``rms`` and
    return the rewards divided by its standard deviation (ikostrikov's ret_rms)."""
    ret = np.zeros(rewards.shape[1])
    rets = np.empty_like(rewards, dtype=np.float64)
    for t in range(rewards.shape[0]):
        ret = ret * gamma + rewards[t]
        rets[t] = ret
        ret = ret * (1.0 - dones[t])
    rms.update(rets.reshape(-1))
    return (rewards / np.sqrt(rms.var + 1e-8)).astype(np.float32)


def normalize_advantages(adv: torch.Tensor) -> torch.Tensor:
    """The advantages of a whole rollout standardised together (ikostrikov's PPO: mean 0, std 1
    with the unbiased std and eps 1e-5), before they are split into minibatches."""
    return (adv - adv.mean()) / (adv.std() + 1e-5)


def gae(rewards, values, next_values, terminated, ended, gamma: float, lam: float):
    """Generalised advantage estimates for (T, N) arrays.

    ``next_values[t]`` is V of the real observation after step t (the final observation when the
    episode ended there); ``terminated`` zeroes it; ``ended`` (terminated, truncated or the cut
    at the rollout's end) stops the recursion."""
    T = rewards.shape[0]
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1], dtype=rewards.dtype)
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        last = delta + gamma * lam * (1.0 - ended[t]) * last
        adv[t] = last
    return adv, adv + values


class ActorCritic(nn.Module):
    def __init__(self, obs_shape, act_dim: int, cfg: Config):
        super().__init__()
        self.pixels = len(obs_shape) == 3
        if self.pixels:
            self.encoder = PixelTrunk(obs_shape, cfg.cnn_depth, cfg.feature_dim)
            self.feat_dim = cfg.feature_dim
        else:
            self.feat_dim = int(obs_shape[0])
        self.pi = mlp(self.feat_dim, cfg.hidden, act_dim, act=cfg.activation)
        self.v = mlp(self.feat_dim, cfg.hidden, 1, act=cfg.activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(cfg.log_std_init)))
        # PPO's usual orthogonal init (small last layer of the policy).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, math.sqrt(2))
                nn.init.zeros_(m.bias)
        nn.init.orthogonal_(self.pi[-1].weight, 0.01)
        nn.init.orthogonal_(self.v[-1].weight, 1.0)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs) if self.pixels else obs.float()

    def dist(self, feat: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.pi(feat), self.log_std.exp().expand(feat.shape[0], -1))

    def value(self, feat: torch.Tensor) -> torch.Tensor:
        return self.v(feat).squeeze(-1)


class MeanPolicy:
    """The deterministic policy (the Gaussian's mean, clipped to [-1, 1]) on observations
    standardised with ``obs_rms`` (live ``RunningStatistics``; None = raw observations)."""

    def __init__(self, ac: ActorCritic, obs_rms: RunningStatistics | None, device):
        self.ac, self.obs_rms, self.device = ac, obs_rms, device

    def normalize(self, o: np.ndarray) -> np.ndarray:
        return o if self.obs_rms is None else self.obs_rms.standardize(o)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(np.ascontiguousarray(self.normalize(obs)), device=self.device)
        return self.ac.pi(self.ac.features(o)).clamp(-1, 1).cpu().numpy()


def eval_policy(state: dict, cfg: Config, obs_shape, act_dim: int, episode_len: int, device,  # noqa: ARG001
                which: str = "eval"):  # noqa: ARG001 (the harness signature)
    """The evaluation policy of a checkpoint's ``state`` (see ``cmil_bench.evaluate``)."""
    ac = ActorCritic(obs_shape, act_dim, cfg).to(device)
    ac.load_state_dict(state["ac"])
    rms = None
    if cfg.obs_norm != "none" and len(obs_shape) != 3:
        rms = RunningStatistics(obs_shape)
        rms.load_state_dict(state["obs_rms"])
    return MeanPolicy(ac, rms, device)


# ------------------------------------------------------------------------ training loop


def train(run, cfg: Config) -> None:
    dev = run.device
    obs_shape, act_dim = run.obs_shape, run.act_dim
    pixels = len(obs_shape) == 3
    T = cfg.rollout_len or int(run.task.max_episode_steps)
    N = cfg.n_envs
    iters_total = math.ceil(cfg.total_steps / (N * T))

    demos = transitions(run.demos, run.obs_key, subsample=cfg.subsample, rng=run.rng)
    exp_obs, exp_act = demos["obs"], demos["action"]
    obs_rms = RunningStatistics(obs_shape if not pixels else ())
    use_norm = cfg.obs_norm != "none" and not pixels
    # "demo" statistics, or the running statistics' start when BC fits the policy before any
    # rollout (so that its inputs do not jump when the first rollout arrives).
    if not pixels and (cfg.obs_norm == "demo" or (cfg.obs_norm == "running" and cfg.bc_init_steps)):
        s = np.concatenate([t.observations[run.obs_key] for t in run.demos]).astype(np.float64)
        obs_rms.mean, obs_rms.var, obs_rms.count = s.mean(0), s.var(0), float(len(s))
    ret_rms = RunningStatistics(())

    ac = ActorCritic(obs_shape, act_dim, cfg).to(dev)
    disc = Discriminator(ac.feat_dim + act_dim, cfg.disc_hidden, act=cfg.disc_activation).to(dev)
    opt = FlatAdam(ac, cfg.lr, eps=cfg.adam_eps)
    disc_opt = FlatAdam(disc, cfg.disc_lr)
    clock = EvalClock(cfg.total_steps, cfg.eval_every)
    log = IntervalMeans()

    it, env_steps, grad_steps, disc_steps = 0, 0, 0, 0
    state = run.restore()
    if state is not None:
        for name, obj in (("ac", ac), ("disc", disc), ("opt", opt), ("disc_opt", disc_opt),
                          ("obs_rms", obs_rms), ("ret_rms", ret_rms), ("clock", clock), ("log", log)):
            obj.load_state_dict(state[name])
        it, env_steps, grad_steps, disc_steps = (state[k] for k in ("it", "env_steps", "grad_steps",
                                                                     "disc_steps"))
        if clock.done(env_steps) and run.rows:
            return

    mean_policy = MeanPolicy(ac, obs_rms if use_norm else None, dev)
    normalize = mean_policy.normalize

    def to_t(x) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), device=dev)

    def feats(obs_t: torch.Tensor, augment: bool) -> torch.Tensor:
        if pixels and augment and cfg.augment:
            obs_t = random_shift(obs_t, cfg.shift_pad)
        return ac.features(obs_t)

    rng = run.rng

    def bc_loss(idx) -> torch.Tensor:
        f = feats(to_t(normalize(exp_obs[idx])), True)
        return (ac.pi(f) - to_t(exp_act[idx])).pow(2).sum(-1).mean()

    if state is None and cfg.bc_init_steps:
        for _ in range(cfg.bc_init_steps):
            loss = bc_loss(rng.integers(0, len(exp_act), size=cfg.disc_batch_size))
            opt.zero_grad()
            loss.backward()
            opt.step()
            log.add(bc_init_loss=loss)
        opt.reset()  # PPO starts with fresh Adam moments

    envs = [run.make_env() for _ in range(N)]
    with run.progress(iters_total * N * T, initial=env_steps) as bar:
        while not clock.done(env_steps):
            # ---- 1. rollout (fresh resets) ------------------------------------------------------
            obs_buf = np.zeros((T, N, *obs_shape), dtype=np.uint8 if pixels else np.float32)
            raw_buf = np.zeros((T, N, *obs_shape), np.float32) if use_norm else None
            nxt_buf = np.zeros_like(obs_buf)
            act_buf = np.zeros((T, N, act_dim), np.float32)
            term_buf = np.zeros((T, N), np.float32)
            end_buf = np.zeros((T, N), np.float32)
            obs = np.stack([e.reset(seed=reset_seed(rng))[0] for e in envs])
            nxt = np.empty_like(obs)
            with torch.no_grad():
                for t in range(T):
                    o = normalize(obs)
                    obs_buf[t] = o
                    if raw_buf is not None:
                        raw_buf[t] = obs
                    f = ac.features(to_t(o))
                    a = (ac.pi(f) + ac.log_std.exp() * torch.randn(N, act_dim)).cpu().numpy()
                    act_buf[t] = a
                    a_exec = np.clip(a, -1.0, 1.0)
                    for i, e in enumerate(envs):
                        o2, _, term, trunc, _ = e.step(a_exec[i])
                        nxt[i] = o2
                        term_buf[t, i] = float(term)
                        end_buf[t, i] = float(term or trunc or t == T - 1)
                        if (term or trunc) and t < T - 1:
                            o2, _ = e.reset(seed=reset_seed(rng))
                        obs[i] = o2
                    nxt_buf[t] = normalize(nxt)
            env_steps += N * T
            bar.update(N * T)

            flat_obs = to_t(obs_buf.reshape(T * N, *obs_shape))
            flat_act = to_t(act_buf.reshape(T * N, act_dim))
            exec_act = flat_act.clamp(-1.0, 1.0)
            e_obs = to_t(normalize(exp_obs))
            e_act = to_t(exp_act)

            # ---- 2. discriminator ---------------------------------------------------------------
            epochs = cfg.disc_warmup_epochs if it < cfg.disc_warmup_iters else cfg.disc_epochs
            bs = cfg.disc_batch_size
            n_b = max(1, min(len(exp_act), T * N) // bs)
            if cfg.disc_max_batches:
                n_b = min(n_b, cfg.disc_max_batches)
            for _ in range(epochs):
                pi_perm = torch.as_tensor(rng.permutation(T * N))
                ex_perm = torch.as_tensor(rng.permutation(len(exp_act)))
                for j in range(n_b):
                    pi_idx = pi_perm[j * bs:(j + 1) * bs]
                    ex_idx = ex_perm[j * bs:(j + 1) * bs]
                    with torch.no_grad():
                        pf, ef = feats(flat_obs[pi_idx], True), feats(e_obs[ex_idx], True)
                    px = torch.cat([pf, exec_act[pi_idx]], -1)
                    ex = torch.cat([ef, e_act[ex_idx]], -1)
                    bce, acc = bce_loss(disc, ex, px)
                    gp = gradient_penalty(disc, ex, px)
                    disc_opt.zero_grad()
                    (bce + cfg.gp_weight * gp).backward()
                    disc_opt.step()
                    disc_steps += 1
                    log.add(disc_loss=bce, disc_acc=acc, disc_gp=gp)

            # ---- 3. rewards (the discriminator's logit), values, advantages --------------------
            with torch.no_grad():
                f_all = ac.features(flat_obs)
                rew = disc(torch.cat([f_all, exec_act], -1)).cpu().numpy().reshape(T, N)
                values = ac.value(f_all).cpu().numpy().reshape(T, N)
                next_values = ac.value(ac.features(to_t(nxt_buf.reshape(T * N, *obs_shape))))
                next_values = next_values.cpu().numpy().reshape(T, N)
                old_logp = ac.dist(f_all).log_prob(flat_act).sum(-1)
            log.add(train_reward=float(rew.mean()))
            if cfg.norm_reward:
                rew = discounted_return_scale(rew, end_buf, ret_rms, cfg.discount)
            adv, ret = gae(rew, values, next_values, term_buf, end_buf, cfg.discount, cfg.gae_lambda)
            adv_t, ret_t = to_t(adv.reshape(-1)), to_t(ret.reshape(-1))
            if cfg.norm_adv:
                adv_t = normalize_advantages(adv_t)
            val_t = to_t(values.reshape(-1))

            # ---- 4. PPO -------------------------------------------------------------------------
            if cfg.lr_decay:
                opt.lr = cfg.lr * (1.0 - it / iters_total)
            mb = max(1, (T * N) // cfg.num_minibatches)
            for _ in range(cfg.ppo_epochs):
                perm = torch.as_tensor(rng.permutation(T * N))
                for j in range(0, T * N - mb + 1, mb):
                    idx = perm[j:j + mb]
                    f = ac.features(flat_obs[idx])
                    d = ac.dist(f)
                    logp = d.log_prob(flat_act[idx]).sum(-1)
                    ratio = (logp - old_logp[idx]).exp()
                    a_mb = adv_t[idx]
                    pg_loss = -torch.min(ratio * a_mb, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a_mb).mean()
                    v = ac.value(f)
                    if cfg.clip_value_loss:
                        v_clip = val_t[idx] + (v - val_t[idx]).clamp(-cfg.clip, cfg.clip)
                        v_loss = 0.5 * torch.max((v - ret_t[idx]) ** 2, (v_clip - ret_t[idx]) ** 2).mean()
                    else:
                        v_loss = 0.5 * ((v - ret_t[idx]) ** 2).mean()
                    ent = d.entropy().sum(-1).mean()
                    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent
                    if cfg.bc_weight > 0:
                        bcl = bc_loss(rng.integers(0, len(exp_act), size=mb))
                        loss = loss + cfg.bc_weight * bcl
                        log.add(bc_loss=bcl)
                    opt.zero_grad()
                    loss.backward()
                    if cfg.grad_clip > 0:
                        opt.clip_grad_norm(cfg.grad_clip)
                    opt.step()
                    grad_steps += 1
                    with torch.no_grad():
                        kl = ((ratio - 1) - ratio.log()).mean()
                    log.add(pg_loss=pg_loss, v_loss=v_loss, entropy=ent, approx_kl=kl)

            # ---- 5. running observation statistics (frozen after obs_norm_iters iterations) -----
            frozen = 0 < cfg.obs_norm_iters <= it
            if cfg.obs_norm == "running" and not pixels and not frozen:
                obs_rms.update(raw_buf.reshape(T * N, -1))
            it += 1

            if clock.due(env_steps):
                losses = log.means()
                run.check_finite(losses, grad_steps)
                run.evaluate(mean_policy, env_steps, grad_steps,
                             extra={"disc_steps": disc_steps, "iterations": it, **losses})
                run.checkpoint({
                    "ac": ac.state_dict(), "disc": disc.state_dict(), "opt": opt.state_dict(),
                    "disc_opt": disc_opt.state_dict(), "obs_rms": obs_rms.state_dict(),
                    "ret_rms": ret_rms.state_dict(), "clock": clock.state_dict(),
                    "log": log.state_dict(), "it": it, "env_steps": env_steps,
                    "grad_steps": grad_steps, "disc_steps": disc_steps})
    for e in envs:
        e.close()
