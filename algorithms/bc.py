"""Behavioural cloning: fit the policy to the demos' (observation, action) pairs.

States: an MLP. Pixels: the shared CNN encoder in front of the MLP, with optional random-shift
augmentation. Loss: mean squared error on tanh-squashed actions (``loss="mse"``) or the negative
log-likelihood of a Gaussian with a learned, state-dependent std (``loss="nll"``); evaluation
always acts with the mean. BC never touches the environment while training, so its budget axis
is gradient steps and ``env_steps`` stays 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from algorithms.nets import ObsEncoder, mlp, random_shift
from cmil_bench.config import BaseConfig
from cmil_bench.errors import UserError


@dataclass
class Config(BaseConfig):
    grad_steps: int = 10_000
    eval_every: int = 2_000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    loss: str = "mse"  # "mse" | "nll"
    min_log_std: float = -5.0
    max_log_std: float = 1.0
    # Standardise state observations with the demos' mean and std.
    normalize_obs: bool = True
    # Pixels only.
    encoder_depth: int = 32
    augment: bool = True
    shift_pad: int = 4

    def __post_validate__(self):
        if self.loss not in ("mse", "nll"):
            raise UserError(f"bc: loss must be 'mse' or 'nll', got {self.loss!r}")
        for name in ("grad_steps", "batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"bc: {name} must be positive, got {getattr(self, name)}")


PRESETS = {
    # Small enough for the default CPU sweep (~16 s a run). L2 weight decay 1e-3 against
    # overfitting 10 demos: fetch-push 0.77 -> 0.91, pointmaze 0.94 -> 0.96 (5 seeds each).
    "cpu": {"grad_steps": 3_000, "eval_every": 1_000, "weight_decay": 1e-3},
    "smoke": {"grad_steps": 60, "eval_every": 30, "eval_episodes": 2, "batch_size": 32,
              "encoder_depth": 8},
}


class Policy(nn.Module):
    def __init__(self, obs_shape, act_dim: int, cfg: Config, obs_mean=None, obs_std=None):
        super().__init__()
        self.encoder = ObsEncoder(obs_shape, depth=cfg.encoder_depth)
        self.head = mlp(self.encoder.out_dim, cfg.hidden, 2 * act_dim if cfg.loss == "nll" else act_dim,
                        act=cfg.activation)
        self.act_dim = act_dim
        self.cfg = cfg
        d = self.encoder.out_dim if not self.encoder.pixels else 1
        self.register_buffer("obs_mean", torch.zeros(d) if obs_mean is None else torch.as_tensor(obs_mean))
        self.register_buffer("obs_std", torch.ones(d) if obs_std is None else torch.as_tensor(obs_std))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.encoder.pixels:
            obs = (obs.float() - self.obs_mean) / self.obs_std
        return self.encoder(obs)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.head(self.features(obs))
        if self.cfg.loss == "mse":
            return torch.tanh(out), None
        mean, log_std = out.chunk(2, dim=-1)
        log_std = log_std.clamp(self.cfg.min_log_std, self.cfg.max_log_std)
        return mean, log_std

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        mean, _ = self(torch.as_tensor(obs, device=self.obs_mean.device))
        return mean.clamp(-1, 1).cpu().numpy()


def loss_fn(policy: Policy, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    mean, log_std = policy(obs)
    if log_std is None:
        return ((mean - act) ** 2).sum(-1).mean()
    dist = torch.distributions.Normal(mean, log_std.exp())
    return -dist.log_prob(act).sum(-1).mean()


def train(run, cfg: Config) -> None:
    data = run.demo_arrays()
    dev = run.device
    obs_np, act_np = data["obs"], np.clip(data["actions"], -1, 1)
    pixels = obs_np.ndim == 4
    mean = std = None
    if cfg.normalize_obs and not pixels:
        mean = obs_np.mean(0).astype(np.float32)
        std = (obs_np.std(0) + 1e-3).astype(np.float32)
    policy = Policy(run.obs_shape, run.act_dim, cfg, mean, std).to(dev)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    obs_t = torch.as_tensor(obs_np, device=dev)
    act_t = torch.as_tensor(act_np, device=dev)
    n = obs_t.shape[0]

    step = 0
    state = run.restore()
    if state is not None:
        policy.load_state_dict(state["policy"])
        opt.load_state_dict(state["opt"])
        step = state["step"]

    with run.progress(cfg.grad_steps, initial=step) as bar:
        while step < cfg.grad_steps:
            idx = torch.as_tensor(run.rng.integers(0, n, size=min(cfg.batch_size, n)), device=dev)
            obs = obs_t[idx]
            if pixels and cfg.augment:
                obs = random_shift(obs, cfg.shift_pad)
            loss = loss_fn(policy, obs, act_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            run.check_finite({"bc_loss": loss}, step)
            if step % cfg.eval_every == 0 or step == cfg.grad_steps:
                policy.eval()
                row = run.evaluate(policy.act, env_steps=0, grad_steps=step,
                                   extra={"bc_loss": loss.item()})
                policy.train()
                bar.set_postfix(score=f"{row['norm_score']:.2f}")
                run.checkpoint({"policy": policy.state_dict(), "opt": opt.state_dict(), "step": step})


def eval_policy(state: dict, cfg: Config, obs_shape, act_dim: int, task, device, which: str = "eval"):
    """The evaluation policy of a checkpoint's ``state`` (see ``cmil_bench.evaluate``)."""
    policy = Policy(obs_shape, act_dim, cfg).to(device)
    policy.load_state_dict(state["policy"])
    policy.eval()
    return policy.act
