"""CMIL: the conservative reward, the reference's details (a world model on the replay alone, the
imagined reward on the noisy inputs, the BC start's own SGD, Keras initialisation, evaluation that
samples), the agent's save/load, and short runs through the harness."""

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


# ------------------------------------------------------------- the reference's details (issue 17)
def test_world_model_gets_no_gradient_from_the_expert_batch():
    """The model steps on the replay batch alone: with another expert batch the same draws give
    the same world model, which is the model that a step on the replay batch alone gives; the
    expert batch still reaches the discriminator."""
    rng = np.random.default_rng(3)
    b, e = seq_batch(rng), seq_batch(rng)
    e_other = {**e, "obs": e["obs"] + 5.0, "action": -e["action"]}
    torch.manual_seed(0)
    agent = Agent((5,), 2, agent_cfg())
    start = copy.deepcopy(agent.full_state())

    def after(step):
        agent.load_full_state(copy.deepcopy(start))
        torch.manual_seed(1)
        step()
        return {k: v.clone() for k, v in agent.state_dict().items()}

    grads = []
    hooks = [p.register_hook(lambda g: grads.append(g)) for p in agent.wm.parameters()]
    agent.load_full_state(copy.deepcopy(start))
    agent.wm.filter(*agent.tensors(e))  # how train_step reads the expert batch
    assert grads == []
    for h in hooks:
        h.remove()
    one = after(lambda: agent.train_step(b, e))
    other = after(lambda: agent.train_step(b, e_other))
    alone = after(lambda: agent.wm.update(*agent.tensors(b)))
    wm_keys = [k for k in one if k.startswith("wm.")]
    assert wm_keys and any(not torch.equal(one[k], start["modules"][k]) for k in wm_keys)
    for k in wm_keys:
        assert torch.equal(one[k], other[k]), k
        assert torch.equal(one[k], alone[k]), k
    assert any(not torch.equal(one[k], other[k]) for k in one if k.startswith("ac.disc."))


@pytest.mark.parametrize("w", [0.0, 10.0])
def test_imagined_reward_is_d_on_the_noisy_inputs_it_trains_on(w, monkeypatch):
    """One noise draw per update: the imagined reward is D on exactly the noisy pairs that the
    discriminator then takes as negatives, minus w * u; the clean pairs would give another D."""
    import algorithms.latent_agent as la

    rng = np.random.default_rng(4)
    b, e = seq_batch(rng), seq_batch(rng)
    torch.manual_seed(0)
    agent = Agent((5,), 2, agent_cfg(penalty_weight=w, horizon=3))
    seen = {}
    draws = []
    disc_inputs, imagined_reward, bce = agent.disc_inputs, agent.imagined_reward, la.bce_loss

    def record_draw(x):
        out = disc_inputs(x)
        draws.append((x.detach(), out.detach()))
        return out

    def record_reward(d_prob, u):
        r = imagined_reward(d_prob, u)
        seen.update(d=d_prob.detach(), u=u.detach(), r=r.detach())
        return r

    def record_bce(disc, pos, neg):
        with torch.no_grad():  # the discriminator as the reward saw it (it steps after this)
            seen.update(neg=neg.clone(), d_neg=torch.sigmoid(disc.net(neg).squeeze(-1)))
        return bce(disc, pos, neg)

    monkeypatch.setattr(agent, "disc_inputs", record_draw)
    monkeypatch.setattr(agent, "imagined_reward", record_reward)
    monkeypatch.setattr(la, "bce_loss", record_bce)
    torch.manual_seed(1)
    agent.train_step(b, e)
    clean, noisy = draws[0]  # the imagined pairs, drawn once (the positives get their own draw)
    n_pairs = clean.shape[0] * clean.shape[1]
    assert len(draws) == 2 and clean.shape[0] == 3 and seen["neg"].shape[0] == n_pairs
    assert 2.2 < (noisy - clean).std().item() < 2.8  # disc_noise = 2.5
    torch.testing.assert_close(seen["neg"], noisy.reshape(n_pairs, -1), rtol=0, atol=0)
    d_noisy = seen["d_neg"].reshape(seen["d"].shape)
    torch.testing.assert_close(seen["d"], d_noisy, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(seen["r"], d_noisy - w * seen["u"], rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        d_clean = agent.discriminate(clean)
    assert not torch.allclose(d_clean, seen["d"], atol=1e-3)


def test_bc_start_steps_its_own_sgd_and_leaves_the_actors_adam_alone():
    """The joint BC step (the default): a world-model step on the expert batch, then the actor
    moves by exactly -2e-4 x the gradient of its NLL; the actor's Adam state stays as it was."""
    cfg = agent_cfg()
    assert cfg.bc_init_mode == "joint" and cfg.bc_init_lr == 2e-4
    rng = np.random.default_rng(5)
    torch.manual_seed(0)
    agent = Agent((5,), 2, cfg)
    agent.train_step(seq_batch(rng), seq_batch(rng))  # the actor's Adam has moments now
    adam = copy.deepcopy(agent.ac.actor_opt.state_dict())
    assert int(adam["steps"][0]) == 1
    expert = seq_batch(rng)
    start = copy.deepcopy(agent.full_state())
    torch.manual_seed(2)  # expected: the same world-model step, then plain SGD by hand
    post, _ = agent.wm.update(*agent.tensors(expert))
    params = list(agent.ac.actor.parameters())
    nll = agent.bc_loss(agent.wm.rssm.feat(post), agent.tensors(expert)[1])
    grads = torch.autograd.grad(nll, params)
    expected = [(p - 2e-4 * g).detach() for p, g in zip(params, grads)]
    wm_expected = {k: v.clone() for k, v in agent.wm.state_dict().items()}
    agent.load_full_state(start)
    others = {k: v.clone() for k, v in agent.state_dict().items() if k.startswith(("ac.critic", "ac.disc"))}
    actor_start = [p.detach().clone() for p in agent.ac.actor.parameters()]
    torch.manual_seed(2)
    m = agent.bc_step(expert)
    assert torch.allclose(m["bc_loss"], nll.detach())
    for p, q in zip(agent.ac.actor.parameters(), expected):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-7)
    assert any(not torch.equal(p.detach(), q) for p, q in zip(agent.ac.actor.parameters(), actor_start))
    for k, v in agent.wm.state_dict().items():
        assert torch.equal(v, wm_expected[k]), k
    after = agent.ac.actor_opt.state_dict()
    for key in ("exp_avg", "exp_avg_sq", "steps"):
        assert all(torch.equal(x, y) for x, y in zip(after[key], adam[key])), key
    for k, v in others.items():
        assert torch.equal(agent.state_dict()[k], v), k


def test_layers_start_as_keras_starts_them():
    """glorot-uniform weights (bounds from the Keras layer's fans, also where one Keras layer is
    split in two here) and zero biases; the target critics start as copies; "torch" keeps
    PyTorch's defaults. The glorot start puts the ensemble further apart (a larger u)."""
    import math

    torch.manual_seed(0)
    agent = Agent((5,), 2, agent_cfg())
    rssm, cfg = agent.wm.rssm, agent.cfg

    def within(w, fan_in, fan_out):
        bound = math.sqrt(6 / (fan_in + fan_out))
        return w.abs().max().item() <= bound and w.abs().max().item() > 0.8 * bound

    assert within(rssm.img_a.weight, cfg.stoch + 2, cfg.hidden)  # Dense(concat(z, a)) in the reference
    assert within(rssm.obs_e.weight, cfg.deter + 16, cfg.hidden)  # Dense(concat(h, embed))
    assert within(rssm.cell.layer.weight, cfg.hidden + cfg.deter, 3 * cfg.deter)
    assert within(rssm.prior.inp.weight, cfg.deter, cfg.hidden)  # one member's fans
    assert within(agent.ac.actor.net[-1].weight, 16, 2)  # two dense heads of act_dim each
    assert within(agent.ac.disc.net[0].weight, rssm.feat_dim + 2, 16)
    for name, p in agent.named_parameters():
        if name.endswith("bias") and "norm" not in name:
            assert torch.equal(p, torch.zeros_like(p)), name
    for x, y in zip(agent.ac.critic.parameters(), agent.ac.target_critic.parameters()):
        assert torch.equal(x, y)
    torch.manual_seed(0)
    plain = Agent((5,), 2, agent_cfg(weight_init="torch"))
    assert plain.wm.rssm.obs_e.bias.abs().sum() > 0
    assert agent.wm.opt.weight_decay == agent.ac.actor_opt.weight_decay == 1e-6
    h = torch.randn(64, cfg.deter).tanh()
    with torch.no_grad():
        assert agent.wm.disagreement(h).mean() > 1.5 * plain.wm.disagreement(h).mean()


@pytest.mark.parametrize("mode", ["sample", "mean"])
def test_evaluation_acts_as_training_does_unless_told_to_take_means(mode):
    rng = np.random.default_rng(6)
    torch.manual_seed(0)
    agent = Agent((5,), 2, agent_cfg(eval_mode=mode))
    obs = [rng.normal(size=(4, 5)).astype(np.float32) for _ in range(3)]
    torch.manual_seed(11)
    before = torch.get_rng_state()
    runs = []
    for _ in range(2):
        policy = agent.policy("eval", episode_len=10)
        runs.append(np.stack([policy(o) for o in obs]))
    assert torch.equal(torch.get_rng_state(), before)  # its own generator, not torch's
    assert np.array_equal(runs[0], runs[1])  # every evaluation draws the same noise
    with torch.no_grad():  # the means: posterior mean, then the actor's mean
        state = agent.wm.rssm.initial(4)
        prev = torch.zeros(4, 2)
        means = []
        for o in obs:
            state = agent.wm.rssm.obs_step(state, prev, agent.wm.embed(torch.as_tensor(o)), sample=False)
            prev = agent.ac.actor(agent.wm.rssm.feat(state)).mode
            means.append(prev.numpy())
    if mode == "mean":
        np.testing.assert_allclose(runs[0], np.stack(means), atol=1e-6)
    else:
        assert np.abs(runs[0] - np.stack(means)).max() > 1e-2
        train = agent.policy("train")  # training draws from torch's generator
        torch.manual_seed(3)
        a = train(obs[0])
        assert not torch.equal(torch.get_rng_state(), before)
        assert not np.array_equal(a, runs[0][0])


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
    for key, bad in (("bc_init_lr", "0"), ("eval_mode", "mode"), ("weight_init", "he"),
                     ("weight_decay", "1.5")):
        with pytest.raises(UserError, match=key):
            build_config(cmil.Config, cmil.PRESETS, None, {key: bad}, "cmil")
    with pytest.raises(UserError, match="pretrain_wm_steps"):
        build_config(cmil.Config, cmil.PRESETS, None, {"pretrain_wm_steps": "-1"}, "cmil")
    ref = cmil.Config()
    assert ref.pretrain_wm_steps == 0 and ref.bc_init_mode == "joint" and ref.kl_scale == 1.0
    assert ref.bc_init_lr == 2e-4 and ref.eval_mode == "sample" and ref.weight_init == "glorot"
    assert ref.weight_decay == 1e-6 and ref.disc_noise == 2.5 and ref.disc_lr == 3e-4
    with pytest.raises(UserError, match="seed_policy"):
        build_config(cmil.Config, cmil.PRESETS, None, {"seed_policy": "expert"}, "cmil")
    with pytest.raises(UserError, match="penalty_weight"):
        build_config(cmil.Config, cmil.PRESETS, None, {"penalty_weight": "-1"}, "cmil")
    with pytest.raises(UserError, match="ensemble_size"):
        build_config(cmil.Config, cmil.PRESETS, None, {"ensemble_size": "0"}, "cmil")
    cfg = build_config(cmil.Config, cmil.PRESETS, "cpu", {"penalty_weight": "0"}, "cmil")
    assert cfg.penalty_weight == 0 and cfg.ensemble_size == 10  # reference ensemble


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
    # a short offline phase (the smoke preset keeps the reference's 1000 + 100 updates: scale only)
    df = run_smoke("cmil", task, tmp_path / "run", monkeypatch, fetch_demos, pretrain_steps=3,
                   bc_init_steps=3)
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
                   pretrain_wm_steps=4, pretrain_steps=3, bc_init_mode="frozen", bc_init_steps=5,
                   bc_init_batch=8)
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
