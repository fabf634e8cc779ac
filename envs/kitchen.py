"""Franka Kitchen, the CMIL paper's main benchmark: the success rule and the facts behind it.

``kitchen-mixed`` (state) and ``kitchen-mixed-pixels`` run gymnasium-robotics ``FrankaKitchen-v1``
with the four subtasks of the paper's "mixed" setting: microwave, kettle, light switch and slide
cabinet, 280 steps.

* Score: the number of subtasks completed (0..4). The environment pays 1 for each subtask in the
  step that completes it and, with ``remove_task_when_completed`` (its default), never again, so
  the episode return *is* that count.
* Episodes always last 280 steps (``terminate_on_tasks_completed=False``), like the paper's
  demonstrations (281 rows, no terminal): an imitator never sees an early end the demos lack.
* Success: all four subtasks completed (``all_subtasks_done``, named in envs/tasks.yaml).
* State: the 59-d ``observation`` entry of the env's dict observation (robot joints and velocities,
  object positions and velocities, with the env's small observation noise).
* Pixels: 64x64 RGB frames from the paper's top-down camera: distance 1.86, lookat
  (-0.3, 0.5, 2.0), azimuth 90, elevation -60.
* Demos: ``minari:cmil-bench/kitchen-mixed/paper-v0``, made from the paper's 10 demos by
  ``cmil-bench demos --task kitchen-mixed --source kitchen-paper --path DIR`` (see
  ``envs.sources``), which replays their actions here and records states, frames and rewards.
  Its ``ref_max_score`` is the replayed demos' mean score, which the run's norm_score uses as demo
  reference; the random reference is 0 subtasks (as in D4RL's kitchen scores).

The Minari ``D4RL/kitchen/{complete,partial,mixed}-v2`` datasets also run on ``FrankaKitchen-v1``
and load into ``kitchen-mixed`` with ``--demo-source minari:D4RL/kitchen/mixed-v2`` (their dict
observations are flattened with this task's ``flatten``); note that ``complete`` and ``partial``
are other task orders than the paper's. D4RL's HDF5 kitchen files (60-d ``kitchen-*-v0``
observations, mujoco-py simulator) do not fit the 59-d observations of this env.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

KITCHEN_ENV_ID = "FrankaKitchen-v1"
# The task is defined in envs/tasks.yaml (``kitchen-mixed``); these constants repeat its facts for
# the demo conversion (envs/sources.py) and the tests, which check that the two agree.
# The paper's "mixed" subtasks, in the order its demonstrations perform them.
MIXED_TASKS = ("microwave", "kettle", "light switch", "slide cabinet")
EPISODE_STEPS = 280
# The paper's 64x64 top-down camera.
PAPER_CAMERA = {"distance": 1.86, "lookat": [-0.3, 0.5, 2.0], "azimuth": 90.0, "elevation": -60.0}
PAPER_DATASET_ID = "cmil-bench/kitchen-mixed/paper-v0"


def completed_subtasks(infos: Iterable[dict]) -> list[str]:
    """The subtasks completed in an episode, in completion order, from its step infos.

    Uses each step's ``step_task_completions`` (a fresh list per step), not the env's
    ``episode_task_completions`` list, which the env reuses and empties at the next reset.
    """
    done: list[str] = []
    for info in infos:
        for name in info.get("step_task_completions", ()) or ():
            if name not in done:
                done.append(str(name))
    return done


def all_subtasks_done(infos: list[dict], tasks: Iterable[str] = MIXED_TASKS) -> bool:
    """Success of a Kitchen episode: every subtask in ``tasks`` was completed at some step."""
    done = set(completed_subtasks(infos))
    return all(t in done for t in tasks)


def render_fps(task: str = "kitchen-mixed-pixels", fast_render: bool = True, steps: int = 100,
               seed: int = 0) -> dict:
    """Measure a pixel task: env steps per second with a 64x64 frame each, and frames per second
    of rendering alone (same scene), after a short warm-up. ``fast_render=False`` keeps the
    model's own render settings (shadows, reflections, multisampling)."""
    import time

    from envs.registry import get_task
    from envs.wrappers import find_renderer, make_task_env

    spec = get_task(task)
    env = make_task_env(spec, fast_render=fast_render)
    try:
        rng = np.random.default_rng(seed)
        acts = rng.uniform(-1, 1, size=(steps + 5,) + env.action_space.shape).astype(np.float32)
        env.reset(seed=seed)
        for a in acts[:5]:
            env.step(a)
        t0 = time.perf_counter()
        for a in acts[5:]:
            env.step(a)
        t1 = time.perf_counter()
        renderer = find_renderer(env)
        for _ in range(steps):
            renderer.render("rgb_array")
        t2 = time.perf_counter()
    finally:
        env.close()
    return {"task": task, "fast_render": fast_render, "steps": steps,
            "env_steps_per_s": steps / (t1 - t0), "frames_per_s": steps / (t2 - t1)}
