"""Collect finished runs into one tidy table and reduce each run to its final score.

A run folder is ``{runs_root}/{algo}/{task}/d{n_demos}/s{seed}/``. The run loop writes
``metrics.csv`` once, when the run completes; until then the folder holds only ``config.json``,
``progress.csv`` and ``checkpoint.pt``. Only folders with ``metrics.csv`` count as finished; the
others are counted as in progress and ignored (``load_runs(include_running=True)`` also returns
their progress.csv rows, for partial curves).

Speed: a sweep has thousands of small CSV files. Files with the same header are joined and
parsed by one ``pandas.read_csv`` call, and the per-run checks run once on the joined frame;
the result (rows, dtypes, skip reasons) is that of reading each file on its own, which is what
a file that is not plain CSV (quotes, blank lines...) still gets.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cmil_bench.errors import UserError

# Files that mark a folder as a run folder (finished or not).
FINISHED_FILE = "metrics.csv"
PROGRESS_FILE = "progress.csv"
IN_PROGRESS_FILES = (PROGRESS_FILE, "checkpoint.pt", "config.json")

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


def _read_one(path: Path) -> pd.DataFrame:
    """One CSV file; ValueError (the reason a run is skipped) when it is unusable."""
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path.name} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{path.name} cannot be parsed: {e}") from None
    if len(df) == 0:
        raise ValueError(f"{path.name} has no evaluation rows")
    return df


def _plain_lines(path: Path) -> list[str] | None:
    """The lines of a CSV file that pandas reads line by line (no quotes, no blank or odd
    lines, at least one row after the header), else None (read it on its own)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text or '"' in text or "\r" in text or text.startswith("\ufeff"):
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or any(not ln.strip() for ln in lines):
        return None
    return lines


def _read_tables(paths: list[Path], skip: set[int] = frozenset()
                 ) -> tuple[pd.DataFrame, dict[int, str], dict[int, tuple]]:
    """Every file of ``paths`` in one frame with column ``_run`` (the file's position), the
    reasons of the files that cannot be read ({position: reason}) and the columns of each
    file's header ({position: names}). Positions in ``skip`` are not read.

    Reading 2,000 small files one by one costs pandas' per-call overhead 2,000 times; files
    that share a header are joined and parsed in one call instead, and each row keeps the
    position of its file. A file that is not plain (quotes, blank lines, not UTF-8...) or a
    group that does not parse to the expected rows is read file by file, which gives the same
    frame (and the error message of its own file).
    """
    groups: dict[str, list[tuple[int, list[str]]]] = {}
    alone: list[int] = []
    for i, path in enumerate(paths):
        if i in skip:
            continue
        lines = _plain_lines(path)
        if lines is None:
            alone.append(i)
        else:
            groups.setdefault(lines[0], []).append((i, lines[1:]))
    frames: list[pd.DataFrame] = []
    columns: dict[int, tuple] = {}
    for header, members in groups.items():
        text = "\n".join([header, *(ln for _, body in members for ln in body)]) + "\n"
        counts = [len(body) for _, body in members]
        try:
            df = pd.read_csv(io.StringIO(text), low_memory=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
            df = None
        if df is None or len(df) != sum(counts):
            alone += [i for i, _ in members]
            continue
        columns.update({i: tuple(df.columns) for i, _ in members})
        df["_run"] = np.repeat([i for i, _ in members], counts)
        frames.append(df)
    errors: dict[int, str] = {}
    for i in sorted(alone):
        try:
            df = _read_one(paths[i])
        except ValueError as e:
            errors[i] = str(e)
            continue
        columns[i] = tuple(df.columns)
        df["_run"] = i
        frames.append(df)
    if not frames:
        return pd.DataFrame({"_run": pd.Series(dtype=int)}), errors, columns
    return pd.concat(frames, ignore_index=True, sort=False), errors, columns


def _tidy(df: pd.DataFrame, run_dirs: list[Path], root: Path, errors: dict[int, str],
          columns: dict[int, tuple], name: str) -> pd.DataFrame:
    """Identity columns filled in and checked, rows in step order, ``eval_index`` added; the
    rows of a run that fails a check are dropped and its reason added to ``errors``."""
    def fail(mask_runs, reason):
        for r in mask_runs:
            errors.setdefault(int(r), reason(int(r)) if callable(reason) else reason)

    for col in REQUIRED_STEPS:
        fail([r for r, cols in columns.items() if col not in cols], f"{name} has no column {col!r}")
        if col not in df.columns:
            df[col] = np.nan
    # A column missing from a file's header is NaN in its rows of the joined frame: blank, as
    # it is when the file is read on its own.
    paths_id = {i: _identity_from_path(run_dirs[i], root) for i in df["_run"].unique()}
    for col in ("algo", "task", "n_demos", "seed"):
        if col not in df.columns:
            df[col] = np.nan
        missing = _blank(df[col])
        if missing.any():
            runs = df.loc[missing, "_run"].unique()
            bad = [r for r in runs if col not in paths_id[r]]
            fail(bad, f"column {col!r} is missing and the folder is not {{algo}}/{{task}}/d{{N}}/s{{S}}")
            fill = df.loc[missing, "_run"].map(lambda r, col=col: paths_id[r].get(col, np.nan))
            df[col] = df[col].astype(object)
            df.loc[missing, col] = fill
    for col in ("n_demos", "seed"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad_rows = values.isna()
        if bad_rows.any():
            first = df.groupby("_run", sort=False)[col].first()
            fail(df.loc[bad_rows, "_run"].unique(),
                 lambda r, col=col, first=first: f"column {col!r} is not an integer: {first[r]!r}")
        df[col] = values.fillna(-1).astype(int)
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
            fail(df.loc[df[col].isna(), "_run"].unique(),
                 f"column {col!r} has missing or non-numeric values")
    counts = df.groupby("_run", sort=False)[list(IDENTITY)].nunique()
    for col in IDENTITY:
        several = counts.index[counts[col] > 1]
        for r in several:
            vals = df.loc[df["_run"] == r, col].unique()
            fail([r], f"column {col!r} takes several values in one run: {sorted(map(str, vals))}")
    if errors:
        df = df[~df["_run"].isin(list(errors))]
    # Evaluation order: by environment steps, then gradient steps, file order among equals.
    df = df.sort_values(["_run", "env_steps", "grad_steps"], kind="stable").reset_index(drop=True)
    df["eval_index"] = df.groupby("_run", sort=False).cumcount()
    return df


def read_run_tables(run_dirs: list[Path], root: Path, name: str = FINISHED_FILE
                    ) -> tuple[pd.DataFrame, dict[int, str]]:
    """``name`` (metrics.csv, or progress.csv of runs in progress) of every folder in
    ``run_dirs``, tidied: ``(rows with column _run = position in run_dirs, {position: reason
    the folder is skipped})``."""
    paths = [Path(d) / name for d in run_dirs]
    df, errors, columns = _read_tables(paths)
    if not len(df):
        return df, errors
    unread = set(errors)
    df = _tidy(df, list(map(Path, run_dirs)), Path(root), errors, columns, name)
    if set(errors) - unread:
        # A run that failed a check may have changed the joined column types of the others
        # (a text value in a number column): read the rest again without it.
        df, _, columns = _read_tables(paths, skip=set(errors))
        if len(df):
            df = _tidy(df, list(map(Path, run_dirs)), Path(root), errors, columns, name)
    return df, errors


def read_manifest(path: str | Path) -> list[Path]:
    """Run folders listed one per line in ``path`` (blank lines and # comments ignored)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"manifest {str(p)!r} does not exist")
    return [Path(line.strip()) for line in p.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder under ``root`` holding a run's file (finished or not), sorted."""
    markers = {FINISHED_FILE, *IN_PROGRESS_FILES}
    found = set()
    for dirpath, _dirs, files in os.walk(root):
        if markers.intersection(files):
            d = Path(dirpath)
            if any((d / f).is_file() for f in markers.intersection(files)):
                found.add(d)
    return sorted(found)


def load_runs(root: str | Path, only: list[str | Path] | None = None,
              include_running: bool = False) -> tuple[pd.DataFrame, dict]:
    """Every evaluation row of every finished run under ``root``, plus what was left out.

    Returns ``(df, info)``. ``df`` has the columns of the metrics files plus ``run_dir`` (the run
    folder) and ``eval_index`` (0, 1, ... in step order within a run); a missing or empty
    ``variant`` is the algorithm name, a missing ``demo_source`` is "". ``info`` is
    ``{"finished": n, "in_progress": n, "skipped": [{"run_dir", "reason"}...],
    "in_progress_dirs": [...]}``: folders without ``metrics.csv`` are in progress, unreadable
    or duplicate finished runs are skipped. An empty result is not an error here.
    ``only``: restrict to these run folders (a sweep's manifest), so that stale runs of another
    configuration under the same root are not mixed in.
    ``include_running``: also return, as ``info["running"]``, the rows so far (progress.csv) of
    the runs in progress, in the same layout (runs without an evaluation yet are left out).
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"runs folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise UserError(f"runs folder {str(root)!r} is not a folder")
    run_dirs = find_run_dirs(root)
    if only is not None:
        wanted = {Path(d).resolve() for d in only}
        run_dirs = [d for d in run_dirs if d.resolve() in wanted]
    finished = [d for d in run_dirs if (d / FINISHED_FILE).is_file()]
    in_progress = [str(d) for d in run_dirs if not (d / FINISHED_FILE).is_file()]
    df, errors = read_run_tables(finished, root)
    skipped = [{"run_dir": str(finished[i]), "reason": r} for i, r in sorted(errors.items())]
    # Duplicates: the first folder (in path order) of an identity is kept.
    keep: list[int] = []
    if len(df):
        firsts = df.groupby("_run", sort=True)[list(IDENTITY)].first()
        seen: dict[tuple, str] = {}
        for r, key in zip(firsts.index, firsts.itertuples(index=False, name=None)):
            if key in seen:
                skipped.append({"run_dir": str(finished[r]), "reason":
                                f"duplicate of {seen[key]} (same {', '.join(IDENTITY)})"})
                continue
            seen[key] = str(finished[r])
            keep.append(int(r))
        skipped.sort(key=lambda s: s["run_dir"])
    info = {"finished": len(keep), "in_progress": len(in_progress), "skipped": skipped,
            "in_progress_dirs": in_progress}
    if include_running:
        running = [Path(d) for d in in_progress if (Path(d) / PROGRESS_FILE).is_file()]
        rdf, _ = read_run_tables(running, root, PROGRESS_FILE)
        info["running"] = _finish_frame(rdf, running, None)
    return _finish_frame(df, finished, keep), info


def _finish_frame(df: pd.DataFrame, run_dirs: list[Path], keep: list[int] | None) -> pd.DataFrame:
    """``_run`` replaced by ``run_dir`` (first column); only the runs in ``keep`` (None: all)."""
    if not len(df):
        return pd.DataFrame(columns=["run_dir", "algo", "variant", "task", "n_demos",
                                     "demo_source", "seed", *NUMERIC_COLUMNS, "eval_index"])
    if keep is not None:
        df = df[df["_run"].isin(keep)]
    names = np.array([str(d) for d in run_dirs], dtype=object)
    df = df.drop(columns="_run").assign(_dir=names[df["_run"].to_numpy()])
    df = df.rename(columns={"_dir": "run_dir"})
    cols = ["run_dir", *[c for c in df.columns if c != "run_dir"]]
    return df[cols].reset_index(drop=True)


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
