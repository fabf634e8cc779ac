"""A preallocated, numpy-backed transition replay buffer (a ring buffer of named fields).

``ReplayBuffer(capacity, {"obs": ((6,), np.float32), "action": ((2,), np.float32), ...})`` holds
one array per field, allocated once. ``add`` writes one transition, ``add_batch`` several;
once ``capacity`` is reached the oldest rows are overwritten. ``sample(rng, n)`` draws ``n`` rows
uniformly with replacement from a ``numpy.random.Generator`` (the run's checkpointed generator, so
sampling is reproducible across a resume). ``state_dict`` / ``load_state_dict`` save and restore
the contents and the write position exactly (only the filled rows are saved).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

FieldSpec = Mapping[str, tuple[tuple[int, ...], "np.dtype | type"]]


class ReplayBuffer:
    def __init__(self, capacity: int, fields: FieldSpec):
        if int(capacity) <= 0:
            raise ValueError(f"replay capacity must be positive, got {capacity!r}")
        if not fields:
            raise ValueError("a replay buffer needs at least one field")
        self.capacity = int(capacity)
        self.fields = {k: (tuple(int(d) for d in shape), np.dtype(dt)) for k, (shape, dt) in fields.items()}
        self.data = {k: np.zeros((self.capacity, *shape), dtype=dt) for k, (shape, dt) in self.fields.items()}
        self.ptr = 0  # next row to write
        self.size = 0  # rows filled so far (<= capacity)
        self.total = 0  # transitions ever added

    def __len__(self) -> int:
        return self.size

    def _check_keys(self, tr: Mapping) -> None:
        if set(tr) != set(self.fields):
            raise KeyError(f"transition fields {sorted(tr)} differ from the buffer's {sorted(self.fields)}")

    def add(self, **tr) -> None:
        """Write one transition (every field, without a batch dimension)."""
        self._check_keys(tr)
        i = self.ptr
        for k, v in tr.items():
            self.data[k][i] = v
        self.ptr = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.total += 1

    def add_batch(self, **tr) -> None:
        """Write ``n`` transitions at once (every field with a leading batch dimension ``n``)."""
        self._check_keys(tr)
        n = {len(v) for v in tr.values()}
        if len(n) != 1:
            lengths = {k: len(v) for k, v in tr.items()}
            raise ValueError(f"add_batch fields have different lengths: {lengths}")
        n = n.pop()
        for j in range(0, n, self.capacity):  # chunks no longer than the buffer
            m = min(self.capacity, n - j)
            idx = (self.ptr + np.arange(m)) % self.capacity
            for k, v in tr.items():
                self.data[k][idx] = np.asarray(v[j : j + m])
            self.ptr = int((self.ptr + m) % self.capacity)
            self.size = min(self.size + m, self.capacity)
            self.total += m

    def sample_indices(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return rng.integers(0, self.size, size=int(n))

    def get(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[idx] for k, v in self.data.items()}

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """``n`` rows drawn uniformly with replacement (a dict of arrays, copies)."""
        return self.get(self.sample_indices(rng, n))

    def state_dict(self) -> dict:
        # Saving the rows in buffer order together with ptr restores the ring exactly.
        return {
            "capacity": self.capacity,
            "fields": {k: (list(s), d.str) for k, (s, d) in self.fields.items()},
            "ptr": self.ptr, "size": self.size, "total": self.total,
            "data": {k: v[: self.size].copy() for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        fields = {k: (tuple(s), np.dtype(d)) for k, (s, d) in state["fields"].items()}
        if int(state["capacity"]) != self.capacity or fields != self.fields:
            raise ValueError("replay state belongs to a buffer of another capacity or layout")
        size = int(state["size"])
        for k, v in state["data"].items():
            self.data[k][:size] = v
            self.data[k][size:] = 0
        self.ptr, self.size, self.total = int(state["ptr"]), size, int(state["total"])
