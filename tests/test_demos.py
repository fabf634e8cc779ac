"""algorithms/demos.py: the demo flattener (absorbing states, subsampling)."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms.demos import transitions
from cmil_bench.errors import UserError
from envs.datasets import Trajectory


def _traj(T, terminated, obs_dim=3, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    return Trajectory(observations={"state": rng.normal(size=(T + 1, obs_dim)).astype(np.float32)},
                      actions=rng.uniform(-1.5, 1.5, (T, act_dim)).astype(np.float32),
                      rewards=np.zeros(T, np.float32), terminated=terminated, truncated=not terminated)


def test_plain_rows_pair_each_step_with_its_next_observation():
    demos = [_traj(4, False, seed=1), _traj(3, True, seed=2)]
    tr = transitions(demos, "state")
    assert len(tr["action"]) == 7
    np.testing.assert_array_equal(tr["obs"][4:], demos[1].observations["state"][:3])
    np.testing.assert_array_equal(tr["next_obs"][:4], demos[0].observations["state"][1:])
    np.testing.assert_array_equal(tr["terminated"], [0, 0, 0, 0, 0, 0, 1])  # a real end only
    assert tr["action"].min() >= -1 and tr["action"].max() <= 1  # clipped
    assert tr["absorbing"].sum() == 0 and tr["next_absorbing"].sum() == 0


def test_terminating_demos_end_in_the_absorbing_self_loop():
    demos = [_traj(5, True, seed=1), _traj(4, False, seed=2), _traj(6, True, seed=3)]
    ex = transitions(demos, "state", absorbing=True)
    assert len(ex["action"]) == 5 + 4 + 6 + 2
    assert ex["absorbing"].sum() == 2 and ex["next_absorbing"].sum() == 4 and ex["terminated"].sum() == 0
    loops = ex["absorbing"] == 1
    assert np.all(ex["obs"][loops] == 0) and np.all(ex["action"][loops] == 0)
    assert ex["next_absorbing"][4] == 1 and ex["next_absorbing"][5] == 1  # s_T -> abs, abs -> abs
    np.testing.assert_array_equal(ex["next_obs"][4], np.zeros(3))
    np.testing.assert_array_equal(ex["next_obs"][6 + 3], demos[1].observations["state"][4])  # truncated
    assert np.all(ex["weight"] == 1)


def test_subsampling_keeps_every_kth_step_and_weights_the_loop():
    demos = [_traj(40, True, seed=4), _traj(40, False, seed=5)]
    ex = transitions(demos, "state", absorbing=True, subsample=10, rng=np.random.default_rng(0))
    assert len(ex["action"]) == 4 + 1 + 4
    np.testing.assert_allclose(ex["weight"][ex["absorbing"] == 1], 0.1)
    np.testing.assert_allclose(ex["weight"][ex["absorbing"] == 0], 1.0)
    # the kept rows are 10 steps apart within a demo
    first = demos[0].observations["state"]
    idx = [int(np.flatnonzero((first == row).all(1))[0]) for row in ex["obs"][:4]]
    assert np.diff(idx).tolist() == [10, 10, 10]


def test_no_transitions_is_a_user_error():
    with pytest.raises(UserError, match="no transitions"):
        transitions([_traj(0, False)], "state")


@pytest.mark.slow  # a BC run (smoke preset, a few seconds)
def test_bc_subsample_trains_on_every_kth_demo_transition(demo_source, tmp_path, monkeypatch, capsys):
    """BC's ``subsample`` switch (the `bc-sub20` variant) hands BC every k-th transition of each
    demo: ceil(T / k) or floor(T / k) rows of a T-step demo, depending on the random offset."""
    import json
    import math

    import algorithms.bc as bc
    from helpers import BC_SETS, call_cli, run_argv

    rows = []

    def spy(demos, obs_key, **kw):
        out = transitions(demos, obs_key, **kw)
        rows.append((sorted(len(t) for t in demos), len(out["action"])))
        return out

    monkeypatch.setattr(bc, "transitions", spy)
    for k in (1, 20):
        out = tmp_path / f"k{k}"
        rc, _, err = call_cli(run_argv(out, demo_source, sets={**BC_SETS, "subsample": k}), capsys)
        assert rc == 0, err
        assert json.loads((out / "config.json").read_text())["config"]["subsample"] == k
    (lengths, full), (_, sub) = rows
    assert full == sum(lengths)
    assert sum(T // 20 for T in lengths) <= sub <= sum(math.ceil(T / 20) for T in lengths) < full
