"""CMIL: the conservative reward, the agent's save/load, and short runs through the harness."""

from __future__ import annotations

import copy
import io

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms import cmil
from algorithms.cmil import Agent, conservative_reward
from algorithms.latent_agent import LatentAgent
from cmil_bench.config import build_config
from cmil_bench.errors import UserError

torch.set_num_threads(1)


def agent_cfg(**over):
    base = {"deter": 24, "stoch": 6, "hidden": 20, "ensemble_size": 5, "mlp_layers": "16,16",
            "actor_layers": "16,16", "critic_layers": "16,16", "disc_hidden": "16",
            "horizon": 4, "batch_size": 3, "expert_batch_size": 3, "seq_len": 6}
    base.update({k: str(v) for k, v in over.items()})
    return build_config(cmil.Config, cmil.PRESETS, None, base, "cmil")


def seq_batch(rng, b=3, t=6, obs_dim=5, act_dim=2):
    first = np.zeros((b, t), bool)
    first[:, 0] = True
    act = rng.uniform(-1, 1, size=(b, t, act_dim)).astype(np.float32)
    act[:, 0] = 0
    return {"obs": rng.normal(size=(b, t, obs_dim)).astype(np.float32), "action": act, "is_first": first}


def test_penalty_sign_and_zero_weight_is_exact():
    d = torch.tensor([0.2, 0.5, 0.9])
    low, high = torch.tensor([0.01, 0.01, 0.01]), torch.tensor([0.3, 0.3, 0.3])
    r_low, r_high = conservative_reward(d, low, 10.0), conservative_reward(d, high, 10.0)
    assert (r_high < r_low).all() and (r_low < d).all()  # more disagreement -> lower reward
    assert torch.allclose(r_low, d - 0.1)
    assert torch.equal(conservative_reward(d, high, 0.0), d)
    # even a non-finite disagreement cannot leak into the unpenalised reward
    assert torch.equal(conservative_reward(d, torch.full((3,), float("inf")), 0.0), d)


@pytest.mark.parametrize("w", [0.0, 10.0])
def test_update_uses_the_conservative_reward(w):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    agent = Agent((5,), 2, agent_cfg(penalty_weight=w))
    m = agent.train_step(seq_batch(rng), seq_batch(rng))
    for k, v in m.items():
        assert torch.isfinite(torch.as_tensor(v)).all(), k
    assert m["disagreement_policy"] > 0 and m["disagreement_demo"] > 0
    if w == 0:
        assert m["reward_mean"] == m["disc_prob_policy"]
        assert m["penalty_mean"] == 0
    else:
        assert m["penalty_mean"] > 0
        assert torch.allclose(m["reward_mean"], m["disc_prob_policy"] - m["penalty_mean"], atol=1e-5)
        assert m["reward_mean"] < m["disc_prob_policy"]


def test_cmil_terms_enter_the_shared_agent_only_through_its_hooks():
    """With w = 0 and no BC term, CMIL's agent takes exactly the shared latent agent's update
    (V-MAIL's); with w > 0 the same draws give a lower reward and different actor weights."""
    rng = np.random.default_rng(2)
    b, e = seq_batch(rng), seq_batch(rng)

    def one_step(cls, **over):
        torch.manual_seed(0)
        agent = cls((5,), 2, agent_cfg(**over))
        torch.manual_seed(1)
        return agent, agent.train_step(b, e)

    shared, m_shared = one_step(LatentAgent)
    plain, m_plain = one_step(Agent, penalty_weight=0, bc_weight=0)
    for k in m_shared:
        assert torch.equal(torch.as_tensor(m_shared[k]), torch.as_tensor(m_plain[k])), k
    for x, y in zip(shared.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(x, y)
    cons, m_cons = one_step(Agent, penalty_weight=10, bc_weight=0)
    assert m_cons["reward_mean"] < m_shared["reward_mean"] and m_cons["penalty_mean"] > 0
    assert torch.allclose(m_cons["reward_mean"], m_cons["disc_prob_policy"] - m_cons["penalty_mean"],
                          atol=1e-5)
    assert not torch.equal(cons.ac.actor.net[0].weight, shared.ac.actor.net[0].weight)
    bc, _ = one_step(Agent, penalty_weight=0, bc_weight=10)
    assert not torch.equal(bc.ac.actor.net[0].weight, shared.ac.actor.net[0].weight)


def test_more_disagreement_lowers_the_imagined_reward():
    """Same agent, same random draws: spreading the heads apart raises u and lowers the reward."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    b, e = seq_batch(rng), seq_batch(rng)
    agent = Agent((5,), 2, agent_cfg(penalty_weight=10.0, horizon=2))
    state = copy.deepcopy(agent.full_state())
    prior = agent.wm.rssm.prior
    with torch.no_grad():
        for p in prior.parameters():
            p[:] = p[0:1].clone()  # all heads equal: u = 0
    torch.manual_seed(5)
    m_same = agent.train_step(b, e)
    agent.load_full_state(state)
    with torch.no_grad():
        for p in prior.parameters():
            p[1:] = p[0:1] + 3.0 * (p[1:] - p[0:1])  # heads far apart
    torch.manual_seed(5)
    m_spread = agent.train_step(b, e)
    assert m_same["disagreement_policy"] < 1e-4
    assert m_spread["disagreement_policy"] > 0.1
    assert m_spread["reward_mean"] < m_same["reward_mean"] - 1.0


def test_agent_save_load_roundtrip():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    batches = [(seq_batch(rng), seq_batch(rng)) for _ in range(3)]
    a = Agent((5,), 2, agent_cfg())
    a.train_step(*batches[0])
    buf = io.BytesIO()
    torch.save(a.full_state(), buf)
    torch.manual_seed(123)
    b = Agent((5,), 2, agent_cfg())  # different initial weights
    buf.seek(0)
    b.load_full_state(torch.load(buf, weights_only=False))
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    obs = rng.normal(size=(4, 5)).astype(np.float32)
    torch.manual_seed(7)
    act_a = a.policy("eval")(obs)
    torch.manual_seed(7)
    act_b = b.policy("eval")(obs)
    assert np.array_equal(act_a, act_b)
    # the optimisers came along: further updates stay identical
    for batch, expert in batches[1:]:
        torch.manual_seed(9)
        ma = a.train_step(batch, expert)
        torch.manual_seed(9)
        mb = b.train_step(batch, expert)
        for k in ma:
            assert torch.equal(torch.as_tensor(ma[k]), torch.as_tensor(mb[k])), k
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def test_frozen_bc_init_fits_the_actor_on_whole_episode_latents_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    agent = Agent((5,), 2, agent_cfg())
    episodes = [{k: v[0] for k, v in seq_batch(rng, b=1, t=t).items()} for t in (7, 9)]
    torch.manual_seed(1)
    data = agent.demo_posteriors(episodes)
    # one (latent of o_t, expert a_t) pair per transition, filtered from each episode's first row
    assert data["deter"].shape == (6 + 8, 24) and data["mean"].shape == data["std"].shape == (14, 6)
    assert torch.equal(data["action"], torch.cat([torch.as_tensor(e["action"][1:]) for e in episodes]))
    torch.manual_seed(1)
    obs, act, first = agent.tensors({k: v[None] for k, v in episodes[0].items()})
    post, _ = agent.wm.rssm.observe(agent.wm.embed(obs), act, first)
    assert torch.allclose(data["deter"][:6], post["deter"][0, :-1])
    assert torch.allclose(data["mean"][:6], post["mean"][0, :-1])
    others = {k: v.clone() for k, v in agent.state_dict().items() if not k.startswith("ac.actor.")}
    actor_before = [p.clone() for p in agent.ac.actor.parameters()]
    idx = np.arange(14)
    with torch.no_grad():
        feat = torch.cat([data["mean"], data["deter"]], -1)
        nll_before = -agent.ac.actor(feat).log_prob(data["action"]).mean()
    for _ in range(300):
        m = agent.bc_step_frozen(data, idx)
    with torch.no_grad():
        nll_after = -agent.ac.actor(feat).log_prob(data["action"]).mean()
    assert torch.isfinite(m["bc_loss"]) and nll_after < nll_before - 0.2
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, agent.ac.actor.parameters()))
    for k, v in agent.state_dict().items():  # world model, critics, discriminator untouched
        if k in others:
            assert torch.equal(v, others[k]), k


def test_config_checks():
    with pytest.raises(UserError, match="bc_init_mode"):
        build_config(cmil.Config, cmil.PRESETS, None, {"bc_init_mode": "both"}, "cmil")
    with pytest.raises(UserError, match="bc_init_batch"):
        build_config(cmil.Config, cmil.PRESETS, None, {"bc_init_batch": "0"}, "cmil")
    with pytest.raises(UserError, match="pretrain_wm_steps"):
        build_config(cmil.Config, cmil.PRESETS, None, {"pretrain_wm_steps": "-1"}, "cmil")
    ref = cmil.Config()
    assert ref.pretrain_wm_steps == 0 and ref.bc_init_mode == "joint" and ref.kl_scale == 1.0
    with pytest.raises(UserError, match="seed_policy"):
        build_config(cmil.Config, cmil.PRESETS, None, {"seed_policy": "expert"}, "cmil")
    with pytest.raises(UserError, match="penalty_weight"):
        build_config(cmil.Config, cmil.PRESETS, None, {"penalty_weight": "-1"}, "cmil")
    with pytest.raises(UserError, match="ensemble_size"):
        build_config(cmil.Config, cmil.PRESETS, None, {"ensemble_size": "0"}, "cmil")
    cfg = build_config(cmil.Config, cmil.PRESETS, "cpu", {"penalty_weight": "0"}, "cmil")
    assert cfg.penalty_weight == 0 and cfg.ensemble_size == 5


# ------------------------------------------------------------------------------ harness runs
def run_smoke(algo, task, out, monkeypatch, root, **over):
    from cmil_bench.run import execute

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    monkeypatch.setenv("MUJOCO_GL", "egl")
    overrides = {"eval_episodes": "1", **{k: str(v) for k, v in over.items()}}
    path = execute(algo=algo, task=task, n_demos=2, seed=0, out=out, preset="smoke",
                   overrides=overrides, show_progress=False)
    return pd.read_csv(path)


LOGGED = ["wm_loss", "disc_acc", "disagreement_policy", "disagreement_demo", "penalty_mean",
          "actor_loss", "critic_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["fetch-push", "fetch-push-pixels"])
def test_cmil_smoke_run(task, tmp_path, monkeypatch, fetch_demos):
    df = run_smoke("cmil", task, tmp_path / "run", monkeypatch, fetch_demos)
    # the offline phase ends with an evaluation at 0 env steps after pretrain + BC init updates
    assert df["env_steps"].iloc[0] == 0 and df["grad_steps"].iloc[0] == 3 + 3
    assert df["env_steps"].iloc[-1] >= 120 and len(df) >= 3
    assert df["grad_steps"].is_monotonic_increasing and df["grad_steps"].iloc[-1] > 6
    for col in LOGGED:
        assert col in df.columns and np.isfinite(df[col]).all(), col
    assert (df["disagreement_policy"] > 0).all() and (df["penalty_mean"] > 0).all()
    assert (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_cmil_world_model_pretraining_and_frozen_bc_init_run(tmp_path, monkeypatch, fetch_demos):
    df = run_smoke("cmil", "fetch-push", tmp_path / "run", monkeypatch, fetch_demos,
                   pretrain_wm_steps=4, bc_init_mode="frozen", bc_init_steps=5, bc_init_batch=8)
    # offline: 4 world-model steps, 3 full updates, 5 frozen BC steps, then the first evaluation
    assert df["env_steps"].iloc[0] == 0 and df["grad_steps"].iloc[0] == 4 + 3 + 5
    assert df["env_steps"].iloc[-1] >= 120 and df["grad_steps"].is_monotonic_increasing
    for col in LOGGED:
        assert np.isfinite(df[col]).all(), col


@pytest.mark.slow
def test_cmil_resume_gives_the_same_metrics(tmp_path, monkeypatch, fetch_demos):
    """Killed right after its second checkpoint and restarted, a run ends with the same metrics."""
    from cmil_bench import run as run_mod

    full = run_smoke("cmil", "fetch-push", tmp_path / "a", monkeypatch, fetch_demos)
    original = run_mod.Run.checkpoint
    calls = {"n": 0}

    class Killed(Exception):
        pass

    def dying_checkpoint(self, state):
        original(self, state)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed

    monkeypatch.setattr(run_mod.Run, "checkpoint", dying_checkpoint)
    with pytest.raises(Killed):
        run_smoke("cmil", "fetch-push", tmp_path / "b", monkeypatch, fetch_demos)
    monkeypatch.setattr(run_mod.Run, "checkpoint", original)
    assert not (tmp_path / "b" / "metrics.csv").exists()
    resumed = run_smoke("cmil", "fetch-push", tmp_path / "b", monkeypatch, fetch_demos)
    cols = [c for c in full.columns if c != "wall_s"]
    pd.testing.assert_frame_equal(full[cols], resumed[cols])
    # the checkpoint carries the evaluation clock and the (empty, just read out) interval means
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["algo_state"]
    assert state["clock"]["next_eval"] > resumed["env_steps"].iloc[-1]
    assert state["losses"] == {"sums": {}, "counts": {}}
