"""What a DAC run's discriminator pays for ending an episode, read from its checkpoint.

DAC's absorbing states (Kostrikov et al. 2019, Section 4.2) exist so that the reward of ending
an episode is learned rather than fixed at zero. Whether ending early pays then depends on the
learned reward of the absorbing self-loop against that of live steps: the critic values the
absorbing state at about ``r_abs / (1 - discount)``. This loads a state-observation DAC run's
last checkpoint and prints, over its newest replay rows, the discriminator's reward (its logit,
DAC's reward) and the critic's Q (the smaller twin) for three kinds of row: live steps, steps
into the absorbing state, and the absorbing self-loop.

    python benchmarks/dac_absorbing_reward.py results/locomotion-cpu/runs/dac/ant/d4/s{0,1,2}
    python benchmarks/dac_absorbing_reward.py RUN [RUN ...] --rows 50000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from algorithms import dac


def absorbing_reward(run_dir: Path, rows: int) -> dict:
    cfg_json = json.loads((run_dir / "config.json").read_text())
    if cfg_json["algo"] != "dac" or cfg_json["obs_mode"] != "state":
        raise ValueError(f"{run_dir}: not a state-observation DAC run "
                         f"(algo {cfg_json['algo']}, obs_mode {cfg_json['obs_mode']})")
    cfg = dac.Config(**cfg_json["config"])
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["algo_state"]
    replay = state["replay"]
    data = replay["data"]
    obs_dim, act_dim = data["obs"].shape[1], data["action"].shape[1]
    agent = dac.DAC((obs_dim,), act_dim, cfg, torch.device("cpu"))
    agent.load_state_dict(state["agent"])

    size, ptr, capacity = int(replay["size"]), int(replay["ptr"]), int(replay["capacity"])
    idx = np.arange(ptr - min(rows, size), ptr) % capacity  # the newest rows of the ring
    obs = torch.as_tensor(data["obs"][idx])
    act = torch.as_tensor(data["action"][idx])
    ab = torch.as_tensor(data["absorbing"][idx])
    into = (data["next_absorbing"][idx] == 1) & (data["absorbing"][idx] == 0)
    with torch.no_grad():
        feat = agent.critic.features(obs, ab)
        reward = agent.disc(torch.cat([feat, act], dim=-1)).squeeze(-1).numpy()
        q = agent.critic(feat, act).min(0).values.numpy()
    absorbing = data["absorbing"][idx] == 1
    live = ~absorbing & ~into
    out = {"run": str(run_dir), "env_steps": int(state["env_steps"]), "rows": len(idx),
           "episodes_ending_early": int(absorbing.sum())}
    for name, mask in (("live", live), ("into_absorbing", into), ("absorbing", absorbing)):
        out[f"reward_{name}"] = float(reward[mask].mean()) if mask.any() else float("nan")
        out[f"q_{name}"] = float(q[mask].mean()) if mask.any() else float("nan")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="DAC run folders (config.json, checkpoint.pt)")
    parser.add_argument("--rows", type=int, default=20000, help="newest replay rows to read")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| run | env steps | rows | absorbing rows | reward: live / into absorbing / absorbing "
          "| Q: live / into absorbing / absorbing |")
    print("|---|---|---|---|---|---|")
    for run_dir in args.runs:
        missing = [f for f in ("config.json", "checkpoint.pt") if not (run_dir / f).is_file()]
        if missing:
            print(f"error: {run_dir}: no {' or '.join(missing)} (is it a run folder?)", file=sys.stderr)
            return 2
        try:
            r = absorbing_reward(run_dir, args.rows)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"| {r['run']} | {r['env_steps']} | {r['rows']} | {r['episodes_ending_early']} | "
              f"{r['reward_live']:.2f} / {r['reward_into_absorbing']:.2f} / {r['reward_absorbing']:.2f} | "
              f"{r['q_live']:.1f} / {r['q_into_absorbing']:.1f} / {r['q_absorbing']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
