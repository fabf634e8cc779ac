"""benchmarks/time_update.py (the latent agent's update rate, current code against a revision) and
benchmarks/gpu_check.sh (its CPU fallback)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "batch_size=2", "expert_batch_size=2", "seq_len=4", "horizon=3", "deter=16", "stoch=4",
        "hidden=16", "mlp_layers=16,", "actor_layers=16,", "critic_layers=16,", "disc_hidden=16,",
        "imag_starts=0", "--updates", "2", "--repeats", "2", "--warmup", "1"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_update.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def _worktrees() -> set[str]:
    out = subprocess.run(["git", "-C", str(ROOT), "worktree", "list", "--porcelain"], capture_output=True,
                         text=True).stdout
    return {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")}


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["cmil", "vmail"])
def test_head_against_itself_prints_both_rates_and_their_ratio(algo):
    before = _worktrees()
    res = _run("--rev", "HEAD", "--algo", algo, *TINY)
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and "latent_agent" in line]
    assert len(rows) == 2 and rows[0].startswith("| HEAD |") and "(working tree)" in rows[1]
    # both trees build the same agent at these sizes
    assert rows[0].split("|")[3] == rows[1].split("|")[3]
    rates = [float(r.split("|")[4].split()[0]) for r in rows]
    assert all(r > 0 for r in rates)
    m = re.search(r"ratio current / HEAD: ([0-9.]+)x \(wall\)", res.stdout)
    assert m and float(m.group(1)) == pytest.approx(rates[1] / rates[0], rel=0.02)
    # its temporary worktree is gone (another run's may come and go meanwhile)
    assert {t for t in _worktrees() if "time_update_" in t} <= {t for t in before if "time_update_" in t}


@pytest.mark.slow
def test_bad_revision_and_unknown_field_are_one_line_errors():
    res = _run("--rev", "no-such-revision-xyz", *TINY)
    assert res.returncode != 0 and "cannot check out 'no-such-revision-xyz'" in res.stderr
    res = _run("--rev", "HEAD", *TINY, "--set", "no_such_field=1")
    assert res.returncode != 0 and "no field 'no_such_field'" in res.stderr


@pytest.mark.slow
def test_gpu_check_falls_back_to_the_cpu_with_the_same_layout(tmp_path):
    """No GPU here: the check runs its CPU fallback (tiny sizes) and writes one JSON file."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the fallback does not run")
    out = tmp_path / "check.json"
    res = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--no-compile"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["sizes"] == "smoke"
    runs = {(r["algo"], r["input"]): r for r in report["runs"]}
    assert set(runs) == {("cmil", "states"), ("cmil", "pixels"), ("vmail", "states")}
    for r in runs.values():  # the short runs went through `--set device=cpu` to the end
        assert r["ok"] and r["run_device"] == "cpu" and r["env_steps"] > 0 and r["grad_steps"] > 0
    rates = report["updates"]
    assert [(r["input"], r["amp_bf16"], r["compile"]) for r in rates] == [
        (i, a, c) for a, c in ((False, False), (True, False), (False, True), (True, True))
        for i in ("states", "pixels")]
    for r in rates:
        if r["compile"]:
            assert not r["ok"] and r["skipped"] == "--no-compile"
        else:
            assert r["ok"] and r["updates_per_s"] > 0 and r["peak_host_mib"] > 0
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cuda",
                          "--out", str(tmp_path / "x.json")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "no CUDA device" in res.stderr


@pytest.mark.slow
def test_eval_speed_counts_every_step_of_lockstep_episodes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_eval_speed", ROOT / "benchmarks" / "eval_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    one = mod.eval_rate("pointmaze-umaze", episodes=3, n_par=1)
    two = mod.eval_rate("pointmaze-umaze", episodes=3, n_par=2)  # batches of 2 and 1
    for r in (one, two):  # every step of the 3 episodes (at most 300 each), none of a finished one
        assert r["episodes"] == 3 and 3 <= r["env_steps"] <= 900
        assert r["episodes_per_s"] > 0 and r["env_steps_per_s"] == pytest.approx(
            r["episodes_per_s"] * r["env_steps"] / 3)
    assert two["parallel"] == 2
