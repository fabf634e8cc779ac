"""Bad input and failures end with one clear message, a non-zero exit and no finished-looking result.

Each case goes through the command line (``cmil_bench.cli.main(argv)`` in this process, or the
``cmil-bench`` script in a subprocess where the process's environment matters) and checks: the
exit status, exactly one ``error:`` line naming the bad thing, no traceback, no ``metrics.csv``.

This module also holds the small helpers the other fault tests import (test_resume,
test_determinism, test_cli): a tiny PointMaze-shaped demo file in the D4RL layout, the smoke
arguments of a BC run, and a metrics comparison that ignores ``wall_s``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmil_bench import cli

TASK = "pointmaze-umaze"
STATE_DIM, ACT_DIM = 6, 2  # PointMaze state = observation (4) + desired goal (2)
EPISODE_LENGTHS = (40, 55, 30, 45, 50, 35)
SUBPROCESS_TIMEOUT = 120


# ------------------------------------------------------------------------------------- helpers


def write_pointmaze_demos(path: Path, pixels: bool = False, seed: int = 0,
                          lengths=EPISODE_LENGTHS) -> str:
    """A D4RL-layout HDF5 file shaped like PointMaze-UMaze demos; returns the demo source string.

    Random observations and actions; reward 1 per step, so the demo return (the episode length)
    differs from a random policy's. With ``pixels`` the observations are a group with ``state``
    and 64x64x3 ``pixels``.
    """
    import h5py

    rng = np.random.default_rng(seed)
    n = int(sum(lengths))
    timeouts = np.zeros(n, dtype=bool)
    timeouts[np.cumsum(lengths) - 1] = True
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        state = rng.normal(size=(n, STATE_DIM)).astype(np.float32)
        if pixels:
            f.create_dataset("observations/state", data=state)
            f.create_dataset("observations/pixels",
                             data=rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8))
        else:
            f.create_dataset("observations", data=state)
        f.create_dataset("actions", data=rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32))
        f.create_dataset("rewards", data=np.ones(n, dtype=np.float32))
        f.create_dataset("terminals", data=np.zeros(n, dtype=bool))
        f.create_dataset("timeouts", data=timeouts)
    return f"d4rl:{path}"


# Shared by every module that imports these helpers (a fixture imported into several modules
# would be built once per module; the cache makes the demo file and the reference runs one per
# session, so that runs of different modules are comparable).
_SESSION_CACHE: dict = {}


def shared_demo_source(tmp_path_factory) -> str:
    if "demos" not in _SESSION_CACHE:
        path = tmp_path_factory.mktemp("fault-demos") / "pointmaze.hdf5"
        _SESSION_CACHE["demos"] = write_pointmaze_demos(path)
    return _SESSION_CACHE["demos"]


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory) -> str:
    """``d4rl:PATH`` of a 6-episode PointMaze-shaped demo file, written once per session."""
    return shared_demo_source(tmp_path_factory)


def reference_run(tmp_path_factory, algo: str, sets: dict | None = None) -> Path:
    """The folder of one uninterrupted run (smoke preset + ``sets``, seed 0), once per session."""
    key = ("run", algo, tuple(sorted((sets or {}).items())))
    if key not in _SESSION_CACHE:
        out = tmp_path_factory.mktemp(f"reference-{algo}") / "run"
        rc = cli.main(run_argv(out, shared_demo_source(tmp_path_factory), algo=algo, sets=sets))
        assert rc == 0, f"reference {algo} run failed with exit status {rc}"
        _SESSION_CACHE[key] = out
    return _SESSION_CACHE[key]


def run_argv(out, source: str, algo: str = "bc", demos: int = 5, seed: int = 0,
             preset: str | None = "smoke", sets: dict | None = None, task: str = TASK) -> list[str]:
    argv = ["run", "--algo", algo, "--task", task, "--demos", str(demos), "--seed", str(seed),
            "--out", str(out), "--demo-source", source, "--progress", "off"]
    if preset:
        argv += ["--preset", preset]
    for k, v in (sets or {}).items():
        argv += ["--set", f"{k}={v}"]
    return argv


def call_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``cmil-bench ARGV`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def call_cli_subprocess(argv: list[str], env: dict | None = None,
                        timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    """``cmil-bench ARGV`` in a fresh Python process (for what a process's start decides)."""
    return subprocess.run([sys.executable, "-m", "cmil_bench.cli", *argv], capture_output=True,
                          text=True, timeout=timeout, env=env or cli_env())


def read_metrics(path) -> pd.DataFrame:
    """A metrics.csv without ``wall_s``, the one column allowed to differ between equal runs."""
    df = pd.read_csv(path)
    assert "wall_s" in df.columns
    return df.drop(columns=["wall_s"])


def assert_same_metrics(a, b) -> None:
    pd.testing.assert_frame_equal(read_metrics(a), read_metrics(b), check_exact=True)


def assert_clean_failure(rc: int, err: str, *names: str, out: Path | None = None,
                         status: int = 2) -> str:
    """Exit ``status``, one ``error:`` line naming every one of ``names``, no traceback, no
    metrics.csv under ``out``. Returns the error line."""
    assert rc == status, f"exit status {rc}, expected {status}; stderr:\n{err}"
    assert "Traceback" not in err, f"traceback on stderr:\n{err}"
    lines = [ln for ln in err.splitlines() if "error:" in ln or "diverged:" in ln]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    if out is not None:
        assert not list(Path(out).rglob("metrics.csv")), f"a metrics.csv was left under {out}"
    return lines[0]


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
