"""Config resolution: defaults < presets (left to right) < --set, old key names refused, list
values from the command line."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest

from cmil_bench.config import REMOVED, RENAMED, BaseConfig, build_config, parse_overrides
from cmil_bench.errors import UserError


@dataclass
class _Cfg(BaseConfig):
    lr: float = 1.0
    steps: int = 10
    width: int = 8


PRESETS = {"cpu": {"lr": 2.0, "steps": 20}, "pixels": {"lr": 3.0, "width": 16}}


@pytest.mark.parametrize("preset, want", [
    (None, (1.0, 10, 8)),
    ("cpu", (2.0, 20, 8)),
    ("cpu,pixels", (3.0, 20, 16)),     # later wins where both set a key
    ("pixels,cpu", (2.0, 20, 16)),
    (" cpu , pixels ", (3.0, 20, 16)),
    (["cpu", "pixels"], (3.0, 20, 16)),
])
def test_presets_overlay_left_to_right(preset, want):
    cfg = build_config(_Cfg, PRESETS, preset, None, "t")
    assert (cfg.lr, cfg.steps, cfg.width) == want


def test_set_wins_over_every_preset():
    before = copy.deepcopy(PRESETS)
    cfg = build_config(_Cfg, PRESETS, "cpu,pixels", {"lr": "5", "steps": "7"}, "t")
    assert (cfg.lr, cfg.steps, cfg.width) == (5.0, 7, 16)
    assert PRESETS == before  # resolution leaves the presets alone


def test_unknown_preset_in_a_list_is_named_with_the_known_ones():
    with pytest.raises(UserError, match=r"unknown preset 'turbo' for algorithm 't'; known presets: cpu, pix"):
        build_config(_Cfg, PRESETS, "cpu,turbo", None, "t")


def test_empty_preset_name_is_refused():
    with pytest.raises(UserError, match="empty name"):
        build_config(_Cfg, PRESETS, "cpu,", None, "t")


@dataclass
class _OldNames(BaseConfig):
    """Holds every old name as a field: they are refused all the same (the table comes first)."""
    grad_steps: int = 1
    env_steps: int = 1
    disc_gp: float = 0.0
    act: str = "elu"
    disc_act: str = "elu"
    encoder_depth: int = 8
    replay_capacity: int = 10
    gamma: float = 0.9
    max_grad_norm: float = 1.0
    opt_eps: float = 1e-8
    task_total_steps: tuple[str, ...] = ()
    task_eval_every: tuple[str, ...] = ()
    total_steps: int = 1


@pytest.mark.parametrize("old, new", sorted(RENAMED.items()))
def test_old_names_are_refused_with_the_new_name(old, new):
    with pytest.raises(UserError, match=rf"config key '{old}' \(from --set\) is now called '{new}'"):
        build_config(_OldNames, {}, None, {old: "1"}, "t")
    with pytest.raises(UserError, match=rf"'{old}' \(from preset 'cpu'\) is now called '{new}'"):
        build_config(_OldNames, {"cpu": {old: 1}}, "cpu", None, "t")


@pytest.mark.parametrize("old", sorted(REMOVED))
def test_per_task_keys_are_refused(old):
    with pytest.raises(UserError, match=rf"'{old}' \(from preset 'cpu'\) was removed: .*task_settings"):
        build_config(_OldNames, {"cpu": {old: {"fetch-push": {"total_steps": 5}}}}, "cpu", None, "t")
    with pytest.raises(UserError, match=rf"'{old}' \(from --set\) was removed"):
        build_config(_OldNames, {}, None, {old: "fetch-push=5"}, "t")


def test_the_new_name_is_accepted():
    cfg = build_config(_OldNames, {"cpu": {"total_steps": 3}}, "cpu", {"total_steps": "4"}, "t")
    assert cfg.total_steps == 4


def test_unknown_key_names_its_layer():
    with pytest.raises(UserError, match=r"unknown config key 'nope' for algorithm 't' \(from preset 'pix"):
        build_config(_Cfg, {"pixels": {"nope": 1}}, "pixels", None, "t")


@dataclass
class _ListCfg(BaseConfig):
    budgets: tuple[str, ...] = ()
    hidden: tuple[int, ...] = (8,)


@pytest.mark.parametrize("raw, want", [
    ('["fetch-push=50000", "maze=3"]', ("fetch-push=50000", "maze=3")),  # JSON, as the Snakefile writes
    ("fetch-push=50000", ("fetch-push=50000",)),
    ("fetch-push=50000,maze=3", ("fetch-push=50000", "maze=3")),
    ("['a', 'b']", ("a", "b")),
])
def test_list_values_from_the_command_line_lose_their_quotes(raw, want):
    assert build_config(_ListCfg, {}, None, {"budgets": raw}, "t").budgets == want


@pytest.mark.parametrize("raw, want", [("[64, 64]", (64, 64)), ("(32,16)", (32, 16)), ("5", (5,))])
def test_int_lists_from_the_command_line(raw, want):
    assert build_config(_ListCfg, {}, None, {"hidden": raw}, "t").hidden == want


def test_snakefile_list_settings_reach_the_config():
    """A sweep's list value goes through the Snakefile's --set formatting unchanged."""
    from cmil_bench.sweep import run_args

    spec = {"algo": "t", "preset": None, "set": {"hidden": [64, 32]}}
    args = run_args(spec, "t", "fetch-push", "fetch-push", {})
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert build_config(_ListCfg, {}, None, parse_overrides(sets), "t").hidden == (64, 32)


@pytest.mark.parametrize("extra, named", [
    (["--set", "grad_steps=5"], "config key 'grad_steps' (from --set) is now called 'total_steps'"),
    (["--set", "task_total_steps=fetch-push=5"], "'task_total_steps' (from --set) was removed"),
    (["--preset", "smoke,turbo"], "unknown preset 'turbo' for algorithm 'bc'"),
])
def test_cli_refuses_old_names_and_unknown_presets(tmp_path, capsys, extra, named):
    """One line, exit 2, before the run folder exists (no demos are needed to get there)."""
    from cmil_bench import cli

    out = tmp_path / "run"
    rc = cli.main(["run", "--algo", "bc", "--task", "pointmaze-umaze", "--demos", "1", "--out", str(out),
                   "--progress", "off", *extra])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert rc == 2 and len(lines) == 1 and named in lines[0], err
    assert "Traceback" not in err and not out.exists()
