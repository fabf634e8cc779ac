"""Evaluation throughput of a world-model policy, next to the environment's own rate.

    python benchmarks/eval_speed.py [--tasks pointmaze-umaze fetch-push-pixels kitchen-mixed-pixels]
        [--episodes 10] [--parallel 1 10] [--kitchen-frames 100]

For each task: a CMIL agent at the ``cpu`` preset's sizes (fresh weights: acting costs the same
whatever the weights), its evaluation policy (``LatentAgent.policy("eval")``), and
``cmil_bench.run.play_episodes`` over ``--episodes`` episodes, ``n`` environments stepped in
lockstep with one batched policy call per step, for each ``n`` in ``--parallel`` (the harness
evaluates 10 at a time). Prints episodes/s and env steps/s per setting, one torch thread.
Then Franka Kitchen's 64x64 off-screen rendering (``envs.kitchen.render_fps``: env steps/s with
a frame each, and frames/s of rendering alone).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from algorithms import cmil
from cmil_bench.run import play_episodes
from envs.registry import get_task, make_env


def eval_rate(task: str, episodes: int, n_par: int) -> dict:
    spec = get_task(task)
    env0 = make_env(spec)
    obs_shape, act_dim = env0.observation_space.shape, env0.action_space.shape[0]
    envs = [env0] + [make_env(spec) for _ in range(n_par - 1)]
    torch.manual_seed(0)
    cfg = cmil.Config(**cmil.PRESETS["cpu"])
    agent = cmil.Agent(obs_shape, act_dim, cfg)
    policy = agent.policy("eval", episode_len=spec.max_episode_steps)
    steps, t0 = 0, time.perf_counter()
    for start in range(0, episodes, n_par):
        seeds = list(range(start, min(start + n_par, episodes)))
        _, infos = play_episodes(envs[: len(seeds)], seeds, policy)
        steps += sum(len(i) for i in infos)
    dt = time.perf_counter() - t0
    for e in envs:
        e.close()
    return {"task": task, "parallel": n_par, "episodes": episodes, "env_steps": steps,
            "episodes_per_s": episodes / dt, "env_steps_per_s": steps / dt}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+",
                    default=["pointmaze-umaze", "fetch-push-pixels", "kitchen-mixed-pixels"])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--kitchen-frames", type=int, default=100, help="0 skips the rendering figure")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    np.set_printoptions(precision=2)
    print("| task | envs in lockstep | episodes | env steps | episodes/s | env steps/s |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks:
        for n in args.parallel:
            r = eval_rate(task, args.episodes, min(n, args.episodes))
            print(f"| {task} | {r['parallel']} | {r['episodes']} | {r['env_steps']} | "
                  f"{r['episodes_per_s']:.2f} | {r['env_steps_per_s']:.1f} |", flush=True)
    if args.kitchen_frames:
        from envs.kitchen import render_fps

        r = render_fps("kitchen-mixed-pixels", fast_render=True, steps=args.kitchen_frames)
        print(f"kitchen-mixed-pixels 64x64, fast render: {r['env_steps_per_s']:.1f} env steps/s with a frame "
              f"each, {r['frames_per_s']:.1f} frames/s rendering alone ({r['steps']} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
