"""The training clock every algorithm keeps: when to evaluate, the seeds of training resets, and
the interval means of the logged loss columns. Its state goes into the run's checkpoint.

Evaluation schedule: on the algorithm's budget axis (environment steps for online learners,
gradient steps for BC), an evaluation (and checkpoint) comes at the first point the algorithm can
stop at (an episode's end, an iteration's end, a gradient step) at or after each multiple of
``eval_every``, and one at ``total_steps``, the end of the run.

Loss columns: every loss or diagnostic an algorithm writes into ``metrics.csv`` is the mean of
the values it logged since the previous evaluation row (a column logged nowhere in the interval
is left out of that row, which the CSV shows as empty).
"""

from __future__ import annotations

import numpy as np
import torch


def reset_seed(rng: np.random.Generator) -> int:
    """The seed of a training environment's next ``reset``, drawn from the run's generator (which
    the checkpoint carries, so a resumed run resets its environments exactly as before)."""
    return int(rng.integers(2**31))


class EvalClock:
    """The evaluation schedule: ``due(steps)`` says, at a point where the algorithm can stop,
    whether to evaluate now, and moves the next evaluation past ``steps`` when it does."""

    def __init__(self, total_steps: int, eval_every: int):
        self.total_steps, self.eval_every = int(total_steps), int(eval_every)
        self.next_eval = self.eval_every

    def done(self, steps: int) -> bool:
        return steps >= self.total_steps

    def due(self, steps: int) -> bool:
        if steps < self.next_eval and steps < self.total_steps:
            return False
        while self.next_eval <= steps:
            self.next_eval += self.eval_every
        return True

    def state_dict(self) -> dict:
        return {"next_eval": self.next_eval}

    def load_state_dict(self, s: dict) -> None:
        self.next_eval = int(s["next_eval"])


class IntervalMeans:
    """Running sums of logged values, read out as means once per evaluation interval. Values may
    be floats or 0-d tensors (kept on their device until read, so logging never synchronises)."""

    def __init__(self):
        self.sums: dict = {}
        self.counts: dict[str, int] = {}

    def add(self, **values) -> None:
        for k, v in values.items():
            if isinstance(v, torch.Tensor):
                v = v.detach()
            self.sums[k] = v if k not in self.sums else self.sums[k] + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        """The mean of every value logged since the last call, then start a new interval."""
        out = {k: float(s) / self.counts[k] for k, s in self.sums.items()}
        self.sums, self.counts = {}, {}
        return out

    def state_dict(self) -> dict:
        return {"sums": {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self.sums.items()},
                "counts": dict(self.counts)}

    def load_state_dict(self, s: dict) -> None:
        self.sums, self.counts = dict(s["sums"]), dict(s["counts"])
