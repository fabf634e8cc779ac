"""The report: loading runs, final scores, rliable aggregates, tables, figures, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rliable import metrics as rl_metrics

from analysis import stats
from analysis.report import final_scores, load_runs, main, report
from cmil_bench.errors import UserError

REPS = 200
EVALS = 4  # evaluations per run


def write_run(root: Path, algo: str, task: str, demos: int, seed: int, finals: float, *,
              offline: bool = False, variant: str | None = None, success: float | None = None,
              finished: bool = True, extra: bool = False) -> Path:
    """One run folder; the score ramps linearly from 0 to ``finals`` over EVALS evaluations."""
    run = root / algo / task / f"d{demos}" / f"s{seed}"
    run.mkdir(parents=True)
    k = np.arange(1, EVALS + 1)
    df = pd.DataFrame({
        "algo": algo, "task": task, "n_demos": demos, "seed": seed,
        "env_steps": 0 if offline else k * 1000, "grad_steps": k * 500, "wall_s": k * 1.5,
        "eval_return": finals * 100 * k / EVALS,
        "eval_success": (success if success is not None else min(1.0, finals)) * k / EVALS,
        "norm_score": finals * k / EVALS,
    })
    if variant is not None:
        df["variant"] = variant
    if extra:
        df["disc_loss"] = 0.3
    df = df.sample(frac=1.0, random_state=seed)  # row order must not matter
    (run / ("metrics.csv" if finished else "progress.csv")).write_text(df.to_csv(index=False))
    return run


@pytest.fixture()
def runs(tmp_path):
    """A clearly above B on two tasks; C (offline, like BC) constant 0.5; one run in progress."""
    root = tmp_path / "runs"
    rng = np.random.default_rng(0)
    for task in ("hopper", "maze"):
        for seed in range(4):
            write_run(root, "a", task, 10, seed, 0.9 + 0.05 * rng.random(), extra=True)
            write_run(root, "b", task, 10, seed, 0.2 + 0.05 * rng.random())
            write_run(root, "c", task, 10, seed, 0.5, offline=True)
    write_run(root, "a", "hopper", 10, 99, 5.0, finished=False)
    return root


def test_load_runs_tidy_frame_and_counts(runs):
    df, info = load_runs(runs)
    assert info["finished"] == 24 and info["in_progress"] == 1 and info["skipped"] == []
    assert len(df) == 24 * EVALS
    assert df["run_dir"].nunique() == 24
    assert set(df["variant"]) == {"a", "b", "c"}  # missing variant -> algo name
    assert 99 not in set(df["seed"])  # the run in progress is ignored
    # Rows come back in step order, whatever the order in the file.
    one = df[df["run_dir"] == df["run_dir"].iloc[0]]
    assert list(one["eval_index"]) == list(range(EVALS))
    assert one["norm_score"].is_monotonic_increasing


def test_load_runs_fills_identity_from_path_and_skips_broken(tmp_path):
    root = tmp_path / "runs"
    run = write_run(root, "cmil", "kitchen", 5, 3, 0.7, variant="cmil[penalty_weight=0]")
    df = pd.read_csv(run / "metrics.csv").drop(columns=["seed", "n_demos"])
    (run / "metrics.csv").write_text(df.to_csv(index=False))
    broken = root / "bc" / "kitchen" / "d5" / "s0"
    broken.mkdir(parents=True)
    (broken / "metrics.csv").write_text("")
    import shutil
    shutil.copytree(run, root / "copies" / "cmil" / "kitchen" / "d5" / "s3")  # same run twice
    loaded, info = load_runs(root)
    assert info["finished"] == 1 and len(info["skipped"]) == 2
    reasons = sorted(s["reason"] for s in info["skipped"])
    assert "duplicate" in reasons[0] and "empty" in reasons[1]
    assert set(loaded["seed"]) == {3} and set(loaded["n_demos"]) == {5}
    assert set(loaded["variant"]) == {"cmil[penalty_weight=0]"}


def test_seed_panels_hold_every_seed_of_online_algorithms_only(runs):
    from analysis.report import _seed_panels

    df, _ = load_runs(runs)
    from analysis.report import _setting_labels

    panels = _seed_panels(df, _setting_labels(final_scores(df)), ["a", "b", "c"], "norm_score")
    assert sorted(panels) == ["hopper", "maze"]
    hop = {p["name"]: p for p in panels["hopper"]}
    assert sorted(hop) == ["a", "b"]  # c is offline (no env steps)
    assert sorted(hop["a"]["seeds"]) == [0, 1, 2, 3]  # the run in progress (seed 99) is left out
    x, y = hop["b"]["seeds"][2]
    np.testing.assert_array_equal(x, np.arange(1, EVALS + 1) * 1000)  # in step order
    final_b2 = pd.read_csv(runs / "b" / "hopper" / "d10" / "s2" / "metrics.csv")["norm_score"].max()
    np.testing.assert_allclose(y, final_b2 * np.arange(1, EVALS + 1) / EVALS)


def test_final_scores_last_k(runs):
    df, _ = load_runs(runs)
    last = final_scores(df, last_k=1)
    assert len(last) == 24
    c = last[last["variant"] == "c"]["score"]
    assert np.allclose(c, 0.5)
    two = final_scores(df, last_k=2)
    # Mean of the last two of a linear ramp to f: f * (EVALS - 0.5) / EVALS.
    assert np.allclose(two[two["variant"] == "c"]["score"], 0.5 * (EVALS - 0.5) / EVALS)
    with pytest.raises(UserError, match="nope"):
        final_scores(df, metric="nope")
    with pytest.raises(UserError, match="last_k"):
        final_scores(df, last_k=0)


@pytest.mark.slow
def test_report_numbers_tables_and_figures(runs, tmp_path):
    out = tmp_path / "report"
    summary = report(runs, out, reps=REPS, seed=1)
    assert summary["runs"]["finished"] == 24
    assert summary["runs"]["in_progress_ignored"] == 1
    agg = summary["aggregates"]
    assert agg["a"]["IQM"]["value"] > agg["b"]["IQM"]["value"]
    assert agg["a"]["IQM"]["lo"] > agg["b"]["IQM"]["hi"]  # clearly separated CIs
    assert agg["c"]["Mean"] == {"value": pytest.approx(0.5), "lo": pytest.approx(0.5),
                                "hi": pytest.approx(0.5)}
    assert agg["c"]["Optimality Gap"]["value"] == pytest.approx(0.5)
    poi = {(r["x"], r["y"]): r for r in summary["probability_of_improvement"]}
    assert len(poi) == 6  # every ordered pair of 3 algorithms
    assert poi[("a", "b")]["value"] > 0.95 and poi[("a", "b")]["lo"] > 0.9
    assert poi[("b", "a")]["value"] < 0.05
    assert poi[("a", "b")]["value"] + poi[("b", "a")]["value"] == pytest.approx(1.0)

    for name in ("aggregates", "by_demos", "by_task_score", "by_task_success",
                 "probability_of_improvement"):
        assert (out / "tables" / f"{name}.md").is_file()
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert "\\begin{tabular}" in tex
        assert not re.search(r"(?<!\\)[_%]", tex), tex  # caption and cells escaped
    for name in ("aggregates", "aggregates_by_demos", "performance_profiles",
                 "probability_of_improvement", "sample_efficiency_hopper",
                 "sample_efficiency_maze", "seed_curves_hopper", "seed_curves_maze",
                 "score_vs_demos"):
        for ext in ("png", "pdf"):
            f = out / "figures" / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    assert (out / "figures" / "aggregates.png").read_bytes()[:4] == b"\x89PNG"

    md = (out / "tables" / "by_task_score.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("|")}
    assert {"a", "b", "c"} <= set(rows)
    # The constant algorithm's per-task mean and CI equal the constant.
    assert rows["c"].count("0.50 [0.50, 0.50]") == 2
    # A's per-task means match the data.
    df, _ = load_runs(runs)
    fs = final_scores(df)
    a_hopper = fs[(fs["variant"] == "a") & (fs["task"] == "hopper")]["score"].mean()
    assert f"{a_hopper:.2f} [" in rows["a"]
    agg_md = (out / "tables" / "aggregates.md").read_text()
    assert f"{agg['a']['IQM']['value']:.2f} [{agg['a']['IQM']['lo']:.2f}" in agg_md

    saved = json.loads((out / "summary.json").read_text())
    assert saved["runs"]["in_progress_ignored"] == 1
    readme = (out / "README.md").read_text()
    assert "1 in progress (ignored)" in readme
    for f in saved["files"]:
        assert (out / f).is_file(), f
        if f != "README.md":
            assert f"`{f}`" in readme


@pytest.mark.slow
def test_report_is_reproducible_and_ci_independent_of_other_algorithms(runs, tmp_path):
    s1 = report(runs, tmp_path / "r1", reps=REPS, seed=3, figures_too=False)
    s2 = report(runs, tmp_path / "r2", reps=REPS, seed=3, figures_too=False)
    assert not (tmp_path / "r1" / "figures").exists()
    assert s1["aggregates"] == s2["aggregates"]
    # Removing algorithm b leaves a's intervals unchanged (each CI has its own seed).
    import shutil
    shutil.rmtree(runs / "b")
    s3 = report(runs, tmp_path / "r3", reps=REPS, seed=3, figures_too=False)
    assert s3["aggregates"]["a"] == s1["aggregates"]["a"]
    assert len(s3["probability_of_improvement"]) == 2


def test_unequal_seeds_are_truncated_for_aggregates(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, "a", "t1", 10, seed, 0.5 + 0.1 * seed)
    write_run(root, "a", "t2", 10, 0, 0.3)
    s = report(root, tmp_path / "out", reps=REPS, figures_too=False)
    assert s["aggregates"]["a"]["seeds_per_setting"] == 1
    assert s["runs"]["left_out_for_equal_seeds"] == 2
    # Aggregate uses seed 0 of each task: mean of 0.5 and 0.3.
    assert s["aggregates"]["a"]["Mean"]["value"] == pytest.approx(0.4)
    # The per-task table uses all three seeds of t1.
    assert s["per_setting"]["a"]["t1 d10"]["score"]["value"] == pytest.approx(0.6)
    assert s["per_setting"]["a"]["t1 d10"]["n_runs"] == 3


def test_single_algorithm_task_and_seed(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "cmil", "kitchen", 10, 0, 0.8)
    out = tmp_path / "out"
    s = report(root, out, reps=REPS)
    iqm = s["aggregates"]["cmil"]["IQM"]
    assert iqm["value"] == pytest.approx(0.8) and iqm["lo"] == iqm["hi"] == pytest.approx(0.8)
    assert s["probability_of_improvement"] == []
    assert any("one seed" in n for n in s["notes"])
    assert (out / "figures" / "aggregates.png").is_file()
    assert not (out / "figures" / "probability_of_improvement.png").exists()


def test_demo_counts_and_variants(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        for demos, f in ((5, 0.3), (20, 0.9)):
            write_run(root, "cmil", "kitchen", demos, seed, f)
        write_run(root / "ablations", "cmil", "kitchen", 5, seed, 0.1,
                  variant="cmil[penalty_weight=0]")
    s = report(root, tmp_path / "out", reps=REPS)
    assert s["algorithms"] == ["cmil", "cmil[penalty_weight=0]"]
    by = s["aggregates_by_demos"]["cmil"]
    assert by["5"]["IQM"]["value"] == pytest.approx(0.3)
    assert by["20"]["IQM"]["value"] == pytest.approx(0.9)
    assert "20" not in s["aggregates_by_demos"]["cmil[penalty_weight=0]"]
    # The pair shares only the 5-demo setting.
    pair = [r for r in s["probability_of_improvement"] if r["x"] == "cmil"][0]
    assert pair["settings"] == 1 and pair["value"] == pytest.approx(1.0)
    md = (tmp_path / "out" / "tables" / "by_demos.md").read_text()
    assert "0.90 [0.90, 0.90]" in md and "cmil[penalty_weight=0]" in md
    tex = (tmp_path / "out" / "tables" / "by_demos.tex").read_text()
    assert "penalty\\_weight" in tex


def test_bc_discrimination_table_per_task(tmp_path):
    """P(X > BC) on each task alone, over the demo counts both ran there; BC's IQM per count."""
    from scipy.stats import trim_mean

    root = tmp_path / "runs"
    rng = np.random.default_rng(4)
    bc_maze = {1: 0.1 + 0.3 * rng.random(8), 5: 0.2 + 0.3 * rng.random(8)}
    for seed in range(8):
        for n in (1, 5):  # maze: X clearly above BC at both shared counts
            write_run(root, "bc", "maze", n, seed, bc_maze[n][seed], offline=True)
            write_run(root, "x", "maze", n, seed, 0.8 + 0.1 * rng.random())
        write_run(root, "x", "maze", 20, seed, 0.0)  # BC has no 20: not in maze's P(X > BC)
        # push: X clearly below BC; y shares no demo count with BC
        write_run(root, "bc", "push", 1, seed, 0.85 + 0.1 * rng.random(), offline=True)
        write_run(root, "x", "push", 1, seed, 0.1 + 0.1 * rng.random())
        write_run(root, "y", "push", 10, seed, 0.5)
        write_run(root, "x", "door", 1, seed, 0.5)  # BC never ran on door
    out = tmp_path / "out"
    s = report(root, out, reps=REPS, figures_too=False)
    disc = {t["task"]: t for t in s["bc_discrimination"]}
    assert sorted(disc) == ["door", "maze", "push"]
    for n, scores in bc_maze.items():
        iqm = disc["maze"]["bc"][str(n)]
        assert iqm["value"] == pytest.approx(trim_mean(scores, 0.25))
        assert iqm["lo"] < iqm["value"] < iqm["hi"]
    vs = {(t, c["algorithm"]): c for t in disc for c in disc[t]["versus"]}
    assert sorted(vs) == [("door", "x"), ("maze", "x"), ("push", "x"), ("push", "y")]
    maze, push = vs[("maze", "x")], vs[("push", "x")]
    assert maze["demo_counts"] == [1, 5] and maze["ran"] == [1, 5, 20]
    assert maze["poi"]["value"] > 0.95 and maze["poi"]["lo"] > 0.9
    assert push["demo_counts"] == [1]
    assert push["poi"]["value"] < 0.05 and push["poi"]["hi"] < 0.1
    assert vs[("push", "y")]["poi"] is None and "no demo count in common" in vs[("push", "y")]["reason"]
    assert vs[("door", "x")]["poi"] is None and disc["door"]["bc"] == {}

    md = (out / "tables" / "bc_discrimination.md").read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines()
            if line.startswith("|") and not line.startswith("|:")][1:]
    assert all(r[1] == "bc" for r in rows)  # one BC variant: every row is against it
    by = {(r[0], r[2], r[3]): r for r in rows}
    bc1 = disc["maze"]["bc"]["1"]
    assert by[("maze", "bc", "1")][4] == f"{bc1['value']:.2f} [{bc1['lo']:.2f}, {bc1['hi']:.2f}]"
    assert by[("maze", "x", "1, 5")][5].startswith(f"{maze['poi']['value']:.2f} [")
    assert by[("push", "x", "1")][5].startswith(f"{push['poi']['value']:.2f} [")
    assert by[("push", "y", "–")][5] == "–" and by[("door", "x", "–")][5] == "–"
    assert by[("door", "bc", "–")][4] == "–"
    caption = md.splitlines()[0]
    assert "did not run: bc on door" in caption and "y ran 10 demos on push, bc 1" in caption
    tex = (out / "tables" / "bc_discrimination.tex").read_text()
    # ">" would print as an inverted "!" with LaTeX's default fonts: it must be math.
    assert "\\begin{tabular}" in tex and "P(X $>$ BC)" in tex and "X > BC" not in tex
    assert {"tables/bc_discrimination.md", "tables/bc_discrimination.tex"} <= set(s["files"])
    assert "`tables/bc_discrimination.md`" in (out / "README.md").read_text()


def test_bc_discrimination_against_every_bc_variant(tmp_path):
    """BC on every transition and BC on subsampled demos are different baselines: each BC
    variant gets its own rows, and the online method's P(X > BC) is taken against each."""
    root = tmp_path / "runs"
    rng = np.random.default_rng(5)
    for seed in range(6):
        write_run(root / "a", "bc", "hop", 4, seed, 0.95 + 0.02 * rng.random(), offline=True)
        write_run(root / "b", "bc", "hop", 4, seed, 0.05 + 0.02 * rng.random(), offline=True,
                  variant="bc-sub20")
        write_run(root / "a", "dac", "hop", 4, seed, 0.6 + 0.1 * rng.random())
    s = report(root, tmp_path / "out", reps=REPS, figures_too=False)
    disc = {(t["task"], t["baseline"]): t for t in s["bc_discrimination"]}
    assert sorted(disc) == [("hop", "bc"), ("hop", "bc-sub20")]
    for b in ("bc", "bc-sub20"):  # the other BC variant is not an "online method" against it
        assert [c["algorithm"] for c in disc[("hop", b)]["versus"]] == ["dac"]
    assert disc[("hop", "bc")]["bc"]["4"]["value"] > 0.9
    assert disc[("hop", "bc-sub20")]["bc"]["4"]["value"] < 0.1
    assert disc[("hop", "bc")]["versus"][0]["poi"]["value"] < 0.05
    assert disc[("hop", "bc-sub20")]["versus"][0]["poi"]["value"] > 0.95
    md = (tmp_path / "out" / "tables" / "bc_discrimination.md").read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines()
            if line.startswith("|") and not line.startswith("|:")][1:]
    assert [(r[1], r[2]) for r in rows] == [("bc", "bc"), ("bc", "dac"),
                                            ("bc-sub20", "bc-sub20"), ("bc-sub20", "dac")]


def test_empty_folder_is_a_user_error(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "a", "t", 10, 0, 0.5, finished=False)
    with pytest.raises(UserError, match="no finished runs.*1 in progress"):
        report(root, tmp_path / "out", reps=REPS)
    with pytest.raises(UserError, match="does not exist"):
        report(tmp_path / "missing", tmp_path / "out", reps=REPS)


def test_bad_metric_and_reps(runs, tmp_path):
    with pytest.raises(UserError, match="'score2'"):
        report(runs, tmp_path / "out", metric="score2", reps=REPS)
    with pytest.raises(UserError, match="reps"):
        report(runs, tmp_path / "out", reps=0)
    with pytest.raises(UserError, match="last_k"):
        report(runs, tmp_path / "out", reps=REPS, last_k=-1)


def test_main_cli(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["--runs", str(runs), "--out", str(out), "--metric", "eval_return",
               "--reps", str(REPS), "--last-k", "2", "--no-figures"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["metric"] == "eval_return" and "Optimality Gap" not in s["aggregates"]["a"]
    assert "IQM" in capsys.readouterr().out
    assert main(["--runs", str(tmp_path / "nothing_here"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_manifest_restricts_the_runs(runs, tmp_path):
    from analysis.runs import load_runs as _load

    all_df, _ = _load(runs)
    dirs = sorted(all_df["run_dir"].unique())
    keep = dirs[: len(dirs) // 2]
    manifest = tmp_path / "runs.txt"
    manifest.write_text("\n".join(keep) + "\n")
    df, info = _load(runs, only=[ln for ln in manifest.read_text().splitlines() if ln])
    assert sorted(df["run_dir"].unique()) == keep
    assert info["finished"] == len(keep)


def test_ablation_figure_and_table(tmp_path):
    from analysis import ablation

    root = tmp_path / "abl" / "runs"
    dirs = []
    for w, score in ((0, 0.3), (10, 0.8)):
        for task in ("maze", "push"):
            for seed in range(3):
                v = f"cmil[penalty_weight={w}]"
                dirs.append(write_run(root, v, task, 10, seed, score + 0.01 * seed, variant=v))
    manifest = tmp_path / "runs.txt"
    manifest.write_text("\n".join(str(d) for d in dirs) + "\n")
    out = tmp_path / "out"
    assert ablation.main(["--manifest", str(manifest), "--out", str(out), "--reps", "100"]) == 0
    assert (out / "ablation.png").stat().st_size > 1000
    table = (out / "ablation.md").read_text()
    rows = [ln for ln in table.splitlines() if "penalty_weight" in ln and "cmil[" in ln]
    assert len(rows) == 2
    iqms = [float(r.split("|")[6]) for r in rows]
    assert iqms[0] < 0.35 < 0.75 < iqms[1]
    empty = tmp_path / "none.txt"
    empty.write_text("")
    assert ablation.main(["--manifest", str(empty), "--out", str(out)]) == 2


# -- the vectorised bootstrap equals rliable's ------------------------------------------------


def _rliable_indices(monkeypatch):
    """Record every resampling index rliable's bootstrap classes draw."""
    from rliable import library as rly

    drawn = []
    for cls in (rly.StratifiedBootstrap, rly.StratifiedIndependentBootstrap):
        real = cls.update_indices

        def record(self, _real=real):
            idx = _real(self)
            drawn.append(idx)
            return idx
        monkeypatch.setattr(cls, "update_indices", record)
    return drawn


def test_resampling_indices_are_rliables(monkeypatch):
    """The indices drawn in one call are those rliable draws one resample at a time."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3))
    drawn = _rliable_indices(monkeypatch)
    stats.interval(x, stats.aggregate_func(True), 40, 7, "lbl")
    with stats._seeded(7, "lbl"):
        ours = stats.resample_indices(x.shape, 40)
    np.testing.assert_array_equal(ours, np.stack([d[0] for d in drawn]))
    # Independent arrays of different run counts (probability of improvement, per-task means).
    arrays = [rng.normal(size=(4, 2)), rng.normal(size=(6, 2)), rng.normal(size=(1, 2))]
    drawn.clear()
    stats.interval(arrays, lambda *a: np.array([0.0]), 30, 7, "ind")
    with stats._seeded(7, "ind"):
        ours = stats.independent_indices([a.shape for a in arrays], 30)
    for k in range(3):
        np.testing.assert_array_equal(ours[k], np.stack([d[0][k][0] for d in drawn]))


@pytest.mark.parametrize("runs_,settings", [(7, 5), (4, 1), (1, 3), (10, 40)])
def test_vectorised_estimates_equal_rliables(runs_, settings):
    """Same seed, so same resampling indices: every interval equals rliable's own to float
    tolerance (IQM, median, mean, optimality gap, probability of improvement, per-task means,
    performance profiles, and each point of a sample-efficiency curve)."""
    from rliable import library as rly

    rng = np.random.default_rng(runs_ * 100 + settings)
    x = rng.normal(0.5, 0.4, size=(runs_, settings))
    x[0, 0] = 1.0  # clipped by the optimality gap
    y = rng.normal(0.4, 0.4, size=(runs_ + 2, settings))
    y[1, :] = x[0, :]  # ties for the probability of improvement
    reps, seed = 300, 11
    tol = {"rtol": 0, "atol": 1e-12}

    point, ci = stats.interval(x, stats.aggregate_func(True), reps, seed, "agg")
    ours = stats.aggregates(x, True, reps, seed, "agg")
    names = stats.aggregate_names(True)
    assert names == ["IQM", "Median", "Mean", "Optimality Gap"]
    np.testing.assert_allclose([ours[n][0] for n in names], point, **tol)
    np.testing.assert_allclose([ours[n][1] for n in names], ci[0], **tol)
    np.testing.assert_allclose([ours[n][2] for n in names], ci[1], **tol)

    point, ci = stats.interval([x, y], stats.poi, reps, seed, "poi")
    np.testing.assert_allclose(stats.probability_of_improvement(x, y, reps, seed, "poi"),
                               [float(point), ci[0, 0], ci[1, 0]], **tol)

    point, ci = stats.interval(x, lambda s: np.array([stats.iqm(s)]), reps, seed, "iqm")
    np.testing.assert_allclose(stats.iqm_interval(x, reps, seed, "iqm"),
                               [point[0], ci[0, 0], ci[1, 0]], **tol)

    cols = [x[:, 0], y[:, 0], x[: max(1, runs_ // 2), -1]]
    point, ci = stats.interval([c.reshape(-1, 1) for c in cols], stats._column_means, reps,
                               seed, "means")
    ours = np.array(stats.setting_means(cols, reps, seed, "means"))
    np.testing.assert_allclose(ours.T, [point, ci[0], ci[1]], **tol)

    taus = np.linspace(-0.5, 1.5, 31)
    with stats._seeded(seed, "prof"):
        prof, cis = rly.create_performance_profile({"p": x}, taus, reps=reps)
    p, c = stats.performance_profile(x, taus, reps, seed, "prof")
    np.testing.assert_allclose(p, prof["p"], **tol)
    np.testing.assert_allclose(c, cis["p"], **tol)

    values = rng.normal(size=(runs_, 9))
    values[:, 3] = 0.25  # a constant evaluation
    point, ci = stats.interval(values[:, None, :], stats.iqm_per_step, reps, seed, "curve")
    p, c = stats.curve(values, reps, seed, "curve")
    np.testing.assert_allclose(p, point, **tol)
    np.testing.assert_allclose(c, ci, **tol)
    assert c.shape == (2, 9)


def test_batch_estimators_equal_rliable_metrics_on_each_resample():
    """Each batched estimator equals rliable.metrics on every slice of a stack (NaN too)."""
    rng = np.random.default_rng(3)
    stack = rng.normal(size=(25, 6, 4))
    stack[3, 0, 0] = np.nan
    other = rng.normal(size=(25, 5, 4))
    other[:, 0, :] = stack[:, 1, :]
    agg = stats.batch_aggregates(stack, True)
    poi = stats.batch_poi(stack, other)
    for b in range(len(stack)):
        s = stack[b]
        expect = [rl_metrics.aggregate_iqm(s), rl_metrics.aggregate_median(s),
                  rl_metrics.aggregate_mean(s), rl_metrics.aggregate_optimality_gap(s, 1.0)]
        np.testing.assert_allclose(agg[b], expect, rtol=0, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(poi[b], rl_metrics.probability_of_improvement(s, other[b]),
                                   rtol=0, atol=1e-12, equal_nan=True)


# -- speed, progress, figures in parallel, runs in progress -----------------------------------


def _synthetic(tmp_path, **kw):
    """benchmarks/synthetic_runs.py (a script, not a package) writing runs under tmp_path."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic_runs.py"
    spec = importlib.util.spec_from_file_location("bench_synthetic_runs", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return gen.write_runs(tmp_path / "synthetic", **kw), tmp_path / "synthetic" / "runs"


@pytest.mark.slow
def test_report_over_hundreds_of_runs_is_fast(tmp_path):
    """300 runs (5 algorithms x 3 tasks x 2 demo counts x 10 seeds, 20 evaluations), default
    2,000 resamples, every figure: about 4 s on a busy 2-core machine (the one-resample-at-a-time
    version took over 3 minutes for 100 runs). The bound leaves room for a slow machine."""
    import time

    dirs, root = _synthetic(tmp_path, algos=5, tasks=3, demos=(5, 10), seeds=10, evals=20)
    assert len(dirs) == 300
    t0 = time.perf_counter()
    s = report(root, tmp_path / "out", reps=2000)
    elapsed = time.perf_counter() - t0
    assert s["runs"]["used"] == 300 and len(s["probability_of_improvement"]) == 20
    assert elapsed < 90, f"report over 300 runs took {elapsed:.0f} s"


def test_synthetic_runs_are_deterministic_and_readable(tmp_path):
    kw = {"algos": 5, "tasks": 2, "demos": (1, 5), "seeds": 2, "evals": 5, "unfinished": 1}
    dirs, root = _synthetic(tmp_path, **kw)
    again, _ = _synthetic(tmp_path / "again", **kw)
    assert len(dirs) == 40
    for a, b in zip(dirs, again):
        for name in ("config.json", "metrics.csv", "progress.csv"):
            assert (a / name).is_file() == (b / name).is_file()
            if (a / name).is_file():
                assert (a / name).read_bytes() == (b / name).read_bytes()
    df, info = load_runs(root)
    assert info["finished"] == 20 and info["in_progress"] == 20
    bc = df[df["algo"] == "bc"]
    assert len(bc) and (bc["env_steps"] == 0).all()  # BC never steps the environment
    assert df.groupby("run_dir").size().eq(5).all()


def _failing_figure(path):
    raise RuntimeError(f"cannot draw {path}")


@pytest.mark.slow
def test_figure_worker_errors_reach_the_caller():
    from analysis.jobs import FigureJobs

    pool = FigureJobs(2)
    pool.submit("fine", sorted, [3, 1, 2])
    pool.submit("broken", _failing_figure, "x.png")
    with pytest.raises(RuntimeError, match="cannot draw x.png"):
        pool.results()


@pytest.mark.slow
def test_progress_bar_and_parallel_figures_give_the_same_report(runs, tmp_path, capsys):
    one = report(runs, tmp_path / "one", reps=REPS, jobs=1, progress=False)
    capsys.readouterr()
    two = report(runs, tmp_path / "two", reps=REPS, jobs=2, progress=True)
    err = capsys.readouterr().err
    assert "report" in err and "step" in err  # the tqdm bar
    for key in ("aggregates", "per_setting", "probability_of_improvement", "files"):
        assert one[key] == two[key]
    for name in one["files"]:
        if name.endswith((".md", ".tex", ".csv", ".png")):
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_joined_reading_equals_file_by_file(tmp_path, monkeypatch):
    """Files read in one parse per header give the frame and skip reasons of reading each file."""
    from analysis import runs as runs_mod

    root = tmp_path / "runs"
    write_run(root, "a", "t", 5, 0, 0.5, extra=True)
    write_run(root, "a", "t", 5, 1, 0.6)
    run = write_run(root, "b", "t", 5, 0, 0.4)
    bad = pd.read_csv(run / "metrics.csv")
    bad["grad_steps"] = bad["grad_steps"].astype(object)
    bad.loc[0, "grad_steps"] = "x"  # one bad run in a group of good ones
    (run / "metrics.csv").write_text(bad.to_csv(index=False))
    write_run(root, "b", "t", 5, 1, 0.7)
    quoted = write_run(root, "c", "t", 5, 0, 0.3, variant="c")
    (quoted / "metrics.csv").write_text(pd.read_csv(quoted / "metrics.csv").assign(
        variant='c "q"').to_csv(index=False))
    (root / "c" / "t" / "d5" / "s1").mkdir(parents=True)
    (root / "c" / "t" / "d5" / "s1" / "metrics.csv").write_text("")
    joined, info = load_runs(root)
    monkeypatch.setattr(runs_mod, "_plain_lines", lambda path: None)
    alone, info_alone = load_runs(root)
    assert info == info_alone
    assert sorted(s["reason"] for s in info["skipped"]) == [
        "column 'grad_steps' has missing or non-numeric values", "metrics.csv is empty"]
    pd.testing.assert_frame_equal(joined, alone[list(joined.columns)], check_exact=True)
    assert joined["grad_steps"].dtype == np.int64


def test_include_running_draws_partial_curves(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, "a", "hopper", 10, seed, 0.8)
        write_run(root, "c", "hopper", 10, seed, 0.5, offline=True)
    partial = write_run(root, "a", "hopper", 10, 3, 0.4, finished=False)
    write_run(root, "new", "hopper", 10, 0, 0.3, finished=False)  # only in progress
    (root / "a" / "hopper" / "d10" / "s4").mkdir(parents=True)  # no evaluation yet
    (root / "a" / "hopper" / "d10" / "s4" / "config.json").write_text("{}")

    default = report(root, tmp_path / "finished", reps=REPS)
    assert default["runs"]["in_progress_ignored"] == 3
    assert "in_progress_drawn" not in default["runs"]

    s = report(root, tmp_path / "out", reps=REPS, include_running=True)
    assert s["runs"]["in_progress_drawn"] == 2 and s["runs"]["in_progress_ignored"] == 1
    drawn = {r["run_dir"]: r for r in s["in_progress_drawn"]}
    assert str(partial) in drawn and drawn[str(partial)]["evaluations"] == EVALS
    assert drawn[str(partial)]["norm_score"] == pytest.approx(0.4)
    # Tables stay finished-only: identical to the default report.
    for name in ("aggregates", "by_task_score", "probability_of_improvement"):
        assert ((tmp_path / "out" / "tables" / f"{name}.md").read_bytes()
                == (tmp_path / "finished" / "tables" / f"{name}.md").read_bytes())
    assert s["algorithms"] == default["algorithms"] == ["a", "c"]
    assert any("drawn as partial curves" in n for n in s["notes"])
    assert "2 in progress (drawn as partial curves" in (tmp_path / "out" / "README.md").read_text()
    # The figures differ from the finished-only ones (the partial curves are drawn).
    for name in ("sample_efficiency_hopper.png", "seed_curves_hopper.png"):
        assert ((tmp_path / "out" / "figures" / name).read_bytes()
                != (tmp_path / "finished" / "figures" / name).read_bytes())


def test_include_running_panels_and_labels(tmp_path):
    from analysis import report as rep

    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, "a", "maze", 10, seed, 0.8)
    write_run(root, "a", "maze", 10, 2, 0.4, finished=False)
    write_run(root, "a", "maze", 25, 0, 0.4, finished=False)  # a demo count only in progress
    df, info = load_runs(root, include_running=True)
    finals = rep._setting_labels(final_scores(df))
    running = rep._running_runs(info["running"], finals, "norm_score")
    curves = rep._curves(df, finals, ["a"], "norm_score", REPS, 0, None, running)
    panels = {p["title"]: p for p in curves["maze"]}
    assert sorted(panels) == ["10 demos", "25 demos"]
    assert len(panels["10 demos"]["running"]["a"]) == 1 and "a" in panels["10 demos"]["curves"]
    assert panels["25 demos"]["curves"] == {} and len(panels["25 demos"]["running"]["a"]) == 1
    seeds = rep._seed_panels(df, finals, ["a"], "norm_score", running)["maze"]
    assert sorted(seeds[0]["seeds"]) == [0, 1] and sorted(seeds[0]["running"]) == [2]
    assert seeds[1]["seeds"] == {} and sorted(seeds[1]["running"]) == [0]


def test_main_cli_include_running_and_progress_flags(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["--runs", str(runs), "--out", str(out), "--reps", "50", "--no-figures",
               "--include-running", "--progress", "off", "--jobs", "1"])
    assert rc == 0
    printed = capsys.readouterr()
    assert "1 in progress drawn as partial curves" in printed.out
    assert printed.err == ""
    assert main(["--runs", str(runs), "--out", str(out), "--jobs", "0"]) == 2
    assert "jobs" in capsys.readouterr().err
