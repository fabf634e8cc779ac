"""Plain helpers shared by the test modules (not a test module; fixtures live in conftest.py).

Every test module imports them one way: ``from helpers import ...`` (pytest puts tests/ on
``sys.path`` because tests/ holds a conftest.py and no ``__init__.py``).

- a tiny PointMaze-shaped demo file in the D4RL layout (``write_pointmaze_demos``),
- the command line of a smoke run (``run_argv``) and ways to call it in this process
  (``call_cli``) or in a fresh one (``call_cli_subprocess``, ``cli_env``),
- checks of a failed command (``assert_clean_failure``) and of two equal runs
  (``read_metrics``, ``assert_same_metrics``, which ignore ``wall_s``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cmil_bench import cli

TASK = "pointmaze-umaze"
STATE_DIM, ACT_DIM = 6, 2  # PointMaze state = observation (4) + desired goal (2)
EPISODE_LENGTHS = (40, 55, 30, 45, 50, 35)
SUBPROCESS_TIMEOUT = 120
# BC with more evaluations than its smoke preset, so that a kill from outside lands mid-run.
BC_SETS = {"total_steps": 150, "eval_every": 30}


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


def minari_path_set(root):
    """``MINARI_DATASETS_PATH`` set to ``root`` inside the block, restored (or unset) after it:
    for session fixtures, which cannot use ``monkeypatch`` (``envs.collect``'s own context)."""
    from envs.collect import _datasets_root

    return _datasets_root(root)
