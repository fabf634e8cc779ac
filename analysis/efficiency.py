"""Sample efficiency as one number per run: the area under its score curve over the env-step axis
its task shares with the other online algorithms.

Under the sweep's protocol every online algorithm of a task has the same env-step budget
(``total_steps``) and evaluation cadence (``eval_every``), read from the run's ``config.json``.
Its evaluation points are the multiples of ``eval_every`` below the budget and the budget itself
(``algorithms.clock.EvalClock``). A run evaluates at the first point it can stop at (an episode's
or an iteration's end) at or after each of them, so its k-th evaluation is placed at the k-th
point of the schedule, provided each evaluation lies in its own interval (at or after its point,
before the next); how far after the point it was taken (its *lag*, at most an episode or an
iteration) is reported per task and per algorithm, and flagged above ``LAG_NOTE`` of the
interval. A run without a readable ``config.json`` is
placed at the env steps its metrics.csv records, and shares an axis only with runs recorded at
exactly those steps. An evaluation at env step 0 (before the first step, after an offline
pre-training such as CMIL's BC start) is no point of the schedule: it is left out of the area, and
counted per task and algorithm.

Per task, the schedule followed by the most algorithms (then the most runs) is the task's shared
axis. A run on another schedule, with evaluations off its own schedule, with a missing value or
with one evaluation only is left out, and the reason is named; nothing is interpolated. An
algorithm that never steps the environment (BC: its axis is gradient steps) has no area here.

The area of a run is the trapezoid rule over the shared evaluation points divided by the axis
length (last point minus first), so it is the run's mean score over the axis, on the score's own
scale (at most 1 for normalised scores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

# A lag of an evaluation after its schedule point above this fraction of the interval (to the
# next point; the last interval for the final evaluation) is named in the report's notes.
LAG_NOTE = 0.1


def read_schedules(run_dirs) -> dict[str, tuple[int, int] | None]:
    """{run folder: (total_steps, eval_every)} from each folder's config.json (its ``config``);
    None where the file is missing, unreadable or has no positive integers there."""
    out: dict[str, tuple[int, int] | None] = {}
    for d in run_dirs:
        try:
            cfg = json.loads((Path(d) / "config.json").read_text(encoding="utf-8"))["config"]
            total, every = cfg["total_steps"], cfg["eval_every"]
        except (OSError, ValueError, KeyError, TypeError):
            out[str(d)] = None
            continue
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (total, every))
        out[str(d)] = (total, every) if ok else None
    return out


def schedule_points(total_steps: int, eval_every: int) -> np.ndarray:
    """The env steps of a run's evaluations under ``EvalClock``: each multiple of ``eval_every``
    below ``total_steps``, then ``total_steps``."""
    points = list(range(eval_every, total_steps, eval_every))
    return np.array(points + [total_steps], dtype=float)


def auc(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Area under each row of ``values`` (runs x points) over ``x`` by the trapezoid rule,
    divided by ``x[-1] - x[0]`` (the mean score over the axis)."""
    values, x = np.asarray(values, dtype=float), np.asarray(x, dtype=float)
    widths = np.diff(x)
    area = np.sum(widths * (values[..., 1:] + values[..., :-1]) / 2, axis=-1)
    return area / (x[-1] - x[0])


def describe(points) -> str:
    """A schedule in words: 'N evaluations every E env steps up to T' when it has the shape of
    ``schedule_points`` (else the steps, listed)."""
    p = [int(v) for v in points]
    gaps = np.diff(p)
    if len(p) >= 2 and (gaps[:-1] == p[0]).all() and 0 < gaps[-1] <= p[0]:
        return f"{len(p)} evaluations every {p[0]} env steps up to {p[-1]}"
    shown = ", ".join(map(str, p[:6])) + (", ..." if len(p) > 6 else "")
    return f"{len(p)} evaluation{'s' if len(p) != 1 else ''} at env steps {shown}"


def shared_axes(rows: pd.DataFrame, finals: pd.DataFrame, metric: str,
                schedules: dict[str, tuple[int, int] | None]) -> dict:
    """The area of every online run that shares its task's axis, and why the others do not.

    ``rows``: evaluation rows (``run_dir``, ``env_steps``, ``eval_index``, ``metric``);
    ``finals``: one row per run used, with ``variant``, ``task_label``, ``setting``,
    ``n_demos``, ``seed``; ``schedules``: ``read_schedules`` of the runs.

    Returns {"runs": frame (run_dir, variant, task_label, setting, n_demos, seed, auc),
    "refused": [{run_dir, algorithm, task, n_demos, seed, reason}], "offline": [variants that
    never step the environment], "axes": {task: {points, schedule_from, variants, runs,
    max_lag (env steps), initial_evaluation_left_out ({variant: runs}), max_lag_fraction
    ({variant: largest lag / interval})}}}.
    """
    keys = finals["run_dir"].tolist()
    variant_of = dict(zip(keys, finals["variant"]))
    task_of = dict(zip(keys, finals["task_label"]))
    rows = rows[rows["run_dir"].isin(set(keys))].sort_values(["run_dir", "eval_index"],
                                                              kind="stable")
    dirs = rows["run_dir"].to_numpy()
    starts = np.flatnonzero(np.r_[True, dirs[1:] != dirs[:-1]]) if len(dirs) else np.array([], int)
    bounds = np.r_[starts, len(dirs)]
    steps_all = rows["env_steps"].to_numpy(dtype=float)
    vals_all = pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float)

    record = {r["run_dir"]: r for r in finals[["run_dir", "variant", "task_label", "setting",
                                                 "n_demos", "seed"]].to_dict("records")}
    refused: list[dict] = []

    def refuse(run_dir, reason):
        r = record[run_dir]
        refused.append({"run_dir": run_dir, "algorithm": r["variant"], "task": r["task_label"],
                        "n_demos": int(r["n_demos"]), "seed": int(r["seed"]), "reason": reason})

    # Each online run's placement on its schedule.
    online_variants = set(finals.loc[finals["env_steps"] > 0, "variant"])
    initial: set[str] = set()  # runs with an evaluation at env step 0
    placed: dict[str, tuple] = {}  # run_dir -> (points, values, lag, source, lag fraction)
    for i, start in enumerate(starts):
        run_dir = dirs[start]
        steps, values = steps_all[start:bounds[i + 1]], vals_all[start:bounds[i + 1]]
        if not (steps > 0).any():
            if variant_of[run_dir] in online_variants:
                refuse(run_dir, "it never steps the environment (env_steps = 0), unlike the "
                                "other runs of its algorithm")
            continue
        if steps[0] == 0:
            # Evaluated before its first env step (after offline pre-training, as CMIL's BC
            # start): not a point of the schedule, left out of the area and counted.
            initial.add(run_dir)
            steps, values = steps[steps > 0], values[steps > 0]
        sched = schedules.get(run_dir)
        if sched is None:
            points, lag, frac, source = steps, 0.0, 0.0, "metrics.csv"
        else:
            points = schedule_points(*sched)
            nxt = np.r_[points[1:], 2 * points[-1] - (points[-2] if len(points) > 1 else 0)]
            if len(steps) != len(points) or (steps < points).any() or (steps >= nxt).any():
                refuse(run_dir, f"its {len(steps)} evaluations (env steps {int(steps[0])} to "
                                f"{int(steps[-1])}) do not follow its own schedule "
                                f"({describe(points)}, from config.json)")
                continue
            lags = steps - points
            lag, frac = float(lags.max()), float((lags / np.maximum(nxt - points, 1.0)).max())
            source = "config.json"
        placed[run_dir] = (tuple(float(p) for p in points), values, lag, source, frac)

    # Per task: the schedule most algorithms (then most runs) follow is the shared axis.
    out_rows, axes = [], {}
    for task in sorted({task_of[d] for d in placed}):
        members = [d for d in placed if task_of[d] == task]
        groups: dict[tuple, list[str]] = {}
        for d in members:
            groups.setdefault(placed[d][0], []).append(d)
        rank = {k: (len({variant_of[d] for d in g}), len(g)) for k, g in groups.items()}
        best = max(rank.values())
        top = [k for k in groups if rank[k] == best]
        if len(top) > 1:
            listing = "; ".join(f"{describe(k)} ({_who(groups[k], variant_of)})" for k in top)
            for d in members:
                refuse(d, f"no evaluation schedule is shared by most algorithms on {task}: "
                          f"{listing}")
            continue
        key = top[0]
        for k, g in groups.items():
            if k != key:
                for d in g:
                    refuse(d, f"its evaluation schedule ({describe(k)}) differs from the one "
                              f"shared on {task} ({describe(key)}, {_who(groups[key], variant_of)})")
        if len(key) < 2:
            for d in groups[key]:
                refuse(d, f"the shared schedule on {task} has one evaluation: no curve to "
                          "integrate")
            continue
        shared = groups[key]
        values = np.stack([placed[d][1] for d in shared])
        missing = np.isnan(values).any(axis=1)
        for d in np.asarray(shared, dtype=object)[missing]:
            refuse(d, f"{metric} is missing at one of its evaluations")
        keep = [d for d, m in zip(shared, missing) if not m]
        if not keep:
            continue
        areas = auc(values[~missing], np.array(key))
        for d, a in zip(keep, areas):
            r = record[d]
            out_rows.append({"run_dir": d, "variant": r["variant"], "task_label": task,
                             "setting": r["setting"], "n_demos": int(r["n_demos"]),
                             "seed": int(r["seed"]), "auc": float(a)})
        axes[task] = {"points": [int(p) for p in key],
                      "schedule_from": sorted({placed[d][3] for d in keep}),
                      "variants": sorted({variant_of[d] for d in keep}),
                      "runs": len(keep), "max_lag": int(max(placed[d][2] for d in keep)),
                      "initial_evaluation_left_out": {
                          v: n for v in sorted({variant_of[d] for d in keep})
                          if (n := sum(1 for d in keep if variant_of[d] == v and d in initial))},
                      "max_lag_fraction": {v: round(max(placed[d][4] for d in keep
                                                        if variant_of[d] == v), 4)
                                           for v in sorted({variant_of[d] for d in keep})}}
    runs = pd.DataFrame(out_rows, columns=["run_dir", "variant", "task_label", "setting",
                                           "n_demos", "seed", "auc"])
    refused.sort(key=lambda r: r["run_dir"])
    offline = sorted(set(finals["variant"]) - online_variants)
    return {"runs": runs, "refused": refused, "offline": offline, "axes": axes}


def _who(run_dirs, variant_of) -> str:
    variants = sorted({variant_of[d] for d in run_dirs})
    return f"{len(run_dirs)} run{'s' if len(run_dirs) != 1 else ''} of {', '.join(variants)}"
