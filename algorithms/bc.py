"""Behavioural cloning: fit the policy to the demos' (observation, action) pairs.

States: an MLP on standardised observations (``algorithms.obs_norm``, the demos' statistics).
Pixels: the CNN encoder in front of the MLP, with optional random-shift augmentation. Loss: mean
squared error on tanh-squashed actions (``loss="mse"``) or the negative log-likelihood of a
Gaussian with a learned, state-dependent std (``loss="nll"``); evaluation always acts with the
mean. Adam (``algorithms.optim.FlatAdam``) with optional L2 weight decay. BC never touches the
environment while training, so its budget axis is gradient steps and ``env_steps`` stays 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from algorithms.clock import EvalClock, IntervalMeans
from algorithms.demos import transitions
from algorithms.nets import ObsEncoder, mlp, random_shift
from algorithms.obs_norm import Standardizer, demo_statistics
from algorithms.optim import FlatAdam
from cmil_bench.config import BaseConfig
from cmil_bench.errors import UserError


@dataclass
class Config(BaseConfig):
    # Budget (gradient steps) and evaluation.
    total_steps: int = 10_000
    eval_every: int = 2_000
    batch_size: int = 256
    lr: float = 1e-3
    # L2 weight decay (added to the gradient, as torch.optim.Adam's weight_decay).
    weight_decay: float = 0.0
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    loss: str = "mse"  # "mse" | "nll"
    min_log_std: float = -5.0
    max_log_std: float = 1.0
    # Standardise state observations with the demos' statistics (algorithms/obs_norm.py).
    normalize_obs: bool = True
    # Keep every k-th demo transition (random offset per demo, from the run's generator); 1 keeps
    # all. GAIL's and DAC's papers trained their BC baseline on every 20th: the `bc-sub20` variant.
    subsample: int = 1
    # Pixels only.
    cnn_depth: int = 32
    augment: bool = True
    shift_pad: int = 4

    def __post_validate__(self):
        if self.loss not in ("mse", "nll"):
            raise UserError(f"bc: loss must be 'mse' or 'nll', got {self.loss!r}")
        for name in ("total_steps", "batch_size", "cnn_depth", "subsample"):
            if getattr(self, name) <= 0:
                raise UserError(f"bc: {name} must be positive, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise UserError(f"bc: weight_decay must be >= 0, got {self.weight_decay}")


PRESETS = {
    # Scale only (cmil_bench.config.SCALE_KEYS); weight decay is the `bc-wd` variant (config/default.yaml).
    "cpu": {"total_steps": 3_000, "eval_every": 1_000},
    "smoke": {"total_steps": 60, "eval_every": 30, "eval_episodes": 2, "batch_size": 32,
              "cnn_depth": 8},
}


class Policy(nn.Module):
    def __init__(self, obs_shape, act_dim: int, cfg: Config, obs_mean=None, obs_std=None):
        super().__init__()
        self.encoder = ObsEncoder(obs_shape, depth=cfg.cnn_depth)
        self.head = mlp(self.encoder.out_dim, cfg.hidden, 2 * act_dim if cfg.loss == "nll" else act_dim,
                        act=cfg.activation)
        self.cfg = cfg
        self.norm = None if self.encoder.pixels else Standardizer(self.encoder.out_dim, obs_mean, obs_std)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.head(self.encoder(obs if self.norm is None else self.norm(obs)))
        if self.cfg.loss == "mse":
            return torch.tanh(out), None
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std.clamp(self.cfg.min_log_std, self.cfg.max_log_std)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        device = next(self.parameters()).device
        mean, _ = self(torch.as_tensor(obs, device=device))
        return mean.clamp(-1, 1).cpu().numpy()


def loss_fn(policy: Policy, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    mean, log_std = policy(obs)
    if log_std is None:
        return ((mean - act) ** 2).sum(-1).mean()
    return -torch.distributions.Normal(mean, log_std.exp()).log_prob(act).sum(-1).mean()


def train(run, cfg: Config) -> None:
    dev = run.device
    data = transitions(run.demos, run.obs_key, subsample=cfg.subsample, rng=run.rng)
    pixels = len(run.obs_shape) == 3
    mean, std = demo_statistics(run.demos, run.obs_key) if cfg.normalize_obs and not pixels else (None, None)
    policy = Policy(run.obs_shape, run.act_dim, cfg, mean, std).to(dev)
    opt = FlatAdam(policy, cfg.lr, weight_decay=cfg.weight_decay)
    obs_t = torch.as_tensor(data["obs"], device=dev)
    act_t = torch.as_tensor(data["action"], device=dev)
    n = obs_t.shape[0]
    clock = EvalClock(cfg.total_steps, cfg.eval_every)
    log = IntervalMeans()

    step = 0
    state = run.restore()
    if state is not None:
        policy.load_state_dict(state["policy"])
        opt.load_state_dict(state["opt"])
        clock.load_state_dict(state["clock"])
        log.load_state_dict(state["log"])
        step = state["step"]

    with run.progress(cfg.total_steps, initial=step) as bar:
        while not clock.done(step):
            idx = torch.as_tensor(run.rng.integers(0, n, size=min(cfg.batch_size, n)), device=dev)
            obs = obs_t[idx]
            if pixels and cfg.augment:
                obs = random_shift(obs, cfg.shift_pad)
            loss = loss_fn(policy, obs, act_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            log.add(bc_loss=loss)
            step += 1
            bar.update(1)
            run.check_finite({"bc_loss": loss}, step)  # every step: the error names the first bad one
            if clock.due(step):
                row = run.evaluate(policy.act, env_steps=0, grad_steps=step, extra=log.means())
                bar.set_postfix(score=f"{row['norm_score']:.2f}")
                run.checkpoint({"policy": policy.state_dict(), "opt": opt.state_dict(),
                                "clock": clock.state_dict(), "log": log.state_dict(), "step": step})


def eval_policy(state: dict, cfg: Config, obs_shape, act_dim: int, episode_len: int, device,  # noqa: ARG001
                which: str = "eval"):  # noqa: ARG001 (the harness signature)
    """The evaluation policy of a checkpoint's ``state`` (see ``cmil_bench.evaluate``)."""
    policy = Policy(obs_shape, act_dim, cfg).to(device)
    policy.load_state_dict(state["policy"])
    return policy.act
