"""algorithms/obs_norm.py: one floor and one clip, fixed or running statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.obs_norm import CLIP, STD_FLOOR, RunningStatistics, Standardizer, demo_statistics, standardize
from envs.datasets import Trajectory


def _demo(obs):
    obs = np.asarray(obs, np.float32)
    n = len(obs) - 1
    return Trajectory(observations={"state": obs}, actions=np.zeros((n, 1), np.float32),
                      rewards=np.zeros(n, np.float32), terminated=False, truncated=True)


def test_demo_statistics_floor_a_constant_dimension():
    demos = [_demo([[0.0, 5.0], [2.0, 5.0]]), _demo([[4.0, 5.0], [6.0, 5.0], [8.0, 5.0]])]
    mean, std = demo_statistics(demos, "state")
    np.testing.assert_allclose(mean, [4.0, 5.0])
    np.testing.assert_allclose(std, [np.std([0, 2, 4, 6, 8]), STD_FLOOR])
    assert mean.dtype == std.dtype == np.float32
    x = standardize(np.array([[4.0, 5.5]]), mean, std)
    np.testing.assert_allclose(x, [[0.0, CLIP]])  # 0.5 / 0.01 = 50, clipped


def test_module_and_numpy_standardisers_agree():
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=3).astype(np.float32), np.array([1e-4, 0.5, 2.0], np.float32)
    mod = Standardizer(3, mean, std)
    assert mod.std[0].item() == pytest.approx(STD_FLOOR)  # a raw std below the floor is floored here too
    x = rng.normal(size=(7, 3)).astype(np.float32) * 3
    want = standardize(x, mean, np.maximum(std, STD_FLOOR))
    np.testing.assert_allclose(mod(torch.as_tensor(x)).numpy(), want, rtol=1e-6)
    assert mod(torch.as_tensor(x)).abs().max() <= CLIP
    plain = Standardizer(3)
    torch.testing.assert_close(plain(torch.tensor([[1.0, -20.0, 3.0]])), torch.tensor([[1.0, -CLIP, 3.0]]))


def test_running_statistics_match_numpy_and_use_the_floor():
    rng = np.random.default_rng(1)
    data = rng.normal(3.0, 2.0, size=(50, 3))
    data[:, 2] = 7.0  # constant
    rs = RunningStatistics((3,))
    for chunk in np.array_split(data, 4):
        rs.update(chunk)
    np.testing.assert_allclose(rs.mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rs.var, data.var(0), rtol=1e-3, atol=1e-3)
    out = rs.standardize(data)
    np.testing.assert_allclose(out[:, :2].mean(0), 0.0, atol=1e-4)
    assert np.all(np.abs(out[:, 2]) < 1e-3 / STD_FLOOR)  # floored: 7 - mean ~ 1e-4, not blown up
    other = RunningStatistics((3,))
    other.load_state_dict(rs.state_dict())
    np.testing.assert_array_equal(other.standardize(data), out)
