"""Adroit tasks: registration, spaces, D4RL success rule, and the missing-dataset stop."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from cmil_bench.errors import UserError  # noqa: E402
from envs.adroit import ADROIT, D4RL_REF_SCORES  # noqa: E402
from envs.registry import get_task, list_tasks, make_env  # noqa: E402

SHAPES = {"door": (39, 28), "hammer": (46, 26), "pen": (45, 24), "relocate": (39, 30)}


def test_adroit_tasks_registered():
    names = set(list_tasks())
    for name, (env_id, steps, _) in ADROIT.items():
        assert {name, name + "-pixels"} <= names
        st, px = get_task(name), get_task(name + "-pixels")
        assert st.env_id == px.env_id == env_id
        assert (st.obs_mode, px.obs_mode) == ("state", "pixels")
        assert st.demo_source == px.demo_source == f"minari:D4RL/{name}/human-v2"
        assert st.max_episode_steps == steps
        assert (st.ref_random_return, st.ref_demo_return) == D4RL_REF_SCORES[name]
    assert get_task("pen").max_episode_steps == 100


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_adroit_spaces(name):
    obs_dim, act_dim = SHAPES[name]
    env = make_env(get_task(name), seed=0)
    try:
        assert env.observation_space.shape == (obs_dim,)
        assert env.action_space.shape == (act_dim,)
        assert np.allclose(env.action_space.low, -1) and np.allclose(env.action_space.high, 1)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (obs_dim,) and obs.dtype == np.float32
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        assert np.isfinite(r) and "success" in info
    finally:
        env.close()


def test_adroit_pixels_frame():
    env = make_env(get_task("door-pixels"))
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 5
    finally:
        env.close()


def test_adroit_success_is_d4rl_goal_step_count():
    door, pen = get_task("door"), get_task("pen")
    ep = lambda k, n=200: [{"success": i < k} for i in range(n)]  # noqa: E731
    assert not door.episode_success(ep(25))  # D4RL: more than 25 steps
    assert door.episode_success(ep(26))
    assert not door.episode_success(ep(1))  # one lucky step is no success
    assert pen.episode_success(ep(21, 100)) and not pen.episode_success(ep(20, 100))
    # Steps need not be consecutive, nor include the last one.
    assert door.episode_success([{"success": i % 2 == 0} for i in range(60)])


def test_missing_dataset_stops_the_run_before_training(tmp_path, monkeypatch, capsys):
    from cmil_bench.cli import main
    from cmil_bench.run import execute

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty-root"))
    out = tmp_path / "run"
    with pytest.raises(UserError) as exc:
        execute(algo="bc", task="door", n_demos=5, seed=0, out=out, preset="smoke")
    msg = str(exc.value)
    assert "D4RL/door/human-v2" in msg and "MINARI_DATASETS_PATH" in msg
    assert "minari download D4RL/door/human-v2" in msg
    assert not (out / "config.json").exists() and not (out / "checkpoint.pt").exists()
    # The command line turns it into one clear message and exit status 2.
    rc = main(["run", "--algo", "bc", "--task", "hammer", "--demos", "5", "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert rc == 2 and "D4RL/hammer/human-v2" in err and "Traceback" not in err


@pytest.mark.slow
def test_adroit_trains_from_a_local_d4rl_shaped_dataset(tmp_path, monkeypatch, demo_writers):
    """With a dataset under the id the task names, a run goes through: BC smoke on door."""
    import pandas as pd

    from cmil_bench.run import execute

    root = tmp_path / "minari"
    demo_writers.minari(root, "D4RL/door/human-v2", lengths=(20, 20, 20), terminal=(False,) * 3)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    path = execute(algo="bc", task="door", n_demos=2, seed=0, out=tmp_path / "run", preset="smoke",
                   overrides={"total_steps": "20", "eval_every": "20", "eval_episodes": "1"})
    df = pd.read_csv(path)
    assert list(df["demo_source"].unique()) == ["minari:D4RL/door/human-v2"]
    lo, hi = D4RL_REF_SCORES["door"]
    row = df.iloc[-1]
    assert row["norm_score"] == pytest.approx((row["eval_return"] - lo) / (hi - lo))
    assert Path(path).name == "metrics.csv"
