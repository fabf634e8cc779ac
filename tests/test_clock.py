"""algorithms/clock.py: the evaluation schedule, reset seeds and interval means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.clock import EvalClock, IntervalMeans, reset_seed


def test_evaluations_at_the_first_stop_after_each_multiple_and_at_the_end():
    clock = EvalClock(total_steps=1000, eval_every=300)
    due = [s for s in range(0, 1001, 70) if clock.due(s)]  # stops every 70 steps
    assert due == [350, 630, 910]
    assert clock.due(1000) and clock.done(1000)  # the final evaluation
    # an episode longer than the interval skips the multiples it crossed
    clock = EvalClock(1000, 100)
    assert clock.due(350) and clock.next_eval == 400 and not clock.due(399)


def test_clock_state_round_trip():
    clock = EvalClock(100, 10)
    clock.due(25)
    other = EvalClock(100, 10)
    other.load_state_dict(clock.state_dict())
    assert [s for s in range(26, 60) if other.due(s)] == [30, 40, 50]


def test_reset_seeds_follow_the_generator():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    seeds = [reset_seed(a) for _ in range(3)]
    assert seeds == [reset_seed(b) for _ in range(3)] and len(set(seeds)) == 3
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)


def test_interval_means_cover_one_interval_each():
    log = IntervalMeans()
    for v in (1.0, 2.0, 6.0):
        log.add(loss=torch.tensor(v), acc=v / 10)
    log.add(only_once=5.0)
    assert log.means() == pytest.approx({"loss": 3.0, "acc": 0.3, "only_once": 5.0})
    log.add(loss=torch.tensor(10.0))
    state = log.state_dict()
    assert log.means() == {"loss": 10.0}  # a new interval; columns not logged are absent
    assert log.means() == {}
    other = IntervalMeans()
    other.load_state_dict(state)
    other.add(loss=0.0)
    assert other.means() == {"loss": 5.0}
