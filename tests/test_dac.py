"""DAC: absorbing-state logic, the replay buffer, the critic's absorbing fixed point, the SAC
learner, the reference's details (the actor's learning-rate schedule, orthogonal initialisation,
random actions until the first actor update, demo subsampling that keeps the absorbing
transitions), and smoke runs from states and pixels through ``cmil_bench.run.execute``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms import dac, sac
from algorithms.demos import transitions
from algorithms.replay import ReplayBuffer
from cmil_bench.config import build_config
from cmil_bench.errors import UserError
from cmil_bench.run import METRIC_COLUMNS, execute
from envs.datasets import Trajectory

DAC_COLUMNS = ["episodes", "actor_updates", "disc_loss", "disc_acc", "disc_gp", "critic_loss",
               "q_mean", "train_reward", "actor_loss"]


# ------------------------------------------------------------------ absorbing states


def test_terminating_step_moves_to_absorbing_state_that_loops_on_itself():
    obs, nxt, act = np.arange(3, dtype=np.float32), np.ones(3, np.float32), np.array([0.5, -0.2], np.float32)
    trs = dac.step_transitions(obs, act, nxt, terminated=True, absorbing=True)
    assert len(trs) == 2
    last, loop = trs
    np.testing.assert_array_equal(last["obs"], obs)
    np.testing.assert_array_equal(last["action"], act)
    assert (last["absorbing"], last["next_absorbing"], last["terminated"]) == (0.0, 1.0, 0.0)
    np.testing.assert_array_equal(last["next_obs"], np.zeros(3))  # not the real final obs
    # the absorbing state loops on itself under the zero action, and is never "done"
    assert (loop["absorbing"], loop["next_absorbing"], loop["terminated"]) == (1.0, 1.0, 0.0)
    np.testing.assert_array_equal(loop["obs"], loop["next_obs"])
    np.testing.assert_array_equal(loop["action"], np.zeros(2))


def test_truncated_step_is_not_terminal():
    obs, nxt, act = np.zeros(3, np.float32), np.full(3, 7.0, np.float32), np.ones(2, np.float32)
    for absorbing in (True, False):
        (tr,) = dac.step_transitions(obs, act, nxt, terminated=False, absorbing=absorbing)
        assert (tr["absorbing"], tr["next_absorbing"], tr["terminated"]) == (0.0, 0.0, 0.0)
        np.testing.assert_array_equal(tr["next_obs"], nxt)  # bootstraps through the real state


def test_without_absorbing_a_terminal_uses_the_done_mask():
    (tr,) = dac.step_transitions(np.zeros(2), np.zeros(1), np.ones(2), terminated=True, absorbing=False)
    assert tr["terminated"] == 1.0 and tr["next_absorbing"] == 0.0


def _traj(T, terminated, obs_dim=3, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    return Trajectory(observations={"state": rng.normal(size=(T + 1, obs_dim)).astype(np.float32)},
                      actions=rng.uniform(-1, 1, (T, act_dim)).astype(np.float32),
                      rewards=np.zeros(T, np.float32), terminated=terminated, truncated=not terminated)


@pytest.mark.parametrize("absorbing", [True, False])
def test_demo_rows_have_the_layout_of_the_online_steps(absorbing):
    """algorithms.demos flattens demos into exactly the rows the same steps add online."""
    demos = [_traj(5, True, seed=1), _traj(4, False, seed=2)]
    flat = transitions(demos, "state", absorbing=absorbing)
    online = [tr for d in demos for t in range(len(d))
              for tr in dac.step_transitions(d.observations["state"][t], d.actions[t],
                                             d.observations["state"][t + 1],
                                             bool(d.terminated) and t == len(d) - 1, absorbing)]
    assert len(online) == len(flat["action"])
    for k in online[0]:
        np.testing.assert_array_equal(np.stack([np.asarray(r[k]) for r in online]), flat[k], err_msg=k)


def test_indicator_zeroes_absorbing_features():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = dac.with_indicator(f, torch.tensor([0.0, 1.0]))
    assert torch.equal(out, torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]]))


def test_critic_bootstraps_at_absorbing_state_with_zero_action():
    # Only absorbing self-loops in the batch, the discriminator frozen: Q(s_abs, 0) must reach
    # its fixed point r_abs / (1 - gamma), with r_abs = logit D(s_abs, 0) (no done mask).
    torch.manual_seed(0)
    cfg = build_config(dac.Config, dac.PRESETS, "smoke",
                       {"discount": 0.5, "tau": 1.0, "policy_delay": 1, "critic_lr": 1e-2,
                        "actor_delay": 10**9}, "dac")
    agent = dac.DAC((3,), 2, cfg, torch.device("cpu"))
    trs = dac.step_transitions(np.ones(3, np.float32), np.ones(2, np.float32), np.ones(3, np.float32),
                               terminated=True)
    batch = {k: np.stack([np.asarray(trs[1][k])] * 8).astype(np.float32) for k in trs[1]}
    for _ in range(600):
        agent.update(batch, expert=None)
    x = agent.critic.features(torch.zeros(1, 3), torch.ones(1))
    with torch.no_grad():
        r_abs = agent.disc(torch.cat([x, torch.zeros(1, 2)], -1)).item()
        q = agent.critic(x, torch.zeros(1, 2)).squeeze(-1)
    assert abs(r_abs) > 1e-3
    np.testing.assert_allclose(q.numpy(), [r_abs / 0.5] * 2, rtol=0.05, atol=0.02)


# ------------------------------------------------------------------ replay buffer


def test_replay_ring_and_state_dict_round_trip():
    spec = {"obs": ((2,), np.float32), "act": ((), np.int64)}
    buf = ReplayBuffer(5, spec)
    for i in range(7):
        buf.add(obs=np.full(2, i), act=i)
    assert len(buf) == 5 and buf.total == 7 and buf.ptr == 2
    assert sorted(buf.data["act"].tolist()) == [2, 3, 4, 5, 6]  # 0 and 1 overwritten
    buf.add_batch(obs=np.zeros((3, 2)), act=np.array([10, 11, 12]))
    assert buf.data["act"].tolist() == [5, 6, 10, 11, 12] and buf.ptr == 0

    other = ReplayBuffer(5, spec)
    other.load_state_dict(buf.state_dict())
    a = buf.sample(np.random.default_rng(3), 10)
    b = other.sample(np.random.default_rng(3), 10)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (other.ptr, other.size, other.total) == (buf.ptr, buf.size, buf.total)
    with pytest.raises(ValueError):
        ReplayBuffer(6, spec).load_state_dict(buf.state_dict())
    with pytest.raises(KeyError):
        buf.add(obs=np.zeros(2))


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("key,value", [("agent", "ppo"), ("batch_size", 0), ("tau", 1.5),
                                       ("discount", 1.0), ("demo_ratio", 1.0), ("eval_ema_tau", 1.5),
                                       ("cnn_depth", 0)])
def test_bad_config_names_the_value(key, value):
    with pytest.raises(UserError, match=key):
        build_config(dac.Config, dac.PRESETS, None, {key: value}, "dac")


# ------------------------------------------------------------------ runs through the harness


def _check_metrics(path: Path, n_rows: int) -> pd.DataFrame:
    df = pd.read_csv(path)
    assert list(df.columns[: len(METRIC_COLUMNS)]) == METRIC_COLUMNS
    assert set(DAC_COLUMNS) <= set(df.columns)
    assert len(df) == n_rows
    assert (df["algo"] == "dac").all() and df["env_steps"].is_monotonic_increasing
    assert np.isfinite(df[["norm_score", "disc_loss", "critic_loss"]].to_numpy()).all()
    assert np.isfinite(df["actor_loss"].iloc[-1])  # NaN only before the first actor update
    return df


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["td3", "sac"])
def test_smoke_run_from_states(demo_root, tmp_path, agent):
    p = execute(algo="dac", task="pointmaze-umaze", n_demos=3, seed=0, out=tmp_path / "run",
                preset="smoke", overrides={"agent": agent}, show_progress=False)
    df = _check_metrics(p, 2)
    assert df["env_steps"].tolist() == [300, 600]
    assert df["grad_steps"].iloc[-1] == 600 - 50 + 1
    assert df["actor_updates"].iloc[-1] > 0


@pytest.mark.slow
def test_smoke_run_from_pixels(demo_root, tmp_path):
    p = execute(algo="dac", task="fetch-push-pixels", n_demos=2, seed=0, out=tmp_path / "run",
                preset="smoke", overrides={"total_steps": "100", "eval_every": "50"},
                show_progress=False)
    df = _check_metrics(p, 2)
    assert df["obs_mode"].iloc[0] == "pixels" and df["env_steps"].tolist() == [50, 100]


@pytest.mark.slow
def test_terminating_env_fills_replay_with_absorbing_loops(demo_root, tmp_path, monkeypatch):
    import gymnasium as gym

    import cmil_bench.run as R

    class EndEarly(gym.Wrapper):
        """Terminates every episode after 20 steps (a real terminal, not a time limit)."""

        def reset(self, **kw):
            self.t = 0
            return self.env.reset(**kw)

        def step(self, a):
            o, r, term, trunc, info = self.env.step(a)
            self.t += 1
            return o, r, term or self.t == 20, trunc, info

    real = R.Run.make_env
    monkeypatch.setattr(R.Run, "make_env", lambda self: EndEarly(real(self)))
    out = tmp_path / "run"
    execute(algo="dac", task="pointmaze-umaze", n_demos=2, seed=0, out=out, preset="smoke",
            overrides={"total_steps": "100", "eval_every": "100", "random_steps": "100",
                       "learning_starts": "1000"}, show_progress=False)
    ck = torch.load(out / "checkpoint.pt", weights_only=False)["algo_state"]
    rep = ck["replay"]["data"]
    assert ck["env_steps"] == 100 and ck["episodes"] == 5
    assert len(rep["action"]) == 100 + 5
    loops = rep["absorbing"] == 1
    assert loops.sum() == 5 and np.all(rep["next_absorbing"][loops] == 1)
    assert np.all(rep["obs"][loops] == 0) and np.all(rep["next_obs"][loops] == 0)
    assert np.all(rep["action"][loops] == 0)
    ends = (rep["next_absorbing"] == 1) & ~loops
    assert ends.sum() == 5 and np.flatnonzero(ends).tolist() == [19, 40, 61, 82, 103]
    assert rep["terminated"].sum() == 0


@pytest.mark.slow
@pytest.mark.parametrize("normalize", [None, "true"])
def test_states_reach_the_networks_raw_unless_standardised(demo_root, tmp_path, normalize):
    """The reference feeds DAC raw states: by default the critic's encoder only clips (mean 0,
    std 1); ``normalize_obs=true`` (the ``dac-std`` variant) standardises with the demos' mean
    and std. The absorbing state's zero features then sit at the demos' mean instead of at 0."""
    overrides = {"total_steps": "100", "eval_every": "100", "learning_starts": "1000"}
    if normalize:
        overrides["normalize_obs"] = normalize
    out = tmp_path / "run"
    execute(algo="dac", task="pointmaze-umaze", n_demos=2, seed=0, out=out, preset="smoke",
            overrides=overrides, show_progress=False)
    critic = torch.load(out / "checkpoint.pt", weights_only=False)["algo_state"]["agent"]["critic"]
    mean, std = critic["encoder.mean"].numpy(), critic["encoder.std"].numpy()
    if normalize:
        assert not np.allclose(mean, 0) and not np.allclose(std, 1)
    else:
        assert np.all(mean == 0) and np.all(std == 1)


def test_demo_rows_join_the_batch_but_not_the_discriminator_negatives():
    rng = np.random.default_rng(1)

    def rows(n):
        return {"obs": rng.normal(size=(n, 3)).astype(np.float32),
                "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                "next_obs": rng.normal(size=(n, 3)).astype(np.float32),
                "terminated": np.zeros(n, np.float32), "absorbing": np.zeros(n, np.float32),
                "next_absorbing": np.zeros(n, np.float32)}

    head, demos = rows(8), rows(5)
    mixed = dac.with_demo_rows(head, demos, np.array([4, 0, 2]))
    assert len(mixed["obs"]) == 11 and set(mixed) == set(head)
    np.testing.assert_array_equal(mixed["obs"][8:], demos["obs"][[4, 0, 2]])
    np.testing.assert_array_equal(mixed["action"][:8], head["action"])

    # The discriminator's update sees only the first n_policy rows: the same update with
    # different tails leaves it with the same weights.
    expert = {"obs": rng.normal(size=(8, 3)).astype(np.float32),
              "action": rng.uniform(-1, 1, (8, 2)).astype(np.float32),
              "absorbing": np.zeros(8, np.float32), "weight": np.ones(8, np.float32)}
    tails = [dac.with_demo_rows(head, demos, np.array([0, 1, 2])),
             dac.with_demo_rows(head, demos, np.array([3, 4, 4]))]
    weights = []
    for batch in tails:
        torch.manual_seed(0)
        cfg = build_config(dac.Config, dac.PRESETS, "smoke", {"demo_ratio": 0.25}, "dac")
        agent = dac.DAC((3,), 2, cfg, torch.device("cpu"))
        agent.update(batch, expert, n_policy=8)
        weights.append(torch.cat([p.detach().flatten() for p in agent.disc.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_evaluation_policy_is_the_moving_average_of_the_actor():
    rng = np.random.default_rng(2)
    n = 16
    batch = {"obs": rng.normal(size=(n, 3)).astype(np.float32),
             "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
             "next_obs": rng.normal(size=(n, 3)).astype(np.float32),
             "terminated": np.zeros(n, np.float32), "absorbing": np.zeros(n, np.float32),
             "next_absorbing": np.zeros(n, np.float32)}
    obs = rng.normal(size=(5, 3)).astype(np.float32)
    tau = 0.3
    torch.manual_seed(0)
    cfg = build_config(dac.Config, dac.PRESETS, "smoke",
                       {"agent": "sac", "eval_ema_tau": tau, "policy_delay": 1, "actor_delay": 0,
                        "actor_lr": 1e-2}, "dac")
    agent = dac.DAC((3,), 2, cfg, torch.device("cpu"))

    def flat(module):
        return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()

    expected = flat(agent.actor)
    np.testing.assert_allclose(agent.act_eval(obs), agent.act(obs))  # the same start
    for _ in range(4):
        agent.update(batch, expert=None)
        expected = (1 - tau) * expected + tau * flat(agent.actor)
    assert agent.actor_updates == 4
    torch.testing.assert_close(flat(agent._actor_ema.module), expected)
    assert not np.allclose(agent.act_eval(obs), agent.act(obs))  # it lags the live actor
    # The checkpoint carries it: a fresh agent loaded from the state acts the same.
    other = dac.DAC((3,), 2, cfg, torch.device("cpu"))
    other.load_state_dict(agent.state_dict())
    np.testing.assert_array_equal(other.act_eval(obs), agent.act_eval(obs))
    # Off (0): evaluation uses the live actor.
    off = dac.DAC((3,), 2, build_config(dac.Config, dac.PRESETS, "smoke", {}, "dac"), torch.device("cpu"))
    np.testing.assert_array_equal(off.act_eval(obs), off.act(obs))


# ------------------------------------------------------------------ the SAC learner


def test_sac_soft_target_drops_the_entropy_term_and_action_at_the_absorbing_state():
    torch.manual_seed(0)
    cfg = build_config(dac.Config, dac.PRESETS, "smoke", {"agent": "sac"}, "dac")
    agent = dac.DAC((3,), 2, cfg, torch.device("cpu"))
    assert isinstance(agent.actor, sac.GaussianActor) and agent.temperature is not None
    feat = agent.critic.features(torch.zeros(4, 3), torch.ones(4))  # all absorbing
    alpha = torch.tensor(5.0)
    with torch.no_grad():
        v = sac.next_value(agent.critic_target, agent.actor, feat, torch.ones(4), alpha)
        q0 = agent.critic_target(feat, torch.zeros(4, 2)).min(0).values
    torch.testing.assert_close(v, q0)
    real = agent.critic.features(torch.randn(4, 3), torch.zeros(4))
    torch.manual_seed(1)
    with torch.no_grad():
        v = sac.next_value(agent.critic_target, agent.actor, real, torch.zeros(4), alpha)
    torch.manual_seed(1)
    with torch.no_grad():
        a, logp = agent.actor.sample(real)
        want = agent.critic_target(real, a).min(0).values - alpha * logp
    torch.testing.assert_close(v, want)


def test_sac_temperature_moves_towards_the_target_entropy():
    temp = sac.Temperature(0.1, 0.05, act_dim=2, device=torch.device("cpu"))
    start = temp.alpha.item()
    for _ in range(20):  # entropy -E[log p] = -3, below the target -act_dim = -2: alpha rises
        temp.update(torch.full((8,), 3.0), torch.ones(8))
    assert temp.alpha.item() > start
    high = temp.alpha.item()
    for _ in range(40):  # entropy 0, above the target: alpha falls
        temp.update(torch.full((8,), 0.0), torch.ones(8))
    assert temp.alpha.item() < high
    fresh = sac.Temperature(0.1, 0.05, act_dim=2, device=torch.device("cpu"))
    fresh.update(torch.full((8,), 3.0), torch.zeros(8))  # absorbing rows only: no gradient
    assert fresh.alpha.item() == pytest.approx(0.1)


# ------------------------------------------------------------------ the reference's details


def test_actor_learning_rate_halves_every_1e5_env_steps():
    cfg = build_config(dac.Config, dac.PRESETS, None, {}, "dac")
    assert cfg.actor_lr_halve_every == 100_000
    for k in range(5):
        assert dac.actor_lr_at(cfg, k * 100_000) == pytest.approx(1e-3 * 0.5 ** k)
        assert dac.actor_lr_at(cfg, k * 100_000 + 99_999) == pytest.approx(1e-3 * 0.5 ** k)
    const = build_config(dac.Config, dac.PRESETS, None, {"actor_lr_halve_every": 0}, "dac")
    assert dac.actor_lr_at(const, 10**6) == const.actor_lr


# A short run whose schedule is known: the first agent update comes after env step 50 (one per
# step from then on), the first actor update at critic update 10, i.e. after env step 59.
SCHEDULE = {"total_steps": "300", "eval_every": "300", "random_steps": "50", "learning_starts": "50",
            "actor_delay": "10", "policy_delay": "2"}
FIRST_ACTOR_UPDATE_STEP = 59


@pytest.mark.slow
def test_only_the_actor_learning_rate_decays_in_a_run(demo_root, tmp_path, monkeypatch):
    seen = []  # (critic update about to happen, actor lr, critic lr, disc lr)
    real = dac.DAC.update

    def update(self, *a, **kw):
        seen.append((self.updates + 1, self.actor_opt.lr, self.critic_opt.lr, self.disc_opt.lr))
        return real(self, *a, **kw)

    monkeypatch.setattr(dac.DAC, "update", update)
    out = tmp_path / "run"
    execute(algo="dac", task="pointmaze-umaze", n_demos=3, seed=0, out=out, preset="smoke",
            overrides={**SCHEDULE, "actor_lr_halve_every": "100"}, show_progress=False)
    env_steps = torch.load(out / "checkpoint.pt", weights_only=False)["algo_state"]["env_steps"]
    assert len(seen) == env_steps - 50 + 1
    cfg = build_config(dac.Config, dac.PRESETS, "smoke", SCHEDULE, "dac")
    for u, actor_lr, critic_lr, disc_lr in seen:
        step = 49 + u  # update u follows env step 49 + u
        assert actor_lr == pytest.approx(cfg.actor_lr * 0.5 ** (step // 100)), step
        assert (critic_lr, disc_lr) == (cfg.critic_lr, cfg.disc_lr)
    assert {round(lr / cfg.actor_lr, 6) for _, lr, _, _ in seen} >= {1.0, 0.5, 0.25}


def _gram(w: torch.Tensor) -> torch.Tensor:
    """W W^T or W^T W, whichever is the smaller: the identity times gain^2 for an orthogonal W."""
    return w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w


@pytest.mark.parametrize("agent", ["td3", "sac"])
def test_orthogonal_initialisation_with_a_small_last_actor_layer(agent):
    torch.manual_seed(0)
    cfg = build_config(dac.Config, dac.PRESETS, None, {"agent": agent}, "dac")  # 400-300, 256-256
    net = dac.DAC((6,), 3, cfg, torch.device("cpu"))

    def check(weight, bias, gain):
        g = _gram(weight.detach())
        torch.testing.assert_close(g, gain ** 2 * torch.eye(len(g)), atol=1e-5 * max(gain ** 2, 1e-2), rtol=0)
        assert torch.count_nonzero(bias) == 0

    actor = [m for m in net.actor.net if isinstance(m, torch.nn.Linear)]
    assert [m.weight.shape[0] for m in actor[:-1]] == [400, 300]
    for m in actor[:-1]:
        check(m.weight, m.bias, 1.0)
    check(actor[-1].weight, actor[-1].bias, 0.01)
    critic = [m for m in net.critic.q.modules() if isinstance(m, dac.EnsembleLinear)]
    assert len(critic) == 3
    for m in critic:  # each twin's (in, out) weight on its own
        for k in range(2):
            check(m.weight[k], m.bias[k], 1.0)
        assert not torch.allclose(m.weight[0], m.weight[1])  # independent draws
    disc = [m for m in net.disc.net if isinstance(m, torch.nn.Linear)]
    assert [m.weight.shape[0] for m in disc] == [256, 256, 1]
    for m in disc:
        check(m.weight, m.bias, 1.0)
    # the targets start as copies
    torch.testing.assert_close(net.actor_target.net[-1].weight, actor[-1].weight)


@pytest.mark.slow
@pytest.mark.parametrize("random_steps", [50, 120])
def test_uniform_random_actions_until_the_first_actor_update(demo_root, tmp_path, monkeypatch,
                                                            random_steps):
    """The policy acts only once the actor has been updated (and not before ``random_steps``);
    every earlier step is uniform random."""
    seen = []  # (critic updates, actor updates) at each policy action
    real = dac.DAC.explore

    def explore(self, obs, rng):
        seen.append((self.updates, self.actor_updates))
        return real(self, obs, rng)

    monkeypatch.setattr(dac.DAC, "explore", explore)
    out = tmp_path / "run"
    execute(algo="dac", task="pointmaze-umaze", n_demos=3, seed=0, out=out, preset="smoke",
            overrides={**SCHEDULE, "random_steps": str(random_steps)}, show_progress=False)
    env_steps = torch.load(out / "checkpoint.pt", weights_only=False)["algo_state"]["env_steps"]
    first_policy_step = max(FIRST_ACTOR_UPDATE_STEP, random_steps)
    assert len(seen) == env_steps - first_policy_step
    assert min(a for _, a in seen) >= 1
    assert seen[0][0] == first_policy_step - 50 + 1  # right after that step's update


def test_subsampling_keeps_every_20th_step_and_the_absorbing_transitions():
    """The reference adds the absorbing transitions, then keeps every 20th step of each demo from
    a random offset, never dropping an absorbing self-loop (weight 1/20 in the discriminator's
    loss); the step into the absorbing state is subsampled like any other."""
    cfg = build_config(dac.Config, dac.PRESETS, None, {}, "dac")
    assert cfg.subsample == 20 and cfg.absorbing
    demos = [_traj(T, True, seed=seed) for seed, T in enumerate([7, 45, 60, 33] * 10)]
    demos.append(_traj(50, False, seed=99))  # truncated: no absorbing state
    ex = transitions(demos, "state", absorbing=True, subsample=cfg.subsample, rng=np.random.default_rng(0))
    loops = ex["absorbing"] == 1
    assert loops.sum() == 40  # one per terminating demo, even the 7-step ones
    np.testing.assert_allclose(ex["weight"][loops], 1 / 20)
    np.testing.assert_allclose(ex["weight"][~loops], 1.0)
    assert np.all(ex["obs"][loops] == 0) and np.all(ex["action"][loops] == 0)
    # Walk the rows demo by demo: the kept steps are 20 apart from a per-demo offset, and each
    # terminating demo's rows end with its self-loop.
    row, offsets, into_absorbing = 0, set(), 0
    for d in demos:
        obs = d.observations["state"]
        kept = []
        while row < len(ex["obs"]) and not loops[row] and (ex["obs"][row] == obs[:-1]).all(1).any():
            kept.append(int(np.flatnonzero((obs[:-1] == ex["obs"][row]).all(1))[0]))
            row += 1
        assert all(b - a == 20 for a, b in zip(kept, kept[1:])), kept
        assert len(kept) in (len(d) // 20, len(d) // 20 + 1)
        if kept:
            offsets.add(kept[0])
        if d.terminated:
            into_absorbing += int(kept[-1:] == [len(d) - 1])
            assert loops[row]
            row += 1
    assert row == len(ex["obs"])
    assert len(offsets) > 3  # random offsets, not one grid for every demo
    assert into_absorbing == int((ex["next_absorbing"][~loops] == 1).sum()) < 40  # not always kept


@pytest.mark.slow
def test_a_run_subsamples_its_demos_every_20th_step(demo_root, tmp_path, monkeypatch):
    got = {}

    class Stop(Exception):
        pass

    def capture(demos, obs_key, absorbing, subsample, rng):
        got.update(absorbing=absorbing, subsample=subsample, n_steps=sum(len(d) for d in demos))
        got["rows"] = transitions(demos, obs_key, absorbing, subsample, rng)
        raise Stop

    monkeypatch.setattr(dac, "transitions", capture)
    with pytest.raises(Stop):
        execute(algo="dac", task="pointmaze-umaze", n_demos=3, seed=0, out=tmp_path / "run",
                preset="smoke", show_progress=False)
    assert got["absorbing"] is True and got["subsample"] == 20
    assert len(got["rows"]["action"]) <= got["n_steps"] // 20 + 3 + 3  # + one per demo, + loops
