"""The task names a sweep may use, readable without any simulator.

The Snakefile plans a sweep from this table (task names, families, observation modes, which
families have a scripted expert whose demos the workflow collects), so that a dry run imports
neither gymnasium nor MuJoCo. ``envs/registry.py`` holds each task's full ``TaskSpec``; this
table repeats the few facts that planning needs, and a test checks that the two agree. Every
family has a state task named after it and a pixel twin ``FAMILY-pixels``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cmil_bench.errors import UserError

# family -> whether it has a scripted expert (`cmil-bench demos --task FAMILY` collects its demos);
# families without one read recorded datasets (Kitchen, Baoding: the paper's demos; Adroit: D4RL's).
FAMILIES: dict[str, bool] = {
    "pointmaze-umaze": True,
    "fetch-push": True,
    "kitchen-mixed": False,
    "door": False,
    "hammer": False,
    "pen": False,
    "relocate": False,
    "baoding": False,
}


@dataclass(frozen=True)
class TaskEntry:
    name: str
    family: str
    obs_mode: str  # "state" | "pixels"
    has_expert: bool


def _entries() -> dict[str, TaskEntry]:
    out = {}
    for fam, expert in FAMILIES.items():
        out[fam] = TaskEntry(fam, fam, "state", expert)
        out[fam + "-pixels"] = TaskEntry(fam + "-pixels", fam, "pixels", expert)
    return out


TASKS: dict[str, TaskEntry] = _entries()


def task_entry(name: str) -> TaskEntry:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]
