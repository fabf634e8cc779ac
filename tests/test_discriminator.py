"""The shared discriminator pieces: gradient penalty, BCE, reward forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from algorithms.discriminator import Discriminator, bce_loss, gradient_penalty, reward_from_logits


def sgd_step(module: nn.Module, loss: torch.Tensor, lr: float) -> None:
    """Plain gradient descent (torch.optim's constructors import torch._dynamo: seconds)."""
    module.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for p in module.parameters():
            if p.grad is not None:
                p -= lr * p.grad


def linear_disc(w, b=0.0) -> Discriminator:
    """A Discriminator whose network is the linear map x -> w.x + b."""
    w = torch.as_tensor(w, dtype=torch.float32)
    d = Discriminator(len(w), hidden=(), act="tanh")
    lin = d.net[0]
    assert isinstance(lin, nn.Linear)
    with torch.no_grad():
        lin.weight.copy_(w[None])
        lin.bias.fill_(b)
    return d


@pytest.mark.parametrize("w", [[3.0, 4.0], [0.3, -0.4, 0.0], [1.0, 0.0]])
def test_gradient_penalty_of_linear_discriminator(w):
    # grad_x (w.x) = w everywhere, so the penalty is (|w| - 1)^2 whatever the inputs.
    torch.manual_seed(0)
    d = linear_disc(w, b=0.7)
    e, p = torch.randn(64, len(w)) * 5, torch.randn(64, len(w)) + 3
    expected = (math.sqrt(sum(x * x for x in w)) - 1.0) ** 2
    got = gradient_penalty(d, e, p).item()
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_gradient_penalty_is_differentiable_and_pushes_norm_to_one():
    torch.manual_seed(0)
    d = linear_disc([3.0, 4.0])
    e, p = torch.randn(32, 2), torch.randn(32, 2)
    first = gradient_penalty(d, e, p).item()
    for _ in range(100):
        sgd_step(d, gradient_penalty(d, e, p), lr=0.05)
    assert first == pytest.approx(16.0, rel=1e-5)
    assert gradient_penalty(d, e, p).item() < 1e-3
    assert d.net[0].weight.norm().item() == pytest.approx(1.0, abs=0.02)


def test_gradient_penalty_ignores_input_noise_and_keeps_mode():
    torch.manual_seed(0)
    d = linear_disc([0.6, 0.8])
    d.input_noise = 5.0
    d.train()
    x = torch.randn(16, 2)
    assert gradient_penalty(d, x, x + 1).item() == pytest.approx(0.0, abs=1e-10)
    assert d.training and d.input_noise == 5.0


def test_reward_is_log_d_minus_log_one_minus_d_and_prefers_expert():
    torch.manual_seed(0)
    logits = torch.linspace(-6, 6, 25)
    D = torch.sigmoid(logits.double())
    r = reward_from_logits(logits, "logit").double()
    assert torch.allclose(r, D.log() - (1 - D).log(), atol=1e-5)
    assert torch.allclose(reward_from_logits(logits, "gail").double(), -(1 - D).log(), atol=1e-5)
    assert torch.allclose(reward_from_logits(logits, "log").double(), D.log(), atol=1e-5)
    assert torch.allclose(reward_from_logits(logits, "prob").double(), D, atol=1e-6)
    with pytest.raises(ValueError, match="nope"):
        reward_from_logits(logits, "nope")

    # Train a discriminator on separable data: expert-like inputs must get the higher reward,
    # the positive sign, and policy-like inputs the negative one.
    disc = Discriminator(2, hidden=(16, 16))
    expert, policy = torch.randn(128, 2) + 2.0, torch.randn(128, 2) - 2.0
    for _ in range(300):
        loss, acc = bce_loss(disc, expert, policy)
        sgd_step(disc, loss, lr=0.5)
    assert acc.item() > 0.95
    with torch.no_grad():
        re, rp = reward_from_logits(disc(expert)), reward_from_logits(disc(policy))
    assert re.mean() > 0 > rp.mean()
    assert (re.min() > rp.max()) or (re.mean() - rp.mean() > 4)


def test_bce_loss_value_accuracy_and_weights():
    d = linear_disc([1.0, 0.0])
    expert = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    policy = torch.tensor([[-3.0, 0.0], [0.5, 0.0]])
    loss, acc = bce_loss(d, expert, policy)
    sp = nn.functional.softplus
    want = (sp(torch.tensor([-2.0, 1.0])).mean() + sp(torch.tensor([-3.0, 0.5])).mean()).item()
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert acc.item() == pytest.approx(0.5)  # one of two right on each side
    w = torch.tensor([1.0, 0.0])  # weight 0 drops the misclassified expert sample
    loss_w, _ = bce_loss(d, expert, policy, expert_weight=w)
    want_w = (sp(torch.tensor(-2.0)) / 2 + sp(torch.tensor([-3.0, 0.5])).mean()).item()
    assert loss_w.item() == pytest.approx(want_w, rel=1e-6)
