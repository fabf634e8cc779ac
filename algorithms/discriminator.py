"""The discriminator that GAIL, DAC, V-MAIL and CMIL share.

``D(x) = sigmoid(logit(x))`` is the probability that input ``x`` (an observation-action pair, or
latent features and an action) comes from the expert. Losses, the gradient penalty and the
reward forms live here once.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms.nets import mlp

REWARD_FORMS = ("logit", "gail", "prob", "log")


class Discriminator(nn.Module):
    """MLP from inputs to one logit. ``input_noise`` adds Gaussian noise of that std to every
    input while training (CMIL's regulariser); it is off in ``eval()`` mode."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (256, 256), act: str = "tanh",
                 input_noise: float = 0.0):
        super().__init__()
        self.net = mlp(in_dim, hidden, 1, act=act)
        self.input_noise = float(input_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.input_noise > 0:
            x = x + self.input_noise * torch.randn_like(x)
        return self.net(x).squeeze(-1)


def bce_loss(disc: Discriminator, expert_x: torch.Tensor, policy_x: torch.Tensor,
             expert_weight: torch.Tensor | None = None, policy_weight: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy with expert = 1, policy = 0; returns (loss, accuracy).

    Optional per-sample weights scale each term before the mean over the batch (DAC weighs the
    demos' absorbing transitions by 1/subsampling rate this way)."""
    le, lp = disc(expert_x), disc(policy_x)
    loss = (F.binary_cross_entropy_with_logits(le, torch.ones_like(le), weight=expert_weight)
            + F.binary_cross_entropy_with_logits(lp, torch.zeros_like(lp), weight=policy_weight))
    with torch.no_grad():
        acc = 0.5 * ((le > 0).float().mean() + (lp < 0).float().mean())
    return loss, acc


def gradient_penalty(disc: Discriminator, expert_x: torch.Tensor, policy_x: torch.Tensor,
                     target: float = 1.0) -> torch.Tensor:
    """Mean of (||grad_x logit(x)|| - target)^2 at random interpolates of expert and policy
    inputs (Gulrajani et al. 2017), as DAC and GAIL use it. Multiply by the weight yourself."""
    n = min(len(expert_x), len(policy_x))
    e, p = expert_x[:n].detach(), policy_x[:n].detach()
    alpha = torch.rand(n, *([1] * (e.dim() - 1)), device=e.device, dtype=e.dtype)
    x = (alpha * e + (1 - alpha) * p).requires_grad_(True)
    was_training = disc.training
    noise, disc.input_noise = disc.input_noise, 0.0
    out = disc(x)
    disc.input_noise = noise
    disc.train(was_training)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - target) ** 2).mean()


def parameter_gradient_penalty(disc: Discriminator, x: torch.Tensor, target: float = 1.0) -> torch.Tensor:
    """(||grad_theta mean_x logit(x)|| - target)^2: the gradient of the mean logit over the batch
    ``x`` with respect to the discriminator's parameters theta, its 2-norm taken over all of them
    together (one global norm), as V-MAIL's reference does (rmrafailov/VMAIL, on interpolates of
    expert and policy inputs that the caller makes). One scalar, not a mean over samples; it is
    differentiable in theta (double backpropagation). Multiply by the weight yourself.

    The output layer's bias alone contributes a gradient of exactly 1, so the norm is >= 1."""
    params = [p for p in disc.parameters() if p.requires_grad]
    noise, disc.input_noise = disc.input_noise, 0.0  # the penalty sees clean inputs
    out = disc(x.detach()).mean()
    disc.input_noise = noise
    grads = torch.autograd.grad(out, params, create_graph=True)
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    return (norm - target) ** 2


def reward_from_logits(logits: torch.Tensor, form: str = "logit") -> torch.Tensor:
    """Imitation reward from discriminator logits.

    - ``logit``: log D - log(1 - D), which equals the logit itself (GAIL/DAC/AIRL form)
    - ``gail``:  -log(1 - D) = softplus(logit), always positive (survival bias)
    - ``prob``:  D itself (V-MAIL and CMIL use the probability)
    - ``log``:   log D = -softplus(-logit), always negative
    """
    if form == "logit":
        return logits
    if form == "gail":
        return F.softplus(logits)
    if form == "prob":
        return torch.sigmoid(logits)
    if form == "log":
        return -F.softplus(-logits)
    raise ValueError(f"unknown reward form {form!r}; known: {', '.join(REWARD_FORMS)}")
