"""The ``cmil-bench`` command line: help, list, exit statuses, rerun/force, the run-folder lock."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from cmil_bench import cli
from helpers import BC_SETS, TASK, assert_clean_failure, assert_same_metrics, call_cli, run_argv


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demos", "run", "report", "list"):
        assert cmd in out


def test_run_help_explains_resume(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "resumes" in out and "metrics.csv" in out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("argv,what", [
    (["run", "--task", TASK, "--demos", "5", "--out", "x"], "--algo"),
    (["run", "--algo", "bc", "--task", TASK, "--demos", "five", "--out", "x"], "five"),
    (["nope"], "nope"),
])
def test_argument_errors_exit_2(argv, what, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert what in err and "Traceback" not in err


def test_list_shows_tasks_and_algorithms(capsys):
    from algorithms import available

    rc, out, _ = call_cli(["list"], capsys)
    assert rc == 0
    assert TASK in out and TASK + "-pixels" in out
    algo_line = next(ln for ln in out.splitlines() if ln.startswith("algorithms:"))
    assert [a.strip() for a in algo_line.split(":", 1)[1].split(",")] == available()
    assert "bc" in available()


@pytest.mark.slow
def test_finished_run_layout(reference_run):
    ref = reference_run("bc", BC_SETS)
    df = pd.read_csv(ref / "metrics.csv")
    assert df["grad_steps"].tolist() == list(range(30, 151, 30))
    assert not (ref / "progress.csv").exists()
    assert (ref / "checkpoint.pt").exists() and (ref / "config.json").exists()
    record = json.loads((ref / "config.json").read_text())
    assert record["presets"] == ["smoke"] and record["overrides"] == {k: str(v) for k, v in BC_SETS.items()}
    assert all(record["config"][k] == v for k, v in BC_SETS.items())  # what ran


@pytest.mark.slow
def test_force_redoes_finished_run(tmp_path, reference_run, demo_source, capsys):
    ref = reference_run("bc", BC_SETS)
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    (out / "metrics.csv").write_text("stale\n")
    rc, stdout, err = call_cli(run_argv(out, demo_source, sets=BC_SETS) + ["--force"], capsys)
    assert rc == 0, err
    assert stdout.strip() == str(out / "metrics.csv")
    assert_same_metrics(out / "metrics.csv", ref / "metrics.csv")


@pytest.mark.slow
def test_busy_run_folder_is_refused(tmp_path, demo_source, capsys):
    from cmil_bench.run import RunFolderLock

    out = tmp_path / "run"
    out.mkdir()
    with RunFolderLock(out):  # another process would hold it the same way
        rc, _, err = call_cli(run_argv(out, demo_source), capsys)
    assert_clean_failure(rc, err, str(out), "in use", out=out)
    assert not (out / "config.json").exists()
    # once free, the same folder runs
    rc, _, err = call_cli(run_argv(out, demo_source, sets={"total_steps": 30}), capsys)
    assert rc == 0, err


def test_interrupt_exits_130_with_hint(tmp_path, demo_source, capsys, monkeypatch):
    import cmil_bench.run as run_mod

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "execute", interrupted)
    rc, _, err = call_cli(run_argv(tmp_path / "run", demo_source), capsys)
    assert rc == 130
    assert "interrupted" in err and "resume" in err and "Traceback" not in err
