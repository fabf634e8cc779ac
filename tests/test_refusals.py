"""Runs refused before anything is written: a run folder of another configuration (finished or
not), a config value that cannot be right (NaN, infinite, non-positive learning rate, size or
budget), demos whose shapes differ from the task's. Each ends with exit status 2, one error line
and no run folder that looks started."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from cmil_bench.config import validate
from cmil_bench.errors import UserError
from cmil_bench.run import identity_differences
from helpers import BC_SETS, TASK, assert_clean_failure, call_cli, run_argv

# ------------------------------------------------------------------------- config values


@pytest.mark.parametrize("key,value,shown", [
    ("lr", "nan", "nan"), ("lr", "inf", "inf"), ("lr", "0", "0.0"), ("lr", "-1e-3", "-0.001"),
    ("weight_decay", "nan", "nan"), ("batch_size", "0", "0"), ("hidden", "64,0", "(64, 0)"),
    ("eval_every", "0", "0"), ("total_steps", "-5", "-5"), ("eval_episodes", "-1", "-1"),
])
def test_bad_config_value_is_refused_before_anything_is_written(tmp_path, demo_source, capsys,
                                                                key, value, shown):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, sets={key: value}), capsys)
    assert_clean_failure(rc, err, f"'{key}'", shown, out=out)
    assert not out.exists()


@dataclasses.dataclass
class _Cfg:
    lr: float = 1e-3
    critic_lr: float = 1e-3
    hidden: tuple = (64, 64)
    disc_hidden: tuple = (32,)
    batch_size: int = 32
    cnn_depth: int = 32
    n_envs: int = 4
    total_steps: int = 100
    eval_every: int = 10
    train_every: int = 1
    seed_steps: int = 0
    discount: float = 0.99
    min_log_std: float = -5.0
    eval_episodes: int = 0


@pytest.mark.parametrize("key,value,what", [
    ("min_log_std", float("nan"), "finite"), ("min_log_std", float("-inf"), "finite"),
    ("hidden", (64, float("nan")), "finite"),
    ("critic_lr", 0.0, "learning rate"), ("lr", -1.0, "learning rate"),
    ("disc_hidden", (0,), "size"), ("cnn_depth", 0, "size"), ("n_envs", -1, "size"),
    ("total_steps", 0, "budget"), ("train_every", 0, "budget"),
    ("seed_steps", -1, ">= 0"), ("discount", 1.5, "[0, 1]"),
])
def test_validate_rules_by_field_name(key, value, what):
    validate(_Cfg(), "x")  # the defaults pass; zero seed_steps / eval_episodes are allowed
    with pytest.raises(UserError, match=f"'{key}' for 'x' must be .*{what}"):
        validate(dataclasses.replace(_Cfg(), **{key: value}), "x")


def test_every_algorithm_default_and_preset_passes_validate():
    from algorithms import available, get_algorithm
    from cmil_bench.config import build_config

    for algo in available():
        module = get_algorithm(algo)
        for preset in [None, *getattr(module, "PRESETS", {})]:
            build_config(module.Config, getattr(module, "PRESETS", {}), preset, None, algo)


# --------------------------------------------------------------------------- demo shapes


def test_demos_of_another_task_are_refused_with_both_shapes(tmp_path, demo_source, capsys):
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, demo_source, task="fetch-push"), capsys)
    line = assert_clean_failure(rc, err, "fetch-push", "(6,)", "(28,)", out=out)
    assert "observations" in line
    assert not out.exists()


def test_demo_actions_of_another_shape_are_refused(tmp_path, capsys, demo_writers):
    path = tmp_path / "demos.hdf5"
    demo_writers.d4rl(path, lengths=(30, 40, 35, 30, 45, 50), ends=["timeout"] * 6, trailing=0,
                      obs_dim=6, act_dim=3, infos=False)
    out = tmp_path / "run"
    rc, _, err = call_cli(run_argv(out, f"d4rl:{path}"), capsys)
    line = assert_clean_failure(rc, err, TASK, "(3,)", "(2,)", out=out)
    assert "actions" in line
    assert not out.exists()


# --------------------------------------------------------------------- run folder identity


def test_identity_differences_compare_any_config_keys():
    rec = {"algo": "bc", "variant": "bc", "task": "t", "n_demos": 5, "demo_source": "s",
           "seed": 0, "config": {"hidden": [64, 64], "total_steps": 10, "old_name": 1}}
    req = dict(rec, config={"hidden": (64, 64), "total_steps": 10, "new_name": 1})
    assert [d[0] for d in identity_differences(rec, req)] == ["config.new_name", "config.old_name"]
    same = dict(rec, config={"hidden": (64, 64), "total_steps": 10, "old_name": 1})
    assert identity_differences(rec, same) == []
    assert [d[0] for d in identity_differences({**rec, "seed": 1}, same)] == ["seed"]
    assert [d[0] for d in identity_differences({k: v for k, v in rec.items() if k != "variant"},
                                               same)] == ["variant"]


@pytest.fixture()
def finished(tmp_path, reference_run):
    """A copy of a finished BC run (BC_SETS, seed 0) and its metrics.csv bytes."""
    out = tmp_path / "run"
    shutil.copytree(reference_run("bc", BC_SETS), out)
    return out, (out / "metrics.csv").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("change,named", [
    ({"seed": 3}, "seed"), ({"algo": "dac", "sets": {}}, "algo"),
    ({"sets": {**BC_SETS, "lr": "0.01"}}, "config.lr"),
    ({"demos": 4}, "n_demos"), ({"variant": "bc-other"}, "variant"),
])
@pytest.mark.parametrize("state", ["finished", "unfinished"])
def test_folder_of_another_configuration_is_refused(finished, demo_source, capsys, change, named,
                                                    state):
    out, _ = finished
    if state == "unfinished":
        (out / "metrics.csv").unlink()  # as if killed before completing
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    kw = {"sets": BC_SETS, **{k: v for k, v in change.items() if k != "variant"}}
    argv = run_argv(out, demo_source, **kw) + (["--variant", change["variant"]]
                                                if "variant" in change else [])
    rc, _, err = call_cli(argv, capsys)
    line = assert_clean_failure(rc, err, str(out), named, "--force")
    assert state in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files  # untouched


@pytest.mark.slow
def test_force_starts_a_folder_of_another_configuration_clean(finished, demo_source, capsys):
    out, before = finished
    rc, _, err = call_cli(run_argv(out, demo_source, seed=2, sets=BC_SETS) + ["--force"], capsys)
    assert rc == 0, err
    assert "already complete" not in err and "starting clean" not in err
    assert json.loads((out / "config.json").read_text())["seed"] == 2
    assert (out / "metrics.csv").read_bytes() != before
    # and the same request again is complete
    rc, _, err = call_cli(run_argv(out, demo_source, seed=2, sets=BC_SETS), capsys)
    assert rc == 0 and "already complete" in err


@pytest.mark.slow
def test_unreadable_config_json_is_refused(finished, demo_source, capsys):
    out, _ = finished
    (out / "config.json").write_text("{not json")
    rc, _, err = call_cli(run_argv(out, demo_source, sets=BC_SETS), capsys)
    assert_clean_failure(rc, err, "config.json", "--force")
