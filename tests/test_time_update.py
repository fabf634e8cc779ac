"""benchmarks/time_update.py: the latent agent's update rate, current code against a revision."""

from __future__ import annotations

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


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["cmil", "vmail"])
def test_head_against_itself_prints_both_rates_and_their_ratio(algo):
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
    # the temporary worktree is gone
    trees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                           text=True).stdout
    assert "time_update_" not in trees


@pytest.mark.slow
def test_bad_revision_and_unknown_field_are_one_line_errors():
    res = _run("--rev", "no-such-revision-xyz", *TINY)
    assert res.returncode != 0 and "cannot check out 'no-such-revision-xyz'" in res.stderr
    res = _run("--rev", "HEAD", *TINY, "--set", "no_such_field=1")
    assert res.returncode != 0 and "no field 'no_such_field'" in res.stderr
