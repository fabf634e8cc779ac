"""V-MAIL as its DeepMind Control reference runs it: settings, the actor's target (lambda = 1, no
bootstrap), the penalty on the discriminator's parameter gradient, the tanh-squashed actor, the
Dreamer v1 schedule (random prefill, 100 updates at the first policy step), and short runs
through the harness from states and from pixels."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from algorithms import cmil, vmail
from algorithms.discriminator import Discriminator, gradient_penalty, parameter_gradient_penalty
from algorithms.latent_agent import LatentConfig
from cmil_bench import cli
from cmil_bench.config import build_config
from cmil_bench.errors import UserError
from helpers import run_argv

torch.set_num_threads(1)

OBS, ACT = 5, 2


def smoke_cfg(**sets):
    return build_config(vmail.Config, vmail.PRESETS, "smoke", {k: str(v) for k, v in sets.items()}, "vmail")


def fake_batch(rng, b=4, t=8):
    first = np.zeros((b, t), bool)
    first[:, 0] = True
    return {"obs": rng.normal(size=(b, t, OBS)).astype(np.float32),
            "action": rng.uniform(-1, 1, size=(b, t, ACT)).astype(np.float32), "is_first": first}


def hand_returns(reward: np.ndarray, discount: float) -> np.ndarray:
    """R_t = sum_{k=t}^{H-2} discount^(k-t) reward_k, written as the double loop it is."""
    h = reward.shape[0]
    out = np.zeros((h - 1, *reward.shape[1:]))
    for t in range(h - 1):
        for k in range(t, h - 1):
            out[t] += discount ** (k - t) * reward[k]
    return out


# ------------------------------------------------------------------------------ settings
def test_defaults_are_the_dm_control_reference():
    cfg = build_config(vmail.Config, vmail.PRESETS, None, {}, "vmail")
    assert (cfg.deter, cfg.stoch, cfg.hidden, cfg.ensemble_size) == (200, 30, 200, 1)
    assert cfg.gru == "plain" and cfg.cnn_activation == "relu" and cfg.activation == "elu"
    assert cfg.free_nats == 3.0 and cfg.kl_balance == 0.5 and cfg.kl_scale == 1.0
    assert cfg.model_lr == 6e-4 and cfg.actor_lr == cfg.critic_lr == cfg.disc_lr == 8e-5
    assert cfg.actor_layers == (400,) * 4 and cfg.critic_layers == (400,) * 3
    assert cfg.disc_hidden == (400, 400) and cfg.disc_noise == 0 and cfg.gp_weight == 1.0
    assert cfg.actor_init_std == 5.0 and cfg.actor_min_std == 1e-4 and cfg.actor_ent == 0
    assert cfg.lam == 1.0 and cfg.horizon == 15 and cfg.discount == 0.99 and cfg.expl_noise == 0.3
    assert (cfg.seed_steps, cfg.seed_policy, cfg.pretrain_steps) == (1000, "random", 100)
    assert (cfg.train_every, cfg.updates_per_train) == (1000, 200)
    assert (cfg.batch_size, cfg.expert_batch_size, cfg.seq_len) == (128, 128, 50)
    assert cfg.adam_eps == 1e-7 and cfg.grad_clip == 100 and cfg.weight_decay == 0
    for preset in ("cpu", "smoke"):
        c = build_config(vmail.Config, vmail.PRESETS, preset, {}, "vmail")
        assert c.ensemble_size == 1 and c.seed_policy == "random" and c.gru == "plain"


def test_knobs_of_cmils_actor_critic_are_refused():
    with pytest.raises(UserError, match="eval_mode"):
        build_config(vmail.Config, vmail.PRESETS, None, {"eval_mode": "median"}, "vmail")
    for key, value in (("value_mix", "0.05"), ("actor_ent", "1e-4"), ("critic_real_data", "true"),
                       ("target_update_every", "10")):
        with pytest.raises(UserError, match=f"vmail: {key} has no effect"):
            build_config(vmail.Config, vmail.PRESETS, None, {key: value}, "vmail")
    with pytest.raises(UserError, match="gru"):
        build_config(vmail.Config, vmail.PRESETS, None, {"gru": "lstm"}, "vmail")
    with pytest.raises(UserError, match="cnn_activation"):
        build_config(vmail.Config, vmail.PRESETS, None, {"cnn_activation": "gelu"}, "vmail")


def test_vmail_and_cmil_configs_are_siblings_on_the_latent_config():
    """Both extend the shared LatentConfig; V-MAIL has no CMIL-only key, and neither module
    imports the other."""
    assert issubclass(vmail.Config, LatentConfig) and issubclass(cmil.Config, LatentConfig)
    assert not issubclass(vmail.Config, cmil.Config) and not issubclass(cmil.Config, vmail.Config)
    shared = set(LatentConfig.__dataclass_fields__)
    assert set(vmail.Config.__dataclass_fields__) - shared == {
        "seed_steps_include_demos", "pretrain_steps", "actor_init_std", "actor_mean_scale",
        "mode_samples"}
    assert set(cmil.Config.__dataclass_fields__) - shared == {
        "pretrain_wm_steps", "pretrain_steps", "bc_init_steps", "bc_init_mode", "bc_init_lr", "bc_init_batch",
        "penalty_weight", "bc_weight"}
    with pytest.raises(UserError, match="penalty_weight"):
        build_config(vmail.Config, vmail.PRESETS, "cpu", {"penalty_weight": "1"}, "vmail")
    for mod in (vmail, cmil):
        tree = ast.parse(Path(mod.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not imported & {"algorithms.cmil", "algorithms.vmail"}, mod.__name__
        assert not names & {"cmil", "vmail"}, mod.__name__
    for old in ("env_steps", "disc_gp", "replay_capacity", "opt_eps", "act", "disc_act"):
        with pytest.raises(UserError, match=old):
            build_config(vmail.Config, vmail.PRESETS, None, {old: "1"}, "vmail")


def test_plain_gru_and_relu_cnn():
    cfg = smoke_cfg()
    agent = vmail.Agent((64, 64, 3), ACT, cfg)
    cell = agent.wm.rssm.cell
    assert type(cell) is nn.GRUCell  # no layer norm, no update bias
    assert not any(isinstance(m, nn.LayerNorm) for m in agent.modules())
    assert (cell.bias_ih == 0).all() and (cell.bias_hh == 0).all()
    w = cell.weight_hh.detach()  # Keras: orthogonal recurrent kernel
    assert torch.allclose(w.T @ w, torch.eye(w.shape[1]), atol=1e-5)
    for part in (agent.wm.encoder, agent.wm.decoder):
        acts = {type(m) for m in part.modules() if isinstance(m, (nn.ReLU, nn.ELU))}
        assert acts == {nn.ReLU}, part
    assert isinstance(agent.wm.rssm.act, nn.ELU)
    # CMIL keeps DreamerV2's layer-normed cell and ELU convolutions
    c = build_config(cmil.Config, cmil.PRESETS, "smoke", {}, "cmil")
    assert c.gru == "norm" and c.cnn_activation == "elu"


# --------------------------------------------------------------------- the actor's target
def test_returns_are_the_discounted_sum_of_D_with_no_bootstrap():
    rng = np.random.default_rng(0)
    h, n, g = 6, 3, 0.9
    reward = rng.uniform(size=(h, n))
    got = vmail.returns(torch.as_tensor(reward), None, g, 1.0).numpy()
    np.testing.assert_allclose(got, hand_returns(reward, g), rtol=1e-12)
    # lambda = 1: the values are not read, whatever they are
    value = torch.as_tensor(rng.normal(size=(h - 1, n)) * 100)
    np.testing.assert_allclose(vmail.returns(torch.as_tensor(reward), value, g, 1.0).numpy(), got)
    # a bootstrapped lambda-return (Dreamer v1's lambda 0.95) would read them
    other = vmail.returns(torch.as_tensor(reward), value, g, 0.95).numpy()
    assert np.abs(other - got).max() > 1.0
    weights = vmail.step_weights(h, g, torch.zeros((), dtype=torch.float64)).numpy()[:, 0]
    np.testing.assert_allclose(weights, g ** np.arange(h - 1))


def test_actor_loss_is_minus_the_weighted_discounted_sum_of_D():
    """In a real update, the actor's loss is -mean_t discount^t R_t of the rewards D that the
    update computed, and the value network does not enter it."""
    cfg = smoke_cfg(horizon=4)
    losses = []
    for value_bias in (0.0, 100.0):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        agent = vmail.Agent((OBS,), ACT, cfg)
        with torch.no_grad():
            agent.value[-1].bias.fill_(value_bias)
        seen = []
        disc = agent.discriminate

        def record(pair, disc=disc, seen=seen):
            out = disc(pair)
            seen.append(out.detach().double().numpy())
            return out

        agent.discriminate = record
        m = agent.train_step(fake_batch(rng), fake_batch(rng))
        reward = seen[0]  # the first call: the imagined pairs' rewards, (H, N)
        assert reward.shape == (cfg.horizon, 4 * 7)
        weight = cfg.discount ** np.arange(cfg.horizon - 1)[:, None]
        expected = -(weight * hand_returns(reward, cfg.discount)).mean()
        assert float(m["actor_loss"]) == pytest.approx(expected, rel=1e-5)
        assert float(m["reward_mean"]) == pytest.approx(reward.mean(), rel=1e-5)
        losses.append(float(m["actor_loss"]))
        # the value network is trained on those returns (its loss reads the bias)
        assert float(m["critic_loss"]) > (0 if value_bias == 0 else 1000)
    assert losses[0] == losses[1]


# ------------------------------------------------------------- the discriminator's penalty
def test_penalty_is_on_the_parameter_gradient():
    torch.manual_seed(0)
    d = Discriminator(4, (8, 8), act="elu")
    x = torch.randn(16, 4)
    # by hand: the global 2-norm of d(mean logit)/d(theta) over every parameter
    grads = torch.autograd.grad(d(x).mean(), list(d.parameters()))
    norm = torch.cat([g.flatten() for g in grads]).norm()
    pen = parameter_gradient_penalty(d, x)
    assert float(pen.detach()) == pytest.approx(float((norm - 1) ** 2), rel=1e-5)
    # it trains theta (double backpropagation)
    pen.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters() if p.dim() == 2)
    # all-zero parameters: the input gradient is 0 (an input penalty is (0 - 1)^2 = 1), the
    # parameter gradient is the output bias's 1 alone (penalty 0)
    z = Discriminator(4, (8, 8), act="elu")
    with torch.no_grad():
        for p in z.parameters():
            p.zero_()
    assert float(parameter_gradient_penalty(z, x).detach()) == pytest.approx(0.0, abs=1e-12)
    assert float(gradient_penalty(z, x[:8], x[8:]).detach()) == pytest.approx(1.0)


def test_update_adds_the_parameter_penalty_with_weight_gp_weight():
    losses = {}
    for w in (0.0, 1.0):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        agent = vmail.Agent((OBS,), ACT, smoke_cfg(gp_weight=w))
        losses[w] = agent.train_step(fake_batch(rng), fake_batch(rng))
    pen = float(losses[1.0]["disc_penalty"])
    assert pen > 0 and float(losses[0.0]["disc_penalty"]) == 0
    assert float(losses[1.0]["disc_loss"]) == pytest.approx(float(losses[0.0]["disc_loss"]) + pen, rel=1e-5)
    # the update's penalty is the parameter-gradient one: 0 for an all-zero discriminator (an
    # input-gradient penalty would be 1 there)
    rng = np.random.default_rng(0)
    agent = vmail.Agent((OBS,), ACT, smoke_cfg())
    with torch.no_grad():
        for p in agent.disc.parameters():
            p.zero_()
    m = agent.train_step(fake_batch(rng), fake_batch(rng))
    assert float(m["disc_penalty"]) == pytest.approx(0, abs=1e-10)


# ------------------------------------------------------------------------------ the actor
def test_actor_is_a_tanh_squashed_gaussian_with_initial_std_5():
    cfg = smoke_cfg()
    torch.manual_seed(0)
    actor = vmail.Actor(10, 3, cfg)
    feat = torch.randn(256, 10)
    # with default weights the std output is near 0, so the std is near init_std
    scale = actor(feat).scale.detach()
    assert 4.5 < float(scale.mean()) < 5.5 and (scale > 3).all() and (scale < 7).all()
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.zero_()
    dist = actor(feat)
    assert torch.allclose(dist.scale, torch.full_like(dist.scale, 5.0 + 1e-4))
    assert (dist.loc == 0).all()
    a = dist.rsample()
    assert a.abs().max() <= 1 and (a.abs() > 0.9).float().mean() > 0.6  # std 5, squashed: mostly near +-1
    # the density is the tanh-transformed Gaussian's
    ref = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(dist.loc, dist.scale), [torch.distributions.TanhTransform()])
    y = torch.tanh(torch.randn(256, 3))
    assert torch.allclose(dist.log_prob(y), ref.log_prob(y).sum(-1), atol=1e-4)
    # the mode is the most likely of the samples, drawn from the given generator
    d = vmail.TanhNormal(torch.randn(5, 3) * 0.3, torch.rand(5, 3) + 0.2)
    g = torch.Generator().manual_seed(3)
    mode = d.mode(50, g)
    samples = d.sample(50, torch.Generator().manual_seed(3))
    best = samples[d.log_prob(samples).argmax(0), torch.arange(5)]
    assert torch.equal(mode, best)


def test_evaluation_policy_is_reproducible_and_training_policy_explores():
    torch.manual_seed(0)
    agent = vmail.Agent((OBS,), ACT, smoke_cfg())
    obs = np.random.default_rng(0).normal(size=(3, OBS)).astype(np.float32)

    def play(policy):
        policy.reset(3)
        return np.stack([policy(obs) for _ in range(4)])

    a, b = play(agent.policy("eval")), play(agent.policy("eval"))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 1
    agent.cfg.eval_mode = "mean"  # posterior mean, tanh of the actor's mean: no draws at all
    m = play(agent.policy("eval"))
    policy = agent.policy("eval")
    policy.reset(3)
    first = policy(obs)
    with torch.no_grad():
        state = agent.wm.rssm.obs_step(agent.wm.rssm.initial(3), torch.zeros(3, ACT),
                                       agent.wm.embed(torch.as_tensor(obs)), sample=False)
        want = torch.tanh(agent.actor(agent.wm.rssm.feat(state)).loc).numpy()
    np.testing.assert_allclose(first, want, rtol=1e-6)
    assert not np.array_equal(m, a)
    agent.cfg.eval_mode = "mode"
    state = torch.get_rng_state()
    t = play(agent.policy("train", expl_noise=0.3))
    assert not torch.equal(state, torch.get_rng_state())  # training draws use the global generator
    assert np.abs(t).max() <= 1 and not np.array_equal(t, a)


# --------------------------------------------------------------------------- the schedule
def test_prefill_counts_the_demos_as_the_reference_does():
    demos = [np.zeros(300), np.zeros(450)]
    for include, seed_steps, want in ((True, 1000, 250), (False, 1000, 1000), (True, 600, 0)):
        cfg = SimpleNamespace(seed_steps=seed_steps, seed_steps_include_demos=include)
        assert vmail.Trainer.prefill_steps(SimpleNamespace(cfg=cfg, run=SimpleNamespace(demos=demos))) == want


def test_first_policy_step_runs_100_updates_after_1000_random_steps(tmp_path, monkeypatch, demo_source):
    """A short run through the harness, with the updates counted (not computed): whole random
    episodes until 1000 env steps, then 100 updates before the first policy action, then
    ``updates_per_train`` every ``train_every`` env steps."""
    events, trainer = [], []

    def online(self, original=vmail.Trainer.online):
        trainer.append(self)
        return original(self)

    def updates_now(self, original=vmail.Trainer.updates_now):
        n = original(self)
        events.append(("act", self.env_steps, n))  # called before every policy action
        return n

    def reset(self, n=1, original=vmail.Policy.reset):
        if self.action == "sample":  # the training policy: at every episode start
            events.append(("episode", trainer[0].env_steps))
        return original(self, n)

    def train_step(self, batch, expert):
        assert len(batch["obs"]) == self.cfg.batch_size and len(expert["obs"]) == self.cfg.expert_batch_size
        return {}

    monkeypatch.setattr(vmail.Trainer, "online", online)
    monkeypatch.setattr(vmail.Trainer, "updates_now", updates_now)
    monkeypatch.setattr(vmail.Policy, "reset", reset)
    monkeypatch.setattr(vmail.Agent, "train_step", train_step)
    sets = {"seed_steps": 1000, "seed_steps_include_demos": "false", "pretrain_steps": 100,
            "train_every": 50, "updates_per_train": 2, "total_steps": 1400, "eval_every": 1400}
    out = tmp_path / "run"
    assert cli.main(run_argv(out, demo_source, algo="vmail", sets=sets)) == 0
    acts = [e for e in events if e[0] == "act"]
    first = events.index(acts[0])
    _, first_step, first_n = acts[0]
    assert first_n == 100 and first_step >= 1000  # no policy action before 1000 env steps
    # whole random episodes before it: the first action is an episode's first
    starts = [e[1] for e in events[:first] if e[0] == "episode"]
    assert starts[-1] == first_step and len(starts) >= 2 and starts[-2] < 1000
    later = [(s, n) for _, s, n in acts[1:] if n]
    assert later and [s - first_step for s, _ in later] == [50 * (i + 1) for i in range(len(later))]
    assert all(n == 2 for _, n in later)
    df = pd.read_csv(out / "metrics.csv")
    assert df["grad_steps"].iloc[-1] == 100 + 2 * len(later)


# ------------------------------------------------------------------------- harness runs
@pytest.mark.slow
@pytest.mark.parametrize("task", ["fetch-push", "fetch-push-pixels"])
def test_vmail_smoke_run(task, tmp_path, monkeypatch, fetch_demos):
    from cmil_bench.run import execute

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(fetch_demos))
    monkeypatch.setenv("MUJOCO_GL", "egl")
    path = execute(algo="vmail", task=task, n_demos=2, seed=0, out=tmp_path / "run", preset="smoke",
                   overrides={"eval_episodes": "1", "train_every": "20", "updates_per_train": "2"},
                   show_progress=False)
    df = pd.read_csv(path)
    # no offline phase: the first evaluation comes after the first eval_every env steps
    assert df["env_steps"].iloc[0] >= 60 and df["env_steps"].iloc[-1] >= 120
    assert df["grad_steps"].iloc[-1] >= 100  # the first policy step's updates
    for col in ("wm_loss", "disc_acc", "actor_loss", "critic_loss", "reward_mean"):
        assert np.isfinite(df[col].iloc[-1]), col
    assert math.isfinite(df["norm_score"].iloc[-1])
