"""Config resolution: presets, their per-task entries, and --set overrides, in that order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cmil_bench.config import BaseConfig, build_config
from cmil_bench.errors import UserError
from envs.registry import TaskSpec


@dataclass
class _Cfg(BaseConfig):
    lr: float = 1.0
    steps: int = 10


PRESETS = {"cpu": {"lr": 2.0, "per_task": {"fam": {"lr": 3.0, "steps": 30}, "fam-a": {"lr": 4.0},
                                          "bad": {"nope": 1}}}}


def _task(name, family):
    return TaskSpec(name=name, env_id="X-v0", obs_mode="state", max_episode_steps=5, family=family)


def test_per_task_entry_between_preset_and_overrides():
    assert build_config(_Cfg, PRESETS, "cpu", None, "t").lr == 2.0  # no task: preset only
    other = build_config(_Cfg, PRESETS, "cpu", None, "t", task=_task("zzz", "zzz"))
    assert (other.lr, other.steps) == (2.0, 10)
    fam = build_config(_Cfg, PRESETS, "cpu", None, "t", task=_task("fam-b", "fam"))
    assert (fam.lr, fam.steps) == (3.0, 30)  # by family
    named = build_config(_Cfg, PRESETS, "cpu", None, "t", task=_task("fam-a", "fam"))
    assert (named.lr, named.steps) == (4.0, 30)  # the task's own entry wins over its family's
    over = build_config(_Cfg, PRESETS, "cpu", {"lr": "5"}, "t", task=_task("fam-a", "fam"))
    assert over.lr == 5.0  # --set last
    assert "per_task" in PRESETS["cpu"]  # resolution does not consume the preset


def test_per_task_entry_keys_are_checked():
    with pytest.raises(UserError, match="nope.*preset 'cpu' for task 'bad'"):
        build_config(_Cfg, PRESETS, "cpu", None, "t", task=_task("bad", "bad"))


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
    """A variant's list value goes through the Snakefile's --set formatting unchanged."""
    import json
    from algorithms.dac import Config, task_budget
    raw = json.dumps(["fetch-push=50000"])  # Snakefile's _fmt for a list
    cfg = build_config(Config, {}, None, {"task_total_steps": raw}, "dac")
    assert task_budget(cfg, _task("fetch-push", "fetch-push"))[0] == 50000
