"""The latent world model, its ensemble disagreement, the sequence replay and the actor's parts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.latent_agent import LatentConfig, TruncNormal, lambda_return
from algorithms.sequence_replay import SequenceReplay
from algorithms.world_model import WorldModel, gaussian_kl
from cmil_bench.config import build_config
from cmil_bench.errors import UserError

torch.set_num_threads(1)


def small_cfg(**over):
    base = {"deter": 24, "stoch": 6, "hidden": 20, "ensemble_size": 4, "mlp_layers": "16,16",
            "cnn_depth": 4}
    base.update({k: str(v) for k, v in over.items()})
    return build_config(LatentConfig, {}, None, base, "latent")


def fake_batch(b, t, obs_shape, act_dim, seed=0):
    rng = np.random.default_rng(seed)
    if len(obs_shape) == 3:
        obs = torch.as_tensor(rng.integers(0, 256, size=(b, t, *obs_shape), dtype=np.uint8))
    else:
        obs = torch.as_tensor(rng.normal(size=(b, t, *obs_shape)).astype(np.float32))
    act = torch.as_tensor(rng.uniform(-1, 1, size=(b, t, act_dim)).astype(np.float32))
    first = torch.zeros(b, t, dtype=torch.bool)
    first[:, 0] = True
    return obs, act, first


@pytest.mark.parametrize("obs_shape", [(7,), (64, 64, 3)])
def test_world_model_shapes_and_loss(obs_shape):
    torch.manual_seed(0)
    cfg = small_cfg()
    wm = WorldModel(obs_shape, 3, cfg)
    obs, act, first = fake_batch(2, 5, obs_shape, 3)
    post, prior = wm.rssm.observe(wm.embed(obs), act, first)
    assert post["deter"].shape == (2, 5, 24)
    for k in ("stoch", "mean", "std"):
        assert post[k].shape == (2, 5, 6)
    assert prior["mean"].shape == prior["std"].shape == (2, 5, 6)
    assert prior["heads"].shape == (5,) and int(prior["heads"].max()) < 4
    assert (post["std"] > 0).all() and (prior["std"] >= cfg.min_std).all()
    feat = wm.rssm.feat(post)
    assert feat.shape == (2, 5, wm.feat_dim) == (2, 5, 30)
    recon = wm.decoder(feat)
    assert recon.shape == ((2, 5, 3, 64, 64) if len(obs_shape) == 3 else (2, 5, 7))
    loss, post2, metrics = wm.loss(obs, act, first)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert metrics["kl"] >= 0
    # one update changes the parameters and returns detached posteriors
    before = [p.detach().clone() for p in wm.parameters()]
    post3, _ = wm.update(obs, act, first)
    assert not post3["deter"].requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(before, wm.parameters()))


def test_states_go_through_the_shared_standardiser():
    """The world model's input and target: the demos' statistics with the common std floor and
    clip (algorithms/obs_norm.py), then symlog."""
    from algorithms.obs_norm import CLIP, STD_FLOOR

    mean, std = np.array([1.0, -2.0, 0.0], np.float32), np.array([2.0, 0.5, 1e-4], np.float32)
    wm = WorldModel((3,), 2, small_cfg(), mean, std)
    obs = torch.tensor([[3.0, -1.5, 0.0], [1.0, 100.0, 1.0]])
    z = torch.tensor([[1.0, 1.0, 0.0], [0.0, CLIP, CLIP]])  # 102 / 0.5 and 1 / floor clip at CLIP
    assert 1.0 / STD_FLOOR > CLIP
    assert torch.allclose(wm.target(obs), torch.sign(z) * torch.log1p(z.abs()))
    assert torch.allclose(WorldModel((3,), 2, small_cfg(symlog_obs=False), mean, std).target(obs), z)


def test_kl_nonnegative_and_zero_for_identical():
    torch.manual_seed(0)
    m1, m2 = torch.randn(50, 8), torch.randn(50, 8)
    s1, s2 = torch.rand(50, 8) + 0.1, torch.rand(50, 8) + 0.1
    kl = gaussian_kl(m1, s1, m2, s2)
    assert kl.shape == (50,) and (kl >= 0).all() and (kl > 0).all()
    assert torch.allclose(gaussian_kl(m1, s1, m1, s1), torch.zeros(50), atol=1e-6)
    # against torch's closed form
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, s1),
                                            torch.distributions.Normal(m2, s2)).sum(-1)
    assert torch.allclose(kl, ref, atol=1e-4, rtol=1e-4)


def test_disagreement_zero_when_heads_share_weights_positive_otherwise():
    torch.manual_seed(0)
    wm = WorldModel((5,), 2, small_cfg(ensemble_size=5))
    h = torch.randn(3, 7, 24)
    u = wm.disagreement(h)
    assert u.shape == (3, 7) and (u > 0).all()
    prior = wm.rssm.prior
    with torch.no_grad():
        for p in prior.parameters():
            p[:] = p[0:1].clone()
    u_same = wm.disagreement(h)
    assert torch.allclose(u_same, torch.zeros(3, 7), atol=1e-6)
    # one head moved away: disagreement comes back
    with torch.no_grad():
        prior.out.bias[2, 0, :6] += 1.0
    assert (wm.disagreement(h) > 0.1).all()
    # a single head never disagrees
    wm1 = WorldModel((5,), 2, small_cfg(ensemble_size=1))
    assert torch.equal(wm1.disagreement(h), torch.zeros(3, 7))


def test_fused_heads_match_head_by_head():
    torch.manual_seed(0)
    wm = WorldModel((5,), 2, small_cfg(ensemble_size=4))
    prior = wm.rssm.prior
    h = torch.randn(9, 24)
    means = prior.all_means(h)
    per_head = torch.stack([prior.head(h, k)[0] for k in range(4)])
    assert torch.allclose(means, per_head, atol=1e-5)
    expected = per_head.std(0, unbiased=False).mean(-1)
    assert torch.allclose(wm.disagreement(h), expected, atol=1e-5)
    hs = torch.randn(3, 9, 24)
    ks = torch.tensor([2, 0, 3])
    m, s = prior.per_step(hs, ks)
    for t in range(3):
        mt, st = prior.head(hs[t], int(ks[t]))
        assert torch.allclose(m[t], mt, atol=1e-5) and torch.allclose(s[t], st, atol=1e-5)


def test_kl_trains_only_the_drawn_heads():
    torch.manual_seed(3)
    cfg = small_cfg(ensemble_size=6, free_nats=0)
    wm = WorldModel((5,), 2, cfg)
    obs, act, first = fake_batch(2, 3, (5,), 2)
    post, prior = wm.rssm.observe(wm.embed(obs), act, first)
    kl, _ = wm.kl_loss(post, prior)
    kl.backward()
    drawn = set(prior["heads"].tolist())
    grads = wm.rssm.prior.inp.weight.grad.flatten(1).abs().sum(1)
    for k in range(6):
        assert (grads[k] > 0) == (k in drawn)


def test_sequence_replay_sampling_and_state_roundtrip():
    rng = np.random.default_rng(0)
    rb = SequenceReplay(capacity=60)
    demo_obs = np.arange(11 * 2, dtype=np.float32).reshape(11, 2)
    rb.add_episode(demo_obs, np.ones((10, 3), np.float32), protected=True)
    for i in range(4):
        rb.add_episode(np.full((16, 2), 100 + i, np.float32), np.full((15, 3), 0.5, np.float32))
    # 11 + 4 * 16 = 75 rows > 60: the oldest online episode went, the demo stayed
    assert len(rb) == 4 and rb.protected == [True, False, False, False]
    assert rb.n_rows == 11 + 3 * 16 and rb.n_steps == 10 + 3 * 15
    s = rb.sample(64, 6, rng)
    assert s["obs"].shape == (64, 6, 2) and s["action"].shape == (64, 6, 3) and s["is_first"].shape == (64, 6)
    for o, a, f in zip(s["obs"], s["action"], s["is_first"]):
        if o[0, 0] >= 100:  # online episode: constant obs
            assert (o == o[0, 0]).all()
        else:  # demo rows are consecutive
            assert np.all(np.diff(o[:, 0]) == 2)
        assert f[0] and f.sum() == 1  # every chunk starts as a new episode
        assert np.all(a[0] == 0)  # ... with no previous action
    with pytest.raises(UserError, match="seq_len"):
        rb.sample(2, 17, rng)
    # round trip: the demos are re-added, the online episodes come from the state
    state = rb.state_dict()
    assert len(state["episodes"]) == 3
    rb2 = SequenceReplay(capacity=60)
    rb2.add_episode(demo_obs, np.ones((10, 3), np.float32), protected=True)
    rb2.load_state_dict(state)
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    a, b = rb.sample(8, 5, r1), rb2.sample(8, 5, r2)
    for k in a:
        assert np.array_equal(a[k], b[k])


def test_replay_samples_episodes_uniformly_and_starts_every_chunk_as_an_episode():
    """As the reference's replay: an episode uniformly (among those long enough), then a start
    uniformly within it; a chunk from mid-episode gets is_first and a zero action on row 0."""
    rng = np.random.default_rng(1)
    rb = SequenceReplay()
    rb.add_episode(np.zeros((11, 1), np.float32), np.ones((10, 2), np.float32))  # 6 starts of 6 rows
    rb.add_episode(np.arange(101, dtype=np.float32)[:, None] + 1, np.ones((100, 2), np.float32))  # 96
    rb.add_episode(np.full((4, 1), -1, np.float32), np.ones((3, 2), np.float32))  # too short: never
    s = rb.sample(4000, 6, rng)
    short = s["obs"][:, 0, 0] == 0
    assert 0.46 < short.mean() < 0.54  # by start rows it would be 6 / 102
    assert not (s["obs"] < 0).any()
    long_starts = s["obs"][~short, 0, 0] - 1  # the start row within the long episode
    assert long_starts.min() == 0 and long_starts.max() == 95
    assert np.histogram(long_starts, bins=4, range=(0, 96))[0].min() > 0.2 * (~short).sum()
    mid = long_starts > 0
    assert mid.any() and s["is_first"][:, 0].all() and not s["is_first"][:, 1:].any()
    assert (s["action"][:, 0] == 0).all() and (s["action"][:, 1:] == 1).all()
    assert rb.episodes[1]["action"][5:].min() == 1 and not rb.episodes[1]["is_first"][1:].any()


def test_lambda_return_matches_definition():
    torch.manual_seed(0)
    r, v, boot = torch.randn(6, 3), torch.randn(6, 3), torch.randn(3)
    g, lam = 0.9, 0.7
    out = lambda_return(r, v, g, boot, lam)
    nxt = torch.cat([v[1:], boot[None]])
    exp = torch.zeros(6, 3)
    last = boot
    for t in reversed(range(6)):
        last = r[t] + g * ((1 - lam) * nxt[t] + lam * last)
        exp[t] = last
    assert torch.allclose(out, exp, atol=1e-6)
    # lam = 0: one-step TD targets; lam = 1: discounted Monte-Carlo sums with bootstrap
    assert torch.allclose(lambda_return(r, v, g, boot, 0.0), r + g * nxt, atol=1e-6)
    mc = sum(g ** i * r[i] for i in range(6)) + g ** 6 * boot
    assert torch.allclose(lambda_return(r, v, g, boot, 1.0)[0], mc, atol=1e-5)


def test_trunc_normal_density_sampling_and_entropy():
    torch.manual_seed(0)
    loc = torch.tensor([[0.3, -0.9, 0.0]])
    scale = torch.tensor([[0.5, 0.2, 2.0]])
    d = TruncNormal(loc, scale)
    # each 1-d marginal integrates to 1 on [-1, 1]
    xs = torch.linspace(-1, 1, 20001)
    for i in range(3):
        di = TruncNormal(loc[:, i:i + 1], scale[:, i:i + 1])
        dens = di.log_prob(xs[:, None]).exp()
        assert abs(torch.trapezoid(dens, xs).item() - 1.0) < 1e-3
    x = TruncNormal(loc.expand(20000, 3), scale.expand(20000, 3)).rsample()
    assert (x >= -1).all() and (x <= 1).all()
    # Monte-Carlo entropy agrees with the closed form
    mc = -TruncNormal(loc.expand(20000, 3), scale.expand(20000, 3)).log_prob(x).mean()
    assert abs(mc.item() - d.entropy().item()) < 0.05
    # samples are differentiable in loc
    l2 = loc.clone().requires_grad_(True)
    TruncNormal(l2, scale).rsample().sum().backward()
    assert l2.grad is not None and torch.isfinite(l2.grad).all() and (l2.grad != 0).any()
    assert torch.equal(d.mode, loc)
    assert math.isfinite(d.log_prob(torch.tensor([[1.0, -1.0, 1.0]])).item())
