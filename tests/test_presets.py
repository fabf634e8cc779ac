"""Presets change scale only (cmil_bench.config.SCALE_KEYS), and `cmil-bench list --algo A
--preset P` prints what a preset changes against the reference defaults."""

from __future__ import annotations

import dataclasses

import pytest

from algorithms import ALGORITHMS, get_algorithm
from cmil_bench.config import SCALE_KEYS, build_config, check_scale_only, preset_changes
from cmil_bench.errors import UserError
from helpers import call_cli


def test_every_algorithm_has_its_scale_keys_and_they_are_config_fields():
    assert set(SCALE_KEYS) == set(ALGORITHMS)
    for algo, keys in SCALE_KEYS.items():
        fields = {f.name for f in dataclasses.fields(get_algorithm(algo).Config)}
        assert keys <= fields, (algo, sorted(keys - fields))


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_preset_changes_scale_only(algo):
    mod = get_algorithm(algo)
    assert {"cpu", "smoke"} <= set(mod.PRESETS)
    check_scale_only(algo, mod.PRESETS)
    for name in mod.PRESETS:
        build_config(mod.Config, mod.PRESETS, name, None, algo)  # every key exists, every value fits


@pytest.mark.parametrize("algo, layer, named", [
    ("cmil", {"kl_scale": 0.01, "deter": 64}, "cpu.kl_scale"),
    ("cmil", {"pretrain_steps": 60}, "cpu.pretrain_steps"),
    ("cmil", {"ensemble_size": 5}, "cpu.ensemble_size"),
    ("vmail", {"actor_lr": 3e-4}, "cpu.actor_lr"),
    ("dac", {"agent": "sac", "batch_size": 64}, "cpu.agent"),
    ("gail", {"disc_warmup_epochs": 20}, "cpu.disc_warmup_epochs"),
    ("bc", {"weight_decay": 1e-3}, "cpu.weight_decay"),
])
def test_a_method_change_in_a_preset_is_refused_by_name(algo, layer, named):
    with pytest.raises(UserError, match=rf"{algo}: presets change scale only; not scale keys: {named}"):
        check_scale_only(algo, {"cpu": layer})
    check_scale_only(algo, {"cpu": {k: v for k, v in layer.items() if k in SCALE_KEYS[algo]}})


def test_preset_changes_lists_changed_keys_against_the_defaults():
    from algorithms import cmil

    rows = {k: (d, v) for k, d, v in preset_changes(cmil.Config, cmil.PRESETS, "cpu", "cmil")}
    ref = cmil.Config()
    assert rows["deter"] == (ref.deter, cmil.PRESETS["cpu"]["deter"])
    assert set(rows) <= set(cmil.PRESETS["cpu"])
    assert "penalty_weight" not in rows and "kl_scale" not in rows
    # overlays: the later preset wins, and a key back at its default is not listed
    presets = {"a": {"deter": 64, "stoch": 16}, "b": {"deter": ref.deter}}
    rows = preset_changes(cmil.Config, presets, "a,b", "cmil")
    assert [r[0] for r in rows] == ["stoch"]


def test_list_prints_what_a_preset_changes(capsys):
    rc, out, _ = call_cli(["list", "--algo", "dac", "--preset", "cpu"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("dac --preset cpu: ")
    table = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines[2:]}
    assert lines[1].split() == ["key", "default", "preset"]
    assert table["total_steps"].split() == ["200000", "2400"]
    assert table["actor_hidden"] == "(400, 300)  (64, 64)"
    assert "agent" not in table and "actor_lr" not in table
    rc, out, _ = call_cli(["list", "--algo", "gail"], capsys)
    assert rc == 0 and "presets cpu, smoke" in out


@pytest.mark.parametrize("argv, message", [
    (["list", "--preset", "cpu"], "--preset needs --algo"),
    (["list", "--algo", "bc", "--preset", "turbo"], "unknown preset 'turbo' for algorithm 'bc'"),
    (["list", "--algo", "bcc"], "unknown algorithm 'bcc'"),
])
def test_list_refuses_bad_arguments_in_one_line(argv, message, capsys):
    rc, _, err = call_cli(argv, capsys)
    assert rc == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
