"""The scripts in benchmarks/: speed.py (rates from finished runs, raw env rate)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest


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
