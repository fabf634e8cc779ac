"""Named tasks: what a run trains and is scored on.

A task fixes the gymnasium id and its keyword arguments, the observation mode (``state`` for a
flat float32 vector, ``pixels`` for 64x64x3 uint8 images, HWC), the episode length, how an episode
is scored (return and success), where its demos come from, and its expert (a scripted controller
for the cheap tasks). ``make_env`` builds the environment exactly as runs and demo collection see
it, so that training, evaluation and the demos share one observation format.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from cmil_bench.errors import UserError

OBS_MODES = ("state", "pixels")


def _success_any(infos: list[dict], key: str) -> bool:
    return any(bool(i.get(key, False)) for i in infos)


def _success_final(infos: list[dict], key: str) -> bool:
    return bool(infos[-1].get(key, False)) if infos else False


@dataclass(frozen=True)
class TaskSpec:
    """Everything a run needs to know about one named task."""

    name: str
    env_id: str
    obs_mode: str  # "state" | "pixels"
    max_episode_steps: int
    env_kwargs: dict = field(default_factory=dict)
    # How an episode counts as a success: ``any`` step or the ``final`` step has info[success_key].
    success_key: str = "success"
    success_mode: str = "any"  # "any" | "final" | "custom"
    success_fn: Callable[[list[dict]], bool] | None = None
    # Where demos come from by default: "minari:<dataset id>", "d4rl:<path>", "npz:<dir>".
    demo_source: str = ""
    # Name of a scripted expert in envs.experts.EXPERTS, or "" when the task has none.
    expert: str = ""
    # Flattens the raw observation (dict or array) of env_id into the state vector.
    flatten: Callable[[Any], np.ndarray] | None = None
    # Rendering for pixel observations.
    image_size: int = 64
    camera: dict = field(default_factory=dict)
    # Reference returns for norm_score; None means "measure": random by rolling out a uniform
    # policy on the evaluation seeds, demo by the mean return of the demo dataset.
    ref_random_return: float | None = None
    ref_demo_return: float | None = None
    eval_episodes: int = 20
    description: str = ""
    # Family name shared by the state and pixel variant of one task (the demo dataset is shared).
    family: str = ""

    def episode_success(self, infos: list[dict]) -> bool:
        if self.success_mode == "any":
            return _success_any(infos, self.success_key)
        if self.success_mode == "final":
            return _success_final(infos, self.success_key)
        if self.success_fn is None:
            raise ValueError(f"task {self.name}: success_mode 'custom' needs success_fn")
        return bool(self.success_fn(infos))


TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    if spec.obs_mode not in OBS_MODES:
        raise ValueError(f"task {spec.name}: obs_mode must be one of {OBS_MODES}")
    TASKS[spec.name] = spec
    return spec


def register_pair(base: TaskSpec) -> None:
    """Register the state task ``name`` and its pixel twin ``name-pixels``."""
    fam = base.family or base.name
    register(dataclasses.replace(base, obs_mode="state", family=fam))
    register(dataclasses.replace(base, name=base.name + "-pixels", obs_mode="pixels", family=fam))


def get_task(name: str) -> TaskSpec:
    _ensure_loaded()
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def list_tasks() -> list[str]:
    _ensure_loaded()
    return sorted(TASKS)


_LOADED = False


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import importlib.util

        # Each module registers its tasks on import; the paper's envs are optional extras.
        for mod in ("envs.tasks", "envs.kitchen", "envs.adroit", "envs.baoding"):
            if importlib.util.find_spec(mod) is not None:
                importlib.import_module(mod)


def make_env(task: TaskSpec | str, seed: int | None = None, render_pixels: bool | None = None) -> gym.Env:
    """Build the environment of ``task`` with the observation format of its mode.

    State mode yields the flat float32 state vector; pixel mode yields (64, 64, 3) uint8 frames.
    The wrapped env keeps the task's time limit, so ``truncated`` marks time-limit ends.
    """
    from envs.wrappers import make_task_env

    spec = get_task(task) if isinstance(task, str) else task
    env = make_task_env(spec, render_pixels=render_pixels)
    if seed is not None:
        env.action_space.seed(seed)
    return env
