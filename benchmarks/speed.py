"""Speed of finished runs next to the raw environment step rate of their tasks.

    python benchmarks/speed.py [RUNS_ROOT] [--algos gail dac] [--raw-steps 5000]

For every (variant, task) under RUNS_ROOT (default ``results/runs``): environment steps and
gradient updates per second of wall time of each run (evaluation included), mean and range over
its seeds; then each task's raw rate: uniform random actions in one environment, this process,
nothing else done per step. The gap between the two is the harness's and the learner's cost.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from analysis.runs import load_runs
from envs.registry import get_task, make_env


def raw_rate(task: str, steps: int, seed: int = 0) -> float:
    """Environment steps per second under uniform random actions (resets included)."""
    env = make_env(get_task(task))
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset(seed=int(rng.integers(2**31)))
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def run_rates(root: str, algos: list[str] | None) -> pd.DataFrame:
    df, _ = load_runs(root)
    last = df.sort_values("eval_index").groupby("run_dir").tail(1)
    if algos:
        last = last[last["algo"].isin(algos)]
    last = last.assign(env_sps=last["env_steps"] / last["wall_s"],
                       upd_ps=last["grad_steps"] / last["wall_s"])
    out = []
    for (variant, task), g in last.groupby(["variant", "task"]):
        out.append({"variant": variant, "task": task, "seeds": len(g),
                    "env steps": int(g["env_steps"].median()), "wall s": g["wall_s"].mean(),
                    "env steps/s": g["env_sps"].mean(), "updates/s": g["upd_ps"].mean(),
                    "range env steps/s": f"{g['env_sps'].min():.0f}-{g['env_sps'].max():.0f}"})
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default="results/runs")
    ap.add_argument("--algos", nargs="*", default=None)
    ap.add_argument("--raw-steps", type=int, default=5000)
    args = ap.parse_args()
    table = run_rates(args.root, args.algos)
    raw = {t: raw_rate(t, args.raw_steps) for t in sorted(table["task"].unique())}
    table["raw env steps/s"] = table["task"].map(raw)
    print(table.to_markdown(index=False, floatfmt=".0f"))


if __name__ == "__main__":
    main()
