"""Synthetic finished runs in the on-disk layout of ``cmil-bench run``, for timing the report.

    python benchmarks/synthetic_runs.py OUT [--algos 5] [--tasks 10] [--demos 1 5 10 25]
                                            [--seeds 10] [--evals 20] [--seed 0]
    time cmil-bench report --runs OUT/runs --out OUT/report

writes ``OUT/runs/ALGO/TASK/dN/sS/{metrics.csv,config.json}`` for every combination: by default
5 algorithms x 10 tasks x 4 demo counts x 10 seeds = 2,000 runs of 20 evaluations each. The
metrics files have the columns a real run writes (``cmil_bench.run.METRIC_COLUMNS`` plus
per-algorithm loss columns), BC never steps the environment (env_steps = 0, like the real one),
and config.json holds the identity keys the harness records. Everything is drawn from one
seeded generator per run, so the same arguments write byte-identical files. ``--unfinished K``
leaves the last K seeds of every (algorithm, task, demo count) in progress: progress.csv and a
placeholder checkpoint.pt instead of metrics.csv, with only part of their evaluations.

This module imports no torch, algorithm or environment code (it runs where the report runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

# The columns of a run's metrics.csv (kept equal to cmil_bench.run.METRIC_COLUMNS, which is not
# imported here because cmil_bench.run imports torch).
METRIC_COLUMNS = [
    "algo", "variant", "task", "obs_mode", "demo_source", "n_demos", "seed",
    "env_steps", "grad_steps", "wall_s", "eval_return", "eval_success", "norm_score",
]
ALGOS = ("cmil", "vmail", "dac", "gail", "bc")
# Final skill (fraction of the demo return) each synthetic algorithm approaches.
SKILL = {"cmil": 0.85, "vmail": 0.6, "dac": 0.7, "gail": 0.45, "bc": 0.35}
LOSSES = {"cmil": ("model_loss", "actor_loss", "critic_loss", "disc_loss"),
          "vmail": ("model_loss", "actor_loss", "critic_loss", "disc_loss"),
          "dac": ("critic_loss", "actor_loss", "disc_loss", "disc_acc"),
          "gail": ("pg_loss", "v_loss", "entropy", "disc_loss"),
          "bc": ("loss",)}
DEMOS = (1, 5, 10, 25)


def algo_names(n: int) -> list[str]:
    """The first ``n`` algorithm names (the five real ones, then ``algo5``, ``algo6``...)."""
    return [ALGOS[i] if i < len(ALGOS) else f"algo{i}" for i in range(n)]


def task_names(n: int) -> list[str]:
    return [f"task{i:02d}" for i in range(n)]


def _run_frame(rng: np.random.Generator, algo: str, task_i: int, task: str, demos: int, seed: int,
               evals: int) -> pd.DataFrame:
    base = algo if algo in SKILL else "dac"
    offline = base == "bc"
    k = np.arange(1, evals + 1)
    difficulty = 0.5 + 0.5 * ((task_i * 7919) % 10) / 10  # 0.5 .. 0.95, fixed per task
    skill = SKILL[base] * difficulty * (0.6 + 0.4 * min(demos, 25) / 25)
    rate = rng.uniform(2.0, 6.0)
    curve = skill * (1 - np.exp(-rate * k / evals)) + rng.normal(0, 0.06, evals)
    ref_random, ref_demo = -50.0 - task_i, 100.0 + 10 * task_i
    ret = ref_random + curve * (ref_demo - ref_random)
    norm = (ret - ref_random) / (ref_demo - ref_random)
    df = pd.DataFrame({
        "algo": algo, "variant": algo, "task": task, "obs_mode": "state",
        "demo_source": f"minari:cmil-bench/{task}/expert-v0", "n_demos": demos, "seed": seed,
        "env_steps": 0 if offline else k * 5000, "grad_steps": k * (500 if offline else 2500),
        "wall_s": np.round(np.cumsum(rng.uniform(20, 40, evals)), 3),
        "eval_return": ret, "eval_success": np.clip(np.round(curve * 10) / 10, 0.0, 1.0),
        "norm_score": norm,
    }, columns=METRIC_COLUMNS)
    for name in LOSSES.get(base, ()):
        df[name] = np.abs(rng.normal(1.0, 0.3, evals)) / k
    return df


def _config_record(algo: str, task: str, demos: int, seed: int) -> dict:
    config = {"total_steps": 100_000, "eval_every": 5000, "lr": 3e-4, "batch_size": 256,
              "device": "cpu", "torch_threads": 1, "eval_episodes": 0}
    source = f"minari:cmil-bench/{task}/expert-v0"
    return {
        "identity": {"algo": algo, "variant": algo, "task": task, "n_demos": demos, "seed": seed,
                     "demo_source": source, "config": config},
        "algo": algo, "variant": algo, "task": task, "obs_mode": "state", "env_id": f"Synthetic-{task}",
        "env_kwargs": {}, "n_demos": demos, "seed": seed, "preset": "cpu", "overrides": {},
        "config": config, "demo_source": source, "demo_meta": {"synthetic": True},
        "demo_episode_ids": list(range(demos)), "versions": {"synthetic": "1"},
        "git_revision": "synthetic", "host": "synthetic", "device": "cpu", "slurm_job_id": None,
        "command": ["benchmarks/synthetic_runs.py"],
    }


def write_runs(out: str | Path, algos: int = 5, tasks: int = 10, demos=DEMOS, seeds: int = 10,
               evals: int = 20, seed: int = 0, unfinished: int = 0) -> list[Path]:
    """Write the run folders under ``out/runs``; returns them (sorted). Deterministic in the
    arguments: the same call writes the same bytes."""
    root = Path(out) / "runs"
    dirs = []
    for a, algo in enumerate(algo_names(algos)):
        for t, task in enumerate(task_names(tasks)):
            for demo_count in demos:
                for s in range(seeds):
                    rng = np.random.default_rng([seed, a, t, int(demo_count), s])
                    df = _run_frame(rng, algo, t, task, int(demo_count), s, evals)
                    run = root / algo / task / f"d{demo_count}" / f"s{s}"
                    run.mkdir(parents=True, exist_ok=True)
                    record = _config_record(algo, task, int(demo_count), s)
                    (run / "config.json").write_text(json.dumps(record, indent=2))
                    if s >= seeds - unfinished:
                        part = df.iloc[: max(1, evals // 2)]
                        (run / "progress.csv").write_text(part.to_csv(index=False))
                        (run / "checkpoint.pt").write_bytes(b"synthetic checkpoint\n")
                    else:
                        (run / "metrics.csv").write_text(df.to_csv(index=False))
                    dirs.append(run)
    return sorted(dirs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/synthetic_runs.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder to write OUT/runs into")
    ap.add_argument("--algos", type=int, default=5, help="number of algorithms (default 5)")
    ap.add_argument("--tasks", type=int, default=10, help="number of tasks (default 10)")
    ap.add_argument("--demos", type=int, nargs="+", default=list(DEMOS),
                    help="demo counts (default 1 5 10 25)")
    ap.add_argument("--seeds", type=int, default=10, help="seeds per setting (default 10)")
    ap.add_argument("--evals", type=int, default=20, help="evaluations per run (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    ap.add_argument("--unfinished", type=int, default=0,
                    help="leave the last K seeds of every setting in progress (default 0)")
    args = ap.parse_args(argv)
    for name in ("algos", "tasks", "seeds", "evals"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be positive")
    if any(d < 1 for d in args.demos):
        ap.error("--demos must be positive")
    if not 0 <= args.unfinished <= args.seeds:
        ap.error("--unfinished must lie in 0..--seeds")
    t0 = time.perf_counter()
    dirs = write_runs(args.out, args.algos, args.tasks, args.demos, args.seeds, args.evals,
                      args.seed, args.unfinished)
    print(f"{len(dirs)} runs under {Path(args.out) / 'runs'} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
