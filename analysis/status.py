"""Where a sweep stands: ``cmil-bench status RESULTS_DIR``.

RESULTS_DIR is a sweep's results folder, as the Snakefile lays it out:
``RESULTS_DIR/runs/VARIANT/TASK/dN/sS/`` (the run folders) and
``RESULTS_DIR/logs/runs/VARIANT/TASK/dN/sS.log`` (each run's output). A folder without ``runs/``
that holds run folders itself is taken as the runs folder (no logs then).

Each run is one of

* **finished**: its folder has ``metrics.csv``;
* **failed**: not finished, and either the last line of its log reports an error (a
  ``cmil-bench`` error line, a Python traceback, a SLURM cancellation or kill), or its folder's
  lock file names a process on this machine that no longer exists. A run refused before its
  folder was made (bad input) has only a log: it is failed too;
* **in progress**: not finished and not failed (a process on another machine cannot be checked;
  the time since its last checkpoint tells a stalled run);
* **not started**: named by the sweep's plan, with neither a folder nor a log.

The plan (the runs the sweep will make) is read from, in this order: ``--plan FILE``;
``RESULTS_DIR/plan.txt`` (the Snakefile writes it, from the config, whenever the workflow
starts); ``RESULTS_DIR/report/runs.txt`` (the manifest the Snakefile writes once every run has
finished). Each lists run folders one per line. Without any of them only
what is on disk is known, and "not started" is shown as "?".

This module reads files only; it imports no torch, algorithm or environment code.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

import pandas as pd

from analysis.runs import FINISHED_FILE, PROGRESS_FILE, find_run_dirs, read_manifest
from cmil_bench.errors import UserError

_RUN_PATH = re.compile(r"^(?P<variant>[^/]+)/(?P<task>[^/]+)/d(?P<demos>\d+)/s(?P<seed>-?\d+)$")
# The last line of a failed run's log: an error line of cmil-bench, a traceback's last line, or
# the scheduler's or kernel's word.
FAILED_LINE = re.compile(
    r"error:|training diverged|interrupted|Traceback|^\w*(Error|Exception)\b|Killed|"
    r"CANCELLED|DUE TO TIME LIMIT|oom-kill|Out Of Memory|Segmentation fault", re.IGNORECASE)
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"


def last_line(path: Path, max_bytes: int = 8192) -> str:
    """The last non-empty line of a text file ("" when there is none), progress-bar carriage
    returns taken as line ends."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", tail) if ln.strip()]
    return lines[-1] if lines else ""


def _process_gone(run_dir: Path) -> str | None:
    """A reason when the folder's lock names a process of this machine that has ended."""
    try:
        text = (run_dir / LOCK).read_text(errors="replace").strip()
    except OSError:
        return None
    m = re.match(r"pid (\d+) on (\S+)", text)
    if not m or m.group(2) != platform.node():
        return None
    pid = int(m.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"its process (pid {pid}) ended without finishing"
    except PermissionError:  # alive, another user's
        return None
    return None


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def _progress_of(run_dir: Path, now: float) -> dict:
    """The last evaluation (env step, grad step, score) and the time since the last checkpoint."""
    out = {"evaluations": 0, "env_steps": None, "grad_steps": None, "score": None,
           "checkpoint_age_s": None}
    try:
        df = pd.read_csv(run_dir / PROGRESS_FILE)
    except (OSError, ValueError, pd.errors.EmptyDataError, pd.errors.ParserError):
        df = None
    if df is not None and len(df):
        last = df.iloc[-1]
        out["evaluations"] = int(len(df))
        for col in ("env_steps", "grad_steps"):
            v = pd.to_numeric(last.get(col), errors="coerce")
            out[col] = None if pd.isna(v) else int(v)
        for col in ("norm_score", "eval_return"):
            v = pd.to_numeric(last.get(col), errors="coerce")
            if col in df.columns and not pd.isna(v):
                out["score"], out["score_name"] = float(v), col
                break
    ckpt = run_dir / CHECKPOINT
    if ckpt.is_file():
        out["checkpoint_age_s"] = now - ckpt.stat().st_mtime
    return out


def _key_of(run_dir: Path, runs_root: Path) -> str:
    try:
        key = run_dir.resolve().relative_to(runs_root.resolve()).as_posix()
    except ValueError:
        key = run_dir.as_posix()
    if _RUN_PATH.match(key):
        return key
    # A plan written from another working folder: matched by VARIANT/TASK/dN/sS.
    tail = "/".join(run_dir.parts[-4:])
    return tail if _RUN_PATH.match(tail) else key


def _identity(key: str, run_dir: Path | None) -> tuple[str, str]:
    """(variant, task) of a run, from its path or else its config.json."""
    m = _RUN_PATH.match(key)
    if m:
        return m["variant"], m["task"]
    if run_dir is not None:
        try:
            rec = json.loads((run_dir / "config.json").read_text())
            return str(rec.get("variant") or rec.get("algo") or "?"), str(rec.get("task") or "?")
        except (OSError, ValueError, AttributeError):
            pass
    return "?", "?"


def find_plan(results: Path, plan: str | Path | None) -> Path | None:
    if plan is not None:
        p = Path(plan)
        if not p.is_file():
            raise UserError(f"plan {str(p)!r} does not exist")
        return p
    for p in (results / "plan.txt", results / "report" / "runs.txt"):
        if p.is_file():
            return p
    return None


def sweep_status(results: str | Path, plan: str | Path | None = None,
                 now: float | None = None) -> dict:
    """Every run of the sweep under ``results`` with its state; see the module docstring.

    Returns ``{"runs_root", "plan" (path or None), "runs": [{"key", "variant", "task",
    "state", ...}]}`` with, for runs in progress, ``evaluations``, ``env_steps``,
    ``grad_steps``, ``score`` and ``checkpoint_age_s``; for failed runs ``reason`` and ``log``.
    """
    results = Path(results)
    if not results.is_dir():
        raise UserError(f"results folder {str(results)!r} does not exist or is not a folder")
    now = time.time() if now is None else now
    runs_root = results / "runs"
    if not runs_root.is_dir() and find_run_dirs(results):  # a bare runs folder
        runs_root = results
    logs_root = results / "logs" / "runs"
    plan_path = find_plan(results, plan)

    folders = {_key_of(d, runs_root): d for d in find_run_dirs(runs_root)}
    logs = {}
    if logs_root.is_dir():
        for p in logs_root.rglob("*.log"):
            logs[p.relative_to(logs_root).with_suffix("").as_posix()] = p
    planned: list[str] = []
    if plan_path is not None:
        planned = [_key_of(Path(d), runs_root) for d in read_manifest(plan_path)]
    keys = list(dict.fromkeys([*planned, *sorted(folders), *sorted(logs)]))

    rows = []
    for key in keys:
        run_dir, log = folders.get(key), logs.get(key)
        variant, task = _identity(key, run_dir)
        row = {"key": key, "variant": variant, "task": task}
        line = last_line(log) if log is not None else ""
        if run_dir is not None and (run_dir / FINISHED_FILE).is_file():
            row["state"] = "finished"
        elif line and FAILED_LINE.search(line):
            row.update(state="failed", reason=line, log=str(log))
        elif run_dir is not None and (gone := _process_gone(run_dir)):
            row.update(state="failed", reason=f"{gone}; last log line: {line}" if line else gone,
                       log=str(log) if log else None)
        elif run_dir is not None or log is not None:
            row["state"] = "in progress"
            row.update(_progress_of(run_dir, now) if run_dir is not None else
                       {"evaluations": 0, "env_steps": None, "grad_steps": None, "score": None,
                        "checkpoint_age_s": None})
        else:
            row["state"] = "not started"
        rows.append(row)
    return {"runs_root": str(runs_root), "plan": str(plan_path) if plan_path else None,
            "runs": rows}


STATES = ("finished", "in progress", "failed", "not started")


def format_status(status: dict) -> str:
    """The table per (algorithm, task), then one line per run in progress and per failed run."""
    runs = status["runs"]
    known_plan = status["plan"] is not None
    lines = [f"runs: {status['runs_root']}  plan: "
             + (status["plan"] or "none found (only runs on disk are known; not started: ?)")]
    if not runs:
        lines.append("no runs found")
        return "\n".join(lines) + "\n"
    df = pd.DataFrame(runs)
    table = (df.groupby(["variant", "task", "state"]).size().unstack("state", fill_value=0)
             .reindex(columns=list(STATES), fill_value=0).reset_index())
    table.loc[len(table)] = ["total", "", *[int(df["state"].eq(s).sum()) for s in STATES]]
    if not known_plan:
        table["not started"] = "?"
    table.columns = ["algorithm", "task", *STATES]
    lines += ["", table.to_markdown(index=False)]
    running = sorted((r for r in runs if r["state"] == "in progress"), key=lambda r: r["key"])
    if running:
        lines += ["", "in progress:"]
        for r in running:
            if not r.get("evaluations"):
                where = "no evaluation yet"
            else:
                step = (f"env step {r['env_steps']}" if r.get("env_steps")
                        else f"grad step {r.get('grad_steps')}")
                score = (f", {r.get('score_name', 'score')} {r['score']:.3f}"
                         if r.get("score") is not None else "")
                where = f"{r['evaluations']} evaluations, {step}{score}"
            age = r.get("checkpoint_age_s")
            ckpt = "no checkpoint yet" if age is None else f"last checkpoint {_ago(age)}"
            lines.append(f"  {r['key']}: {where}; {ckpt}")
    failed = sorted((r for r in runs if r["state"] == "failed"), key=lambda r: r["key"])
    if failed:
        lines += ["", "failed:"]
        for r in failed:
            lines.append(f"  {r['key']}: {r['reason']}" + (f"  [{r['log']}]" if r.get("log") else ""))
    return "\n".join(lines) + "\n"


def add_arguments(parser) -> None:
    parser.add_argument("results", metavar="RESULTS_DIR",
                        help="a sweep's results folder (holding runs/ and logs/), e.g. results")
    parser.add_argument("--plan", help="file listing the sweep's run folders, one per line "
                        "(default: RESULTS_DIR/plan.txt, else RESULTS_DIR/report/runs.txt)")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON instead")


def run_from_args(args) -> int:
    status = sweep_status(args.results, plan=args.plan)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(format_status(status), end="")
    return 0
