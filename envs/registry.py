"""Named tasks: what a run trains and is scored on.

A task fixes the gymnasium id and its keyword arguments, the observation mode (``state`` for a
flat float32 vector, ``pixels`` for 64x64x3 uint8 images, HWC), the episode length, how an episode
is scored (return and success), where its demos come from, and its expert (a scripted controller
for the cheap tasks, a policy file for the locomotion tasks). ``make_env`` builds the environment
exactly as runs and demo collection see it, so that training, evaluation and the demos share one
observation format.

Tasks are data: ``get_task`` builds a task's ``TaskSpec`` from its definition in envs/tasks.yaml
(or one merged over it: a sweep config's ``task_definitions``, ``--tasks FILE``; see
envs/catalog.py) the first time it is asked for, importing only the Python the definition names
by dotted name (a custom env class, a flattener, a success function). ``register`` still adds a
TaskSpec made in Python.
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
    success_mode: str = "any"  # "any" | "final" | "custom" | "none" (no success rule)
    success_fn: Callable[[list[dict]], bool] | None = None
    # Where demos come from by default: "minari:<dataset id>", "d4rl:<path>", "npz:<dir>".
    demo_source: str = ""
    # The expert ``cmil-bench demos`` rolls out: a name in envs.experts.EXPERTS, a dotted name,
    # or a policy file (``*.pt``, relative to the repository); "" when the task has none.
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
    # Demo collection keeps only expert episodes that reach max_episode_steps.
    full_length_demos: bool = False
    description: str = ""
    # Family name shared by the state and pixel variant of one task (the demo dataset is shared).
    family: str = ""

    def episode_success(self, infos: list[dict]) -> bool:
        if self.success_mode == "any":
            return _success_any(infos, self.success_key)
        if self.success_mode == "final":
            return _success_final(infos, self.success_key)
        if self.success_mode == "none":  # the task has no success rule (scored by return)
            return False
        if self.success_fn is None:
            raise ValueError(f"task {self.name}: success_mode 'custom' needs success_fn")
        return bool(self.success_fn(infos))


# Task name -> TaskSpec: the specs built so far from the definitions (envs/tasks.yaml and any
# merged over it, see envs/catalog.py), and any registered from Python with ``register``.
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


def resolve_dotted(name: str, what: str) -> Any:
    """The object a dotted name (``pkg.module:attr`` or ``pkg.module.attr``) names; UserError
    naming ``what`` when it cannot be imported."""
    import importlib

    module, sep, attr = name.partition(":")
    if not sep:
        module, _, attr = name.rpartition(".")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UserError(f"{what}: cannot import {name!r} ({type(e).__name__}: {e})") from None
    return obj


class StateKeys:
    """Flattens a dict observation into ``concat(ravel(obs[k]) for k in keys)`` (float32); an
    array observation is flattened as it is."""

    def __init__(self, keys):
        self.keys = tuple(keys)

    def __call__(self, obs: Any) -> np.ndarray:
        if not isinstance(obs, dict):
            return np.asarray(obs, dtype=np.float32).reshape(-1)
        missing = [k for k in self.keys if k not in obs]
        if missing:
            raise UserError(f"observation has no key(s) {missing}; its keys: {sorted(obs)}")
        return np.concatenate([np.ravel(np.asarray(obs[k])) for k in self.keys]).astype(np.float32)

    def __eq__(self, other) -> bool:
        return isinstance(other, StateKeys) and other.keys == self.keys

    def __hash__(self) -> int:
        return hash(self.keys)

    def __repr__(self) -> str:
        return f"StateKeys({list(self.keys)})"


def _success_fn(rule: dict, what: str) -> Callable[[list[dict]], bool]:
    import functools
    import inspect

    fn = resolve_dotted(rule["function"], what)
    kwargs = rule.get("kwargs") or {}
    if inspect.isclass(fn):
        return fn(**kwargs)
    if not callable(fn):
        raise UserError(f"{what}: {rule['function']!r} is not callable")
    return functools.partial(fn, **kwargs) if kwargs else fn


def build_specs(family: str, entry: dict) -> list[TaskSpec]:
    """The TaskSpecs a task definition (envs/task_schema.yaml) makes: its state task and/or
    pixel twin. Registers ``env_id`` with gymnasium from ``entry_point`` when it is unknown."""
    from envs.catalog import task_names
    from envs.wrappers import default_flatten

    what = f"task {family!r}"
    ep = entry.get("entry_point")
    if ep and entry["env_id"] not in gym.registry:
        if ":" not in ep:
            module, _, attr = ep.rpartition(".")
            ep = f"{module}:{attr}"
        gym.register(entry["env_id"], entry_point=ep, max_episode_steps=entry["episode_steps"])
    if entry.get("flatten"):
        flatten = resolve_dotted(entry["flatten"], f"{what}: flatten")
    elif entry.get("state_keys"):
        flatten = StateKeys(entry["state_keys"])
    else:
        flatten = default_flatten
    rule = entry.get("success", {"any": "success"})
    if rule is None:
        success = {"success_mode": "none"}
    elif "function" in rule:
        success = {"success_mode": "custom", "success_fn": _success_fn(rule, f"{what}: success")}
    else:
        (mode, key), = rule.items()
        success = {"success_mode": mode, "success_key": key}
    refs = entry.get("references") or {}
    base = dict(
        env_id=entry["env_id"],
        max_episode_steps=int(entry["episode_steps"]),
        env_kwargs=dict(entry.get("env_kwargs") or {}),
        demo_source=entry["demos"],
        expert=entry.get("expert", ""),
        flatten=flatten,
        image_size=int(entry.get("image_size", 64)),
        camera=dict(entry.get("camera") or {}),
        ref_random_return=refs.get("random"),
        ref_demo_return=refs.get("demo"),
        eval_episodes=int(entry.get("eval_episodes", 20)),
        full_length_demos=bool(entry.get("full_length_demos", False)),
        description=" ".join(str(entry.get("description", "")).split()),
        family=family,
        **success,
    )
    return [TaskSpec(name=name, obs_mode=mode, **base) for name, mode in task_names(family, entry)]


def _forget(families: list[str]) -> None:
    """Drop the built specs of ``families`` (their definitions were replaced)."""
    for name in [n for n, s in TASKS.items() if s.family in families]:
        del TASKS[name]


def get_task(name: str) -> TaskSpec:
    from envs import catalog

    if name in TASKS:
        return TASKS[name]
    if name not in catalog.TASKS:
        known = sorted(set(TASKS) | set(catalog.TASKS))
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(known)}")
    family = catalog.TASKS[name].family
    for spec in build_specs(family, catalog.definition(family)):
        TASKS.setdefault(spec.name, spec)
    return TASKS[name]


def list_tasks() -> list[str]:
    from envs import catalog

    return sorted(set(TASKS) | set(catalog.TASKS))


def add_task_file(path: str) -> list[str]:
    """Merge the task definitions of a YAML file over the built-in ones (``--tasks FILE``)."""
    from envs import catalog

    return catalog.add_task_file(path)


def _install_hook() -> None:
    from envs import catalog

    catalog._registry_hook = _forget


_install_hook()


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
