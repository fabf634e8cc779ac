"""The evaluation loop (``cmil_bench.run.play_episodes``) with episodes of different lengths and a
stateful policy: one policy row per episode for the whole episode, reset before the first step."""

from __future__ import annotations

import numpy as np

from cmil_bench.run import play_episodes


class CountingEnv:
    """Terminates after ``length`` steps; reward = the action's first entry; obs = [id]."""

    def __init__(self, ident: int, length: int):
        self.ident, self.length, self.t = ident, length, 0
        self.seen: list[float] = []

    def reset(self, seed=None):
        self.t, self.seed = 0, seed
        return np.array([self.ident], np.float32), {}

    def step(self, action):
        assert self.t < self.length, "stepped after the episode ended"
        self.t += 1
        self.seen.append(float(action[0]))
        obs = np.array([self.ident], np.float32)
        return obs, float(action[0]), self.t == self.length, False, {"t": self.t}


class RowCounter:
    """Stateful: row i acts with (number of calls since reset) * 10 + obs id."""

    def __init__(self):
        self.count = None
        self.resets = []

    def reset(self, n):
        self.resets.append(n)
        self.count = np.zeros(n)

    def __call__(self, obs):
        out = self.count * 10 + obs[:, 0]
        self.count = self.count + 1
        return np.stack([out / 1000.0, np.zeros(len(obs))], 1)


def test_stateful_policy_keeps_one_row_per_episode():
    envs = [CountingEnv(i, n) for i, n in enumerate((3, 7, 1, 5))]
    pol = RowCounter()
    rets, infos = play_episodes(envs, [10, 11, 12, 13], pol)
    assert pol.resets == [4]
    for e in envs:
        assert np.allclose(e.seen, [(10 * k + e.ident) / 1000.0 for k in range(e.length)])
        assert e.t == e.length
    assert [len(i) for i in infos] == [3, 7, 1, 5]
    assert np.allclose(rets, [sum(e.seen) for e in envs])
    assert [e.seed for e in envs] == [10, 11, 12, 13]


def test_second_batch_is_reset_again():
    pol = RowCounter()
    for n in (2, 3):
        envs = [CountingEnv(i, 4) for i in range(n)]
        play_episodes(envs, range(n), pol)
        assert np.isclose(envs[-1].seen[0], (n - 1) / 1000.0)  # first action after a reset
    assert pol.resets == [2, 3]


def test_stateless_policy_and_clipping():
    envs = [CountingEnv(0, 2), CountingEnv(1, 4)]
    rets, _ = play_episodes(envs, [0, 1], lambda obs: np.full((len(obs), 2), 5.0))
    assert rets == [2.0, 4.0]  # actions clipped to 1
