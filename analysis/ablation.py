"""The conservatism ablation figure: CMIL's final score against each switch it sweeps.

Variants are named ``cmil[KEY=VALUE]`` (the Snakefile's ``ablation`` target makes them). For each
KEY, the IQM over tasks and seeds of the final norm_score, with rliable's stratified-bootstrap 95 %
interval, is drawn against VALUE; a Markdown table holds the same numbers.

    python -m analysis.ablation --manifest results/ablation/report/runs.txt --out results/ablation/report
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import stats  # noqa: E402
from analysis.runs import final_scores, load_runs, read_manifest  # noqa: E402
from cmil_bench.errors import UserError  # noqa: E402

VARIANT = re.compile(r"^(?P<algo>[^\[]+)\[(?P<key>[^=\]]+)=(?P<value>[^\]]+)\]$")


def ablation_table(finals: pd.DataFrame, reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (switch, value): IQM of the final scores over tasks and seeds, with its CI."""
    rows = []
    for variant, grp in finals.groupby("variant"):
        m = VARIANT.match(str(variant))
        if not m:
            continue
        settings = sorted(grp["setting"].unique())
        matrix, kept = stats.score_matrix(grp, settings)
        value, lo, hi = stats.iqm_interval(matrix, reps, seed, f"ablation/{variant}")
        try:
            x = float(m["value"])
        except ValueError:
            x = m["value"]
        rows.append({"switch": m["key"], "value": x, "variant": variant, "runs": len(kept),
                     "IQM": value, "lo": lo, "hi": hi,
                     "mean_success": float(grp["success"].mean()) if "success" in grp else float("nan")})
    if not rows:
        raise UserError("no ablation runs (variants named like 'cmil[penalty_weight=10]') found")
    return pd.DataFrame(rows).sort_values(["switch", "value"]).reset_index(drop=True)


def draw(table: pd.DataFrame, out: Path) -> list[Path]:
    switches = list(dict.fromkeys(table["switch"]))
    fig, axes = plt.subplots(1, len(switches), figsize=(4.2 * len(switches), 3.4), squeeze=False)
    for ax, sw in zip(axes[0], switches):
        t = table[table["switch"] == sw]
        xs = list(range(len(t)))
        ax.errorbar(xs, t["IQM"], yerr=[t["IQM"] - t["lo"], t["hi"] - t["IQM"]], fmt="o-",
                    capsize=4, color="tab:blue")
        ax.set_xticks(xs, [f"{v:g}" if isinstance(v, float) else str(v) for v in t["value"]])
        ax.set_xlabel(sw)
        ax.set_ylabel("IQM final norm_score")
        ax.grid(alpha=0.3)
    fig.suptitle("CMIL conservatism ablation (95% stratified-bootstrap CI)")
    fig.tight_layout()
    paths = [out / "ablation.png", out / "ablation.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.ablation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=None, help="root of the run folders (default: from manifest)")
    ap.add_argument("--manifest", required=True, help="file listing the ablation run folders")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--reps", type=int, default=2000)
    args = ap.parse_args(argv)
    try:
        dirs = read_manifest(args.manifest)
        if not dirs:
            raise UserError(f"manifest {args.manifest!r} lists no run folders")
        root = Path(args.runs) if args.runs else Path(*Path(dirs[0]).parts[:-4])
        df, info = load_runs(root, only=dirs)
        if df.empty:
            raise UserError(f"none of the runs in {args.manifest!r} has finished")
        finals = final_scores(df)
        if "setting" not in finals:
            finals["setting"] = finals["task"].astype(str) + "/d" + finals["n_demos"].astype(str)
        succ = final_scores(df, metric="eval_success")[["run_dir", "score"]].rename(
            columns={"score": "success"})
        finals = finals.merge(succ, on="run_dir", how="left")
        table = ablation_table(finals, reps=args.reps)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.md").write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
        for p in draw(table, out):
            print(p)
    except UserError as e:
        print(f"ablation: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
