"""Collect finished runs into one tidy table and reduce each run to its final score.

A run folder is ``{runs_root}/{algo}/{task}/d{n_demos}/s{seed}/``. The run loop writes
``metrics.csv`` once, when the run completes; until then the folder holds only ``config.json``,
``progress.csv`` and ``checkpoint.pt``. Only folders with ``metrics.csv`` count as finished; the
others are counted as in progress and ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cmil_bench.errors import UserError

# Files that mark a folder as a run folder (finished or not).
FINISHED_FILE = "metrics.csv"
IN_PROGRESS_FILES = ("progress.csv", "checkpoint.pt", "config.json")

# What identifies one run; a second folder with the same identity is skipped as a duplicate.
IDENTITY = ("variant", "task", "n_demos", "demo_source", "seed")
NUMERIC_COLUMNS = ("env_steps", "grad_steps", "wall_s", "eval_return", "eval_success", "norm_score")
REQUIRED_STEPS = ("env_steps", "grad_steps")

_DEMOS_DIR = re.compile(r"^d(\d+)$")
_SEED_DIR = re.compile(r"^s(-?\d+)$")


def _identity_from_path(run_dir: Path, root: Path) -> dict:
    """algo, task, n_demos and seed read from ``{algo}/{task}/d{N}/s{S}`` (empty if no match)."""
    try:
        parts = run_dir.relative_to(root).parts
    except ValueError:
        parts = run_dir.parts
    if len(parts) < 4:
        return {}
    algo, task, demos, seed = parts[-4:]
    m_d, m_s = _DEMOS_DIR.match(demos), _SEED_DIR.match(seed)
    if not (m_d and m_s):
        return {}
    return {"algo": algo, "task": task, "n_demos": int(m_d.group(1)), "seed": int(m_s.group(1))}


def _blank(series: pd.Series) -> pd.Series:
    """True where a value is missing or an empty string."""
    return series.isna() | (series.astype(str).str.strip() == "")


def _read_metrics(run_dir: Path, root: Path) -> pd.DataFrame:
    """One finished run's rows, identity columns filled in; ValueError says why it is unusable."""
    path = run_dir / FINISHED_FILE
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError("metrics.csv is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"metrics.csv cannot be parsed: {e}") from None
    if len(df) == 0:
        raise ValueError("metrics.csv has no evaluation rows")
    for col in REQUIRED_STEPS:
        if col not in df.columns:
            raise ValueError(f"metrics.csv has no column {col!r}")
    from_path = _identity_from_path(run_dir, root)
    for col in ("algo", "task", "n_demos", "seed"):
        if col not in df.columns:
            df[col] = np.nan
        missing = _blank(df[col])
        if missing.any():
            if col not in from_path:
                raise ValueError(f"column {col!r} is missing and the folder is not "
                                 "{algo}/{task}/d{N}/s{S}")
            df[col] = df[col].astype(object)
            df.loc[missing, col] = from_path[col]
    for col in ("n_demos", "seed"):
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any():
            raise ValueError(f"column {col!r} is not an integer: {df[col].iloc[0]!r}")
        df[col] = values.astype(int)
    for col in ("algo", "task"):
        df[col] = df[col].astype(str)
    if "variant" not in df.columns:
        df["variant"] = df["algo"]
    df["variant"] = df["variant"].where(~_blank(df["variant"]), df["algo"]).astype(str)
    if "demo_source" not in df.columns:
        df["demo_source"] = ""
    df["demo_source"] = df["demo_source"].where(~_blank(df["demo_source"]), "").astype(str)
    for col in NUMERIC_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in REQUIRED_STEPS:
        if df[col].isna().any():
            raise ValueError(f"column {col!r} has missing or non-numeric values")
    for col in IDENTITY:
        if df[col].nunique() > 1:
            raise ValueError(f"column {col!r} takes several values in one run: "
                             f"{sorted(map(str, df[col].unique()))}")
    # Evaluation order: by environment steps, then gradient steps, file order among equals.
    df = df.sort_values(["env_steps", "grad_steps"], kind="stable").reset_index(drop=True)
    df["eval_index"] = np.arange(len(df))
    return df


def read_manifest(path: str | Path) -> list[Path]:
    """Run folders listed one per line in ``path`` (blank lines and # comments ignored)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"manifest {str(p)!r} does not exist")
    return [Path(line.strip()) for line in p.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def load_runs(root: str | Path, only: list[str | Path] | None = None) -> tuple[pd.DataFrame, dict]:
    """Every evaluation row of every finished run under ``root``, plus what was left out.

    Returns ``(df, info)``. ``df`` has the columns of the metrics files plus ``run_dir`` (the run
    folder) and ``eval_index`` (0, 1, ... in step order within a run); a missing or empty
    ``variant`` is the algorithm name, a missing ``demo_source`` is "". ``info`` is
    ``{"finished": n, "in_progress": n, "skipped": [{"run_dir", "reason"}...],
    "in_progress_dirs": [...]}``: folders without ``metrics.csv`` are in progress, unreadable
    or duplicate finished runs are skipped. An empty result is not an error here.
    ``only``: restrict to these run folders (a sweep's manifest), so that stale runs of another
    configuration under the same root are not mixed in.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"runs folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise UserError(f"runs folder {str(root)!r} is not a folder")
    markers = {FINISHED_FILE, *IN_PROGRESS_FILES}
    run_dirs = sorted({p.parent for p in root.rglob("*") if p.name in markers and p.is_file()})
    if only is not None:
        wanted = {Path(d).resolve() for d in only}
        run_dirs = [d for d in run_dirs if d.resolve() in wanted]
    frames, skipped, in_progress = [], [], []
    seen: dict[tuple, str] = {}
    for run_dir in run_dirs:
        if not (run_dir / FINISHED_FILE).is_file():
            in_progress.append(str(run_dir))
            continue
        try:
            df = _read_metrics(run_dir, root)
        except ValueError as e:
            skipped.append({"run_dir": str(run_dir), "reason": str(e)})
            continue
        key = tuple(df[col].iloc[0] for col in IDENTITY)
        if key in seen:
            skipped.append({"run_dir": str(run_dir),
                            "reason": f"duplicate of {seen[key]} (same {', '.join(IDENTITY)})"})
            continue
        seen[key] = str(run_dir)
        df.insert(0, "run_dir", str(run_dir))
        frames.append(df)
    info = {"finished": len(frames), "in_progress": len(in_progress), "skipped": skipped,
            "in_progress_dirs": in_progress}
    if frames:
        out = pd.concat(frames, ignore_index=True, sort=False)
    else:
        out = pd.DataFrame(columns=["run_dir", "algo", "variant", "task", "n_demos", "demo_source",
                                    "seed", *NUMERIC_COLUMNS, "eval_index"])
    return out, info


def final_scores(df: pd.DataFrame, metric: str = "norm_score", last_k: int = 1) -> pd.DataFrame:
    """One row per run: ``score`` is the mean of ``metric`` over the run's last ``last_k``
    evaluations (in step order; missing values ignored, NaN if all are missing).

    Columns: run_dir, algo, variant, task, n_demos, demo_source, seed, score, n_evals,
    env_steps and grad_steps (of the last evaluation).
    """
    if metric not in df.columns:
        known = [c for c in df.columns if c in NUMERIC_COLUMNS or
                 (c not in ("run_dir", "eval_index", *IDENTITY, "algo")
                  and pd.api.types.is_numeric_dtype(df[c]))]
        raise UserError(f"metric {metric!r} is not a column of the metrics files; "
                        f"numeric columns: {', '.join(known) or 'none'}")
    if isinstance(last_k, bool) or not isinstance(last_k, (int, np.integer)) or last_k < 1:
        raise UserError(f"last_k must be a positive integer, got {last_k!r}")
    cols = ["run_dir", "algo", "variant", "task", "n_demos", "demo_source", "seed"]
    if df.empty:
        return pd.DataFrame(columns=[*cols, "score", "n_evals", "env_steps", "grad_steps"])
    data = df.copy()
    if "variant" not in data.columns:
        data["variant"] = data["algo"]
    if "demo_source" not in data.columns:
        data["demo_source"] = ""
    data[metric] = pd.to_numeric(data[metric], errors="coerce")
    data = data.sort_values(["run_dir", "env_steps", "grad_steps"], kind="stable")
    groups = data.groupby("run_dir", sort=True)
    tail = groups.tail(last_k).groupby("run_dir", sort=True)
    out = groups[cols[1:]].first()
    out["score"] = tail[metric].mean()
    out["n_evals"] = groups.size()
    out["env_steps"] = groups["env_steps"].last()
    out["grad_steps"] = groups["grad_steps"].last()
    return out.reset_index()
