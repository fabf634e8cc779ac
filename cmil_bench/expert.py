"""`cmil-bench expert`: train a task's expert with the project's SAC, write its policy file and card.

1. A run of ``algorithms.sac_expert`` on the task's reward, under the run contract (run folder
   ``results/experts/<task>/s<seed>`` by default: atomic CSV, exact resume after a kill,
   provenance in ``config.json``). ``--from-checkpoint`` skips training and exports whatever the
   folder's last checkpoint holds, finished or not (the card says how far the run got).
2. The policy file (``experts/<task>.pt`` by default, the path the task's ``expert`` names): the
   actor of the run's best evaluation, mean half only (``sac_expert.policy_payload``), read by
   ``envs.experts.PolicyFileExpert``.
3. The card beside it (``.md``): the command, seed, env steps, wall time, the policy file scored
   on ``--episodes`` fresh episodes (reset seeds from ``CARD_SEED_BASE``, disjoint from the run's
   evaluation seeds), the target (the task's ``references.demo``) and the learning curve.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cmil_bench.errors import UserError
from cmil_bench.run import _atomic_write_bytes, atomic_write_text, execute

CARD_SEED_BASE = 2_000_000
TRAINER = "sac-expert"


def default_policy_path(spec) -> Path:
    from envs.collect import REPO

    if not spec.expert.endswith(".pt"):
        raise UserError(f"task {spec.name!r} names no policy file as its expert ({spec.expert!r}); "
                        "give --policy PATH.pt")
    path = Path(spec.expert).expanduser()
    return path if path.is_absolute() else REPO / path


def _rows(out: Path, payload: dict) -> pd.DataFrame:
    metrics = out / "metrics.csv"
    return pd.read_csv(metrics) if metrics.exists() else pd.DataFrame(payload["rows"])


def score_policy(spec, policy_path: Path, episodes: int, seed_base: int = CARD_SEED_BASE) -> np.ndarray:
    """Returns of the policy file on ``episodes`` episodes (reset seeds ``seed_base + i``)."""
    from envs.collect import rollout
    from envs.experts import policy_file_expert
    from envs.registry import make_env

    env = make_env(spec, render_pixels=False)
    try:
        expert = policy_file_expert(policy_path, env, spec.flatten)
        rets = [rollout(env, spec, lambda _o, raw: expert(raw), seed_base + i, keep_obs=False,
                        on_reset=expert.reset)["ret"] for i in range(episodes)]
    finally:
        env.close()
    return np.asarray(rets, dtype=np.float64)


def train_expert(*, task: str, seed: int = 0, out: str | Path | None = None,
                 policy: str | Path | None = None, episodes: int = 50, preset: str | None = None,
                 overrides: dict | None = None, force: bool = False, from_checkpoint: bool = False,
                 show_progress: bool | None = None) -> tuple[Path, Path]:
    """Train (or resume, or with ``from_checkpoint`` only export) and write the policy file and its
    card; returns their paths."""
    from algorithms import get_expert_trainer
    from cmil_bench.config import build_config
    from envs.registry import get_task

    spec = get_task(task)
    if spec.obs_mode != "state":
        raise UserError(f"expert: train on the state task ({spec.family or spec.name}); a pixel "
                        "task's demos come from the same state policy")
    if episodes < 1:
        raise UserError(f"expert: --episodes must be positive, got {episodes}")
    policy_path = Path(policy) if policy else default_policy_path(spec)
    if policy_path.suffix != ".pt":
        raise UserError(f"expert: the policy file must end in .pt, got {str(policy_path)!r}")
    out = Path(out) if out else Path("results") / "experts" / spec.name / f"s{seed}"
    if from_checkpoint:
        if not (out / "checkpoint.pt").exists():
            raise UserError(f"expert: no checkpoint in {str(out)!r} to export (run without "
                            "--from-checkpoint to train)")
    else:
        execute(algo=TRAINER, task=task, n_demos=0, seed=seed, out=out, preset=preset,
                overrides=overrides, force=force, show_progress=show_progress, expert_trainer=True)

    module = get_expert_trainer(TRAINER)
    record = json.loads((out / "config.json").read_text())
    if record.get("algo") != TRAINER or record.get("task") != spec.name:
        raise UserError(f"expert: {str(out)!r} holds a run of {record.get('algo')!r} on "
                        f"{record.get('task')!r}, not an expert run of {spec.name!r}")
    cfg = build_config(module.Config, {}, None, record["config"], TRAINER)
    payload = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    state = payload["algo_state"]
    obs_dim = int(state["agent"]["actor"]["net.0.weight"].shape[1])
    act_dim = int(state["agent"]["critic"]["q.net.0.weight"].shape[1]) - obs_dim
    buf = io.BytesIO()
    torch.save(module.policy_payload(state["best"]["actor"], cfg, obs_dim, act_dim), buf)
    policy_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(policy_path, buf.getvalue())

    rets = score_policy(spec, policy_path, episodes)
    rows = _rows(out, payload)
    card = policy_path.with_suffix(".md")
    atomic_write_text(card, _card(spec, record, cfg, state, payload, rows, rets, policy_path,
                                  buf.getvalue(), finished=(out / "metrics.csv").exists()))
    return policy_path, card


def _command(argv: list[str]) -> str:
    return "cmil-bench " + " ".join(shlex.quote(a) for a in argv[1:]) if argv[1:] else "(Python API)"


def _card(spec, record, cfg, state, payload, rows, rets, policy_path, data, finished) -> str:
    target = spec.ref_demo_return
    mean, std = float(rets.mean()), float(rets.std())
    steps = int(state["env_steps"])
    best = state["best"]
    command = _command(sys.argv)
    trained = _command(record.get("command") or [])
    lines = [
        f"# Expert policy: {spec.name}",
        "",
        f"`{policy_path.name}`: SAC (`algorithms/sac_expert.py`) trained on the reward of "
        f"`{spec.env_id}` {json.dumps(spec.env_kwargs) if spec.env_kwargs else ''}".rstrip() + ".",
        "",
        "| | |",
        "|---|---|",
        f"| training command | `{trained}` (seed {record['seed']}) |",
        *([f"| exported with | `{command}` |"] if command != trained else []),
        f"| env steps | {steps:,} of {cfg.total_steps:,}" + ("" if finished else " (training stopped "
                                                            "there: exported from the last checkpoint; the "
                                                            "training command resumes it)") + " |",
        f"| policy taken at | {int(best['env_steps']):,} env steps (best evaluation: "
        f"{float(best['eval_return']):.1f} over {record.get('eval_episodes')} episodes) |",
        f"| wall time | {float(payload['wall_s']) / 60:.1f} min ({record.get('host')}, "
        f"{cfg.torch_threads} torch thread(s), device {record.get('device')}) |",
        f"| return over {len(rets)} episodes | **{mean:.1f} ± {std:.1f}** (reset seeds "
        f"{CARD_SEED_BASE}..{CARD_SEED_BASE + len(rets) - 1}; min {rets.min():.1f}, max {rets.max():.1f}) |",
        f"| target | {target} (D4RL's expert reference): "
        + ("met" if target is not None and mean >= target else "not met") + " |",
        f"| file | {len(data) / 1024:.0f} KB, sha256 {hashlib.sha256(data).hexdigest()[:16]} |",
        f"| code | git {record.get('git_revision')}, torch {record.get('versions', {}).get('torch')}, "
        f"mujoco {record.get('versions', {}).get('mujoco')} |",
        "",
        "Learning curve (evaluation return, mean over the run's evaluation episodes):",
        "",
        "| env steps | return | norm_score |",
        "|---:|---:|---:|",
    ]
    for r in rows.itertuples():
        lines.append(f"| {int(r.env_steps):,} | {float(r.eval_return):.1f} | {float(r.norm_score):.3f} |")
    return "\n".join(lines) + "\n"
