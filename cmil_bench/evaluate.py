"""Score a run's last checkpoint again, on more episodes or other starting states.

A run's own evaluations use ``eval_episodes`` fixed reset seeds (``EVAL_SEED_BASE + i``). On a
task where a policy succeeds in about 70 % of episodes, 20 or 50 of them leave a standard error
of 0.06-0.1 on one score; ``evaluate_checkpoint`` gives that error a number. It rebuilds the
evaluation policy from ``checkpoint.pt`` with the algorithm module's ``eval_policy(state, cfg,
obs_shape, act_dim, task, device, which)``, plays ``episodes`` episodes reset with seeds
``seed_base + i`` (by default held out: disjoint from every run's own seeds) in lockstep batches
as ``Run.evaluate`` does, and scores them with the run's own norm_score references. With
``seed_base=EVAL_SEED_BASE`` and the run's ``eval_episodes`` it reproduces the run's last score.

``which`` picks among the policies a module lists in ``EVAL_POLICIES`` (default just
``("eval",)``): DAC also has ``"live"``, its training actor, where its evaluations score a
moving average (``eval_ema_tau``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cmil_bench.errors import UserError

HELDOUT_SEED_BASE = 2_000_000
BATCH = 10  # episodes played in lockstep, as in Run.evaluate


def evaluate_checkpoint(run_dir: str | Path, episodes: int = 200, seed_base: int = HELDOUT_SEED_BASE,
                        which: str = "eval", device: str = "cpu") -> dict:
    """Scores of ``run_dir``'s last checkpoint on ``episodes`` episodes (see the module doc).

    Returns a dict: run, algo, variant, task, seed, n_demos, env_steps (of the checkpoint),
    own_score (the checkpoint's last evaluation), episodes, seed_base, norm_score, se (its
    standard error), success, eval_return, mean_length (steps per episode) and ended_early (the
    share of episodes that ended before the task's time limit: a fall, or a goal that ends it)."""
    from algorithms import get_run_module
    from cmil_bench.config import build_config
    from cmil_bench.run import play_episodes, resolve_device
    from envs.registry import get_task, make_env

    run_dir = Path(run_dir)
    if episodes <= 0:
        raise UserError(f"--episodes must be positive, got {episodes}")
    if seed_base < 0:
        raise UserError(f"--seed-base must be >= 0, got {seed_base}")
    meta_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoint.pt"
    if not meta_path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run folder (no config.json)")
    if not ckpt_path.is_file():
        raise UserError(f"run folder {str(run_dir)!r} has no checkpoint.pt (the run never reached "
                        "its first evaluation)")
    try:
        meta = json.loads(meta_path.read_text())
        algo, task_name = meta["algo"], meta["task"]
        lo, hi = float(meta["ref_random_return"]), float(meta["ref_demo_return"])
    except (ValueError, KeyError) as e:
        raise UserError(f"{str(meta_path)!r} is not a cmil-bench run record "
                        f"({type(e).__name__}: {e})") from None
    module = get_run_module(algo)
    choices = getattr(module, "EVAL_POLICIES", ("eval",))
    if which not in choices:
        raise UserError(f"{algo} runs have the policies {', '.join(choices)}; "
                        f"got --policy {which!r}")
    cfg = build_config(module.Config, {}, None, meta["config"], algo)
    task = get_task(task_name)
    dev = resolve_device(device)
    try:
        payload = torch.load(ckpt_path, map_location=dev, weights_only=False)
        state, rows = payload["algo_state"], payload["rows"]
    except Exception as e:
        raise UserError(f"cannot read checkpoint {str(ckpt_path)!r} ({type(e).__name__}: {e})") from None

    envs = [make_env(task) for _ in range(min(BATCH, episodes))]
    try:
        obs_shape = tuple(envs[0].observation_space.shape)
        act_dim = int(envs[0].action_space.shape[0])
        policy = module.eval_policy(state, cfg, obs_shape, act_dim, task.max_episode_steps, dev, which)
        rets: list[float] = []
        wins: list[float] = []
        lengths: list[int] = []
        with torch.no_grad():
            for start in range(0, episodes, len(envs)):
                n = min(len(envs), episodes - start)
                r, infos = play_episodes(envs[:n], [seed_base + start + j for j in range(n)], policy)
                rets += r
                wins += [float(task.episode_success(i)) for i in infos]
                lengths += [len(i) for i in infos]
    finally:
        for e in envs:
            e.close()
    norm = (np.asarray(rets) - lo) / (hi - lo)
    last = rows[-1] if rows else {}
    return {
        "run": str(run_dir), "algo": algo, "variant": meta.get("variant", algo), "task": task_name,
        "seed": meta.get("seed"), "n_demos": meta.get("n_demos"),
        "env_steps": last.get("env_steps"), "own_score": last.get("norm_score"),
        "policy": which, "episodes": len(norm), "seed_base": seed_base,
        "norm_score": float(norm.mean()),
        "se": float(norm.std(ddof=1) / np.sqrt(len(norm))) if len(norm) > 1 else float("nan"),
        "success": float(np.mean(wins)), "eval_return": float(np.mean(rets)),
        "mean_length": float(np.mean(lengths)),
        "ended_early": float(np.mean([n < task.max_episode_steps for n in lengths])),
    }


def markdown_table(results: list[dict]) -> str:
    """One Markdown row per result."""
    head = ("| run | algo | task | seed | env steps | own score | policy | episodes | norm_score "
            "(+- se) | success | length | ended early |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in results:
        own = "" if r["own_score"] is None else f"{r['own_score']:.3f}"
        lines.append(f"| {r['run']} | {r['variant']} | {r['task']} | {r['seed']} | {r['env_steps']} | "
                     f"{own} | {r['policy']} | {r['episodes']} | {r['norm_score']:.3f} "
                     f"(+- {r['se']:.3f}) | {r['success']:.2f} | {r['mean_length']:.0f} | "
                     f"{r['ended_early']:.2f} |")
    return "\n".join(lines)
