"""SAC on the environment's reward: the trainer of the expert policies that `cmil-bench expert`
ships for tasks without a scripted expert (the locomotion tasks). Not an imitation algorithm: it
reads no demos, and no sweep runs it (``algorithms.EXPERT_TRAINERS``, not ``ALGORITHMS``).

Soft actor-critic as Haarnoja et al. run it on MuJoCo ("Soft Actor-Critic Algorithms and
Applications", 2018, Table 1; its defaults are ours): a tanh-squashed Gaussian actor and twin Q
critics, each an MLP of 2 x 256 ReLU units; Adam at 3e-4 for the actor, the critics and the
temperature; batch 256; discount 0.99; target critics by Polyak averaging with tau 0.005 after
every update; one update per environment step; the temperature tuned towards the entropy
``-act_dim`` from alpha = 1; log-std clamped to [-20, 2]; a replay of 1e6 transitions. The actor
acts uniformly at random for the first ``random_steps`` = 5,000 environment steps and updates
start there (CleanRL's ``learning_starts``; softlearning's MuJoCo runs use 10,000 or fewer).
A real terminal masks the bootstrap; a time-limit truncation bootstraps through its next
observation. The actor, the soft target and the temperature update are those of
``algorithms.sac`` (which DAC's SAC variant uses too); weights keep PyTorch's initialisation.
Raw observations, no standardisation.

Evaluations act with the squashed mean. The actor of the best evaluation so far is kept in the
checkpoint (``best``): `cmil-bench expert` exports it as the task's policy file, and its card
scores it again on 50 fresh episodes, so the selection among evaluations does not inflate the
card's figure. Episodes run to their end; evaluations and checkpoints come at episode boundaries.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from algorithms import sac
from algorithms.clock import EvalClock, IntervalMeans, reset_seed
from algorithms.nets import EnsembleMLP
from algorithms.optim import FlatAdam, FlatTarget
from algorithms.replay import ReplayBuffer
from cmil_bench.config import BaseConfig
from cmil_bench.errors import UserError

NEEDS_DEMOS = False  # cmil_bench.run: trained on the task's reward, from no demos
POLICY_FORMAT = "cmil-bench-policy"  # the exported file (envs.experts.policy_file_expert)


@dataclass
class Config(BaseConfig):
    total_steps: int = 1_000_000
    eval_every: int = 10_000
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 1.0
    min_log_std: float = -20.0
    max_log_std: float = 2.0
    discount: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    replay_size: int = 1_000_000
    # Uniform random actions, and no updates, for the first random_steps environment steps.
    random_steps: int = 5_000

    def __post_validate__(self):
        for name in ("total_steps", "batch_size", "replay_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"sac-expert: {name} must be positive, got {getattr(self, name)!r}")
        if self.random_steps < 0:
            raise UserError(f"sac-expert: random_steps must be >= 0, got {self.random_steps!r}")
        if not 0 < self.tau <= 1:
            raise UserError(f"sac-expert: tau must be in (0, 1], got {self.tau!r}")
        if not 0 <= self.discount < 1:
            raise UserError(f"sac-expert: discount must be in [0, 1), got {self.discount!r}")


PRESETS = {
    # A few seconds, for tests.
    "smoke": {"total_steps": 600, "eval_every": 300, "eval_episodes": 2, "random_steps": 100,
              "batch_size": 32, "hidden": (32, 32), "replay_size": 2_000},
}


class TwinQ(nn.Module):
    """Twin Q networks with stacked weights: (obs, action) -> (2, B)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: Config):
        super().__init__()
        self.q = EnsembleMLP(2, obs_dim + act_dim, cfg.hidden, 1, cfg.activation)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q(torch.cat([obs, action], dim=-1)).squeeze(-1)


class Agent:
    """Networks, optimisers and one SAC update."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: Config, device):
        self.cfg, self.device = cfg, device
        self.actor = sac.GaussianActor(obs_dim, act_dim, cfg.hidden, cfg.activation, cfg.min_log_std,
                                       cfg.max_log_std).to(device)
        self.critic = TwinQ(obs_dim, act_dim, cfg).to(device)
        self.actor_opt = FlatAdam(self.actor, cfg.actor_lr)
        self.critic_opt = FlatAdam(self.critic, cfg.critic_lr)
        self._critic_target = FlatTarget(self.critic)
        self.critic_target = self._critic_target.module
        self.temperature = sac.Temperature(cfg.init_alpha, cfg.alpha_lr, act_dim, device)
        self.updates = 0
        self.log = IntervalMeans()

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "temperature": self.temperature.state_dict(),
                "log": self.log.state_dict(), "updates": self.updates}

    def load_state_dict(self, s: dict) -> None:
        for name in ("actor", "critic", "critic_target", "actor_opt", "critic_opt", "temperature", "log"):
            getattr(self, name).load_state_dict(s[name])
        self.updates = int(s["updates"])

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """The evaluation policy: squashed mean actions for a batch of observations."""
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        return self.actor(o).cpu().numpy()

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32)[None], device=self.device)
        return sac.sample_action(self.actor, o)[0]

    def update(self, batch: dict) -> None:
        cfg = self.cfg
        b = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}
        obs, act, nobs = b["obs"], b["action"], b["next_obs"]
        zeros = torch.zeros_like(b["reward"])
        with torch.no_grad():  # no absorbing states here: sac's flags are all zero
            q_next = sac.next_value(self.critic_target, self.actor, nobs, zeros, self.temperature.alpha)
            target = b["reward"] + cfg.discount * (1.0 - b["terminated"]) * q_next
        q = self.critic(obs, act)
        critic_loss = (q - target.unsqueeze(0)).pow(2).mean(1).sum()
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        ones = torch.ones_like(zeros)
        actor_loss, logp = sac.actor_loss(self.critic, self.actor, obs, ones, self.temperature.alpha)
        self.actor_opt.zero_grad()
        # Gradients for the actor only: the critics' weight gradients of this loss would be zeroed
        # unused before their next step, and skipping them saves about a tenth of an update.
        actor_loss.backward(inputs=list(self.actor.parameters()))
        self.actor_opt.step()
        self.temperature.update(logp, ones)
        self._critic_target.update(self.critic_opt.param, cfg.tau)
        self.updates += 1
        self.log.add(critic_loss=critic_loss, actor_loss=actor_loss, q_mean=q.detach().mean(),
                     alpha=self.temperature.alpha, entropy=-logp.detach().mean())


def train(run, cfg: Config) -> None:
    if len(run.obs_shape) != 1:
        raise UserError(f"sac-expert trains from state observations; task {run.task.name!r} has "
                        f"observations of shape {run.obs_shape}")
    obs_dim, act_dim = int(run.obs_shape[0]), run.act_dim
    agent = Agent(obs_dim, act_dim, cfg, run.device)
    fields = {"obs": ((obs_dim,), np.float32), "action": ((act_dim,), np.float32),
              "reward": ((), np.float32), "next_obs": ((obs_dim,), np.float32),
              "terminated": ((), np.float32)}
    replay = ReplayBuffer(min(cfg.replay_size, cfg.total_steps), fields)
    clock = EvalClock(cfg.total_steps, cfg.eval_every)
    env_steps, episodes = 0, 0
    best = {"eval_return": -np.inf, "env_steps": 0, "actor": copy.deepcopy(agent.actor.state_dict())}
    state = run.restore()
    if state is not None:
        agent.load_state_dict(state["agent"])
        replay.load_state_dict(state["replay"])
        clock.load_state_dict(state["clock"])
        env_steps, episodes, best = state["env_steps"], state["episodes"], state["best"]
        if clock.done(env_steps) and run.rows:
            return

    def evaluate_and_checkpoint() -> None:
        nonlocal best
        losses = agent.log.means()
        run.check_finite(losses, agent.updates)
        row = run.evaluate(agent.act, env_steps, agent.updates, extra={"episodes": episodes, **losses})
        if row["eval_return"] > best["eval_return"]:
            best = {"eval_return": row["eval_return"], "env_steps": env_steps,
                    "actor": copy.deepcopy(agent.actor.state_dict())}
        run.checkpoint({"agent": agent.state_dict(), "replay": replay.state_dict(),
                        "clock": clock.state_dict(),
                        "env_steps": env_steps, "episodes": episodes, "best": best})

    rng = run.rng
    env = run.make_env()
    with run.progress(cfg.total_steps, initial=env_steps) as bar:
        while not clock.done(env_steps):
            obs, _ = env.reset(seed=reset_seed(rng))
            done = False
            while not done:
                if env_steps < cfg.random_steps:
                    action = rng.uniform(-1.0, 1.0, size=act_dim).astype(np.float32)
                else:
                    action = agent.explore(obs)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                done = bool(terminated or truncated)
                replay.add(obs=obs, action=action, reward=reward, next_obs=next_obs,
                           terminated=float(bool(terminated)))
                obs = next_obs
                env_steps += 1
                bar.update(1)
                if env_steps >= cfg.random_steps:
                    agent.update(replay.sample(rng, cfg.batch_size))
            episodes += 1
            if clock.due(env_steps):
                evaluate_and_checkpoint()
    env.close()


EVAL_POLICIES = ("eval", "best")


def eval_policy(state: dict, cfg: Config, obs_shape, act_dim: int, episode_len: int, device,  # noqa: ARG001
                which: str = "eval"):
    """The checkpoint's live actor (``"eval"``: what its last evaluation used) or the actor of its
    best evaluation (``"best"``: what the policy file holds), acting with the squashed mean."""
    agent = Agent(int(obs_shape[0]), act_dim, cfg, device)
    agent.load_state_dict(state["agent"])
    if which == "best":
        agent.actor.load_state_dict(state["best"]["actor"])
    return agent.act


def policy_payload(actor_state: dict, cfg: Config, obs_dim: int, act_dim: int) -> dict:
    """The policy file's content: the actor's layers, with only the mean half of the last one (the
    file acts deterministically). ``envs.experts.policy_file_expert`` reads it."""
    names = sorted({k.rsplit(".", 1)[0] for k in actor_state}, key=lambda n: int(n.split(".")[-1]))
    layers = []
    for i, name in enumerate(names):
        w, b = actor_state[f"{name}.weight"].float().cpu(), actor_state[f"{name}.bias"].float().cpu()
        if i == len(names) - 1:
            w, b = w[:act_dim], b[:act_dim]
        layers.append({"weight": w.clone(), "bias": b.clone()})
    return {"format": POLICY_FORMAT, "version": 1, "obs_dim": int(obs_dim), "act_dim": int(act_dim),
            "activation": cfg.activation, "output": "tanh", "layers": layers}
