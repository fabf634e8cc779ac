"""The report's fair comparison (issue 17, deliverable 6): the headline only over the settings
every algorithm ran, and the sample-efficiency area under the curve over the shared env-step
axis, with rliable intervals."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from test_report import EVALS, write_run

from analysis import efficiency, figures, stats
from analysis.report import _curves, _setting_labels, final_scores, load_runs, main, report

REPS = 200


def with_schedule(run: Path, total_steps: int, eval_every: int) -> Path:
    """A config.json recording the run's budget and evaluation cadence, as the harness writes."""
    record = {"algo": run.parts[-4], "config": {"total_steps": total_steps,
                                                "eval_every": eval_every}}
    (run / "config.json").write_text(json.dumps(record))
    return run


def set_env_steps(run: Path, steps) -> Path:
    df = pd.read_csv(run / "metrics.csv").sort_values("env_steps")
    df["env_steps"] = list(steps)
    df.to_csv(run / "metrics.csv", index=False)
    return run


def add_initial_evaluation(run: Path, score: float) -> Path:
    """An evaluation row at env step 0, as CMIL writes after its BC start."""
    df = pd.read_csv(run / "metrics.csv")
    first = df.sort_values("env_steps").iloc[[0]].assign(env_steps=0, grad_steps=1, norm_score=score)
    pd.concat([first, df]).to_csv(run / "metrics.csv", index=False)
    return run


# -- the headline over the common settings ------------------------------------------------------

@pytest.fixture()
def uneven(tmp_path):
    """a and c (offline, like BC) ran t1 d1, t1 d10 and t2 d10; b lacks t1 d1. a is poor at
    t1 d1, so pooling it would pull a's aggregate down."""
    root = tmp_path / "runs"
    for seed in range(3):
        for task in ("t1", "t2"):
            write_run(root, "a", task, 10, seed, 0.8 + 0.02 * seed)
            write_run(root, "b", task, 10, seed, 0.5 + 0.02 * seed)
            write_run(root, "c", task, 10, seed, 0.6 + 0.01 * seed, offline=True)
        write_run(root, "a", "t1", 1, seed, 0.1 + 0.02 * seed)
        write_run(root, "c", "t1", 1, seed, 0.3, offline=True)
    return root


def test_headline_uses_only_the_settings_every_algorithm_ran(uneven, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--runs", str(uneven), "--out", str(out), "--reps", str(REPS), "--no-figures"])
    assert rc == 0
    printed = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    common = ["t1 d10", "t2 d10"]
    assert s["headline"]["comparison"] is True and s["headline"]["settings"] == common
    assert {(e["algorithm"], e["setting"], e["runs"]) for e in s["headline"]["left_out"]} == {
        ("a", "t1 d1", 3), ("c", "t1 d1", 3)}
    for v in ("a", "b", "c"):
        assert s["aggregates"][v]["settings"] == common
    # a's aggregate is over its two 10-demo settings only: the mean of 0.80, 0.82, 0.84 twice.
    assert s["aggregates"]["a"]["Mean"]["value"] == pytest.approx(0.82)
    df, _ = load_runs(uneven)
    fs = _setting_labels(final_scores(df))
    matrix, _ = stats.score_matrix(fs[fs["variant"] == "a"], common)
    expect = stats.aggregates(matrix, True, REPS, 0, "agg/a")
    assert s["aggregates"]["a"]["IQM"] == {"value": pytest.approx(expect["IQM"][0]),
                                           "lo": pytest.approx(expect["IQM"][1]),
                                           "hi": pytest.approx(expect["IQM"][2])}
    # Probabilities of improvement over the common settings too (a > c everywhere there; at
    # t1 d1, left out, c would win).
    poi = {(r["x"], r["y"]): r for r in s["probability_of_improvement"]}
    assert len(poi) == 6 and all(r["settings"] == 2 for r in poi.values())
    assert poi[("a", "c")]["value"] == pytest.approx(1.0)
    # The left-out settings stay in the per-setting and per-demo-count numbers.
    assert s["per_setting"]["a"]["t1 d1"]["n_runs"] == 3
    assert s["aggregates_by_demos"]["a"]["1"]["Mean"]["value"] == pytest.approx(0.12)
    rows = [[c.strip() for c in line.split("|")[1:3]]
            for line in (out / "tables" / "by_task_score.md").read_text().splitlines()
            if line.startswith("| ")]
    assert ["a", "1"] in rows and ["c", "1"] in rows and ["b", "1"] not in rows
    # Named in the README, the notes, the aggregates table and on stdout.
    readme = (out / "README.md").read_text()
    assert "- a x t1 d1 (3 runs)" in readme and "- c x t1 d1 (3 runs)" in readme
    assert any("2 algorithm x setting pairs left out" in n for n in s["notes"])
    assert "left out: a x t1 d1; c x t1 d1" in (out / "tables" / "aggregates.md").read_text()
    assert "headline over the 2 settings every algorithm ran; left out: a x t1 d1; c x t1 d1" \
        in printed


def test_headline_unchanged_when_every_algorithm_ran_every_setting(uneven, tmp_path):
    import shutil

    shutil.rmtree(uneven / "a" / "t1" / "d1")
    shutil.rmtree(uneven / "c" / "t1" / "d1")
    s = report(uneven, tmp_path / "out", reps=REPS, figures_too=False)
    assert s["headline"]["left_out"] == [] and not any("left out of it" in n for n in s["notes"])
    assert "Nothing is left out." in (tmp_path / "out" / "README.md").read_text()
    assert "every algorithm ran" not in (tmp_path / "out" / "tables" / "aggregates.md").read_text()


def test_no_common_setting_gives_per_algorithm_tables_only(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, "a", "t1", 10, seed, 0.7)
        write_run(root, "b", "t2", 10, seed, 0.4)
    out = tmp_path / "out"
    assert main(["--runs", str(root), "--out", str(out), "--reps", "50", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["headline"]["comparison"] is False and s["headline"]["settings"] == []
    assert s["aggregates"] == {} and s["probability_of_improvement"] == []
    assert any("No setting (task x demo count) is common to all algorithms" in n
               for n in s["notes"])
    assert "no headline comparison" in printed
    assert not (out / "tables" / "aggregates.md").exists()
    assert not (out / "figures" / "performance_profiles.png").exists()
    assert (out / "tables" / "by_task_score.md").is_file()
    assert s["aggregates_by_demos"]["a"]["10"]["Mean"]["value"] == pytest.approx(0.7)
    assert (out / "figures" / "score_vs_demos.png").is_file()
    # Their areas share no setting either: no sample-efficiency table.
    assert s["sample_efficiency"]["aggregates"] == {}
    assert not (out / "tables" / "sample_efficiency_auc.md").exists()


# -- the area under the curve -------------------------------------------------------------------

def test_auc_is_the_trapezoid_rule_over_the_axis_length():
    x = np.array([1000.0, 2000.0, 4000.0])
    y = np.array([[0.2, 0.4, 1.0], [1.0, 1.0, 1.0]])
    # (1000 * (0.2 + 0.4) / 2 + 2000 * (0.4 + 1.0) / 2) / 3000
    np.testing.assert_allclose(efficiency.auc(y, x), [1700 / 3000, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(efficiency.schedule_points(4000, 1000), [1000, 2000, 3000, 4000])
    np.testing.assert_array_equal(efficiency.schedule_points(2500, 1000), [1000, 2000, 2500])
    assert efficiency.describe([1000, 2000, 2500]) == "3 evaluations every 1000 env steps up to 2500"


def test_report_auc_per_run_and_its_interval_equal_rliables(tmp_path):
    root = tmp_path / "runs"
    finals = {}
    for seed in range(4):
        for task in ("t1", "t2"):
            for algo, base in (("a", 0.8), ("b", 0.4)):
                f = base + 0.03 * seed + (0.05 if task == "t2" else 0.0)
                run = write_run(root, algo, task, 10, seed, f)
                with_schedule(run, EVALS * 1000, 1000)
                if algo == "a":  # not on the axis: left out of the area
                    add_initial_evaluation(run, 0.9)
                finals[str(run)] = f
            write_run(root, "c", task, 10, seed, 0.5, offline=True)
    out = tmp_path / "out"
    s = report(root, out, reps=REPS, seed=5, figures_too=False)
    runs = pd.read_csv(out / "tables" / "sample_efficiency_auc_runs.csv")
    assert len(runs) == 16 and set(runs["variant"]) == {"a", "b"}
    # A linear ramp to f over evaluations at 1000..4000: values f/4, f/2, 3f/4, f, and the
    # trapezoid mean over the axis is f * (0.375 + 0.625 + 0.875) / 3 = 0.625 f.
    for run_dir, area in zip(runs["run_dir"], runs["auc_norm_score"]):
        assert area == pytest.approx(0.625 * finals[run_dir], abs=1e-12)
    e = s["sample_efficiency"]
    assert e["offline"] == ["c"] and list(e["aggregates"]) == ["a", "b"]
    assert e["axes"]["t1"]["points"] == [1000, 2000, 3000, 4000]
    assert e["axes"]["t1"]["schedule_from"] == ["config.json"] and e["refused"] == []
    assert e["axes"]["t1"]["initial_evaluation_left_out"] == {"a": 4}
    assert any("evaluations at env step 0 of a" in n for n in s["notes"])
    # The interval is rliable's own on the same resampling indices.
    for v in ("a", "b"):
        sub = runs[runs["variant"] == v].rename(columns={"auc_norm_score": "score"})
        matrix, _ = stats.score_matrix(sub, ["t1 d10", "t2 d10"])
        point, ci = stats.interval(matrix, stats.aggregate_func(False), REPS, 5, f"auc/{v}")
        got = e["aggregates"][v]
        for i, name in enumerate(("IQM", "Median", "Mean")):
            assert got[name]["value"] == pytest.approx(point[i], abs=1e-12)
            assert got[name]["lo"] == pytest.approx(ci[0, i], abs=1e-12)
            assert got[name]["hi"] == pytest.approx(ci[1, i], abs=1e-12)
    table = (out / "tables" / "sample_efficiency_auc.md").read_text()
    assert "Not in this table: c (offline: its axis is gradient steps" in table
    assert "| c " not in table and "| a " in table


def test_runs_off_the_shared_axis_are_refused_with_a_reason(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        with_schedule(write_run(root, "a", "t1", 10, seed, 0.8), 4000, 1000)
        with_schedule(write_run(root, "b", "t1", 10, seed, 0.6), 4000, 1000)
        # Another budget and cadence on the same task.
        run = with_schedule(write_run(root, "g", "t1", 10, seed, 0.5), 8000, 2000)
        set_env_steps(run, [2000, 4000, 6000, 8000])
    # Evaluations off the run's own schedule (one skipped).
    with_schedule(set_env_steps(write_run(root, "b", "t1", 10, 2, 0.6), [1000, 3000, 3500, 4000]),
                  4000, 1000)
    # Past its next point: the evaluation of 2000 came after 3000.
    with_schedule(set_env_steps(write_run(root, "a", "t1", 10, 2, 0.8), [1000, 3000, 3500, 4000]),
                  4000, 1000)
    # 300 steps after its point (an episode ended late): placed at the point, the lag named.
    late = with_schedule(set_env_steps(write_run(root, "a", "t1", 10, 3, 0.8),
                                       [1000, 2300, 3000, 4000]), 4000, 1000)
    s = report(root, tmp_path / "out", reps=REPS, figures_too=False)
    e = s["sample_efficiency"]
    reasons = {Path(r["run_dir"]).relative_to(root).as_posix(): r["reason"] for r in e["refused"]}
    assert sorted(reasons) == ["a/t1/d10/s2", "b/t1/d10/s2", "g/t1/d10/s0", "g/t1/d10/s1"]
    assert "evaluation schedule (4 evaluations every 2000 env steps up to 8000) differs from the " \
           "one shared on t1 (4 evaluations every 1000 env steps up to 4000" in reasons["g/t1/d10/s0"]
    assert "do not follow its own schedule" in reasons["b/t1/d10/s2"]
    assert "its 4 evaluations (env steps 1000 to 4000) do not follow its own schedule (4 " \
           "evaluations every 1000 env steps up to 4000" in reasons["a/t1/d10/s2"]
    assert e["axes"]["t1"]["max_lag"] == 300 and "g" not in e["aggregates"]
    assert e["axes"]["t1"]["max_lag_fraction"] == {"a": 0.3, "b": 0.0}
    assert any("more env steps than their place on the axis says: a on t1 (up to 30%)" in n
               for n in s["notes"])
    assert any("no run of g is on it" in n for n in s["notes"])
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "g/t1/d10/s1`: its evaluation schedule" in readme
    # The late run is integrated over the schedule's points, not its recorded steps.
    areas = pd.read_csv(tmp_path / "out" / "tables" / "sample_efficiency_auc_runs.csv")
    area = areas.loc[areas["run_dir"] == str(late), "auc_norm_score"].item()
    assert area == pytest.approx(0.625 * 0.8, abs=1e-12)
    assert area != pytest.approx(float(efficiency.auc(0.8 * np.arange(1, 5) / 4,
                                                      [1050, 2000, 3000, 4000])), abs=1e-6)


def test_a_tie_between_schedules_refuses_the_task_and_no_config_uses_recorded_steps(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, "a", "t1", 10, seed, 0.8)  # no config.json: recorded steps 1000..4000
        set_env_steps(write_run(root, "b", "t1", 10, seed, 0.6), [500, 1000, 1500, 2000])
        write_run(root, "a", "t2", 10, seed, 0.8)
        write_run(root, "b", "t2", 10, seed, 0.6)
    # Without config.json the recorded steps are the schedule: other steps, another schedule.
    odd = set_env_steps(write_run(root, "a", "t2", 10, 5, 0.8), [700, 2000, 3100, 4000])
    s = report(root, tmp_path / "out", reps=REPS, figures_too=False)
    e = s["sample_efficiency"]
    t2 = [r for r in e["refused"] if r["task"] == "t2"]
    assert [r["run_dir"] for r in t2] == [str(odd)]
    assert "its evaluation schedule (4 evaluations at env steps 700, 2000, 3100, 4000) differs " \
           "from the one shared on t2 (4 evaluations every 1000 env steps up to 4000, 4 runs of " \
           "a, b)" in t2[0]["reason"]
    t1 = [r for r in e["refused"] if r["task"] == "t1"]
    assert len(t1) == 4 and all("no evaluation schedule is shared by most algorithms on t1"
                                in r["reason"] for r in t1)
    assert list(e["axes"]) == ["t2"] and e["axes"]["t2"]["schedule_from"] == ["metrics.csv"]
    assert e["settings"] == ["t2 d10"] and set(e["aggregates"]) == {"a", "b"}


# -- BC as a flat line in the sample-efficiency figures -----------------------------------------

def test_offline_algorithm_is_a_flat_labelled_line_in_the_figure(uneven, tmp_path, monkeypatch):
    df, _ = load_runs(uneven)
    fs = _setting_labels(final_scores(df))
    curves = _curves(df, fs, ["a", "b", "c"], "norm_score", REPS, 0)
    panel = {p["title"]: p for p in curves["t1"]}["10 demos"]
    assert set(panel["curves"]) == {"a", "b"} and set(panel["lines"]) == {"c"}
    c_scores = fs[(fs["variant"] == "c") & (fs["setting"] == "t1 d10")]["score"].to_numpy()
    assert panel["lines"]["c"][0] == pytest.approx(stats.iqm(c_scores))
    drawn = {}

    def keep(fig, base):
        drawn["fig"] = fig
        return []
    monkeypatch.setattr(figures, "save", keep)
    figures.sample_efficiency("t1", curves["t1"], figures.colors_for(["a", "b", "c"]), "IQM",
                              tmp_path / "x")
    ax = [a for a in drawn["fig"].axes if a.get_title() == "10 demos"][0]
    flat = [ln for ln in ax.get_lines() if ln.get_label() == "c (offline, final)"]
    assert len(flat) == 1 and flat[0].get_linestyle() == "--"
    np.testing.assert_allclose(flat[0].get_ydata(), panel["lines"]["c"][0], rtol=0, atol=1e-12)
    matplotlib.pyplot.close(drawn["fig"])
