"""Bad input and failures end with one clear message, a non-zero exit and no finished-looking result.

Each case goes through the command line (``cmil_bench.cli.main(argv)`` in this process, or the
``cmil-bench`` script in a subprocess where the process's environment matters) and checks: the
exit status, exactly one ``error:`` line naming the bad thing, no traceback, no ``metrics.csv``.

The helpers (demo file, run arguments, the clean-failure check) are in helpers.py, the
``demo_source`` fixture in conftest.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import (
    ACT_DIM,
    EPISODE_LENGTHS,
    SUBPROCESS_TIMEOUT,
    TASK,
    assert_clean_failure,
    call_cli,
    call_cli_subprocess,
    cli_env,
    run_argv,
    write_pointmaze_demos,
)

# ---------------------------------------------------------------------------------- bad names


def test_unknown_algorithm(tmp_path, demo_source, capsys):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, algo="nope-algo"), capsys)
    line = assert_clean_failure(rc, err, "'nope-algo'", "bc", out=out)
    assert "unknown algorithm" in line
    assert not out.exists(), "a bad algorithm name must not create the run folder"


def test_unknown_task(tmp_path, demo_source, capsys):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, task="nope-task"), capsys)
    line = assert_clean_failure(rc, err, "'nope-task'", TASK, out=out)
    assert "unknown task" in line
    assert not out.exists()


def test_unknown_config_key(tmp_path, demo_source, capsys):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, sets={"learning_rate": "0.1"}), capsys)
    line = assert_clean_failure(rc, err, "'learning_rate'", "lr", out=out)
    assert "unknown config key" in line
    assert not out.exists()


def test_unknown_preset(tmp_path, demo_source, capsys):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, preset="turbo"), capsys)
    assert_clean_failure(rc, err, "'turbo'", "smoke", out=out)


@pytest.mark.parametrize("key,value,expect", [
    ("lr", "abc", "number"),
    ("total_steps", "1.5", "integer"),
    ("normalize_obs", "maybe", "true/false"),
    ("hidden", "(64,x)", "integer"),
])
def test_wrong_value_type(tmp_path, demo_source, capsys, key, value, expect):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, sets={key: value}), capsys)
    assert_clean_failure(rc, err, f"'{key}'", expect, out=out)
    assert not out.exists()


def test_set_without_equals(tmp_path, demo_source, capsys):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source) + ["--set", "lr"], capsys)
    assert_clean_failure(rc, err, "key=value", "'lr'", out=out)


def test_negative_seed(tmp_path, demo_source, capsys):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, seed=-1), capsys)
    assert_clean_failure(rc, err, "seed", "-1", out=out)


# --------------------------------------------------------------------------------- bad data


def test_missing_dataset_path(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "demos.hdf5"
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, f"d4rl:{missing}"), capsys)
    assert_clean_failure(rc, err, str(missing), out=out)
    assert not out.exists()


def test_missing_minari_dataset(tmp_path, capsys, monkeypatch):
    """The task's default source (a local Minari id) under an empty Minari root."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty-root"))
    out = tmp_path / "run"
    argv = [a for a in run_argv(out, "x") if a not in ("--demo-source", "x")]
    rc, _, err = call_cli(argv, capsys)
    assert_clean_failure(rc, err, "cmil-bench/pointmaze-umaze/expert-v0", out=out)


@pytest.mark.parametrize("damage", ["truncated", "zeroed-header", "empty"])
def test_corrupt_hdf5(tmp_path, capsys, damage):
    good = tmp_path / "good.hdf5"
    write_pointmaze_demos(good)
    data = good.read_bytes()
    bad = tmp_path / f"{damage}.hdf5"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "zeroed-header":
        bad.write_bytes(b"\0" * 512 + data[512:])
    else:
        bad.write_bytes(b"")
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, f"d4rl:{bad}"), capsys)
    assert_clean_failure(rc, err, str(bad), out=out)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_npz(tmp_path, capsys, damage):
    folder = tmp_path / "npz"
    folder.mkdir()
    rng = np.random.default_rng(0)
    T = 12
    episode = {
        "image": rng.integers(0, 256, size=(T + 1, 64, 64, 3), dtype=np.uint8),
        "action": rng.uniform(-1, 1, size=(T + 1, ACT_DIM)).astype(np.float32),
        "reward": np.ones(T + 1, dtype=np.float32),
        "is_first": np.eye(1, T + 1, 0, dtype=bool)[0],
        "is_last": np.eye(1, T + 1, T, dtype=bool)[0],
        "is_terminal": np.zeros(T + 1, dtype=bool),
    }
    np.savez_compressed(folder / "ep0.npz", **episode)
    bad = folder / "ep1.npz"
    if damage == "garbage":
        bad.write_bytes(b"this is not a zip archive" * 10)
    else:
        np.savez_compressed(bad, **episode)
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 3])
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, f"npz:{folder}", task=TASK + "-pixels"), capsys)
    assert_clean_failure(rc, err, "ep1.npz", out=out)
    assert not out.exists()


def test_more_demos_than_exist(tmp_path, demo_source, capsys):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, demos=50), capsys)
    assert_clean_failure(rc, err, "50", str(len(EPISODE_LENGTHS)), out=out)
    assert not out.exists()


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_demo_count(tmp_path, demo_source, capsys, n):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, demos=n), capsys)
    assert_clean_failure(rc, err, str(n), out=out)


def test_state_demos_for_pixel_task(tmp_path, demo_source, capsys):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, task=TASK + "-pixels"), capsys)
    assert_clean_failure(rc, err, "'pixels'", out=out)


def test_out_is_a_file(tmp_path, demo_source, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    rc, _, err = call_cli(run_argv(out, demo_source), capsys)
    assert_clean_failure(rc, err, str(out))
    assert out.read_text() == "not a folder"


# ------------------------------------------------------------------------------- divergence


@pytest.mark.slow
def test_nan_loss_stops_with_named_loss_and_step(tmp_path, demo_source, capsys, monkeypatch):
    """A loss that turns NaN after the first evaluation: exit 3, the message names the loss and
    the step, the first evaluation's checkpoint stays (finite, resumable), no metrics.csv."""
    import torch

    import algorithms.bc as bc

    calls = {"n": 0}
    real_loss = bc.loss_fn

    def poisoned(policy, obs, act):
        calls["n"] += 1
        loss = real_loss(policy, obs, act)
        return loss * float("nan") if calls["n"] > 30 else loss

    monkeypatch.setattr(bc, "loss_fn", poisoned)
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source), capsys)  # smoke: evaluations at 30 and 60
    line = assert_clean_failure(rc, err, "'bc_loss'", "nan", "step 31", status=3, out=out)
    assert "diverged" in line
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["algo_state"]["step"] == 30
    assert all(torch.isfinite(v).all() for v in ckpt["algo_state"]["policy"].values())
    assert len(ckpt["rows"]) == 1
    progress = pd.read_csv(out / "progress.csv")
    assert progress["grad_steps"].tolist() == [30]


# ------------------------------------------------------------------------------- rendering


def test_pixel_task_without_offscreen_renderer(tmp_path, capsys, monkeypatch):
    """No EGL/OSMesa: making the off-screen context fails; the run stops with a UserError that
    names the task and MUJOCO_GL."""
    from gymnasium.envs.mujoco import mujoco_rendering

    def no_gl(self, render_mode):
        raise RuntimeError("simulated: no EGL display available")

    monkeypatch.setattr(mujoco_rendering.MujocoRenderer, "_get_viewer", no_gl)
    source = write_pointmaze_demos(tmp_path / "px.hdf5", pixels=True, lengths=(20, 25, 30))
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, source, demos=2, task=TASK + "-pixels"), capsys)
    assert_clean_failure(rc, err, TASK + "-pixels", "MUJOCO_GL", out=out)


@pytest.mark.slow
def test_invalid_mujoco_gl(tmp_path, demo_source):
    """MuJoCo reads MUJOCO_GL at import: an unknown value stops every command at once. Through
    the installed ``cmil-bench`` script, so that its exit status reaches the shell too."""
    out = tmp_path / "run"
    exe = shutil.which("cmil-bench")
    argv = [exe] if exe else [sys.executable, "-m", "cmil_bench.cli"]
    proc = subprocess.run([*argv, *run_argv(out, demo_source)], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT, env=cli_env(MUJOCO_GL="invalid"))
    assert_clean_failure(proc.returncode, proc.stderr, "MUJOCO_GL='invalid'", out=out)
    assert not out.exists()


@pytest.mark.slow
def test_pixel_task_with_rendering_disabled(tmp_path):
    """MUJOCO_GL=disable loads MuJoCo without any GL: state tasks work, a pixel task stops with a
    clear message (and gymnasium's half-built viewer must not print a traceback on the way)."""
    source = write_pointmaze_demos(tmp_path / "px.hdf5", pixels=True, lengths=(20, 25, 30))
    out = tmp_path / "run"
    proc = call_cli_subprocess(run_argv(out, source, demos=2, task=TASK + "-pixels"),
                               env=cli_env(MUJOCO_GL="disable"))
    assert_clean_failure(proc.returncode, proc.stderr, TASK + "-pixels", "MUJOCO_GL", out=out)


FAIL_EGL_ONCE = r"""
import importlib.abc, sys
class FailEGL(importlib.abc.MetaPathFinder):
    # MuJoCo's EGL backend fails to load, as on a machine without libEGL.
    def find_spec(self, name, path=None, target=None):
        if name == "mujoco.egl":
            raise AttributeError("simulated: libEGL not found")
        return None
sys.meta_path.insert(0, FailEGL())
from cmil_bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_default_gl_falls_back_for_state_tasks():
    """MUJOCO_GL unset and EGL unusable: the CLI switches rendering off and state tasks work."""
    env = cli_env()
    env.pop("MUJOCO_GL", None)
    proc = subprocess.run([sys.executable, "-c", FAIL_EGL_ONCE, "list"], capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "rendering is off" in proc.stderr
    assert TASK in proc.stdout
    assert "Traceback" not in proc.stderr
