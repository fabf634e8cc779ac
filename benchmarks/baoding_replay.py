"""How faithful is the Baoding port? Replay the paper's demos open-loop and compare states.

Each demo's 120 actions are replayed from the task's reset, which is the demos' first recorded
state (hand pose and balls from the model's keyframe, zero velocities: ``start err`` is the largest
difference to row 0 over the 36 hand and ball entries; the targets of row 0 are left out, as two
files show the sites' XML positions there). Per episode the table gives the absolute error
between the simulated and the recorded 40-d states over steps 1-120 or up to a drop (mean over
all 40 entries; maxima of the hand joints in rad, of the balls' positions in m, of the six
"velocity" entries, of the target positions in m), the mean error at steps 1/10/30/60/90/120,
the first step at which a ball is more than 1 cm from its recorded position, the step at which the
replay drops a ball (which ends the episode), and the task's return and success for the replay
and for the recorded states.

    python benchmarks/baoding_replay.py --demos DIR [--model DIR] [--csv FILE] [--perturb SIGMA]

``--perturb SIGMA`` measures the task's own sensitivity instead: each demo replayed in this port
with and without N(0, SIGMA) noise on its actions (how far apart the balls end up by chaos alone).

``--model`` defaults to the model remembered by ``cmil-bench demos --task baoding --model DIR``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cmil_bench.errors import UserError  # noqa: E402


def replay_table(demos: str | Path, model: str | None = None) -> pd.DataFrame:
    from envs.baoding import BaodingEnv
    from envs.baoding_demos import CURVE_STEPS, demo_files, read_demo, replay_demo

    env = BaodingEnv(model_path=model)
    rows = []
    try:
        for i, path in enumerate(demo_files(demos)):
            out = replay_demo(env, read_demo(path))
            row = {
                "ep": i, "file": path.name[:24], "start err": out["start_error"],
                "mean err": out["mean_error"], "hand max": out["hand_max_error"],
                "ball max (m)": out["ball_max_error"], "vel max": out["velocity_max_error"],
                "target max": out["target_max_error"],
            }
            row.update({f"err@{s}": out["curve"].get(s, float("nan")) for s in CURVE_STEPS})
            row.update({
                "ball >1cm at": out["first_ball_drift_step"], "drop at": out["drop_step"],
                "replay return": out["replay_return"], "recorded return": out["recorded_return"],
                "replay success": out["replay_success"], "recorded success": out["recorded_success"],
            })
            rows.append(row)
    finally:
        env.close()
    df = pd.DataFrame(rows)
    for c in ("ball >1cm at", "drop at"):
        df[c] = df[c].astype("Int64")
    return df


def sensitivity_table(demos: str | Path, model: str | None = None, sigma: float = 1e-4,
                      seed: int = 0) -> pd.DataFrame:
    """The task's own sensitivity: replay each demo in this port twice, with its actions and with
    N(0, sigma) noise added to them, and compare the two replays as the main table compares the
    replay with the record (ball separation, drops)."""
    import numpy as np

    from envs.baoding import BALL1_POS, BALL2_POS, BaodingEnv
    from envs.baoding_demos import BALL_DRIFT, demo_files, read_demo

    env = BaodingEnv(model_path=model)
    rng = np.random.default_rng(seed)

    def run(actions):
        env.reset()
        states, drop = [], None
        for k, a in enumerate(actions, start=1):
            o, _, term, _, _ = env.step(a)
            states.append(o)
            if term:
                drop = k
                break
        return np.asarray(states), drop

    rows = []
    try:
        for i, path in enumerate(demo_files(demos)):
            acts = read_demo(path)["actions"]
            base, base_drop = run(acts)
            noisy, noisy_drop = run(acts + rng.normal(0.0, sigma, acts.shape))
            n = min(len(base), len(noisy))
            sep = np.maximum(np.linalg.norm(base[:n, BALL1_POS] - noisy[:n, BALL1_POS], axis=1),
                             np.linalg.norm(base[:n, BALL2_POS] - noisy[:n, BALL2_POS], axis=1))
            away = np.flatnonzero(sep > BALL_DRIFT)
            rows.append({"ep": i, "ball max (m)": float(sep.max()),
                         "ball >1cm at": int(away[0]) + 1 if len(away) else None,
                         "drop at (exact)": base_drop, "drop at (noisy)": noisy_drop})
    finally:
        env.close()
    df = pd.DataFrame(rows)
    for c in ("ball >1cm at", "drop at (exact)", "drop at (noisy)"):
        df[c] = df[c].astype("Int64")
    return df


def markdown(df: pd.DataFrame) -> str:
    def fmt(v):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.2g}" if abs(v) < 0.01 and v != 0 else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    cols = [c for c in df.columns if c != "file"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt(r[c]) for c in cols) + " |")
    num = df.select_dtypes("number")
    means = [fmt(float(num[c].mean())) if c in num else "" for c in cols[1:]]
    lines.append("| mean | " + " | ".join(means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demos", required=True, help="folder of the paper's Baoding .npz demos")
    p.add_argument("--model", help="the model's folder (default: the remembered one)")
    p.add_argument("--csv", help="also write the table as CSV")
    p.add_argument("--perturb", type=float, metavar="SIGMA",
                   help="instead: the task's own sensitivity, this port's replay vs its replay "
                        "with N(0, SIGMA) noise on the actions")
    args = p.parse_args(argv)
    try:
        t0 = time.perf_counter()
        if args.perturb:
            df = sensitivity_table(args.demos, args.model, args.perturb)
            print(markdown(df))
            print(f"\n{len(df)} demos, {time.perf_counter() - t0:.1f} s; noisy replays that drop a "
                  f"ball: {int(df['drop at (noisy)'].notna().sum())}, exact: "
                  f"{int(df['drop at (exact)'].notna().sum())}")
            return 0
        df = replay_table(args.demos, args.model)
        took = time.perf_counter() - t0
    except UserError as e:
        print(f"baoding_replay: error: {e}", file=sys.stderr)
        return 2
    print(markdown(df))
    drops = df["drop at"].notna().sum()
    print(f"\n{len(df)} demos, {took:.1f} s; replays that drop a ball: {drops}; replay success "
          f"{int(df['replay success'].sum())}/{len(df)}, "
          f"recorded {int(df['recorded success'].sum())}/{len(df)}")
    if args.csv:
        df.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
