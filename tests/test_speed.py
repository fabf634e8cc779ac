"""The scripts in benchmarks/: speed.py (rates from finished runs, raw env rate) and
disc_generalisation.py (a DAC run's discriminator on its own, held-out and replayed pairs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    """A script in benchmarks/ (not a package) imported as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def speed():
    return _script("speed")


def _run(root: Path, algo: str, task: str, seed: int, steps: int, updates: int, wall: float,
         variant: str | None = None) -> None:
    d = root / (variant or algo) / task / "d10" / f"s{seed}"
    d.mkdir(parents=True)
    # Two evaluations; only the last one's counters count.
    df = pd.DataFrame({"algo": algo, "task": task, "n_demos": 10, "seed": seed,
                       "env_steps": [steps // 2, steps], "grad_steps": [updates // 2, updates],
                       "wall_s": [wall / 3, wall], "eval_return": [0.0, 1.0],
                       "eval_success": [0.0, 1.0], "norm_score": [0.0, 1.0]})
    if variant:
        df["variant"] = variant
    (d / "metrics.csv").write_text(df.to_csv(index=False))


def test_run_rates_use_the_last_evaluation_and_average_seeds(speed, tmp_path):
    root = tmp_path / "runs"
    _run(root, "dac", "maze", 0, 1000, 900, 10.0)   # 100 steps/s, 90 updates/s
    _run(root, "dac", "maze", 1, 1000, 900, 20.0)   # 50 steps/s, 45 updates/s
    _run(root, "dac", "maze", 0, 4000, 100, 4.0, variant="dac-paper")
    _run(root, "bc", "maze", 0, 0, 3000, 3.0)
    table = speed.run_rates(str(root), ["dac"])
    assert set(table["variant"]) == {"dac", "dac-paper"}  # variants of the algorithm, not BC
    row = table[table["variant"] == "dac"].iloc[0]
    assert row["seeds"] == 2
    assert row["env steps/s"] == pytest.approx(75.0)
    assert row["updates/s"] == pytest.approx(67.5)
    assert row["range env steps/s"] == "50-100"
    other = table[table["variant"] == "dac-paper"].iloc[0]
    assert other["env steps/s"] == pytest.approx(1000.0)
    assert set(speed.run_rates(str(root), None)["variant"]) == {"dac", "dac-paper", "bc"}


def test_raw_rate_steps_a_real_task(speed):
    rate = speed.raw_rate("pointmaze-umaze", steps=300)
    assert 10 < rate < 1e7


# ------------------------------------------------------------ disc_generalisation.py


@pytest.fixture(scope="module")
def discgen():
    return _script("disc_generalisation")


@pytest.mark.slow
def test_disc_generalisation_splits_demos_and_scores_replay(discgen, demo_root, tmp_path):
    from cmil_bench.errors import UserError
    from cmil_bench.run import execute

    run = tmp_path / "dac"
    execute(algo="dac", task="pointmaze-umaze", n_demos=2, seed=0, out=run, preset="smoke",
            show_progress=False)
    r = discgen.disc_logits(run, last=100)
    # The demo source holds 3 episodes: the run used 2, the third is held out.
    assert (r["n_own"], r["n_heldout"], r["replay_rows"]) == (2, 1, 100)
    for k in ("own", "heldout", "replay"):
        assert np.isfinite(r[f"{k}_logit"]) and 0.0 <= r[f"{k}_expert_frac"] <= 1.0
    # "own" is what the run trained on: the demos that run.py's subsample picked for this seed.
    import json

    from envs.datasets import load_demos, subsample
    from envs.registry import get_task

    meta = json.loads((run / "config.json").read_text())
    demoset = load_demos(meta["demo_source"], task=get_task("pointmaze-umaze"))
    own, held = discgen.split_demos(meta, demoset)
    picked = subsample(demoset, 2, 0)
    assert [t.episode_id for t in own] == [t.episode_id for t in demoset.trajectories if t in picked]
    assert not {t.episode_id for t in held} & {t.episode_id for t in picked}
    # More rows than the replay holds: all of them.
    size = int(torch.load(run / "checkpoint.pt", weights_only=False)["algo_state"]["replay"]["size"])
    assert discgen.disc_logits(run, last=10**9)["replay_rows"] == size

    csv = tmp_path / "d.csv"
    assert discgen.main([str(run), "--last", "50", "--csv", str(csv)]) == 0
    assert pd.read_csv(csv)["replay_rows"].tolist() == [50]

    bc = tmp_path / "bc"
    execute(algo="bc", task="pointmaze-umaze", n_demos=2, seed=0, out=bc, preset="smoke", show_progress=False)
    with pytest.raises(UserError, match="bc"):
        discgen.disc_logits(bc)
    with pytest.raises(UserError, match="not a finished run folder"):
        discgen.disc_logits(tmp_path / "nothing")
