"""Does a DAC run's discriminator generalise beyond its demos? Logits at the last checkpoint.

For each DAC run folder, the final discriminator scores (mean logit, and the fraction of rows
it calls expert, logit > 0) three sets of state-action pairs:

- ``own``: the demos the run trained on (``demo_episode_ids`` in its config.json);
- ``heldout``: every other episode of the same demo source (the same expert, other starts and
  goals), which the discriminator never saw;
- ``replay``: the policy's last ``--last`` replay rows (absorbing rows included).

A discriminator that generalises puts held-out expert pairs near the run's own demos; one that
has memorised its demos puts them near the policy's. The demo source must be on this machine
(``MINARI_DATASETS_PATH`` as for the run), and it must hold episodes the run did not use.

    python benchmarks/disc_generalisation.py RUN_DIR... [--last 2500] [--csv FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cmil_bench.errors import UserError  # noqa: E402


def _pairs(trajs, key: str) -> tuple[np.ndarray, np.ndarray]:
    obs = np.concatenate([t.observations[key][:-1] for t in trajs])
    act = np.concatenate([t.actions for t in trajs])
    return obs, act


def split_demos(meta: dict, demoset) -> tuple[list, list]:
    """The run's own demos (by ``demo_episode_ids``) and the source's other episodes."""
    own_ids = set(meta["demo_episode_ids"])
    own = [t for t in demoset.trajectories if t.episode_id in own_ids]
    held = [t for t in demoset.trajectories if t.episode_id not in own_ids]
    if len(own) != len(own_ids):
        raise UserError(f"demo source {meta['demo_source']!r} lacks some of the run's demo episodes")
    if not held:
        raise UserError(f"demo source {meta['demo_source']!r} holds no episode the run did not use")
    return own, held


def disc_logits(run_dir: str | Path, last: int = 2500) -> dict:
    """Mean logit and expert fraction of a DAC run's final discriminator on its own demos, on
    the held-out episodes of its demo source and on its last ``last`` replay rows."""
    from algorithms import dac
    from cmil_bench.config import build_config
    from envs.datasets import load_demos
    from envs.registry import get_task

    run_dir = Path(run_dir)
    meta_path, ckpt_path = run_dir / "config.json", run_dir / "checkpoint.pt"
    if not meta_path.is_file() or not ckpt_path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a finished run folder (config.json and checkpoint.pt)")
    meta = json.loads(meta_path.read_text())
    if meta.get("algo") != "dac":
        raise UserError(f"{str(run_dir)!r} is a {meta.get('algo')!r} run; this script reads DAC runs")
    cfg = build_config(dac.Config, {}, None, meta["config"], "dac")
    task = get_task(meta["task"])
    key = "state" if task.obs_mode == "state" else "pixels"
    own, held = split_demos(meta, load_demos(meta["demo_source"], task=task))

    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["algo_state"]
    obs_shape = tuple(own[0].observations[key].shape[1:])
    agent = dac.DAC(obs_shape, int(own[0].actions.shape[1]), cfg, torch.device("cpu"))
    agent.load_state_dict(state["agent"])
    agent.disc.eval()

    @torch.no_grad()
    def score(obs, act, absorbing=None) -> tuple[float, float]:
        o = torch.as_tensor(np.ascontiguousarray(obs))
        flag = torch.zeros(len(o)) if absorbing is None else torch.as_tensor(absorbing, dtype=torch.float32)
        feat = agent.critic.features(o, flag)
        logit = agent.disc(torch.cat([feat, torch.as_tensor(act, dtype=torch.float32)], -1)).numpy()
        return float(logit.mean()), float((logit > 0).mean())

    rep = state["replay"]
    size, ptr, cap = int(rep["size"]), int(rep["ptr"]), int(rep["capacity"])
    n = min(int(last), size)
    rows = (ptr - np.arange(n, 0, -1)) % cap if size == cap else np.arange(size - n, size)
    out = {"run": str(run_dir), "task": meta["task"], "seed": meta["seed"], "n_own": len(own),
           "n_heldout": len(held), "replay_rows": n}
    for name, (o, a, ab) in {
        "own": (*_pairs(own, key), None),
        "heldout": (*_pairs(held, key), None),
        "replay": (rep["data"]["obs"][rows], rep["data"]["action"][rows], rep["data"]["absorbing"][rows]),
    }.items():
        out[f"{name}_logit"], out[f"{name}_expert_frac"] = score(o, a, ab)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="DAC run folders")
    p.add_argument("--last", type=int, default=2500, help="replay rows scored (the newest)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    args = p.parse_args(argv)
    if args.last <= 0:
        p.error(f"--last must be positive, got {args.last}")
    try:
        df = pd.DataFrame([disc_logits(r, args.last) for r in args.runs])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(df.to_markdown(index=False, floatfmt=".2f"))
    if args.csv:
        df.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
