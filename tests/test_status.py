"""``cmil-bench status RESULTS_DIR``: finished, in progress, failed and not started runs of a sweep,
per algorithm and task, from the run folders, the Snakefile's logs and the sweep's plan."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.status import format_status, last_line, sweep_status
from cmil_bench import cli


def _rows(env_steps, scores):
    return pd.DataFrame({"algo": "x", "task": "t", "n_demos": 10, "seed": 0,
                         "env_steps": env_steps, "grad_steps": [s // 2 for s in env_steps],
                         "norm_score": scores})


def _run(results: Path, key: str, state: str, log: str | None = None) -> Path:
    """A run folder VARIANT/TASK/dN/sS in one of the states a run passes through."""
    d = results / "runs" / key
    if state != "none":
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    if state == "finished":
        (d / "metrics.csv").write_text(_rows([1000, 2000], [0.1, 0.9]).to_csv(index=False))
    elif state == "evaluated":
        (d / "progress.csv").write_text(_rows([1000, 2000, 3000], [0.1, 0.2, 0.35])
                                        .to_csv(index=False))
        (d / "checkpoint.pt").write_bytes(b"ckpt")
    if log is not None:
        p = results / "logs" / "runs" / f"{key}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(log)
    return d


@pytest.fixture()
def sweep(tmp_path):
    res = tmp_path / "results"
    _run(res, "cmil/maze/d10/s0", "finished", "done\n")
    _run(res, "cmil/maze/d10/s1", "evaluated", "training\n")
    old = _run(res, "dac/maze/d10/s0", "evaluated", "step 3000\n")
    os.utime(old / "checkpoint.pt", (time.time() - 7200, time.time() - 7200))
    _run(res, "dac/maze/d10/s1", "evaluated",
         "loading demos\ncmil-bench run: training diverged: loss 'critic' became nan at step 300\n")
    _run(res, "dac/push/d10/s0", "none",  # refused before its folder was made
         "cmil-bench run: error: config key 'lr' for 'dac' must be a finite number, got nan\n")
    _run(res, "gail/push/d10/s0", "started", "Traceback (most recent call last):\n  File x\n"
         "RuntimeError: mat1 and mat2 shapes cannot be multiplied\n")
    dead = _run(res, "gail/push/d10/s1", "started")
    (dead / ".lock").write_text(f"pid 999999999 on {platform.node()}\n")
    alive = _run(res, "gail/push/d10/s2", "started")
    (alive / ".lock").write_text(f"pid {os.getpid()} on {platform.node()}\n")
    return res


def _states(status) -> dict:
    return {r["key"]: r["state"] for r in status["runs"]}


def test_states_from_folders_and_logs(sweep):
    s = sweep_status(sweep)
    assert s["plan"] is None
    assert _states(s) == {
        "cmil/maze/d10/s0": "finished", "cmil/maze/d10/s1": "in progress",
        "dac/maze/d10/s0": "in progress", "dac/maze/d10/s1": "failed",
        "dac/push/d10/s0": "failed", "gail/push/d10/s0": "failed",
        "gail/push/d10/s1": "failed", "gail/push/d10/s2": "in progress"}
    by = {r["key"]: r for r in s["runs"]}
    run = by["cmil/maze/d10/s1"]
    assert run["evaluations"] == 3 and run["env_steps"] == 3000 and run["score"] == 0.35
    assert run["checkpoint_age_s"] < 600
    assert 7000 < by["dac/maze/d10/s0"]["checkpoint_age_s"] < 7600
    assert by["dac/maze/d10/s1"]["reason"].startswith("cmil-bench run: training diverged")
    assert "finite number" in by["dac/push/d10/s0"]["reason"]
    assert by["gail/push/d10/s0"]["reason"].startswith("RuntimeError: mat1")
    assert "pid 999999999" in by["gail/push/d10/s1"]["reason"]
    assert by["gail/push/d10/s2"]["evaluations"] == 0


def test_plan_names_the_runs_not_started(sweep, tmp_path):
    plan = sweep / "plan.txt"
    keys = ["cmil/maze/d10/s0", "cmil/maze/d10/s1", "cmil/maze/d10/s2", "cmil/push/d10/s0"]
    # Written from another working folder: the folders are matched by VARIANT/TASK/dN/sS.
    plan.write_text("\n".join(f"elsewhere/results/runs/{k}" for k in keys) + "\n")
    s = sweep_status(sweep)
    assert s["plan"] == str(plan)
    states = _states(s)
    assert states["cmil/maze/d10/s2"] == "not started" and states["cmil/push/d10/s0"] == "not started"
    assert states["dac/maze/d10/s1"] == "failed"  # on disk though not planned: still shown
    # An explicit --plan wins over plan.txt; report/runs.txt is the fallback.
    other = tmp_path / "other.txt"
    other.write_text(str(sweep / "runs" / "cmil" / "maze" / "d10" / "s9") + "\n")
    assert _states(sweep_status(sweep, plan=other))["cmil/maze/d10/s9"] == "not started"
    plan.unlink()
    (sweep / "report").mkdir()
    (sweep / "report" / "runs.txt").write_text("# manifest\n" + str(sweep / "runs" / "x/t/d1/s0"))
    s = sweep_status(sweep)
    assert s["plan"].endswith("runs.txt") and _states(s)["x/t/d1/s0"] == "not started"


def test_table_per_algorithm_and_task(sweep):
    text = format_status(sweep_status(sweep))
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["algorithm", "task", "finished", "in progress", "failed", "not started"]
    rows = {tuple(c.strip() for c in ln.strip("|").split("|")[:2]): [c.strip() for c in
            ln.strip("|").split("|")[2:]] for ln in table[2:]}
    assert rows[("cmil", "maze")] == ["1", "1", "0", "?"]  # no plan: not started unknown
    assert rows[("dac", "maze")] == ["0", "1", "1", "?"]
    assert rows[("gail", "push")] == ["0", "1", "2", "?"]
    assert rows[("dac", "push")] == ["0", "0", "1", "?"]
    assert rows[("total", "")] == ["1", "3", "4", "?"]
    assert "cmil/maze/d10/s1: 3 evaluations, env step 3000, norm_score 0.350; last checkpoint" in text
    assert ("dac/maze/d10/s0: 3 evaluations, env step 3000, norm_score 0.350; "
            "last checkpoint 2.0 h ago") in text
    assert "gail/push/d10/s2: no evaluation yet; no checkpoint yet" in text
    failed = text.split("failed:")[1]
    assert "dac/push/d10/s0: cmil-bench run: error: config key 'lr'" in failed
    assert str(sweep / "logs" / "runs" / "dac" / "push" / "d10" / "s0.log") in failed


def test_cli_status(sweep, capsys, tmp_path):
    assert cli.main(["status", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| cmil" in out and "failed:" in out and "in progress:" in out
    assert cli.main(["status", str(sweep), "--json"]) == 0
    import json
    assert len(json.loads(capsys.readouterr().out)["runs"]) == 8
    assert cli.main(["status", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "missing" in err and "Traceback" not in err
    assert cli.main(["status", str(sweep), "--plan", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_last_line_reads_the_tail_of_long_logs(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("x" * 50_000 + "\n" + "step 1\rstep 2\rstep 3\n\n")
    assert last_line(log) == "step 3"
    assert last_line(tmp_path / "absent.log") == ""


def test_sweep_not_started_yet(tmp_path):
    """Before any run: no runs/ folder, only the plan the workflow wrote when it started."""
    res = tmp_path / "results" / "smoke"
    res.mkdir(parents=True)
    (res / "plan.txt").write_text("\n".join(f"results/smoke/runs/{a}/maze/d5/s0"
                                            for a in ("bc", "dac")) + "\n")
    s = sweep_status(res)
    assert {(r["variant"], r["task"], r["state"]) for r in s["runs"]} == {
        ("bc", "maze", "not started"), ("dac", "maze", "not started")}
    assert "| total" in format_status(s)
