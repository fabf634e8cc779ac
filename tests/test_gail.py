"""GAIL: advantage estimation and their standardisation over the rollout, return normalisation,
observation statistics frozen after the warm-up, config checks, and smoke runs from states and
pixels through ``cmil_bench.run.execute`` (with same-seed determinism)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms import gail
from algorithms.obs_norm import CLIP, RunningStatistics
from algorithms.optim import FlatAdam
from cmil_bench.config import build_config
from cmil_bench.errors import UserError
from cmil_bench.run import METRIC_COLUMNS, execute

GAIL_COLUMNS = ["disc_steps", "iterations", "disc_loss", "disc_acc", "disc_gp", "train_reward",
                "pg_loss", "v_loss", "entropy", "approx_kl"]


def test_gae_bootstraps_truncation_but_not_termination():
    gamma, lam = 0.9, 0.8
    r = np.array([[1.0], [2.0], [3.0]], np.float32)
    v = np.array([[0.5], [0.25], [0.125]], np.float32)
    nv = np.array([[0.25], [10.0], [4.0]], np.float32)  # step 1 ends the episode; nv[1] is its final obs
    for terminated, tail in ((0.0, 10.0), (1.0, 0.0)):
        term = np.array([[0.0], [terminated], [0.0]], np.float32)
        ended = np.array([[0.0], [1.0], [1.0]], np.float32)
        adv, ret = gail.gae(r, v, nv, term, ended, gamma, lam)
        d2 = 3.0 + gamma * 4.0 - 0.125
        d1 = 2.0 + gamma * tail - 0.25
        d0 = 1.0 + gamma * 0.25 - 0.5
        np.testing.assert_allclose(adv[:, 0], [d0 + gamma * lam * d1, d1, d2], rtol=1e-6)
        np.testing.assert_allclose(ret, adv + v, rtol=1e-6)


def test_running_statistics_standardise_the_policy_inputs():
    """obs_norm=running: the evaluation policy standardises with the shared floor and clip."""
    torch.manual_seed(0)
    cfg = build_config(gail.Config, gail.PRESETS, None, {"hidden": "16"}, "gail")
    ac = gail.ActorCritic((2,), 1, cfg)
    rms = RunningStatistics((2,))
    rms.update(np.array([[0.0, 5.0], [2.0, 5.0]]))  # the second dimension never moves
    policy = gail.MeanPolicy(ac, rms, torch.device("cpu"))
    x = policy.normalize(np.array([[1.0, 5.5]], np.float32))
    np.testing.assert_allclose(x, [[0.0, CLIP]], atol=1e-3)  # 0.5 / STD_FLOOR, clipped
    assert gail.MeanPolicy(ac, None, torch.device("cpu")).normalize(x) is x


def test_reward_scaled_by_std_of_discounted_return():
    rew = np.ones((4, 2), np.float32)
    dones = np.array([[0, 0], [1, 0], [0, 0], [0, 1]], np.float32)
    rms = RunningStatistics(())
    out = gail.discounted_return_scale(rew, dones, rms, gamma=0.5)
    rets = np.array([1, 1.5, 1, 1.5, 1, 1.5, 1.75, 1.875])  # env 0 restarts after step 1
    np.testing.assert_allclose(rms.mean, rets.mean(), rtol=1e-4)
    np.testing.assert_allclose(out, rew / np.sqrt(rets.var() + 1e-8), rtol=1e-3)


@pytest.mark.parametrize("key,value", [("obs_norm", "batch"), ("n_envs", 0), ("num_minibatches", -1),
                                       ("discount", 1.0), ("grad_clip", -1), ("cnn_depth", 0)])
def test_bad_config_names_the_value(key, value):
    with pytest.raises(UserError, match=key):
        build_config(gail.Config, gail.PRESETS, None, {key: value}, "gail")


def _check_metrics(path: Path, n_rows: int) -> pd.DataFrame:
    df = pd.read_csv(path)
    assert list(df.columns[: len(METRIC_COLUMNS)]) == METRIC_COLUMNS
    assert set(GAIL_COLUMNS) <= set(df.columns)
    assert len(df) == n_rows
    assert (df["algo"] == "gail").all() and df["env_steps"].is_monotonic_increasing
    assert np.isfinite(df[["norm_score", "disc_loss", "pg_loss", "v_loss"]].to_numpy()).all()
    return df


@pytest.mark.slow
@pytest.mark.parametrize("obs_norm", ["running", "demo"])
def test_smoke_run_from_states_is_deterministic(demo_root, tmp_path, obs_norm):
    runs = []
    for name in ("a", "b"):
        p = execute(algo="gail", task="pointmaze-umaze", n_demos=3, seed=1, out=tmp_path / name,
                    preset="smoke", overrides={"obs_norm": obs_norm}, show_progress=False)
        runs.append(_check_metrics(p, 2))
    a, b = runs
    assert a["env_steps"].tolist() == [120, 240]
    assert a["iterations"].tolist() == [1, 2] and a["disc_steps"].iloc[-1] > 0
    pd.testing.assert_frame_equal(a.drop(columns="wall_s"), b.drop(columns="wall_s"), check_exact=True)


@pytest.mark.slow
def test_smoke_run_from_pixels(demo_root, tmp_path):
    p = execute(algo="gail", task="fetch-push-pixels", n_demos=2, seed=0, out=tmp_path / "run",
                preset="smoke", overrides={"total_steps": "100", "rollout_len": "25"},
                show_progress=False)
    df = _check_metrics(p, 1)
    assert df["obs_mode"].iloc[0] == "pixels" and df["iterations"].tolist() == [2]


def test_policy_and_value_train_on_a_fixed_reward():
    # PPO pieces alone: with a discriminator that always says "expert" for action > 0, the
    # policy mean must move towards positive actions.
    torch.manual_seed(0)
    cfg = build_config(gail.Config, gail.PRESETS, None, {"hidden": "16"}, "gail")
    ac = gail.ActorCritic((3,), 1, cfg)
    opt = FlatAdam(ac, 3e-3)
    obs = torch.randn(256, 3)
    before = ac.pi(obs).mean().item()
    for _ in range(200):
        d = ac.dist(obs)
        a = d.sample()
        adv = (a[:, 0] > 0).float() - 0.5
        loss = -(d.log_prob(a).sum(-1) * adv).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ac.pi(obs).mean().item() > before + 0.3


@pytest.mark.slow
def test_bc_init_and_bc_term_fit_the_policy_mean(demo_root, tmp_path):
    # After the BC start (and two short PPO iterations without a BC term) the policy mean fits
    # the demos' actions far better than a zero policy does (fixed demo statistics, so that the
    # checkpoint's policy sees the inputs BC saw).
    from envs.datasets import load_demos
    from envs.registry import get_task

    out = tmp_path / "bc"
    overrides = {"bc_init_steps": "1000", "hidden": "64,64", "obs_norm": "demo"}
    p = execute(algo="gail", task="pointmaze-umaze", n_demos=3, seed=1, out=out, preset="smoke",
                overrides=overrides, show_progress=False)
    df = _check_metrics(p, 2)
    assert np.isfinite(df["bc_init_loss"].iloc[0]) and np.isnan(df["bc_init_loss"].iloc[1])
    term = _check_metrics(execute(algo="gail", task="pointmaze-umaze", n_demos=3, seed=1,
                                  out=tmp_path / "term", preset="smoke",
                                  overrides={"bc_weight": "1"}, show_progress=False), 2)
    assert np.isfinite(term["bc_loss"]).all()  # the BC term's loss, logged during PPO
    spec = get_task("pointmaze-umaze")
    demos = load_demos(spec.demo_source, task=spec).trajectories
    obs = np.concatenate([t.observations["state"][:-1] for t in demos]).astype(np.float32)
    act = np.clip(np.concatenate([t.actions for t in demos]), -1, 1)
    cfg = build_config(gail.Config, gail.PRESETS, "smoke", overrides, "gail")
    state = torch.load(out / "checkpoint.pt", weights_only=False)["algo_state"]
    policy = gail.eval_policy(state, cfg, obs.shape[1:], act.shape[1], spec.max_episode_steps,
                              torch.device("cpu"))
    fit = float(((policy(obs) - act) ** 2).sum(-1).mean())
    assert fit < 0.5 * float((act ** 2).sum(-1).mean())  # well below a zero policy


# ------------------------------------------------------------------ the reference's normalisation


def test_advantages_are_standardised_with_the_unbiased_std():
    adv = torch.tensor([1.0, 2.0, 3.0, 10.0])
    out = gail.normalize_advantages(adv)
    torch.testing.assert_close(out, (adv - adv.mean()) / (adv.std(unbiased=True) + 1e-5))
    assert abs(out.mean().item()) < 1e-6 and out.std().item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_advantages_are_standardised_once_over_each_rollout(demo_root, tmp_path, monkeypatch):
    """One standardisation per iteration over all n_envs x rollout_len advantages, and PPO's
    minibatches take their slices as they are (no second standardisation per minibatch)."""
    sizes = []

    def ones(adv):  # a stand-in whose minibatch slices would become 0 if standardised again
        sizes.append(adv.numel())
        return torch.ones_like(adv)

    monkeypatch.setattr(gail, "normalize_advantages", ones)
    p = execute(algo="gail", task="pointmaze-umaze", n_demos=3, seed=0, out=tmp_path / "run",
                preset="smoke", overrides={"n_envs": "2", "rollout_len": "60"}, show_progress=False)
    df = _check_metrics(p, 2)
    assert sizes == [120, 120]  # two iterations of 2 x 60 steps
    # advantage 1 everywhere: the clipped surrogate is -mean(min(r, clip(r))), about -1
    assert (df["pg_loss"] < -0.5).all(), df["pg_loss"].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("iters", [2, 0])
def test_observation_statistics_freeze_after_the_warm_up(demo_root, tmp_path, monkeypatch, iters):
    """obs_norm_iters=2: the statistics absorb the first two rollouts, then never change
    (0: they keep absorbing every rollout)."""
    import cmil_bench.run as R

    assert gail.Config().obs_norm_iters == 11  # the reference: rollouts of iterations 0-10
    saved = []
    real = R.Run.checkpoint

    def checkpoint(self, state):
        saved.append((state["it"], {k: np.copy(v) for k, v in state["obs_rms"].items()}))
        real(self, state)

    monkeypatch.setattr(R.Run, "checkpoint", checkpoint)
    execute(algo="gail", task="pointmaze-umaze", n_demos=3, seed=0, out=tmp_path / "run",
            preset="smoke", overrides={"n_envs": "2", "rollout_len": "60", "total_steps": "480",
                                       "eval_every": "120", "obs_norm_iters": str(iters)},
            show_progress=False)
    assert [it for it, _ in saved] == [1, 2, 3, 4]
    counts = [float(s["count"]) for _, s in saved]
    if iters == 0:
        np.testing.assert_allclose(counts, [120, 240, 360, 480], atol=1e-3)
        assert not np.array_equal(saved[2][1]["mean"], saved[3][1]["mean"])
        return
    np.testing.assert_allclose(counts, [120, 240, 240, 240], atol=1e-3)
    for _, s in saved[2:]:
        for k in ("mean", "var", "count"):
            np.testing.assert_array_equal(s[k], saved[1][1][k])
