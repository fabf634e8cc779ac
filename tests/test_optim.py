"""algorithms/optim.py: the flat Adam against torch's Adam, its clip and target updates, and the
AdamW of the world models against torch's Adam with a per-step decay, and plain SGD."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from algorithms.optim import SGD, AdamW, FlatAdam, FlatTarget, clip_and_step, flatten_parameters


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def test_flattened_parameters_are_views_of_one_tensor():
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    flat, grad = flatten_parameters(net)
    assert flat.numel() == sum(p.numel() for p in before)
    for p, b in zip(net.parameters(), before):
        torch.testing.assert_close(p.detach(), b)  # same values, now stored in `flat`
    flat.zero_()
    assert all((p == 0).all() for p in net.parameters())
    net(torch.ones(3, 4)).sum().backward()
    assert grad.abs().sum() > 0  # backward accumulates into the flat gradient


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_flat_adam_matches_torch_adam(weight_decay):
    ours_net, ref_net = _net(), _net()
    ours = FlatAdam(ours_net, 1e-2, eps=1e-5, weight_decay=weight_decay)
    ref = torch.optim.Adam(ref_net.parameters(), 1e-2, eps=1e-5, weight_decay=weight_decay)
    x = torch.randn(16, 4)
    for _ in range(6):
        ours.zero_grad()
        ours_net(x).pow(2).sum().backward()
        ours.step()
        ref.zero_grad()
        ref_net(x).pow(2).sum().backward()
        ref.step()
    for p, q in zip(ours_net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    # state round trip: a fresh optimiser continues the same way
    other_net = _net(1)
    other = FlatAdam(other_net, 0.5, eps=1e-5, weight_decay=weight_decay)  # lr comes from the state
    other.param.copy_(ours.param)
    other.load_state_dict(ours.state_dict())
    for o in (ours, other):
        o.grad.fill_(0.1)
        o.step()
    torch.testing.assert_close(other.param, ours.param, rtol=0, atol=0)
    ours.reset()
    assert ours.t == 0 and ours.m.abs().sum() == 0


def test_flat_clip_bounds_the_global_norm_and_target_tracks_by_polyak():
    net = _net()
    opt = FlatAdam(net, 1e-3)
    opt.grad.copy_(torch.arange(opt.grad.numel(), dtype=torch.float32))
    norm = opt.clip_grad_norm(1.0)
    assert norm > 1 and opt.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    small = opt.grad.clone() * 0.1
    opt.grad.copy_(small)
    opt.clip_grad_norm(1.0)
    torch.testing.assert_close(opt.grad, small)  # below the bound: untouched

    target = FlatTarget(net)
    start = target.flat.clone()
    opt.param.add_(1.0)
    target.update(opt.param, 0.25)
    torch.testing.assert_close(target.flat, start + 0.25)
    assert not any(p.requires_grad for p in target.module.parameters())
    torch.testing.assert_close(target.module(torch.ones(1, 4)), target.module(torch.ones(1, 4)))


@pytest.mark.parametrize("fused", [True, False])
def test_adamw_decays_by_a_per_step_factor_then_steps_like_torch_adam(fused):
    """The reference's rule (DreamerV2): every parameter times (1 - wd), not (1 - lr * wd), at
    every step, then a plain Adam step on those with a gradient."""
    torch.manual_seed(0)
    wd = 0.05
    a = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(3))]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    ours = AdamW(a, lr=1e-2, eps=1e-5, weight_decay=wd)
    ours.fused = fused and ours.fused
    ref = torch.optim.Adam(b, lr=1e-2, eps=1e-5)
    for step in range(5):
        g = [torch.randn_like(p) for p in a]
        for p, q, gi in zip(a, b, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        if step == 2:
            a[1].grad = b[1].grad = None  # decayed all the same, but no Adam step
        ours.step()
        with torch.no_grad():
            for q in b:
                q.mul_(1 - wd)
        ref.step()
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    # with a zero gradient and fresh moments, the step is the decay alone, unscaled by lr
    p = nn.Parameter(torch.ones(4))
    opt = AdamW([p], lr=1e-3, weight_decay=1e-2)
    p.grad = torch.zeros(4)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((4,), 0.99))
    other = AdamW([nn.Parameter(p.detach().clone()) for p in a], lr=1e-2, eps=1e-5, weight_decay=wd)
    other.load_state_dict(ours.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(other.exp_avg_sq, ours.exp_avg_sq))


def test_sgd_is_plain_gradient_descent():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    q = nn.Parameter(torch.tensor([3.0]))
    opt = SGD([p, q], lr=0.5)
    p.grad = torch.tensor([2.0, 4.0])
    opt.step()
    opt.step()  # no momentum: the same gradient moves p by the same amount twice
    torch.testing.assert_close(p.detach(), torch.tensor([-1.0, -6.0]))
    assert torch.equal(q.detach(), torch.tensor([3.0]))  # no gradient: untouched
    opt.zero_grad()
    assert p.grad is None


def test_clip_and_step_clips_the_global_norm():
    p = nn.Parameter(torch.zeros(4))
    opt = AdamW([p], lr=1.0)
    p.grad = torch.full((4,), 10.0)
    clip_and_step(opt, [p], 1.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    assert (p < 0).all()
