"""What a policy that does nothing scores on each locomotion task's norm_score scale.

The scale's floor is D4RL's uniform-random return. A policy that outputs zero torques pays no
control cost and, on a task that rewards staying healthy without ending the episode (Ant), can
score well above that floor without moving. This prints, per task, the zero-action return over
the given reset seeds, the episode lengths and the resulting norm_score, so a reader can tell
standing still from walking.

    python benchmarks/zero_action_reference.py                # hopper walker2d halfcheetah ant
    python benchmarks/zero_action_reference.py --tasks ant --episodes 20
"""

from __future__ import annotations

import argparse

import numpy as np

from envs.registry import get_task, make_env


def zero_action_stats(task: str, episodes: int) -> dict:
    spec = get_task(task)
    env = make_env(spec)
    returns, lengths = [], []
    try:
        for seed in range(episodes):
            env.reset(seed=seed)
            ret, steps, done = 0.0, 0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape,
                                                                        dtype=np.float32))
                ret += float(reward)
                steps += 1
                done = terminated or truncated
            returns.append(ret)
            lengths.append(steps)
    finally:
        env.close()
    lo, hi = spec.ref_random_return, spec.ref_demo_return
    mean = float(np.mean(returns))
    return {"task": task, "mean": mean, "std": float(np.std(returns)), "min_len": min(lengths),
            "max_len": max(lengths), "norm": (mean - lo) / (hi - lo)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["hopper", "walker2d", "halfcheetah", "ant"])
    p.add_argument("--episodes", type=int, default=10, help="reset seeds 0..N-1 (default 10)")
    args = p.parse_args()
    print("| task | zero-action return | episode length | norm_score |")
    print("|---|---|---|---|")
    for task in args.tasks:
        s = zero_action_stats(task, args.episodes)
        print(f"| {task} | {s['mean']:.1f} ± {s['std']:.1f} | {s['min_len']}-{s['max_len']} | "
              f"{s['norm']:.2f} |")


if __name__ == "__main__":
    main()
