"""SAC (Haarnoja et al., 2018) as DAC's second learner (``agent: sac``; not an algorithm of its
own). The DAC paper notes that any off-policy learner fits; SAC keeps DAC's discriminator, absorbing
states, twin critics and their targets, and changes the actor and the critic's target:

- the actor is a tanh-squashed Gaussian; evaluation acts with its squashed mean,
- the critic's target is ``min_k Q'_k(s', a') - alpha log pi(a'|s')`` with ``a' ~ pi(s')`` from the
  live actor (zero action and no entropy term at the absorbing state),
- the actor minimises ``alpha log pi(a|s) - min_k Q_k(s, a)`` (no actor target network),
- the temperature ``alpha`` (log-parameterised) is tuned towards the entropy ``-act_dim``.

The actor and temperature losses skip absorbing states, as DAC's TD3 actor loss does. DAC
initialises this actor as it does TD3's (orthogonal weights, gain 0.01 on the last layer).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from algorithms.nets import mlp
from algorithms.optim import FlatAdam


class GaussianActor(nn.Module):
    """features -> tanh-squashed Gaussian over actions (log-std clamped)."""

    def __init__(self, feat_dim: int, act_dim: int, hidden, activation: str, min_log_std: float,
                 max_log_std: float):
        super().__init__()
        self.net = mlp(feat_dim, hidden, 2 * act_dim, act=activation)
        self.min_log_std, self.max_log_std = min_log_std, max_log_std

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """The squashed mean: the evaluation action."""
        return torch.tanh(self.net(feat).chunk(2, dim=-1)[0])

    def sample(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability (with the tanh correction)."""
        mean, log_std = self.net(feat).chunk(2, dim=-1)
        log_std = log_std.clamp(self.min_log_std, self.max_log_std)
        u = mean + log_std.exp() * torch.randn_like(mean)
        action = torch.tanh(u)
        logp = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return action, logp


class Temperature:
    """The entropy temperature alpha = exp(log_alpha), tuned towards the entropy ``-act_dim``."""

    def __init__(self, init_alpha: float, lr: float, act_dim: int, device):
        self.module = nn.Module()
        self.module.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha), device=device))
        self.opt = FlatAdam(self.module, lr)
        self.log_alpha = self.module.log_alpha
        self.target_entropy = -float(act_dim)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    def update(self, logp: torch.Tensor, w: torch.Tensor) -> None:
        """One step on the weighted (``w``: 0 for absorbing states) temperature loss."""
        loss = -(self.log_alpha * ((logp.detach() + self.target_entropy) * w)).sum() / w.sum().clamp(min=1.0)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def state_dict(self) -> dict:
        return {"log_alpha": self.log_alpha.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, s: dict) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(s["log_alpha"])
        self.opt.load_state_dict(s["opt"])


def next_value(critic_target, actor: GaussianActor, next_feat: torch.Tensor, next_absorbing: torch.Tensor,
               alpha: torch.Tensor) -> torch.Tensor:
    """The soft value of the next states: ``min_k Q'_k(s', a') - alpha log pi(a'|s')``."""
    action, logp = actor.sample(next_feat)
    action = action * (1.0 - next_absorbing).unsqueeze(-1)  # the absorbing state only knows 0
    q = critic_target(next_feat, action).min(0).values
    return q - alpha * logp * (1.0 - next_absorbing)


def actor_loss(critic, actor: GaussianActor, feat: torch.Tensor, w: torch.Tensor, alpha: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted actor loss and the log-probabilities of its sampled actions."""
    action, logp = actor.sample(feat)
    q = critic(feat, action).min(0).values
    return ((alpha * logp - q) * w).sum() / w.sum().clamp(min=1.0), logp


@torch.no_grad()
def sample_action(actor: GaussianActor, feat: torch.Tensor) -> np.ndarray:
    """Exploration: actions sampled from the policy (torch's generator)."""
    return actor.sample(feat)[0].cpu().numpy()
