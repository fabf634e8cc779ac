"""A run killed at any moment and started again with the same command finishes with the same
metrics.csv (all columns but wall_s) as a run that was never interrupted.

- ``test_sigkill_midway_then_resume``: a real ``cmil-bench run`` process is SIGKILLed from
  outside as soon as progress.csv shows an evaluation and metrics.csv does not exist yet.
- ``test_killed_after_checkpoint_resumes`` (an adversarial and a world-model algorithm, DAC and
  CMIL, with their smoke presets; skipped while their module does not exist): the run process
  kills itself right after its first checkpoint, so the test does not depend on timing.
  ``CMIL_BENCH_ALL_ALGOS=1`` runs it for every algorithm.
- ``test_killed_while_writing_checkpoint``: killed half-way through writing its second
  checkpoint: the first one must still be intact and used.
- ``test_unreadable_checkpoint_starts_clean``: garbage or a torn file in place of
  checkpoint.pt must not block the run: it starts clean and still ends equal.
- ``test_report_ignores_run_in_progress``: ``cmil-bench report`` counts the killed run as in
  progress and leaves it out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import BC_SETS, SUBPROCESS_TIMEOUT, assert_same_metrics, call_cli, cli_env, run_argv

pytestmark = pytest.mark.slow  # every test trains, most in a subprocess

ALGOS = (["bc", "gail", "dac", "vmail", "cmil"] if os.environ.get("CMIL_BENCH_ALL_ALGOS") == "1"
         else ["dac", "cmil"])

KILL_AFTER_CHECKPOINT = r"""
import os, signal, sys
import cmil_bench.run as R
kill_at, seen = int(os.environ["CMIL_TEST_KILL_AT"]), [0]
real = R.Run.checkpoint
def checkpoint(self, state):
    real(self, state)
    seen[0] += 1
    if seen[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
R.Run.checkpoint = checkpoint
from cmil_bench.cli import main
sys.exit(main(sys.argv[1:]))
"""

KILL_DURING_CHECKPOINT_WRITE = r"""
import os, signal, sys
import cmil_bench.run as R
kill_at, seen = int(os.environ["CMIL_TEST_KILL_AT"]), [0]
real = R._atomic_write
def atomic_write(path, write):
    if path.name == "checkpoint.pt":
        seen[0] += 1
        if seen[0] == kill_at:  # half of the temporary file is on disk when the kill comes
            with open(path.with_name(path.name + f".tmp{os.getpid()}"), "wb") as f:
                write(f)
                f.truncate(f.tell() // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    real(path, write)
R._atomic_write = atomic_write
from cmil_bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _available() -> list[str]:
    from algorithms import available

    return available()


def _script_run(script: str, argv: list[str], kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT, env=cli_env(CMIL_TEST_KILL_AT=str(kill_at)))


def _assert_killed_midway(out: Path, proc) -> None:
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    assert not (out / "metrics.csv").exists()
    assert len(pd.read_csv(out / "progress.csv")) >= 1
    assert (out / "checkpoint.pt").exists()


@pytest.fixture(scope="module")
def bc_reference(reference_run):
    """An uninterrupted BC run (BC_SETS); its folder."""
    return reference_run("bc", BC_SETS)


@pytest.fixture(scope="module")
def bc_killed(tmp_path_factory, demo_source):
    """A BC run (BC_SETS) SIGKILLed from outside mid-way; its folder, left as the kill left it."""
    out = tmp_path_factory.mktemp("resume") / "bc-killed"
    argv = [sys.executable, "-m", "cmil_bench.cli", *run_argv(out, demo_source, sets=BC_SETS)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=cli_env())
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    progress = out / "progress.csv"
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if progress.exists() and not (out / "metrics.csv").exists():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        else:
            err = proc.stderr.read().decode() if proc.poll() is not None else "(still running)"
            pytest.fail(f"the run ended before it could be killed mid-way: {err[-2000:]}")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return out


def test_sigkill_midway_then_resume(bc_killed, bc_reference, demo_source, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(bc_killed, out)
    assert not (out / "metrics.csv").exists()
    done = len(pd.read_csv(out / "progress.csv"))
    assert done >= 1
    rc, _, err = call_cli(run_argv(out, demo_source, sets=BC_SETS), capsys)
    assert rc == 0, err
    assert not (out / "progress.csv").exists()
    assert "ignoring" not in err and "starting clean" not in err
    assert_same_metrics(out / "metrics.csv", bc_reference / "metrics.csv")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["algo"] == "bc"


@pytest.mark.parametrize("algo", ALGOS)
def test_killed_after_checkpoint_resumes(algo, demo_source, tmp_path, reference_run, capsys):
    if algo not in _available():
        pytest.skip(f"algorithms/{algo}.py does not exist in this checkout yet")
    argv = run_argv(tmp_path / "killed", demo_source, algo=algo)
    proc = _script_run(KILL_AFTER_CHECKPOINT, argv, kill_at=1)
    _assert_killed_midway(tmp_path / "killed", proc)
    rows_at_kill = pd.read_csv(tmp_path / "killed" / "progress.csv")

    rc, _, err = call_cli(argv, capsys)
    assert rc == 0, err
    assert "ignoring" not in err and "starting clean" not in err
    whole = reference_run(algo)
    assert_same_metrics(tmp_path / "killed" / "metrics.csv", whole / "metrics.csv")
    # the rows written before the kill are the resumed run's first rows, unchanged
    final = pd.read_csv(tmp_path / "killed" / "metrics.csv")
    pd.testing.assert_frame_equal(final.iloc[: len(rows_at_kill)], rows_at_kill,
                                  check_exact=True)


def test_killed_while_writing_checkpoint(bc_reference, demo_source, tmp_path, capsys):
    out = tmp_path / "run"
    argv = run_argv(out, demo_source, sets=BC_SETS)
    proc = _script_run(KILL_DURING_CHECKPOINT_WRITE, argv, kill_at=2)
    _assert_killed_midway(out, proc)
    assert list(out.glob("checkpoint.pt.tmp*")), "the torn temporary file should be there"
    # progress.csv already has the second evaluation; the checkpoint is still the first one
    assert len(pd.read_csv(out / "progress.csv")) == 2

    rc, _, err = call_cli(argv, capsys)
    assert rc == 0, err
    assert "ignoring" not in err
    assert not list(out.glob("*.tmp*")), "stale temporary files must be cleaned up"
    assert_same_metrics(out / "metrics.csv", bc_reference / "metrics.csv")


@pytest.mark.parametrize("damage", ["garbage", "torn"])
def test_unreadable_checkpoint_starts_clean(bc_reference, demo_source, tmp_path, capsys, damage):
    out = tmp_path / "run"
    shutil.copytree(bc_reference, out)
    (out / "metrics.csv").unlink()  # as if killed right before completing
    ckpt = out / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"garbage": b"\x93NUMPY not a checkpoint" * 100,
                      "torn": data[: len(data) // 2]}[damage])
    rc, _, err = call_cli(run_argv(out, demo_source, sets=BC_SETS), capsys)
    assert rc == 0, err
    assert "ignoring unreadable checkpoint" in err
    assert_same_metrics(out / "metrics.csv", bc_reference / "metrics.csv")


def test_finished_run_is_left_alone(bc_reference, demo_source, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(bc_reference, out)
    before = (out / "metrics.csv").read_bytes()
    rc, stdout, err = call_cli(run_argv(out, demo_source, sets=BC_SETS), capsys)
    assert rc == 0
    assert "already complete" in err
    assert stdout.strip() == str(out / "metrics.csv")
    assert (out / "metrics.csv").read_bytes() == before


def test_report_ignores_run_in_progress(bc_reference, bc_killed, tmp_path, capsys):
    pytest.importorskip("analysis.report", reason="analysis/report.py does not exist yet")
    runs = tmp_path / "runs"
    shutil.copytree(bc_reference, runs / "bc" / "pointmaze-umaze" / "d5" / "s0")
    shutil.copytree(bc_killed, runs / "bc" / "pointmaze-umaze" / "d5" / "s1")
    rc, _, err = call_cli(["report", "--runs", str(runs), "--out", str(tmp_path / "report"),
                           "--reps", "50", "--no-figures"], capsys)
    assert rc == 0, err
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["runs"]["in_progress_ignored"] == 1
    assert summary["runs"]["finished"] == 1
