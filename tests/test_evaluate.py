"""`cmil-bench evaluate`: a run's checkpoint scored again, for every algorithm."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cmil_bench.cli import main
from cmil_bench.errors import UserError
from cmil_bench.evaluate import evaluate_checkpoint
from cmil_bench.run import EVAL_SEED_BASE, execute

pytestmark = pytest.mark.slow  # every test scores runs that the module trains first

ALGOS = ("bc", "gail", "dac", "vmail", "cmil")


@pytest.fixture(scope="module")
def finished(demo_root, tmp_path_factory):
    """One finished smoke run per algorithm on pointmaze-umaze (states)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for algo in ALGOS:
        out[algo] = root / algo
        execute(algo=algo, task="pointmaze-umaze", n_demos=3, seed=0, out=out[algo], preset="smoke",
                show_progress=False)
    return out


def _own(run_dir):
    final = pd.read_csv(run_dir / "metrics.csv").iloc[-1]
    n = json.loads((run_dir / "config.json").read_text())["eval_episodes"]
    return final, n


@pytest.mark.parametrize("algo", ALGOS)
def test_own_seeds_reproduce_the_runs_last_evaluation(finished, algo):
    final, n = _own(finished[algo])
    r = evaluate_checkpoint(finished[algo], episodes=n, seed_base=EVAL_SEED_BASE)
    assert r["episodes"] == n and r["algo"] == algo and r["task"] == "pointmaze-umaze"
    assert r["norm_score"] == pytest.approx(final["norm_score"], abs=1e-9)
    assert r["success"] == pytest.approx(final["eval_success"], abs=1e-9)
    assert r["own_score"] == pytest.approx(final["norm_score"], abs=1e-12)
    assert r["env_steps"] == final["env_steps"]


def test_held_out_episodes_by_default(finished):
    r = evaluate_checkpoint(finished["bc"], episodes=3)
    assert r["seed_base"] == 2_000_000 and r["episodes"] == 3
    assert 0.0 <= r["success"] <= 1.0 and r["se"] >= 0.0
    # pointmaze-umaze is a continuing task: every episode runs its 300 steps.
    assert r["mean_length"] == 300 and r["ended_early"] == 0.0
    # The same seeds give the same episodes; other seeds other starting states (returns). BC's
    # smoke policy reaches the goal on some starts; the reference DAC's (random actions until its
    # first actor update) never does in 600 steps, so its sparse returns are 0 on every seed.
    again = evaluate_checkpoint(finished["bc"], episodes=3)
    assert again["eval_return"] == r["eval_return"]
    own = evaluate_checkpoint(finished["bc"], episodes=3, seed_base=EVAL_SEED_BASE)
    assert own["eval_return"] != r["eval_return"]


def test_dac_moving_average_and_live_actor(demo_root, tmp_path):
    run = tmp_path / "ema"
    execute(algo="dac", task="pointmaze-umaze", n_demos=3, seed=0, out=run, preset="smoke",
            overrides={"agent": "sac", "eval_ema_tau": "0.01"}, show_progress=False)
    final, n = _own(run)
    ev = evaluate_checkpoint(run, episodes=n, seed_base=EVAL_SEED_BASE)
    assert ev["norm_score"] == pytest.approx(final["norm_score"], abs=1e-9)
    live = evaluate_checkpoint(run, episodes=n, seed_base=EVAL_SEED_BASE, which="live")
    assert live["policy"] == "live" and live["episodes"] == n
    # The two policies have different weights, so their actions differ on the same states.
    import torch

    from algorithms import dac
    from cmil_bench.config import build_config
    from envs.registry import get_task, make_env

    task = get_task("pointmaze-umaze")
    env = make_env(task)
    obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
    shape, act_dim = env.observation_space.shape, env.action_space.shape[0]
    env.close()
    cfg = build_config(dac.Config, {}, None, json.loads((run / "config.json").read_text())["config"], "dac")
    state = torch.load(run / "checkpoint.pt", weights_only=False)["algo_state"]
    a = dac.eval_policy(state, cfg, shape, act_dim, task.max_episode_steps, torch.device("cpu"), "eval")(obs)
    b = dac.eval_policy(state, cfg, shape, act_dim, task.max_episode_steps, torch.device("cpu"), "live")(obs)
    assert a.shape == b.shape == (4, act_dim) and abs(a - b).max() > 1e-6


def test_fetch_push_from_pixels_reproduces(demo_root, tmp_path):
    run = tmp_path / "px"
    execute(algo="gail", task="fetch-push-pixels", n_demos=2, seed=0, out=run, preset="smoke",
            overrides={"eval_episodes": "2"}, show_progress=False)
    final, n = _own(run)
    r = evaluate_checkpoint(run, episodes=n, seed_base=EVAL_SEED_BASE)
    assert r["norm_score"] == pytest.approx(final["norm_score"], abs=1e-9)


def test_bad_input_names_the_problem(finished, tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        evaluate_checkpoint(tmp_path)
    no_ckpt = tmp_path / "fresh"
    no_ckpt.mkdir()
    (no_ckpt / "config.json").write_text((finished["bc"] / "config.json").read_text())
    with pytest.raises(UserError, match="no checkpoint.pt"):
        evaluate_checkpoint(no_ckpt)
    with pytest.raises(UserError, match="bc runs have the policies eval"):
        evaluate_checkpoint(finished["bc"], episodes=2, which="live")
    with pytest.raises(UserError, match="--episodes must be positive"):
        evaluate_checkpoint(finished["bc"], episodes=0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (bad / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(UserError, match="not a cmil-bench run record"):
        evaluate_checkpoint(bad)


def test_cli_prints_a_table_and_writes_csv(finished, tmp_path, capsys):
    csv = tmp_path / "scores.csv"
    rc = main(["evaluate", str(finished["bc"]), str(finished["gail"]), "--episodes", "2",
               "--csv", str(csv)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("| pointmaze-umaze |") == 2 and "norm_score (+- se)" in out
    df = pd.read_csv(csv)
    assert df["algo"].tolist() == ["bc", "gail"] and (df["episodes"] == 2).all()
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    # Nothing was written into the run folders.
    assert sorted(p.name for p in finished["bc"].iterdir() if not p.name.startswith(".")) == [
        "checkpoint.pt", "config.json", "metrics.csv"]
