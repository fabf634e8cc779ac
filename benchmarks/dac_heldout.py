"""Score finished DAC runs on many held-out episodes (their final checkpoint's deterministic actor).

    python benchmarks/dac_heldout.py RUN_DIR [RUN_DIR ...] [--episodes 200] [--seed-base 2000000]

A run's own evaluations use 20 fixed reset seeds; on fetch-push one policy can score 0.37 on
those and 0.55 on 200 others, so this gives the sampling error a number. Episodes reset with
seeds seed_base + i (disjoint from the runs' 1,000,000 + i), in lockstep batches of 20, scored
with the run's own norm_score references. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from algorithms import dac
from cmil_bench.config import build_config
from cmil_bench.errors import UserError
from cmil_bench.run import play_episodes
from envs.registry import get_task, make_env


def heldout_scores(run_dir: Path, episodes: int, seed_base: int, batch: int = 20,
                   policy: str = "eval") -> dict:
    """``policy``: "eval" (what the run's evaluations used: the actor, or its moving average
    with ``eval_ema_tau``) or "actor" (the live actor)."""
    meta = json.loads((run_dir / "config.json").read_text())
    if meta["algo"] != "dac":
        raise UserError(f"{run_dir}: a {meta['algo']!r} run; this script reads DAC runs only")
    cfg = build_config(dac.Config, {}, None, meta["config"], "dac")
    task = get_task(meta["task"])
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False, map_location="cpu")
    envs = [make_env(task) for _ in range(min(batch, episodes))]
    obs_shape, act_dim = envs[0].observation_space.shape, envs[0].action_space.shape[0]
    agent = dac.DAC(obs_shape, act_dim, cfg, torch.device("cpu"))
    agent.load_state_dict(state["algo_state"]["agent"])
    rets, wins = [], []
    for start in range(0, episodes, len(envs)):
        seeds = [seed_base + start + j for j in range(min(len(envs), episodes - start))]
        r, infos = play_episodes(envs[: len(seeds)], seeds, agent.act_eval if policy == "eval" else agent.act)
        rets += r
        wins += [task.episode_success(i) for i in infos]
    for e in envs:
        e.close()
    lo, hi = meta["ref_random_return"], meta["ref_demo_return"]
    norm = (np.asarray(rets) - lo) / (hi - lo)
    return {"run": str(run_dir), "episodes": len(norm), "norm_score": norm.mean(),
            "se": norm.std(ddof=1) / np.sqrt(len(norm)), "success": float(np.mean(wins))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed-base", type=int, default=2_000_000)
    ap.add_argument("--policy", choices=("eval", "actor"), default="eval",
                    help="eval: the policy the run evaluated (its actor, or the actor's moving "
                    "average with eval_ema_tau); actor: the live actor")
    args = ap.parse_args()
    print("| run | episodes | norm_score | standard error | success |")
    print("|---|---|---|---|---|")
    for d in args.runs:
        s = heldout_scores(d, args.episodes, args.seed_base, policy=args.policy)
        print(f"| {s['run']} | {s['episodes']} | {s['norm_score']:.3f} | {s['se']:.3f} | {s['success']:.2f} |")


if __name__ == "__main__":
    main()
