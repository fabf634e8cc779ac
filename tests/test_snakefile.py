"""The Snakefile's targets redo a run whose folder was deleted, and the report after it, even
though the report itself still exists (Snakemake alone leaves a missing intermediate file be).
Dry runs only, on a finished-looking smoke sweep made of empty files."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ALGOS = '{"algos": ["bc", "gail"], "seeds": [0, 1]}'


def _dry(work: Path, target: str = "smoke") -> dict[str, int]:
    """``snakemake -n TARGET``: job counts per rule (empty when nothing is to be done)."""
    proc = subprocess.run(["snakemake", "-n", "--cores", "1", target, "--config", f"smoke={ALGOS}"],
                          cwd=work, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if "Nothing to be done" in proc.stdout:
        return {}
    stats = proc.stdout[proc.stdout.index("Job stats:"):]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)
            if m.group(1) != "total"}


def _finish(work: Path) -> list[Path]:
    """Touch every output of the smoke sweep, in the order the workflow makes them."""
    res = work / "results" / "smoke"
    data = [res / "datasets" / "pointmaze-umaze.json"]
    runs = [res / "runs" / a / "pointmaze-umaze" / "d5" / f"s{s}" / "metrics.csv"
            for a in ("bc", "gail") for s in (0, 1)]
    report = [res / "report" / "runs.txt", res / "report" / "summary.json"]
    t = 1_700_000_000
    for i, p in enumerate(data + runs + report):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x\n")
        os.utime(p, (t + 10 * i, t + 10 * i))
    return runs


@pytest.mark.slow
def test_deleted_run_is_redone_with_its_report(workflow_copy):
    work = workflow_copy
    full = _dry(work)
    assert full["run"] == 4 and full["report"] == 1
    runs = _finish(work)
    assert _dry(work) == {}
    runs[2].unlink()
    again = _dry(work)
    assert again.get("run") == 1 and again.get("manifest") == 1 and again.get("report") == 1
    assert "demos" not in again
