"""From the metrics of finished runs to paper-style tables, figures and ``summary.json``.

    cmil-bench report --runs results/runs --out results/report [--metric norm_score]

Every interval is a 95 % stratified-bootstrap percentile CI: rliable's
(``rliable.library.get_interval_estimates`` / ``create_performance_profile``, same resampling
indices and estimators), computed for all resamples at once in ``analysis.stats``. What is
computed and how (see also the README written next to the results):

* final score of a run: mean of the metric over its last ``last_k`` evaluations;
* *setting*: one (task, demo count[, demo source when a task has several]); an *algorithm* is
  the ``variant`` column (the algorithm name when empty), so ablations are compared as their own
  rows;
* the *headline* (aggregates, performance profiles, probabilities of improvement) compares the
  algorithms only on the settings that every one of them ran; the algorithm x setting pairs left
  out are named (README, summary.json ``headline``, stdout). With no setting common to all there
  is no headline comparison, only the per-algorithm tables;
* aggregates (IQM, median, mean, optimality gap at 1 for normalised scores) per algorithm over
  the common settings, and per (algorithm, demo count) over the algorithm's own tasks. rliable
  needs the same number of runs in every setting, so each setting keeps the runs with the
  smallest seeds up to the algorithm's common count (the runs left out are counted in
  summary.json);
* per-setting tables use every run (one array per setting, rliable's independent bootstrap);
* probability of improvement for every ordered pair over the common settings (runs of the two
  resampled independently);
* BC discrimination (tables/bc_discrimination): per task and per BC variant (every variant of
  algorithm ``bc``, e.g. ``bc`` and ``bc-sub20``), its final score per demo count (IQM over seeds)
  and P(X > BC) of every non-BC algorithm on that task alone, over the demo counts both ran
  there, whether or not the task is in the headline;
* sample efficiency (``analysis.efficiency``): the area under each online run's curve over its
  task's shared env-step axis (trapezoid rule / axis length), aggregated per algorithm (IQM,
  median, mean with rliable intervals) over the settings every algorithm with areas has; runs off
  the axis are named with their reason, offline algorithms (BC) are left out;
* sample-efficiency curves: per (algorithm, setting), IQM over seeds at each of the
  algorithm's own evaluations (the k-th evaluation of every run, x = median step of those),
  pointwise CI bands. x is env steps; an algorithm that never steps the environment (BC:
  env_steps = 0) is drawn as a flat dashed line at its final score with its CI band. When no
  algorithm of a panel steps the environment, x is gradient steps;
* with ``--include-running``, runs in progress (their progress.csv) are drawn as thin dotted
  partial curves labelled "in progress" in the sample-efficiency and seed-curve figures and
  listed in summary.json (``in_progress_drawn``); no table, aggregate or interval uses them.

The figures are drawn by worker processes (``--jobs``, ``analysis.jobs``) while the intervals
are computed; a progress bar counts intervals and figures (``--progress``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import efficiency, figures, stats
from analysis import jobs as jobs_mod
from analysis.runs import final_scores, load_runs, read_manifest
from cmil_bench.errors import UserError

__all__ = ["load_runs", "final_scores", "report", "add_arguments", "run_from_args", "main"]

# Display order of the known algorithms; others follow alphabetically.
ALGO_ORDER = ("cmil", "vmail", "dac", "gail", "bc")
NORMALISED = ("norm_score", "eval_success")
METRIC_LABELS = {"norm_score": "Normalized score", "eval_success": "Success rate",
                 "eval_return": "Return"}
N_TAUS = 101
AUC_NAMES = ["IQM", "Median", "Mean"]
# The offline baseline: the bc_discrimination table compares every other algorithm with each
# variant of this algorithm.
BASELINE = "bc"
NO_HEADLINE = ("No setting (task x demo count) is common to all algorithms: no headline "
               "comparison (no aggregates table, performance profiles or probabilities of "
               "improvement); the per-task and per-demo-count tables show each algorithm on its "
               "own settings.")


# -- small helpers -----------------------------------------------------------------------------

def _fmt(triple, digits: int) -> str:
    if triple is None:
        return "–"
    v, lo, hi = triple
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _est(triple) -> dict | None:
    if triple is None:
        return None
    return {"value": _num(triple[0]), "lo": _num(triple[1]), "hi": _num(triple[2])}


def _num(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


def _order(finals: pd.DataFrame) -> list[str]:
    algo_of = finals.groupby("variant")["algo"].first()

    def key(v):
        a = algo_of[v]
        rank = ALGO_ORDER.index(a) if a in ALGO_ORDER else len(ALGO_ORDER)
        return (rank, a, v != a, v)
    return sorted(algo_of.index, key=key)


# "<" and ">" are not special to LaTeX's parser, but with its default OT1 fonts they print as "¡"
# and "¿"; pandas' own escaping leaves them, so every cell, header and caption goes through this.
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "<": r"$<$", ">": r"$>$", **{c: "\\" + c for c in "&%$#_{}"}}


def _tex_escape(text: str) -> str:
    """Escape LaTeX's special characters in running text (captions, headers, cells)."""
    return re.sub(r"[\\~^&%$#_{}<>]", lambda m: _TEX_SPECIAL[m.group(0)], text)


def _write_table(df: pd.DataFrame, base: Path, caption: str, label: str) -> list[Path]:
    base.parent.mkdir(parents=True, exist_ok=True)
    md, tex = base.with_suffix(".md"), base.with_suffix(".tex")
    md.write_text(f"{caption}\n\n{df.to_markdown(index=False)}\n", encoding="utf-8")
    cells = df.map(lambda v: _tex_escape(v) if isinstance(v, str) else v)
    cells.columns = [_tex_escape(str(c)) for c in df.columns]
    tex.write_text(cells.to_latex(index=False, escape=False, caption=_tex_escape(caption), label=label,
                                  column_format="l" * len(df.columns)), encoding="utf-8")
    return [md, tex]


def _setting_labels(finals: pd.DataFrame) -> pd.DataFrame:
    """Adds ``task_label`` (task, plus the demo source when a task has several) and ``setting``."""
    finals = finals.copy()
    n_src = finals.groupby("task")["demo_source"].nunique()
    multi = set(n_src[n_src > 1].index)
    finals["task_label"] = [f"{t} [{s or 'default'}]" if t in multi else t
                            for t, s in zip(finals["task"], finals["demo_source"])]
    finals["setting"] = [f"{t} d{int(n)}" for t, n in zip(finals["task_label"], finals["n_demos"])]
    return finals


def _setting_order(finals: pd.DataFrame) -> list[str]:
    table = finals[["setting", "task_label", "n_demos"]].drop_duplicates("setting")
    return list(table.sort_values(["task_label", "n_demos"])["setting"])


# -- the report --------------------------------------------------------------------------------

def report(runs_root, out_dir, metric: str = "norm_score", reps: int = 2000, seed: int = 0,
           last_k: int = 1, figures_too: bool = True, manifest: str | Path | None = None,
           include_running: bool = False, jobs: int | None = None,
           progress: bool | None = False) -> dict:
    """Write tables, figures, summary.json and README.md under ``out_dir``; returns the summary.

    ``reps``: bootstrap resamples per interval; ``seed``: bootstrap seed; ``last_k``: a run's
    final score is the mean of its last k evaluations; ``figures_too=False`` skips the figures.
    ``include_running``: also draw the runs in progress (their progress.csv) as partial curves,
    marked as such, in the sample-efficiency and seed-curve figures; they enter no table.
    ``jobs``: processes drawing figures (default: the CPUs available; 1 draws them here).
    ``progress``: show a progress bar on stderr (None: only on a terminal).

    Raises UserError when ``runs_root`` holds no finished run, or on a bad metric / reps / seed.
    """
    t0 = time.perf_counter()
    if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < 1:
        raise UserError(f"reps must be a positive integer, got {reps!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer))
                             or jobs < 1):
        raise UserError(f"jobs must be a positive integer, got {jobs!r}")
    runs_root, out = Path(runs_root), Path(out_dir)
    only = read_manifest(manifest) if manifest else None
    pool = jobs_mod.FigureJobs((jobs or jobs_mod.default_jobs()) if figures_too else 1)
    bar = jobs_mod.Progress(progress)
    try:
        bar.add(1)
        df, info = load_runs(runs_root, only=only, include_running=include_running)
        bar.step(f"read {info['finished']} finished runs")
        return _report(df, info, runs_root, out, metric, reps, seed, last_k, figures_too,
                       include_running, pool, bar, t0)
    finally:
        pool.close()
        bar.close()


def _report(df, info, runs_root, out, metric, reps, seed, last_k, figures_too, include_running,
            pool, bar, t0) -> dict:
    if info["finished"] == 0:
        raise UserError(
            f"no finished runs under {str(runs_root)!r}: no run folder there has a metrics.csv "
            f"({info['in_progress']} in progress ignored, {len(info['skipped'])} skipped as "
            "unreadable or duplicate)")
    finals = final_scores(df, metric, last_k)
    notes: list[str] = []
    nan_runs = finals[finals["score"].isna()]
    if len(nan_runs):
        notes.append(f"{len(nan_runs)} finished runs have no value of {metric} in their last "
                     f"{last_k} evaluations and are left out: "
                     + ", ".join(nan_runs["run_dir"].head(5)) + (" ..." if len(nan_runs) > 5 else ""))
        finals = finals[finals["score"].notna()]
    if finals.empty:
        raise UserError(f"metric {metric!r} has no values in any finished run under "
                        f"{str(runs_root)!r}")
    finals = _setting_labels(finals)
    if "eval_success" in df.columns:
        succ = final_scores(df, "eval_success", last_k).set_index("run_dir")["score"]
        finals["success"] = finals["run_dir"].map(succ)
    else:
        finals["success"] = np.nan

    variants = _order(finals)
    with_gap = metric in NORMALISED
    names = stats.aggregate_names(with_gap)
    digits = 2 if metric in NORMALISED else 1
    label = METRIC_LABELS.get(metric, metric)
    by_v = {v: finals[finals["variant"] == v] for v in variants}
    setting_order = _setting_order(finals)
    settings_of = {v: [s for s in setting_order if s in set(by_v[v]["setting"])] for v in variants}
    demo_counts = sorted(int(n) for n in finals["n_demos"].unique())
    task_labels = sorted(finals["task_label"].unique())
    # The headline compares the algorithms on the settings every one of them ran.
    common, left_out = common_settings(settings_of, setting_order)
    headline = bool(common)

    running = _running_runs(info.get("running"), finals, metric) if include_running else None
    extra = [] if running is None else sorted(set(running["_variant"]) - set(variants))
    colors = figures.colors_for(variants + extra)

    # Every output file is written from here on; the previous report's files go first (the
    # figure workers start writing while the intervals are computed).
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous(out)
    files: dict[str, str] = {}

    def rel(paths, what):
        for p in paths:
            files[str(p.relative_to(out))] = what

    tables_dir, fig_dir = out / "tables", out / "figures"
    if figures_too:
        pool.attach(bar)
        seed_panels = _seed_panels(df, finals, variants + extra, metric, running)
        for task, panels in seed_panels.items():
            pool.submit(f"learning curve of every seed on {task} (online algorithms)",
                        figures.seed_curves, f"{task}: every seed", panels, colors, label,
                        fig_dir / f"seed_curves_{_slug(task)}")

    n_pairs = len(variants) * (len(variants) - 1) if headline else 0
    bar.add(len(variants) * (4 + len(demo_counts)) + n_pairs + len(variants)
            + int(finals[["variant", "task_label", "n_demos"]].drop_duplicates().shape[0]))

    # Headline aggregates per algorithm over the common settings, and per (algorithm, demo
    # count) over the algorithm's own tasks.
    agg, agg_demos, matrices = {}, {}, {}
    excluded = 0
    for v in variants:
        if headline:
            matrix, kept = stats.score_matrix(by_v[v], common)
            matrices[v] = matrix
            excluded += int(by_v[v]["setting"].isin(common).sum()) - len(kept)
            agg[v] = {"estimates": stats.aggregates(matrix, with_gap, reps, seed, f"agg/{v}"),
                      "settings": list(common), "runs_used": int(matrix.size),
                      "runs_finished": int(len(by_v[v])),
                      "seeds_per_setting": int(matrix.shape[0])}
        bar.step(f"aggregates {v}")
        agg_demos[v] = {}
        for n in demo_counts:
            bar.step(f"aggregates {v} d{n}")
            sub = by_v[v][by_v[v]["n_demos"] == n]
            if sub.empty:
                continue
            sets = [s for s in settings_of[v] if s in set(sub["setting"])]
            m, _ = stats.score_matrix(sub, sets)
            agg_demos[v][n] = {"estimates": stats.aggregates(m, with_gap, reps, seed,
                                                              f"agg/{v}/d{n}"),
                               "tasks": len(sets), "runs_used": int(m.size),
                               "seeds_per_setting": int(m.shape[0])}
    if excluded:
        notes.append(f"{excluded} runs are left out of the aggregates, profiles and probabilities "
                     "of improvement so that every setting of an algorithm has the same number of "
                     "seeds (the smallest seeds are kept); the per-task tables use every run.")
    if not headline:
        notes.append(NO_HEADLINE)
    elif left_out:
        notes.append(_left_out_note(common, left_out))
    single = [v for v in variants if v in agg and agg[v]["seeds_per_setting"] <= 1]
    if single:
        notes.append(f"Only one seed per setting for {', '.join(single)}: the bootstrap has "
                     "nothing to resample over runs and their aggregate CIs collapse to the point "
                     "estimate.")

    # Per-setting means (every run), final score and success rate.
    per_setting: dict = {}
    for v in variants:
        sub = by_v[v]
        cols = [sub[sub["setting"] == s]["score"].to_numpy() for s in settings_of[v]]
        score_est = stats.setting_means(cols, reps, seed, f"task/{v}")
        bar.step(f"per-task means {v}")
        succ_cols = [sub[sub["setting"] == s]["success"].dropna().to_numpy()
                     for s in settings_of[v]]
        have = [i for i, c in enumerate(succ_cols) if len(c)]
        succ_est = dict(zip(have, stats.setting_means([succ_cols[i] for i in have], reps, seed,
                                                      f"success/{v}"))) if have else {}
        bar.step(f"per-task success {v}")
        per_setting[v] = {}
        for i, s in enumerate(settings_of[v]):
            rows = sub[sub["setting"] == s]
            per_setting[v][s] = {"task": rows["task_label"].iloc[0],
                                 "n_demos": int(rows["n_demos"].iloc[0]),
                                 "score": score_est[i], "success": succ_est.get(i),
                                 "n_runs": int(len(rows)),
                                 "seeds": sorted(int(x) for x in rows["seed"])}

    # Probability of improvement, every ordered pair, over the common settings.
    poi = []
    for x in variants:
        for y in variants:
            if x == y or not headline:
                continue
            mx, _ = stats.score_matrix(by_v[x], common)
            my, _ = stats.score_matrix(by_v[y], common)
            p, lo, hi = stats.probability_of_improvement(mx, my, reps, seed, f"poi/{x}/{y}")
            poi.append({"x": x, "y": y, "value": p, "lo": lo, "hi": hi, "settings": len(common)})
            bar.step(f"probability of improvement {x} > {y}")
    if len(variants) == 1:
        notes.append("Only one algorithm: no probability of improvement.")

    # Per task and BC variant: its final score per demo count, and P(X > it) of every non-BC
    # algorithm there.
    disc = _bc_discrimination(finals, by_v, variants, settings_of, setting_order, reps, seed, bar)

    # Performance profiles over the common settings.
    profs, prof_cis, taus = {}, {}, None
    if headline:
        all_scores = np.concatenate([m.ravel() for m in matrices.values()])
        lo_t = min(0.0, float(all_scores.min())) if metric in NORMALISED else float(all_scores.min())
        hi_t = max(1.0, float(all_scores.max())) if metric in NORMALISED else float(all_scores.max())
        if hi_t <= lo_t:
            hi_t = lo_t + 1.0
        taus = np.linspace(lo_t, hi_t, N_TAUS)
    for v in variants:
        if headline:
            profs[v], prof_cis[v] = stats.performance_profile(matrices[v], taus, reps, seed,
                                                              f"prof/{v}")
        bar.step(f"performance profile {v}")

    # Sample-efficiency curves.
    curves = _curves(df, finals, variants, metric, reps, seed, bar, running)
    offline = sorted({v for panels in curves.values() for p in panels for v in p["lines"]})
    if offline:
        notes.append(f"{', '.join(offline)} never step the environment (env_steps = 0): in the "
                     "sample-efficiency figures they are a flat dashed line at their final score "
                     "(IQM over seeds, CI band).")
    drawn = sorted({d for panels in curves.values() for p in panels
                    for d in p.get("running_dirs", [])})
    if include_running:
        notes.append(_running_note(info, drawn, curves))

    # Sample efficiency: area under each online run's curve over its task's shared env-step axis.
    eff = _sample_efficiency(df, finals, variants, metric, reps, seed, bar)
    notes += eff["notes"]

    # Output files.
    scope = f"final {metric} (last {last_k} evaluation{'s' if last_k > 1 else ''})"

    if headline:
        over = ("over settings (task x demo count)" if not left_out else
                f"over the {len(common)} settings (task x demo count) that every algorithm ran "
                f"(left out: {_left_out_text(left_out)})")
        t_agg = pd.DataFrame([{"Algorithm": v, **{n: _fmt(agg[v]["estimates"][n], digits)
                                                  for n in names},
                               "Settings": len(agg[v]["settings"]),
                               "Seeds/setting": agg[v]["seeds_per_setting"]} for v in variants])
        rel(_write_table(t_agg, tables_dir / "aggregates",
                         f"Aggregate {scope} {over}, point estimate "
                         "[95% stratified-bootstrap CI].", "tab:aggregates"),
            "aggregates (IQM, median, mean, optimality gap) per algorithm")

    t_demo = pd.DataFrame([{"Algorithm": v, **{f"{n} demos": _fmt(agg_demos[v][n]["estimates"]["IQM"], digits)
                                               if n in agg_demos[v] else "–" for n in demo_counts}}
                           for v in variants])
    rel(_write_table(t_demo, tables_dir / "by_demos",
                     f"IQM of {scope} over tasks per demo count [95% CI].", "tab:by-demos"),
        "algorithm x demo count: IQM over tasks")

    for key, what, cap in (("score", f"mean {scope}", "tab:by-task-score"),
                           ("success", "mean final success rate", "tab:by-task-success")):
        rows = []
        for v in variants:
            for n in demo_counts:
                cells = {t: None for t in task_labels}
                found = False
                for e in per_setting[v].values():
                    if e["n_demos"] == n:
                        cells[e["task"]] = e[key]
                        found = True
                if found:
                    rows.append({"Algorithm": v, "Demos": n,
                                 **{t: _fmt(c, 2 if key == "success" else digits)
                                    for t, c in cells.items()}})
        rel(_write_table(pd.DataFrame(rows), tables_dir / f"by_task_{key}",
                         f"Per task: {what} over seeds [95% CI].", cap),
            f"algorithm x task: {what}")

    if poi:
        t_poi = pd.DataFrame([{"X \\ Y": x, **{y: ("–" if x == y else _fmt(
            next(((r["value"], r["lo"], r["hi"]) for r in poi if r["x"] == x and r["y"] == y),
                 None), 2)) for y in variants}} for x in variants])
        rel(_write_table(t_poi, tables_dir / "probability_of_improvement",
                         "Probability of improvement P(X > Y) of the row over the column "
                         "[95% CI], over the settings both share." if not left_out else
                         "Probability of improvement P(X > Y) of the row over the column "
                         f"[95% CI], over the {len(common)} settings that every algorithm ran.",
                         "tab:poi"),
            "probability of improvement, every ordered pair")

    rel(_write_table(_bc_discrimination_table(disc, digits), tables_dir / "bc_discrimination",
                     _bc_discrimination_caption(disc, scope), "tab:bc-discrimination"),
        "per task: BC's final score per demo count and P(X > BC) of every other algorithm")

    per_run = finals.drop(columns=["task_label"]).rename(columns={"score": f"final_{metric}",
                                                                  "success": "final_success"})
    tables_dir.mkdir(parents=True, exist_ok=True)
    per_run.to_csv(tables_dir / "final_scores.csv", index=False)
    files["tables/final_scores.csv"] = "final score of every run used"
    rel(_efficiency_tables(eff, tables_dir, metric, label), "sample efficiency: area under the "
        "curve over the shared env-step axis")

    if figures_too:
        _figures(pool, fig_dir, variants, colors, names, label, agg, agg_demos, demo_counts,
                 profs, prof_cis, taus, poi, curves, per_setting, task_labels)
        if eff["aggregates"]:
            pool.submit("sample efficiency: area under the curve with 95% CIs",
                        figures.aggregates, {v: e["estimates"] for v, e in eff["aggregates"].items()},
                        AUC_NAMES, colors, f"AUC of {label.lower()}",
                        fig_dir / "sample_efficiency_auc")
        for paths, what in pool.results():
            rel(paths, what)

    summary = {
        "metric": metric, "last_k": last_k, "reps": int(reps), "seed": int(seed),
        "confidence": stats.CONFIDENCE, "bootstrap": f"rliable stratified bootstrap, {stats.METHOD}",
        "runs_root": str(runs_root),
        "runs": {"finished": info["finished"],
                 "in_progress_ignored": info["in_progress"] - len(drawn),
                 "skipped": info["skipped"], "used": int(len(finals)),
                 "left_out_for_equal_seeds": int(excluded), "no_metric_value": int(len(nan_runs))},
        "algorithms": variants, "tasks": task_labels, "demo_counts": demo_counts,
        "aggregates": {v: {**{n: _est(e) for n, e in agg[v]["estimates"].items()},
                           **{k: agg[v][k] for k in ("settings", "runs_used", "runs_finished",
                                                     "seeds_per_setting")}} for v in agg},
        "aggregates_by_demos": {v: {str(n): {**{m: _est(e) for m, e in d["estimates"].items()},
                                             **{k: d[k] for k in ("tasks", "runs_used",
                                                                  "seeds_per_setting")}}
                                    for n, d in agg_demos[v].items()} for v in variants},
        "per_setting": {v: {s: {"task": e["task"], "n_demos": e["n_demos"],
                                "score": _est(e["score"]), "success": _est(e["success"]),
                                "n_runs": e["n_runs"], "seeds": e["seeds"]}
                            for s, e in per_setting[v].items()} for v in variants},
        "probability_of_improvement": [{k: (_num(r[k]) if k in ("value", "lo", "hi") else r[k])
                                        for k in r} for r in poi],
        "bc_discrimination": [{**t, "bc": {str(n): _est(e) for n, e in t["bc"].items()},
                               "versus": [{**c, "poi": _est(c["poi"])} for c in t["versus"]]}
                              for t in disc],
        "headline": {"comparison": headline, "settings": list(common),
                     "left_out": [{"algorithm": v, "setting": st,
                                   "task": per_setting[v][st]["task"],
                                   "n_demos": per_setting[v][st]["n_demos"],
                                   "runs": per_setting[v][st]["n_runs"]}
                                  for v, sts in left_out.items() for st in sts]},
        "sample_efficiency": _efficiency_summary(eff),
        "notes": notes,
        "files": sorted([*files, "summary.json", "README.md"]),
    }
    if include_running:
        summary["runs"]["in_progress_drawn"] = len(drawn)
        summary["in_progress_drawn"] = _running_summary(running[running["run_dir"].isin(drawn)],
                                                        metric)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_readme(summary, files), encoding="utf-8")
    return summary


def _figures(pool, fig_dir, variants, colors, names, label, agg, agg_demos, demo_counts, profs,
             prof_cis, taus, poi, curves, per_setting, task_labels) -> None:
    """Hands every figure but the seed curves (handed over earlier) to ``pool``; without a
    headline comparison (``agg`` empty) no aggregate or profile figure."""
    if agg:
        pool.submit("aggregates with 95% CIs", figures.aggregates,
                    {v: agg[v]["estimates"] for v in variants}, names, colors, label,
                    fig_dir / "aggregates")
    demo_est = {f"{v} d{n}": agg_demos[v][n]["estimates"] for v in variants for n in demo_counts
                if n in agg_demos[v]}
    demo_colors = {f"{v} d{n}": colors[v] for v in variants for n in demo_counts}
    pool.submit("aggregates per (algorithm, demo count)", figures.aggregates, demo_est, names,
                demo_colors, label, fig_dir / "aggregates_by_demos")
    if profs:
        pool.submit("performance profiles", figures.profiles, profs, prof_cis, taus, colors,
                    rf"{label} ($\tau$)", fig_dir / "performance_profiles")
    if poi:
        pool.submit("probability of improvement", figures.probability_of_improvement, poi, colors,
                    fig_dir / "probability_of_improvement")
    for task, panels in curves.items():
        pool.submit(f"sample-efficiency curves on {task}", figures.sample_efficiency, task, panels,
                    colors, f"IQM {label.lower()}", fig_dir / f"sample_efficiency_{_slug(task)}")
    demo_panels = [{"title": "all tasks (IQM)", "ylabel": f"IQM {label.lower()}",
                    "series": {v: _series([(n, agg_demos[v][n]["estimates"]["IQM"])
                                           for n in demo_counts if n in agg_demos[v]])
                               for v in variants}}]
    for t in task_labels:
        series = {}
        for v in variants:
            pts = [(e["n_demos"], e["score"]) for e in per_setting[v].values() if e["task"] == t]
            if pts:
                series[v] = _series(sorted(pts))
        demo_panels.append({"title": f"{t} (mean)", "ylabel": f"mean {label.lower()}", "series": series})
    pool.submit("final score against the number of demos", figures.score_vs_demos, demo_panels,
                colors, fig_dir / "score_vs_demos")


def _series(points):
    """[(n_demos, (v, lo, hi)), ...] -> (xs, v, lo, hi) arrays."""
    xs = [p[0] for p in points]
    return (np.array(xs, dtype=float), np.array([p[1][0] for p in points]),
            np.array([p[1][1] for p in points]), np.array([p[1][2] for p in points]))


# -- the common settings of the headline ---------------------------------------------------------

def common_settings(settings_of: dict[str, list[str]], setting_order: list[str]
                    ) -> tuple[list[str], dict[str, list[str]]]:
    """The settings every algorithm ran (in ``setting_order``) and, per algorithm, its settings
    left out of the comparison ({algorithm: [setting...]}, only algorithms with some)."""
    common = [s for s in setting_order if all(s in own for own in settings_of.values())]
    left_out = {v: [s for s in own if s not in common] for v, own in settings_of.items()}
    return common, {v: sts for v, sts in left_out.items() if sts}


def _left_out_text(left_out: dict[str, list[str]], limit: int = 8) -> str:
    """'bc x hopper d1, hopper d5; gail x maze d10' (at most ``limit`` settings named per
    algorithm, the others counted)."""
    parts = []
    for v, sts in left_out.items():
        named = ", ".join(sts[:limit]) + (f" and {len(sts) - limit} more" if len(sts) > limit else "")
        parts.append(f"{v} x {named}")
    return "; ".join(parts)


def _left_out_note(common: list[str], left_out: dict[str, list[str]]) -> str:
    n = sum(len(s) for s in left_out.values())
    return (f"The headline (aggregates, performance profiles, probabilities of improvement) "
            f"compares the algorithms on the {len(common)} settings (task x demo count) that every "
            f"one of them ran; {n} algorithm x setting pair{'s' if n != 1 else ''} left out of it: "
            f"{_left_out_text(left_out, limit=10**6)}. Those runs stay in the per-task and "
            "per-demo-count tables and figures.")


# -- BC discrimination: does an online method separate from BC on each task? ---------------------

def _bc_discrimination(finals, by_v, variants, settings_of, setting_order, reps, seed,
                       bar) -> list[dict]:
    """Per task (label) and per BC variant (every variant of algorithm ``BASELINE``; "bc" alone
    when none ran): the variant's final score per demo count it ran there (IQM over seeds, CI)
    and, for every non-BC algorithm that ran on the task, P(X > that BC) over the settings of the
    task that both ran (``common_settings`` of the pair; each keeps the smallest seeds up to the
    pair's common count, as in the headline). The headline compares algorithms over all tasks at
    once; this asks the question per task, where an online method may separate from BC on one
    task and not on another, and per BC variant, since BC on every demo transition and BC on the
    subsampled demos of the GAIL/DAC protocol are different baselines. An entry with no estimate
    carries its ``reason``."""
    where = finals.drop_duplicates("setting").set_index("setting")
    task_of, demos_of = where["task_label"], where["n_demos"].astype(int)
    algo_of = finals.groupby("variant")["algo"].first()
    baselines = [v for v in variants if algo_of[v] == BASELINE] or [BASELINE]
    others = [v for v in variants if algo_of[v] != BASELINE]
    tasks = []
    for task in sorted(set(finals["task_label"])):
        own = {v: [s for s in settings_of.get(v, []) if task_of[s] == task] for v in variants}
        for b in baselines:
            b_own = [s for s in settings_of.get(b, []) if task_of[s] == task]
            bar.add(len(b_own) + sum(1 for v in others if own[v]))
            bc = {}
            for s in b_own:
                # The label of BC's flat line in the sample-efficiency figure: the same interval.
                scores = by_v[b].loc[by_v[b]["setting"] == s, "score"].to_numpy()
                bc[int(demos_of[s])] = stats.iqm_interval(scores, reps, seed, f"curve/{b}/{s}")
                bar.step(f"{b} on {s}")
            versus = []
            for v in others:
                if not own[v]:
                    continue
                ran = [int(demos_of[s]) for s in own[v]]
                shared, _ = common_settings({v: own[v], b: b_own}, setting_order)
                entry = {"algorithm": v, "demo_counts": [int(demos_of[s]) for s in shared],
                         "ran": ran, "poi": None, "reason": None}
                if not b_own:
                    entry["reason"] = f"{b} did not run on {task}"
                elif not shared:
                    entry["reason"] = (f"{v} ran {_demos_text(ran)} demos on {task}, {b} "
                                       f"{_demos_text(sorted(bc))}: no demo count in common")
                else:
                    mx, _ = stats.score_matrix(by_v[v], shared)
                    mb, _ = stats.score_matrix(by_v[b], shared)
                    # The stream name keeps the single-baseline name for "bc", so the estimates
                    # of a report without BC variants are the ones it always gave.
                    stream = f"poi-bc/{v}/{task}" if b == BASELINE else f"poi-bc/{v}/{b}/{task}"
                    entry["poi"] = stats.probability_of_improvement(mx, mb, reps, seed, stream)
                bar.step(f"P({v} > {b}) on {task}")
                versus.append(entry)
            tasks.append({"task": task, "baseline": b, "bc": bc, "versus": versus})
    return tasks


def _demos_text(counts) -> str:
    return ", ".join(str(n) for n in counts)


def _bc_discrimination_table(disc: list[dict], digits: int) -> pd.DataFrame:
    """Per (task, BC variant): one row per demo count with the variant's IQM, then one per non-BC
    algorithm with P(X > that BC) and the demo counts it is taken over; "–" where there is no
    estimate."""
    rows = []
    for t in disc:
        head = {"Task": t["task"], "BC": t["baseline"], "Algorithm": t["baseline"]}
        if not t["bc"]:
            rows.append({**head, "Demos": "–", "BC final score (IQM)": "–", "P(X > BC)": ""})
        for n, est in t["bc"].items():
            rows.append({**head, "Demos": str(n), "BC final score (IQM)": _fmt(est, digits),
                         "P(X > BC)": ""})
        for c in t["versus"]:
            rows.append({**head, "Algorithm": c["algorithm"],
                         "Demos": _demos_text(c["demo_counts"]) or "–",
                         "BC final score (IQM)": "", "P(X > BC)": _fmt(c["poi"], 2)})
    return pd.DataFrame(rows, columns=["Task", "BC", "Algorithm", "Demos", "BC final score (IQM)",
                                       "P(X > BC)"])


def _bc_discrimination_caption(disc: list[dict], scope: str) -> str:
    text = (f"Does an algorithm separate from BC on each task? Per BC variant (column BC), its "
            f"{scope} per demo count (IQM over seeds) and, for every other algorithm on the task, "
            "the probability of improvement P(X > BC) over that variant on that task alone, over "
            "the demo counts (Demos) that both ran there, point estimate [95% stratified-bootstrap "
            "CI].")
    no_bc = [f"{t['baseline']} on {t['task']}" for t in disc if not t["bc"]]
    apart = [c["reason"] for t in disc if t["bc"] for c in t["versus"] if c["reason"]]
    if no_bc:
        text += f" –: did not run: {', '.join(no_bc)}."
    if apart:
        text += " –: " + "; ".join(apart) + "."
    return text


# -- sample efficiency (area under the curve over the shared env-step axis) ------------------------

def _sample_efficiency(df, finals, variants, metric, reps, seed, bar) -> dict:
    """Per-run areas (``analysis.efficiency``), aggregated per online algorithm over the settings
    every algorithm with an area ran, with rliable intervals (IQM, median, mean)."""
    rows = df[["run_dir", "env_steps", "eval_index", metric]]
    found = efficiency.shared_axes(rows, finals, metric,
                                   efficiency.read_schedules(finals["run_dir"]))
    runs = found["runs"]
    with_auc = [v for v in variants if v in set(runs["variant"])]
    settings_of = {v: [s for s in _setting_order(finals)
                       if s in set(runs.loc[runs["variant"] == v, "setting"])] for v in with_auc}
    common, left_out = common_settings(settings_of, _setting_order(finals))
    aggs, excluded = {}, 0
    for v in variants:
        if v in with_auc and common:
            sub = runs[runs["variant"] == v].rename(columns={"auc": "score"})
            matrix, kept = stats.score_matrix(sub, common)
            excluded += int(sub["setting"].isin(common).sum()) - len(kept)
            aggs[v] = {"estimates": stats.aggregates(matrix, False, reps, seed, f"auc/{v}"),
                       "n_settings": len(common), "runs_used": int(matrix.size),
                       "seeds_per_setting": int(matrix.shape[0])}
        bar.step(f"sample efficiency {v}")
    refused_variants = [v for v in variants if v not in with_auc and v not in found["offline"]]
    notes = []
    if found["refused"]:
        n = len(found["refused"])
        notes.append(f"{n} online run{'s are' if n != 1 else ' is'} left out of the "
                     "sample-efficiency areas, as not on their task's shared env-step axis "
                     "(each with its reason in summary.json, sample_efficiency.refused)"
                     + (f"; no run of {', '.join(refused_variants)} is on it" if refused_variants
                        else "") + ".")
    if with_auc and not common:
        notes.append("The online algorithms with an area under the curve share no setting: no "
                     "sample-efficiency comparison.")
    elif left_out:
        notes.append(f"The sample-efficiency areas compare the online algorithms on the "
                     f"{len(common)} settings that each of them has areas on; left out: "
                     f"{_left_out_text(left_out, limit=10**6)}.")
    zero = sorted({v for a in found["axes"].values() for v in a["initial_evaluation_left_out"]})
    if zero:
        notes.append(f"The evaluations at env step 0 of {', '.join(zero)} (before any env step, "
                     "e.g. after an offline pre-training) are no point of the shared axis and are "
                     "left out of the sample-efficiency areas.")
    late = [f"{v} on {task} (up to {f:.0%})" for task, a in found["axes"].items()
            for v, f in a["max_lag_fraction"].items() if f > efficiency.LAG_NOTE]
    if late:
        notes.append("Evaluations taken more than "
                     f"{efficiency.LAG_NOTE:.0%} of an interval after their schedule point (an "
                     "episode or iteration ends late), placed at the point, so these runs had "
                     f"more env steps than their place on the axis says: {'; '.join(late)}.")
    if excluded:
        notes.append(f"{excluded} runs are left out of the sample-efficiency aggregates so that "
                     "every setting of an algorithm has the same number of seeds (the smallest "
                     "seeds are kept).")
    return {**found, "variants": with_auc, "settings": common, "left_out": left_out,
            "aggregates": aggs, "excluded": excluded, "refused_variants": refused_variants,
            "notes": notes}


def _efficiency_caption(eff: dict, label: str) -> str:
    absent = [f"{v} (offline: its axis is gradient steps; a flat line at its final score in the "
              "sample-efficiency figures)" for v in eff["offline"]]
    absent += [f"{v} (no run on its task's shared env-step axis)" for v in eff["refused_variants"]]
    text = (f"Sample efficiency: area under each run's {label.lower()} curve over its task's "
            "shared env-step axis (trapezoid rule over the common evaluation points, divided by "
            "the axis length: the mean score over the axis), aggregated over the "
            f"{len(eff['settings'])} settings (task x demo count) shared by these algorithms, "
            "point estimate [95% stratified-bootstrap CI].")
    if eff["refused"]:
        text += (f" {len(eff['refused'])} runs off the shared axis are left out (see "
                 "README/summary.json).")
    if absent:
        text += " Not in this table: " + "; ".join(absent) + "."
    return text


def _efficiency_tables(eff: dict, tables_dir: Path, metric: str, label: str) -> list[Path]:
    """tables/sample_efficiency_auc.{md,tex} (when any algorithm has an aggregate) and the area
    of every run (tables/sample_efficiency_auc_runs.csv, when any run has one)."""
    paths: list[Path] = []
    digits = 2 if metric in NORMALISED else 1
    if eff["aggregates"]:
        table = pd.DataFrame([{"Algorithm": v,
                               **{n: _fmt(e["estimates"][n], digits) for n in AUC_NAMES},
                               "Settings": e["n_settings"], "Seeds/setting": e["seeds_per_setting"]}
                              for v, e in eff["aggregates"].items()])
        paths += _write_table(table, tables_dir / "sample_efficiency_auc",
                              _efficiency_caption(eff, label), "tab:sample-efficiency-auc")
    if len(eff["runs"]):
        tables_dir.mkdir(parents=True, exist_ok=True)
        csv = tables_dir / "sample_efficiency_auc_runs.csv"
        eff["runs"].rename(columns={"auc": f"auc_{metric}"}).to_csv(csv, index=False)
        paths.append(csv)
    return paths


def _efficiency_summary(eff: dict) -> dict:
    return {
        "method": "trapezoid rule over the shared evaluation points / axis length; rliable "
                  "stratified bootstrap over runs (IQM, median, mean)",
        "lag_note_fraction": efficiency.LAG_NOTE,
        "axes": eff["axes"], "algorithms": list(eff["aggregates"]), "settings": eff["settings"],
        "left_out": [{"algorithm": v, "setting": s} for v, sts in eff["left_out"].items()
                     for s in sts],
        "offline": eff["offline"],
        "aggregates": {v: {**{n: _est(x) for n, x in e["estimates"].items()},
                           **{k: e[k] for k in ("n_settings", "runs_used", "seeds_per_setting")}}
                       for v, e in eff["aggregates"].items()},
        "left_out_for_equal_seeds": int(eff["excluded"]),
        "refused": eff["refused"],
    }


# -- runs in progress (--include-running) --------------------------------------------------------

def _running_runs(rows: pd.DataFrame | None, finals: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The evaluation rows so far of the runs in progress that have a value of ``metric``, with
    ``_variant`` and ``task_label`` (a task's label as for finished runs; a demo source that no
    finished run of the task used is named in it)."""
    cols = ["run_dir", "_variant", "task_label", "n_demos", "seed", "env_steps", "grad_steps",
            "eval_index", metric]
    if rows is None or not len(rows) or metric not in rows.columns:
        return pd.DataFrame(columns=cols)
    rows = rows.copy()
    rows[metric] = pd.to_numeric(rows[metric], errors="coerce")
    has = rows.groupby("run_dir")[metric].transform(lambda s: s.notna().any())
    rows = rows[has.astype(bool)]
    sources = finals.groupby("task")["demo_source"].agg(lambda s: set(s))

    def task_label(task, source):
        known = sources.get(task, set())
        if len(known) > 1 or (known and source not in known):
            return f"{task} [{source or 'default'}]"
        return task
    rows["task_label"] = [task_label(t, s) for t, s in zip(rows["task"], rows["demo_source"])]
    rows["_variant"] = rows["variant"]
    return rows[cols].sort_values(["run_dir", "eval_index"]).reset_index(drop=True)


def _running_summary(running: pd.DataFrame, metric: str) -> list[dict]:
    out = []
    for run_dir, g in running.groupby("run_dir", sort=True):
        last = g.iloc[-1]
        out.append({"run_dir": run_dir, "variant": last["_variant"], "task": last["task_label"],
                    "n_demos": int(last["n_demos"]), "seed": int(last["seed"]),
                    "evaluations": int(len(g)), "env_steps": int(last["env_steps"]),
                    "grad_steps": int(last["grad_steps"]), metric: _num(last[metric])})
    return out


def _running_note(info: dict, drawn: list, curves: dict) -> str:
    skipped = sum(len(p.get("running_skipped", [])) for panels in curves.values() for p in panels)
    note = (f"{len(drawn)} runs in progress are drawn as partial curves (dotted lines labelled "
            "'in progress') in the sample-efficiency and seed-curve figures; they enter no "
            "table, aggregate or interval.")
    if skipped:
        note += (f" {skipped} runs in progress never step the environment and are not drawn, "
                 "as their panels' x axis is env steps.")
    waiting = info["in_progress"] - len(drawn) - skipped
    if waiting:
        note += f" {waiting} runs in progress have no evaluation of the metric yet."
    return note


# -- curves ---------------------------------------------------------------------------------------

def _curves(df, finals, variants, metric, reps, seed, bar=None,
            running: pd.DataFrame | None = None) -> dict[str, list[dict]]:
    """{task label: [panel per demo count]} for figures.sample_efficiency."""
    rows = df[df["run_dir"].isin(set(finals["run_dir"]))].merge(
        finals[["run_dir", "variant", "task_label", "setting", "score"]].rename(
            columns={"variant": "_variant"}), on="run_dir")
    if running is None:
        running = pd.DataFrame(columns=["run_dir", "_variant", "task_label", "n_demos",
                                        "env_steps", "grad_steps", "eval_index", metric])
    out: dict[str, list[dict]] = {}
    for task in sorted(set(rows["task_label"]) | set(running["task_label"])):
        panels = []
        trows = rows[rows["task_label"] == task]
        rtask = running[running["task_label"] == task]
        for n in sorted(set(trows["n_demos"]) | set(rtask["n_demos"])):
            prow = trows[trows["n_demos"] == n]
            rrow = rtask[rtask["n_demos"] == n]
            present = [v for v in variants if v in set(prow["_variant"])]
            online = {v for v in present if (prow[prow["_variant"] == v]["env_steps"] > 0).any()}
            axis = "env_steps" if online or (rrow["env_steps"] > 0).any() else "grad_steps"
            panel = {"title": f"{int(n)} demos", "xlabel": axis.replace("_", " "),
                     "curves": {}, "lines": {}}
            for v in present:
                vrows = prow[prow["_variant"] == v]
                setting = vrows["setting"].iloc[0]
                label = f"curve/{v}/{setting}"
                if bar is not None:
                    bar.step(f"curve {v} {setting}")
                if axis == "env_steps" and v not in online:
                    finals_v = finals[(finals["variant"] == v) & (finals["setting"] == setting)]
                    panel["lines"][v] = stats.iqm_interval(finals_v["score"].to_numpy(), reps,
                                                           seed, label)
                    continue
                runs = [g.sort_values("eval_index") for _, g in vrows.groupby("run_dir")]
                k = min(len(g) for g in runs)
                values = np.stack([g[metric].to_numpy(dtype=float)[:k] for g in runs])
                x = np.median(np.stack([g[axis].to_numpy(dtype=float)[:k] for g in runs]), axis=0)
                point, ci = stats.curve(values, reps, seed, label)
                panel["curves"][v] = (x, point, ci[0].ravel(), ci[1].ravel())
            if len(rrow):
                panel["running"], panel["running_dirs"], panel["running_skipped"] = {}, [], []
                order = {v: i for i, v in enumerate(variants)}
                for v in sorted(set(rrow["_variant"]), key=lambda v: (order.get(v, len(order)), v)):
                    g = rrow[rrow["_variant"] == v]
                    partial = []
                    for run_dir, r in g.groupby("run_dir", sort=True):
                        if axis == "env_steps" and not (r["env_steps"] > 0).any():
                            panel["running_skipped"].append(run_dir)
                            continue
                        partial.append((r[axis].to_numpy(dtype=float),
                                        r[metric].to_numpy(dtype=float)))
                        panel["running_dirs"].append(run_dir)
                    if partial:
                        panel["running"][v] = partial
            panels.append(panel)
        out[task] = panels
    return out


def _seed_panels(df, finals, variants, metric,
                 running: pd.DataFrame | None = None) -> dict[str, list[dict]]:
    """{task label: [panel per (online algorithm, demo count)]} for figures.seed_curves; runs in
    progress (``running``, see ``_running_runs``) go into a panel's ``running`` seeds."""
    rows = df[df["run_dir"].isin(set(finals["run_dir"]))].merge(
        finals[["run_dir", "variant", "task_label"]].rename(columns={"variant": "_variant"}),
        on="run_dir")
    if running is None:
        running = pd.DataFrame(columns=["run_dir", "_variant", "task_label", "n_demos", "seed",
                                        "env_steps", "eval_index", metric])
    out: dict[str, list[dict]] = {}
    for task in sorted(set(rows["task_label"]) | set(running["task_label"])):
        trows = rows[rows["task_label"] == task]
        rtask = running[running["task_label"] == task]
        panels = []
        for v in variants:
            ns = set(trows.loc[trows["_variant"] == v, "n_demos"])
            ns |= set(rtask.loc[rtask["_variant"] == v, "n_demos"])
            for n in sorted(ns):
                prow = trows[(trows["_variant"] == v) & (trows["n_demos"] == n)]
                rrow = rtask[(rtask["_variant"] == v) & (rtask["n_demos"] == n)]
                seeds, partial = {}, {}
                if (prow["env_steps"] > 0).any():
                    for _, g in prow.groupby("run_dir"):
                        g = g.sort_values("eval_index")
                        seeds[g["seed"].iloc[0]] = (g["env_steps"].to_numpy(float),
                                                    g[metric].to_numpy(float))
                for _, g in rrow.groupby("run_dir"):
                    if (g["env_steps"] > 0).any():
                        g = g.sort_values("eval_index")
                        partial[int(g["seed"].iloc[0])] = (g["env_steps"].to_numpy(float),
                                                           g[metric].to_numpy(float))
                if not seeds and not partial:
                    continue  # offline: no environment-step axis
                panel = {"title": f"{v}, {int(n)} demos", "name": v, "xlabel": "env steps",
                         "seeds": seeds}
                if partial:
                    panel["running"] = partial
                panels.append(panel)
        if panels:
            out[task] = panels
    return out


def _remove_previous(out: Path) -> None:
    """Delete the files a previous report listed in out/summary.json (and nothing else)."""
    old = out / "summary.json"
    if not old.is_file():
        return
    try:
        listed = json.loads(old.read_text(encoding="utf-8")).get("files", [])
    except (ValueError, OSError, AttributeError):
        return
    root = out.resolve()
    for name in listed:
        p = (out / str(name)).resolve()
        if root in p.parents and p.is_file():
            p.unlink()


def _readme(summary: dict, files: dict[str, str]) -> str:
    r = summary["runs"]
    lines = [
        "# cmil-bench report", "",
        f"Metric: `{summary['metric']}` (final score = mean of the last {summary['last_k']} "
        f"evaluation(s) of a run). Runs root: `{summary['runs_root']}`.", "",
        f"Runs: {r['finished']} finished, "
        + (f"{r['in_progress_drawn']} in progress (drawn as partial curves, in no table), "
           if "in_progress_drawn" in r else "")
        + f"{r['in_progress_ignored']} in progress (ignored), "
        f"{len(r['skipped'])} skipped as unreadable or duplicate, {r['used']} used.", "",
        f"Algorithms: {', '.join(summary['algorithms'])}. Tasks: {', '.join(summary['tasks'])}. "
        f"Demo counts: {', '.join(map(str, summary['demo_counts']))}.", "",
        f"Intervals: 95% CIs from rliable's stratified bootstrap ({stats.METHOD}, "
        f"{summary['reps']} resamples, seed {summary['seed']}). Aggregates use the same number "
        "of seeds in every setting of an algorithm (smallest seeds kept); per-task tables use "
        "every run. Sample-efficiency curves: IQM over seeds at each "
        "of an algorithm's own evaluations, pointwise CI bands; offline algorithms "
        "(env_steps = 0) are flat dashed lines at their final score.", "",
    ]
    lines += ["## Headline comparison", ""] + _readme_headline(summary) + [""]
    lines += ["## Sample efficiency", ""] + _readme_efficiency(summary) + [""]
    if summary["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""]
    if r["skipped"]:
        lines += ["## Skipped runs", ""] + [f"- `{s['run_dir']}`: {s['reason']}"
                                            for s in r["skipped"]] + [""]
    lines += ["## Files", "", "- `summary.json`: every number above, the run counts and notes"]
    lines += [f"- `{name}`: {what}" for name, what in sorted(files.items())]
    return "\n".join(lines) + "\n"


def _readme_headline(summary: dict) -> list[str]:
    h = summary["headline"]
    if not h["comparison"]:
        return [NO_HEADLINE]
    lines = [f"Aggregates, performance profiles and probabilities of improvement compare the "
             f"algorithms on the {len(h['settings'])} settings (task x demo count) that every one "
             "of them ran (variants count as algorithms)."]
    if h["left_out"]:
        lines += ["", "Left out of it (they stay in the per-task and per-demo-count tables and "
                  "figures):", ""]
        lines += [f"- {e['algorithm']} x {e['setting']} ({e['runs']} run{'s' if e['runs'] != 1 else ''})"
                  for e in h["left_out"]]
    else:
        lines[0] += " Nothing is left out."
    return lines


def _readme_efficiency(summary: dict) -> list[str]:
    e = summary["sample_efficiency"]
    lines = ["Area under each online run's curve of the metric over its task's shared env-step "
             "axis (the schedule most algorithms of the task follow: budget and evaluation "
             "cadence from config.json, else the env steps metrics.csv records), by the "
             "trapezoid rule over the common evaluation points divided by the axis length (the "
             "run's mean score over the axis). Each run's k-th evaluation is placed at the k-th "
             "point of the schedule: it was taken at the first point the run could stop at (an "
             "episode's or iteration's end) at or after that point and before the next one (a run "
             "that is not is left out); the largest lag per task and algorithm is listed below. "
             "Nothing is interpolated. "
             "Aggregated per algorithm (IQM, median, mean over runs x settings, rliable's "
             "stratified bootstrap) over the settings that every algorithm with areas has."]
    if e["offline"]:
        lines += ["", f"Offline, not in the table (their axis is gradient steps; a flat line at "
                  f"their final score in the sample-efficiency figures): {', '.join(e['offline'])}."]
    if e["axes"]:
        lines += ["", "Shared axes:", ""]
        for task, a in e["axes"].items():
            lags = ", ".join(f"{v} {f:.0%}" for v, f in a["max_lag_fraction"].items())
            zero = a["initial_evaluation_left_out"]
            lines.append(f"- {task}: {efficiency.describe(a['points'])} ({a['runs']} runs of "
                         f"{', '.join(a['variants'])}; largest lag {a['max_lag']} env steps; "
                         f"largest lag as a share of the interval: {lags}"
                         + ("; evaluation at env step 0 left out of the area: "
                            + ", ".join(f"{v} ({n} runs)" for v, n in zero.items()) if zero else "")
                         + ")")
    else:
        lines += ["", "No run is on a shared env-step axis: no areas."]
    if e["left_out"]:
        lines += ["", "Settings left out of the comparison: "
                  + "; ".join(f"{x['algorithm']} x {x['setting']}" for x in e["left_out"]) + "."]
    if e["refused"]:
        lines += ["", f"Runs off the shared axis ({len(e['refused'])}, left out of the areas):", ""]
        lines += [f"- `{r['run_dir']}`: {r['reason']}" for r in e["refused"][:30]]
        if len(e["refused"]) > 30:
            lines.append(f"- ... and {len(e['refused']) - 30} more (summary.json)")
    return lines


# -- command line --------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default="results/runs", help="root of the run folders "
                        "(default results/runs)")
    parser.add_argument("--out", default="results/report", help="output folder "
                        "(default results/report)")
    parser.add_argument("--metric", default="norm_score",
                        help="column to score runs by: norm_score (default), eval_success, "
                             "eval_return or any numeric column of metrics.csv")
    parser.add_argument("--last-k", type=int, default=1,
                        help="final score = mean of the last K evaluations (default 1)")
    parser.add_argument("--reps", type=int, default=2000,
                        help="bootstrap resamples per interval (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--no-figures", action="store_true", help="tables and summary only")
    parser.add_argument("--manifest", help="file listing the run folders to use, one per line "
                        "(default: every run under --runs)")
    parser.add_argument("--include-running", action="store_true",
                        help="also draw the runs in progress (their progress.csv so far) as "
                             "partial curves, marked 'in progress', in the sample-efficiency and "
                             "seed-curve figures; tables stay finished-only")
    parser.add_argument("--jobs", type=int, default=None,
                        help="processes drawing figures (default: the CPUs available)")
    parser.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                        help="progress bar on stderr (auto: only on a terminal)")


def run_from_args(args: argparse.Namespace) -> int:
    summary = report(args.runs, args.out, metric=args.metric, reps=args.reps, seed=args.seed,
                     last_k=args.last_k, figures_too=not getattr(args, "no_figures", False),
                     manifest=getattr(args, "manifest", None),
                     include_running=getattr(args, "include_running", False),
                     jobs=getattr(args, "jobs", None),
                     progress={"auto": None, "on": True, "off": False}[
                         getattr(args, "progress", "auto")])
    r = summary["runs"]
    drawn = (f"{r['in_progress_drawn']} in progress drawn as partial curves, "
             if "in_progress_drawn" in r else "")
    print(f"report: {r['used']} finished runs used ({drawn}{r['in_progress_ignored']} in progress "
          f"ignored, {len(r['skipped'])} skipped), {len(summary['algorithms'])} algorithms, "
          f"{len(summary['tasks'])} tasks, {summary['seconds']} s -> {Path(args.out) / 'README.md'}")
    h = summary["headline"]
    if not h["comparison"]:
        print("  no setting is common to all algorithms: no headline comparison (per-algorithm "
              "tables only)")
    else:
        dropped = {}
        for e in h["left_out"]:
            dropped.setdefault(e["algorithm"], []).append(e["setting"])
        print(f"  headline over the {len(h['settings'])} settings every algorithm ran; left out: "
              + (_left_out_text(dropped, limit=4) if dropped else "none"))
    for v in summary["aggregates"]:
        iqm = summary["aggregates"][v]["IQM"]
        print(f"  {v:24s} IQM {iqm['value']:.3f} [{iqm['lo']:.3f}, {iqm['hi']:.3f}]")
    e = summary["sample_efficiency"]
    if e["aggregates"]:
        print(f"  sample efficiency (area under the curve over the shared env-step axis, "
              f"{len(e['settings'])} settings; {len(e['refused'])} runs off the axis, offline: "
              f"{', '.join(e['offline']) or 'none'}):")
        for v, a in e["aggregates"].items():
            iqm = a["IQM"]
            print(f"  {v:24s} AUC IQM {iqm['value']:.3f} [{iqm['lo']:.3f}, {iqm['hi']:.3f}]")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmil-bench report",
                                     description="rliable aggregates, tables and figures from "
                                                 "finished runs")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except UserError as e:
        print(f"cmil-bench report: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
