"""Episode replay that samples fixed-length sequences, for the latent world-model agents.

Every episode is stored in the DreamerV2 row layout: an episode of T transitions is T+1 rows,
row t holding observation o_t, the action a_{t-1} that led to it (zeros in row 0) and an
``is_first`` flag (row 0 only). A sampled sequence is ``length`` consecutive rows of one episode,
so ``obs[:, t]`` pairs with ``action[:, t + 1]`` (the action taken after seeing ``o_t``).

Sampling follows the CMIL reference (DreamerV2's replay with ``minlen = maxlen = length``): an
episode uniformly among those with at least ``length`` rows, then a start row uniformly within
it; and every sampled chunk starts as a new episode: ``is_first`` is set on its first row and
that row's action is zero, so a chunk from the middle of an episode is filtered from the initial
latent state and carries no true previous action.

Episodes live in a Python list of numpy arrays (nothing is preallocated, so pixel replays cost
only what they hold). Episodes marked ``protected`` (the demos) are never evicted and are not
written by ``state_dict``: the owner re-adds them, in the same order, before ``load_state_dict``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cmil_bench.errors import UserError


def episode_rows(observations: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
    """(T+1, *obs) observations and (T, A) actions -> the T+1 rows of one stored episode."""
    observations = np.asarray(observations)
    actions = np.asarray(actions, dtype=np.float32)
    if len(observations) != len(actions) + 1:
        raise ValueError(f"an episode needs T+1 observations for T actions, got "
                         f"{len(observations)} and {len(actions)}")
    act = np.zeros((len(observations), actions.shape[-1]), np.float32)
    act[1:] = np.clip(actions, -1.0, 1.0)
    first = np.zeros(len(observations), bool)
    first[0] = True
    return {"obs": observations, "action": act, "is_first": first}


class SequenceReplay:
    """Holds whole episodes; ``sample(batch, length, rng)`` draws sequences: an episode uniformly
    (among those with at least ``length`` rows), then a start row uniformly within it."""

    def __init__(self, capacity: int = 1_000_000):
        if capacity <= 0:
            raise UserError(f"replay capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.episodes: list[dict[str, np.ndarray]] = []
        self.protected: list[bool] = []
        self.n_rows = 0

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def n_steps(self) -> int:
        """Transitions held (rows minus one per episode)."""
        return self.n_rows - len(self.episodes)

    def add_episode(self, observations: np.ndarray, actions: np.ndarray, protected: bool = False) -> None:
        ep = episode_rows(observations, actions)
        self.episodes.append(ep)
        self.protected.append(bool(protected))
        self.n_rows += len(ep["obs"])
        self._evict()

    def add_trajectories(self, trajs: Sequence, obs_key: str, protected: bool = True) -> None:
        for tr in trajs:
            self.add_episode(tr.observations[obs_key], tr.actions, protected=protected)

    def _evict(self) -> None:
        i = 0
        while self.n_rows > self.capacity and i < len(self.episodes):
            if self.protected[i]:
                i += 1
                continue
            self.n_rows -= len(self.episodes[i]["obs"])
            del self.episodes[i], self.protected[i]

    def _starts(self, length: int) -> np.ndarray:
        return np.array([max(len(ep["obs"]) - length + 1, 0) for ep in self.episodes], np.int64)

    def can_sample(self, length: int) -> bool:
        return bool(self.episodes) and int(self._starts(length).sum()) > 0

    def sample(self, batch: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch`` sequences of ``length`` rows: obs (B, L, *obs), action (B, L, A), is_first (B, L);
        each starts as a new episode (``is_first`` and a zero action on its row 0)."""
        starts = self._starts(length)
        eligible = np.flatnonzero(starts > 0)
        if len(eligible) == 0:
            longest = max((len(ep["obs"]) for ep in self.episodes), default=0)
            raise UserError(f"no episode has {length} rows to sample a sequence from (longest: "
                            f"{longest}); lower seq_len")
        ep_idx = eligible[rng.integers(0, len(eligible), size=batch)]
        offs = rng.integers(0, starts[ep_idx])
        out = {}
        for key in ("obs", "action", "is_first"):
            out[key] = np.stack([self.episodes[e][key][o:o + length] for e, o in zip(ep_idx, offs)])
        out["is_first"][:, 0] = True
        out["action"][:, 0] = 0.0
        return out

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"capacity": self.capacity,
                "n_protected": int(sum(self.protected)),
                "episodes": [ep for ep, p in zip(self.episodes, self.protected) if not p]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the unprotected episodes after the protected ones have been re-added."""
        if int(sum(self.protected)) != state["n_protected"]:
            raise ValueError(f"replay checkpoint was saved with {state['n_protected']} protected "
                             f"episodes, this replay holds {sum(self.protected)}")
        keep = [(ep, p) for ep, p in zip(self.episodes, self.protected) if p]
        self.capacity = int(state["capacity"])
        self.episodes = [ep for ep, _ in keep] + [dict(ep) for ep in state["episodes"]]
        self.protected = [True] * len(keep) + [False] * len(state["episodes"])
        self.n_rows = sum(len(ep["obs"]) for ep in self.episodes)
