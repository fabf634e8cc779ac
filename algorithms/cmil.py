"""CMIL: conservative model-based imitation learning (arXiv 2405.13193).

Imitation without reward labels, framed as fine-tuning:

1. the demos go into the agent's replay and into a separate expert replay;
2. offline pre-training: ``pretrain_wm_steps`` world-model-only steps (0 in the reference; a
   model step costs a fifth of a full update), then ``pretrain_steps`` full agent updates (world
   model, discriminator, actor-critic) on the demos alone, before any environment step;
3. BC initialisation: ``bc_init_steps`` steps fitting the actor to the expert's actions
   (negative log-likelihood on the demos' posterior latent features). ``bc_init_mode="joint"``
   (the reference): each step a world-model step on ``expert_batch_size`` expert sequences, then
   a step of the actor with a plain SGD optimiser of its own (lr ``bc_init_lr``), apart from the
   actor's Adam, whose state it leaves alone. ``"frozen"`` (a departure, for named variants only)
   filters the whole demo episodes once with the pre-trained model (from their first step, as
   the policy does when it acts) and then steps the actor's own Adam on ``bc_init_batch`` random
   (latent, action) pairs, a fresh posterior sample each time: about a hundredth of the cost of
   a joint step;
4. ``seed_steps`` environment steps with that BC policy, then online fine-tuning: every
   ``train_every`` env steps, ``updates_per_train`` updates.

The agent is the shared latent agent (algorithms/latent_agent.py: an RSSM world model with an
ensemble of ``ensemble_size`` prior heads, an actor-critic in its imagination, a discriminator on
latent features) with CMIL's two terms: the conservative reward ``D(z, a) - penalty_weight *
u(z)`` for imagined steps, where D is the discriminator's probability and u the std of the
ensemble's prior means averaged over latent dimensions (MOPO-style: uncertain model predictions
earn less), and ``bc_weight`` x the BC log-likelihood in the actor loss. Every ingredient is a
switch: ``penalty_weight=0`` turns conservatism off (the reward is then exactly D),
``bc_weight=0``, ``pretrain_steps=0``, ``bc_init_steps=0``, ``disc_noise=0``, ``ensemble_size=1``.

Defaults follow the reference code (victorkolev/cmil, configs.yaml); the ``cpu`` preset and why
it departs from them: benchmarks/RESULTS.md, "World models: V-MAIL and CMIL".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from algorithms.latent_agent import LatentAgent, LatentConfig, LatentTrainer, eval_policy
from algorithms.optim import SGD, clip_and_step
from cmil_bench.errors import UserError

__all__ = ["PRESETS", "Config", "eval_policy", "train"]  # the harness API (cmil_bench.run)

BC_INIT_MODES = ("joint", "frozen")


@dataclass
class Config(LatentConfig):
    # Every shared field (schedule, replay, world model, actor-critic, discriminator, optimisers)
    # is documented in algorithms.latent_agent.LatentConfig, whose defaults are CMIL's.
    # --- offline phase, before any env step
    pretrain_wm_steps: int = 0  # world-model-only steps on the demos before pre-training (0: none)
    pretrain_steps: int = 1_000  # full agent updates on the demos
    bc_init_steps: int = 100  # actor NLL steps on the demos' latents after pre-training
    bc_init_mode: str = "joint"  # "joint": + a world-model step each, own SGD; "frozen": cached latents
    bc_init_lr: float = 2e-4  # the joint BC start's plain SGD (no clip, no weight decay)
    bc_init_batch: int = 256  # (o, a) pairs per step with bc_init_mode="frozen" (the actor's Adam)
    # --- CMIL's terms in every update
    penalty_weight: float = 10.0  # w in D - w * u; 0 = no conservatism
    bc_weight: float = 10.0  # weight of the BC NLL in the actor loss

    def __post_validate__(self):
        super().__post_validate__()
        if self.bc_init_batch <= 0:
            raise UserError(f"cmil: bc_init_batch must be positive, got {self.bc_init_batch}")
        if self.bc_init_lr <= 0:
            raise UserError(f"cmil: bc_init_lr must be positive, got {self.bc_init_lr}")
        for k in ("pretrain_wm_steps", "pretrain_steps", "bc_init_steps", "penalty_weight", "bc_weight"):
            if getattr(self, k) < 0:
                raise UserError(f"cmil: {k} must be >= 0, got {getattr(self, k)}")
        if self.bc_init_mode not in BC_INIT_MODES:
            raise UserError(f"cmil: bc_init_mode must be one of {BC_INIT_MODES}, got {self.bc_init_mode!r}")


PRESETS = {
    # Scale only (cmil_bench.config.SCALE_KEYS): CPU sizes, the sweep's matched budget and warm-up.
    "cpu": {
        "total_steps": 2_400, "eval_every": 600, "seed_steps": 300,
        "batch_size": 16, "expert_batch_size": 16, "seq_len": 16,
        "deter": 128, "stoch": 32, "hidden": 128,
        "mlp_layers": (128, 128), "cnn_depth": 16,
        "actor_layers": (128, 128), "critic_layers": (128, 128), "disc_hidden": (128, 128),
        "imag_starts": 48, "log_disagreement_n": 48,
    },
    # A few seconds of sizes (the offline phase keeps the reference's update counts).
    "smoke": {
        "total_steps": 120, "eval_every": 60, "eval_episodes": 2, "seed_steps": 20,
        "batch_size": 4, "expert_batch_size": 4, "seq_len": 8,
        "deter": 32, "stoch": 8, "hidden": 32, "mlp_layers": (32,),
        "cnn_depth": 4, "actor_layers": (32,), "critic_layers": (32,), "disc_hidden": (32,),
        "log_disagreement_n": 16,
    },
}


# ------------------------------------------------------------------------- CMIL's own pieces
def conservative_reward(d_prob: torch.Tensor, u: torch.Tensor, penalty_weight: float) -> torch.Tensor:
    """CMIL's reward for imagined steps, ``D - w * u``; ``w == 0`` returns ``D`` itself."""
    if penalty_weight == 0:
        return d_prob
    return d_prob - penalty_weight * u


class Agent(LatentAgent):
    """The shared latent agent with CMIL's reward and BC term, and the BC-initialisation steps."""

    cfg: Config

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # the joint BC start's optimiser: plain SGD on the actor, apart from its Adam (no state)
        self.bc_opt = SGD(self.ac.actor.parameters(), self.cfg.bc_init_lr)

    @property
    def penalty_weight(self) -> float:
        return self.cfg.penalty_weight

    @property
    def bc_weight(self) -> float:
        return self.cfg.bc_weight

    def imagined_reward(self, d_prob: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return conservative_reward(d_prob, u, self.cfg.penalty_weight)

    def bc_step(self, expert_batch: dict) -> dict[str, torch.Tensor]:
        """BC initialisation, joint (the reference's): a world-model step on expert sequences,
        then an SGD step of the actor's NLL on their (pre-step, detached) posterior features."""
        obs, action, first = self.tensors(expert_batch)
        with self.autocast():
            post, metrics = self.wm.update(obs, action, first)
            loss = self.bc_loss(self.wm.rssm.feat(post), action)
        self.bc_opt.zero_grad()
        loss.backward()
        self.bc_opt.step()
        metrics["bc_loss"] = loss.detach()
        return metrics

    @torch.no_grad()
    def demo_posteriors(self, episodes) -> dict[str, torch.Tensor]:
        """Filter whole demo episodes (``SequenceReplay`` rows) from their first row with the
        current world model. Returns flat tensors over every (o_t, a_t) pair: ``deter``, the
        posterior ``mean`` and ``std`` of o_t, and the expert's ``action`` a_t (row t+1)."""
        deters, means, stds, acts = [], [], [], []
        for ep in episodes:
            obs, action, first = self.tensors({k: v[None] for k, v in ep.items()})
            post, _ = self.wm.rssm.observe(self.wm.embed(obs), action, first)
            deters.append(post["deter"][0, :-1]), means.append(post["mean"][0, :-1])
            stds.append(post["std"][0, :-1]), acts.append(action[0, 1:])
        return {"deter": torch.cat(deters), "mean": torch.cat(means), "std": torch.cat(stds),
                "action": torch.cat(acts)}

    def bc_step_frozen(self, data: dict, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """BC initialisation on fixed demo posteriors (``demo_posteriors``): an actor NLL step on
        the pairs ``idx``, with a fresh posterior sample of z for each; the world model is not
        touched."""
        i = torch.as_tensor(idx, device=data["deter"].device)
        mean, std = data["mean"][i], data["std"][i]
        feat = torch.cat([mean + std * torch.randn_like(mean), data["deter"][i]], -1)
        loss = -self.ac.actor(feat).log_prob(data["action"][i]).mean()
        self._actor_step(loss)
        return {"bc_loss": loss.detach()}

    def _actor_step(self, loss: torch.Tensor) -> None:
        self.ac.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_and_step(self.ac.actor_opt, self.ac.actor_opt.params, self.cfg.grad_clip)


# ------------------------------------------------------------------------- the offline phase
def pretrain_world_model(trainer: LatentTrainer, steps: int) -> None:
    """World-model steps alone on batches of ``batch_size + expert_batch_size`` demo sequences,
    at a fifth of a full update's cost (a departure for named variants: the reference has none)."""
    cfg, agent = trainer.cfg, trainer.agent
    for _ in range(steps):
        batch = trainer.expert.sample(cfg.batch_size + cfg.expert_batch_size, cfg.seq_len, trainer.run.rng)
        with agent.autocast():
            _, metrics = agent.wm.update(*agent.tensors(batch))
        trainer.log(metrics)
        trainer.grad_steps += 1


def pretrain(trainer: LatentTrainer, steps: int) -> None:
    """Full agent updates on the demos alone (the replay holds only them before any env step)."""
    if steps > 0:
        trainer.update(steps)


def bc_init(trainer: LatentTrainer, steps: int) -> None:
    """``bc_init_mode="joint"``: each step a world-model step and an actor NLL step (own SGD) on a
    batch of expert sequences (the reference). ``"frozen"``: the demos are filtered once, whole
    episodes from their first step, by the frozen world model; then actor-only NLL steps (the
    actor's Adam) on ``bc_init_batch`` random pairs of them."""
    cfg, agent, rng = trainer.cfg, trainer.agent, trainer.run.rng
    if steps == 0:
        return
    if cfg.bc_init_mode == "frozen":
        data = agent.demo_posteriors(trainer.expert.episodes)
        n = len(data["action"])
        for _ in range(steps):
            trainer.log(agent.bc_step_frozen(data, rng.integers(0, n, size=cfg.bc_init_batch)))
            trainer.grad_steps += 1
        return
    for _ in range(steps):
        expert = trainer.expert.sample(cfg.expert_batch_size, cfg.seq_len, rng)
        trainer.log(agent.bc_step(expert))
        trainer.grad_steps += 1


# ---------------------------------------------------------------------------------- training
def train(run, cfg: Config) -> None:
    trainer = LatentTrainer(run, cfg, Agent)
    state = run.restore()
    if state is not None:
        trainer.load_state_dict(state)
    else:
        pretrain_world_model(trainer, cfg.pretrain_wm_steps)  # offline, on the demos alone
        pretrain(trainer, cfg.pretrain_steps)
        bc_init(trainer, cfg.bc_init_steps)
        trainer.evaluate()  # the offline policy, at 0 env steps (and the first checkpoint)
    trainer.online()
