"""DAC: absorbing-state logic, the replay buffer, the critic's absorbing fixed point, and smoke
runs from states and pixels through ``cmil_bench.run.execute``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms import dac
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
    assert (last["absorbing"], last["next_absorbing"], last["done"]) == (0.0, 1.0, 0.0)
    np.testing.assert_array_equal(last["next_obs"], np.zeros(3))  # not the real final obs
    # the absorbing state loops on itself under the zero action, and is never "done"
    assert (loop["absorbing"], loop["next_absorbing"], loop["done"]) == (1.0, 1.0, 0.0)
    np.testing.assert_array_equal(loop["obs"], loop["next_obs"])
    np.testing.assert_array_equal(loop["action"], np.zeros(2))


def test_truncated_step_is_not_terminal():
    obs, nxt, act = np.zeros(3, np.float32), np.full(3, 7.0, np.float32), np.ones(2, np.float32)
    for absorbing in (True, False):
        (tr,) = dac.step_transitions(obs, act, nxt, terminated=False, absorbing=absorbing)
        assert (tr["absorbing"], tr["next_absorbing"], tr["done"]) == (0.0, 0.0, 0.0)
        np.testing.assert_array_equal(tr["next_obs"], nxt)  # bootstraps through the real state


def test_without_absorbing_a_terminal_uses_the_done_mask():
    (tr,) = dac.step_transitions(np.zeros(2), np.zeros(1), np.ones(2), terminated=True, absorbing=False)
    assert tr["done"] == 1.0 and tr["next_absorbing"] == 0.0


def _traj(T, terminated, obs_dim=3, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    return Trajectory(observations={"state": rng.normal(size=(T + 1, obs_dim)).astype(np.float32)},
                      actions=rng.uniform(-1, 1, (T, act_dim)).astype(np.float32),
                      rewards=np.zeros(T, np.float32), terminated=terminated, truncated=not terminated)


def test_expert_transitions_add_absorbing_only_for_terminating_demos():
    demos = [_traj(5, True, seed=1), _traj(4, False, seed=2), _traj(6, True, seed=3)]
    ex = dac.expert_transitions(demos, "state", absorbing=True)
    assert len(ex["action"]) == 5 + 4 + 6 + 2
    assert ex["absorbing"].sum() == 2 and ex["next_absorbing"].sum() == 4
    loops = ex["absorbing"] == 1
    assert np.all(ex["obs"][loops] == 0) and np.all(ex["action"][loops] == 0)
    np.testing.assert_array_equal(ex["obs"][:5], demos[0].observations["state"][:5])
    assert ex["next_absorbing"][4] == 1 and ex["next_absorbing"][5] == 1  # s_T -> abs, abs -> abs
    # the truncated demo's last transition keeps its real next state
    np.testing.assert_array_equal(ex["next_obs"][6 + 3], demos[1].observations["state"][4])
    assert np.all(ex["weight"] == 1)

    plain = dac.expert_transitions(demos, "state", absorbing=False)
    assert len(plain["action"]) == 15 and plain["absorbing"].sum() == 0 and plain["done"].sum() == 2


def test_subsampled_demos_keep_absorbing_transitions_with_weight():
    demos = [_traj(40, True, seed=4), _traj(40, False, seed=5)]
    ex = dac.expert_transitions(demos, "state", absorbing=True, subsample=10,
                                rng=np.random.default_rng(0))
    assert len(ex["action"]) == 4 + 4 + 1
    assert ex["absorbing"].sum() == 1
    np.testing.assert_allclose(ex["weight"][ex["absorbing"] == 1], 0.1)
    np.testing.assert_allclose(ex["weight"][ex["absorbing"] == 0], 1.0)


def test_indicator_zeroes_absorbing_features():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = dac.with_indicator(f, torch.tensor([0.0, 1.0]))
    assert torch.equal(out, torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]]))


def test_critic_bootstraps_at_absorbing_state_with_zero_action():
    # Only absorbing self-loops in the batch, the discriminator frozen: Q(s_abs, 0) must reach
    # its fixed point r_abs / (1 - gamma), with r_abs = logit D(s_abs, 0) (no done mask).
    torch.manual_seed(0)
    cfg = build_config(dac.Config, dac.PRESETS, "smoke",
                       {"gamma": 0.5, "tau": 1.0, "policy_delay": 1, "critic_lr": 1e-2,
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


def _episode_buffer(capacity, lengths):
    """Episodes of the given lengths, rows numbered 0, 1, ... in ``obs``; ``last`` marks ends."""
    buf = ReplayBuffer(capacity, {"obs": ((), np.float32), "last": ((), np.float32)})
    i = 0
    for n in lengths:
        for t in range(n):
            buf.add(obs=float(i), last=float(t == n - 1))
            i += 1
    return buf


def test_replay_windows_stop_at_episode_end_and_newest_row():
    buf = _episode_buffer(20, [3, 4, 2])  # rows 0-2 | 3-6 | 7-8, the last episode still running
    buf.data["last"][8] = 0.0
    rows, valid = buf.windows(np.array([0, 1, 2, 3, 7]), 3)
    np.testing.assert_array_equal(rows[1], [1, 2, 3])
    np.testing.assert_array_equal(valid, [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]])
    # a full ring: a window never wraps from the newest row into the oldest
    ring = _episode_buffer(5, [7])  # rows hold 5, 6 | 2, 3, 4; ptr = 2, no episode end stored
    ring.data["last"][:] = 0.0
    rows, valid = ring.windows(np.array([0, 4]), 3)
    np.testing.assert_array_equal(rows, [[0, 1, 2], [4, 0, 1]])
    np.testing.assert_array_equal(valid, [[1, 1, 0], [1, 1, 1]])


def test_n_step_target_sums_window_rewards_and_bootstraps_after_it():
    # A frozen linear discriminator and critic target: the target must be
    # r0 + g r1 + g^2 r2 + g^3 Q'(s3, pi(s3)) for a full window, and stop at an episode end.
    torch.manual_seed(0)
    cfg = build_config(dac.Config, dac.PRESETS, "smoke", {"n_step": 3, "gamma": 0.9,
                                                           "agent": "td3", "policy_noise": 0.0}, "dac")
    agent = dac.DAC((2,), 1, cfg, torch.device("cpu"))
    fields = {"obs": ((2,), np.float32), "action": ((1,), np.float32), "next_obs": ((2,), np.float32),
              "done": ((), np.float32), "absorbing": ((), np.float32),
              "next_absorbing": ((), np.float32), "last": ((), np.float32)}
    buf = ReplayBuffer(10, fields)
    rng = np.random.default_rng(0)
    states = rng.normal(size=(6, 2)).astype(np.float32)
    for t in range(5):  # one episode of 5 steps
        buf.add(obs=states[t], action=np.array([0.1 * t], np.float32), next_obs=states[t + 1],
                done=0.0, absorbing=0.0, next_absorbing=0.0, last=float(t == 4))

    def reward(o, a):
        x = agent._disc_x(agent.critic.features(torch.as_tensor(o)[None], torch.zeros(1)),
                          torch.as_tensor(a)[None])
        return agent.disc(x).item()

    def q_next(o):
        f = agent.critic_target.features(torch.as_tensor(o)[None], torch.zeros(1))
        return agent.critic_target(f, agent.actor_target(f)).min(0).values.item()

    for start, expect_len in ((0, 3), (3, 2)):  # the second window stops at the episode's end
        idx = np.array([start])
        batch = buf.get(idx)
        rows, valid = buf.windows(idx, 3)
        assert valid.sum() == expect_len
        full = dac.sample_batch(buf, _FixedRng(idx), 1, 3)
        for k in batch:
            if k not in ("next_obs", "next_absorbing", "done"):
                np.testing.assert_array_equal(full[k], batch[k])
        g = 0.9
        with torch.no_grad():
            expected = sum(g ** k * reward(states[start + k], np.array([0.1 * (start + k)], np.float32))
                           for k in range(expect_len))
            expected += g ** expect_len * q_next(states[start + expect_len])
            b = agent._to_t(full)
            r0 = agent.disc(agent._disc_x(agent.critic.features(b["obs"], b["absorbing"]), b["action"]))
            ret, disc = agent._window_return(b, r0)
            got = ret.item() + disc.item() * q_next(full["next_obs"][0])
        np.testing.assert_allclose(got, expected, rtol=1e-5)


class _FixedRng:
    """Stands in for a generator whose ``integers`` returns the given indices."""

    def __init__(self, idx):
        self.idx = idx

    def integers(self, low, high, size=None):
        return self.idx


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("key,value", [("agent", "ppo"), ("reward_form", "exp"), ("batch_size", 0),
                                       ("updates_per_step", 0), ("tau", 1.5), ("n_step", 0),
                                       ("disc_input", "sas"), ("demo_ratio", 1.0),
                                       ("eval_ema_tau", 1.5)])
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
    assert rep["done"].sum() == 0


def test_task_budgets_override_by_name_or_family():
    from envs.registry import get_task

    cfg = build_config(dac.Config, dac.PRESETS, None,
                       {"total_steps": "5000", "eval_every": "1000",
                        "task_total_steps": "fetch-push=300,pointmaze-umaze-pixels=700",
                        "task_eval_every": "fetch-push=100"}, "dac")
    assert dac.task_budget(cfg, get_task("fetch-push")) == (300, 100)
    assert dac.task_budget(cfg, get_task("fetch-push-pixels")) == (300, 100)  # by family
    assert dac.task_budget(cfg, get_task("pointmaze-umaze-pixels")) == (700, 1000)
    assert dac.task_budget(cfg, get_task("pointmaze-umaze")) == (5000, 1000)
    typo = build_config(dac.Config, dac.PRESETS, None, {"task_total_steps": "fetch-pus=300"}, "dac")
    with pytest.raises(UserError, match="unknown task or family 'fetch-pus'"):
        dac.task_budget(typo, get_task("fetch-push"))
    for bad in ("fetch-push", "fetch-push=0", "=10", "fetch-push=x"):
        with pytest.raises(UserError, match="task_total_steps"):
            build_config(dac.Config, dac.PRESETS, None, {"task_total_steps": bad}, "dac")


def test_bc_steps_fit_the_expert_actions_and_skip_absorbing_states():
    torch.manual_seed(0)
    cfg = build_config(dac.Config, dac.PRESETS, "smoke", {"agent": "sac"}, "dac")
    agent = dac.DAC((3,), 2, cfg, torch.device("cpu"))
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, 3)).astype(np.float32)
    act = np.tanh(obs[:, :2] * 0.8).astype(np.float32)
    ab = np.zeros(64, np.float32)
    ab[:8] = 1.0
    act[:8] = 5.0  # an absorbing row's action must not count
    batch = {"obs": obs, "action": act, "absorbing": ab}
    first = agent.bc_step(batch).item()
    for _ in range(400):
        last = agent.bc_step(batch).item()
    assert last < 0.05 < first
    with torch.no_grad():  # the actor target follows the fitted actor
        f = agent.critic.features(torch.as_tensor(obs[8:]), torch.zeros(56))
        np.testing.assert_allclose(agent.actor_target(f).numpy(), agent.actor(f).numpy(), atol=1e-6)


def test_state_only_discriminator_and_bc_term_in_a_run(demo_root, tmp_path):
    p = execute(algo="dac", task="pointmaze-umaze", n_demos=3, seed=0, out=tmp_path / "run",
                preset="smoke", overrides={"disc_input": "s", "bc_weight": "1", "bc_init_steps": "20",
                                           "n_step": "3"}, show_progress=False)
    df = _check_metrics(p, 2)
    assert np.isfinite(df["bc_loss"]).all()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["algo_state"]
    first = state["agent"]["disc"]["net.0.weight"]
    assert first.shape[1] == 6 + 1  # the 6-d state and the absorbing flag, no action


def test_demo_rows_join_the_batch_but_not_the_discriminator_negatives():
    rng = np.random.default_rng(1)

    def rows(n, seq=False):
        b = {"obs": rng.normal(size=(n, 3)).astype(np.float32),
             "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
             "next_obs": rng.normal(size=(n, 3)).astype(np.float32),
             "done": np.zeros(n, np.float32), "absorbing": np.zeros(n, np.float32),
             "next_absorbing": np.zeros(n, np.float32)}
        if seq:
            b["last"] = np.zeros(n, np.float32)
            b["seq_valid"] = np.ones((n, 2), np.float32)
        return b

    head, demos = rows(8, seq=True), rows(5)
    mixed = dac.with_demo_rows(head, demos, np.array([4, 0, 2]))
    assert len(mixed["obs"]) == 11
    np.testing.assert_array_equal(mixed["obs"][8:], demos["obs"][[4, 0, 2]])
    np.testing.assert_array_equal(mixed["last"][8:], 1.0)
    np.testing.assert_array_equal(mixed["seq_valid"][8:], 0.0)  # one-step rows
    np.testing.assert_array_equal(mixed["seq_valid"][:8], 1.0)

    # The discriminator's update sees only the first n_policy rows: the same update with
    # different tails leaves it with the same weights.
    expert = {"obs": rng.normal(size=(8, 3)).astype(np.float32),
              "action": rng.uniform(-1, 1, (8, 2)).astype(np.float32),
              "absorbing": np.zeros(8, np.float32), "weight": np.ones(8, np.float32)}
    plain = {k: v for k, v in head.items() if not k.startswith("seq_") and k != "last"}
    tails = [dac.with_demo_rows(plain, demos, np.array([0, 1, 2])),
             dac.with_demo_rows(plain, demos, np.array([3, 4, 4]))]
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
             "done": np.zeros(n, np.float32), "absorbing": np.zeros(n, np.float32),
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
