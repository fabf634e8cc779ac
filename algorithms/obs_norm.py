"""The observation standardiser every algorithm uses on state observations (pixels pass as they are).

``x -> clip((x - mean) / max(std, STD_FLOOR), -CLIP, CLIP)``, with the statistics either fixed
(the demos', ``demo_statistics``: BC, DAC, the latent agents) or running (``RunningStatistics``:
GAIL's ``obs_norm="running"``, as in ikostrikov's VecNormalize), through the same floor and clip.

STD_FLOOR = 1e-2: a state dimension that barely moves in the demos (a fixed goal, a resting
block) must not be blown up into the largest input; 1e-2 was already the floor of DAC and of the
latent agents, and DAC's screens found neither 0.05 nor 0.1 better (benchmarks/RESULTS.md, "What
was tried on fetch-push"). CLIP = 10 was DAC's and GAIL's clip.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

STD_FLOOR = 1e-2
CLIP = 10.0


def floored_std(var) -> np.ndarray:
    """The standard deviation from a variance, floored at ``STD_FLOOR``."""
    return np.maximum(np.sqrt(np.asarray(var, np.float64)), STD_FLOOR)


def demo_statistics(demos, obs_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and floored std (float32) of every observation of the demos (final ones included)."""
    s = np.concatenate([t.observations[obs_key] for t in demos]).astype(np.float64)
    return s.mean(0).astype(np.float32), floored_std(s.var(0)).astype(np.float32)


def standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The standardiser on numpy arrays (float32 out); ``std`` already floored."""
    return np.clip((x - mean) / std, -CLIP, CLIP).astype(np.float32)


class RunningStatistics:
    """Running mean and variance (Chan et al.'s parallel update, float64), for observations or
    any other stream (GAIL's discounted returns). Starts at mean 0, variance 1."""

    def __init__(self, shape=()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1, *self.mean.shape)
        bm, bv, n = x.mean(0), x.var(0), x.shape[0]
        delta, tot = bm - self.mean, self.count + n
        self.mean = self.mean + delta * n / tot
        self.var = (self.var * self.count + bv * n + delta ** 2 * self.count * n / tot) / tot
        self.count = tot

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """``x`` standardised with the current statistics (the shared floor and clip)."""
        return standardize(x, self.mean, floored_std(self.var))

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, s: dict) -> None:
        self.mean, self.var, self.count = np.array(s["mean"]), np.array(s["var"]), float(s["count"])


class Standardizer(nn.Module):
    """The standardiser as a module with fixed statistics (buffers, saved with the network);
    without statistics it only clips."""

    def __init__(self, dim: int, mean=None, std=None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim) if mean is None
                             else torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.ones(dim) if std is None
                             else torch.as_tensor(np.maximum(std, STD_FLOOR), dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs.float() - self.mean) / self.std).clamp(-CLIP, CLIP)
