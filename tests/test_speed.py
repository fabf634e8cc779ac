"""The scripts in benchmarks/: speed.py (rates from finished runs, raw env rate) and dac_heldout.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from cmil_bench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("bench_speed", ROOT / "benchmarks" / "speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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


def test_dac_heldout_reproduces_the_runs_own_final_evaluation(demo_root, tmp_path):
    from cmil_bench.run import execute

    spec = importlib.util.spec_from_file_location("bench_heldout", ROOT / "benchmarks" / "dac_heldout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "run"
    execute(algo="dac", task="pointmaze-umaze", n_demos=3, seed=0, out=out, preset="smoke",
            overrides={"agent": "sac"}, show_progress=False)
    final = pd.read_csv(out / "metrics.csv").iloc[-1]
    n = json.loads((out / "config.json").read_text())["eval_episodes"]
    # The run's own seeds and episode count: the same policy, the same episodes, the same score.
    same = mod.heldout_scores(out, episodes=n, seed_base=1_000_000)
    assert same["episodes"] == n
    assert same["norm_score"] == pytest.approx(final["norm_score"], abs=1e-9)
    # With a moving-average evaluation policy, "eval" (the default) is what the run evaluated.
    ema = tmp_path / "ema"
    execute(algo="dac", task="pointmaze-umaze", n_demos=3, seed=0, out=ema, preset="smoke",
            overrides={"agent": "sac", "eval_ema_tau": "0.01"}, show_progress=False)
    final_ema = pd.read_csv(ema / "metrics.csv").iloc[-1]["norm_score"]
    assert mod.heldout_scores(ema, episodes=n, seed_base=1_000_000)["norm_score"] == pytest.approx(
        final_ema, abs=1e-9)
    other = mod.heldout_scores(out, episodes=3, seed_base=2_000_000)
    assert other["episodes"] == 3 and 0.0 <= other["success"] <= 1.0
    with pytest.raises(UserError, match="DAC runs only"):
        bc = tmp_path / "bc"
        execute(algo="bc", task="pointmaze-umaze", n_demos=3, seed=0, out=bc, preset="smoke",
                show_progress=False)
        mod.heldout_scores(bc, episodes=2, seed_base=0)
