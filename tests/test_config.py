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
