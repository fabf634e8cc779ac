"""Imitation actor-critic in the latent imagination of a world model, shared by V-MAIL and CMIL.

One update (``LatentAgent.train_step``), given a batch of replay sequences and one of expert
sequences:

1. World model: one gradient step on both batches (``WorldModel.update``); their posteriors are
   reused, detached, below (the expert posterior gives the discriminator's positives and the BC
   targets).
2. Imagination: from every replay posterior state, roll the actor's reparameterised actions
   through the prior for ``horizon`` steps (each step draws one prior head at random).
3. Reward of an imagined pair (s_i, a_i): ``D(s_i, a_i) - w * u(h_{i+1})`` with D the
   discriminator's probability and u the ensemble disagreement of the prior that predicts
   s_{i+1}; ``w = 0`` skips the penalty and gives exactly ``D``. Real replay pairs get ``D`` alone.
4. Actor: maximise ``value_mix * Q + (1 - value_mix) * lambda-return`` along the rollout, by
   backpropagating through the (frozen) dynamics, critics and discriminator, plus an entropy
   bonus, plus ``bc_weight`` x the negative log-likelihood of the expert's actions on the expert
   posterior features.
5. Twin Q critics regress the lambda-return computed with a randomly picked target critic (hard
   copies every ``target_update_every`` updates); with ``critic_real_data`` they also regress
   ``D(s_t, a_t) + gamma * V(s_{t+1})`` on real replay transitions, V mixing Q and return as above.
6. Discriminator: BCE with expert posterior features + expert actions as positives and imagined
   features + policy actions as negatives (as many as positives, drawn at random), optional input
   noise (CMIL) and gradient penalty (V-MAIL).

``LatentTrainer`` holds the agent, the replays and the counters, and runs the phases (offline
pre-training, BC initialisation, online interaction with evaluation and checkpoints) that
``algorithms.cmil`` and ``algorithms.vmail`` put together.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from algorithms.discriminator import Discriminator, bce_loss, gradient_penalty, reward_from_logits
from algorithms.nets import activation, mlp
from algorithms.sequence_replay import SequenceReplay
from algorithms.world_model import LatentPolicy, WorldModel, clip_and_step, make_optimizer

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# ------------------------------------------------------------------------------ distributions
class TruncNormal:
    """Normal(loc, scale) truncated to [low, high], per dimension; log_prob and entropy sum over
    the last axis. ``rsample`` inverts the CDF, so samples are differentiable in loc and scale."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, low: float = -1.0, high: float = 1.0):
        self.loc, self.scale, self.low, self.high = loc, scale, low, high
        self.alpha = (low - loc) / scale
        self.beta = (high - loc) / scale
        self.cdf_a = torch.special.ndtr(self.alpha)
        self.z = (torch.special.ndtr(self.beta) - self.cdf_a).clamp_min(1e-6)

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    def rsample(self) -> torch.Tensor:
        u = torch.rand_like(self.loc)
        p = (self.cdf_a + u * self.z).clamp(1e-6, 1 - 1e-6)
        x = self.loc + self.scale * torch.special.ndtri(p)
        return x.clamp(self.low, self.high)

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        return self.rsample()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.loc) / self.scale
        return (-0.5 * z ** 2 - torch.log(self.scale) - LOG_SQRT_2PI - torch.log(self.z)).sum(-1)

    def entropy(self) -> torch.Tensor:
        pdf = lambda v: torch.exp(-0.5 * v ** 2) / math.sqrt(2 * math.pi)  # noqa: E731
        a, b = self.alpha.clamp(-20, 20), self.beta.clamp(-20, 20)
        ent = (0.5 + LOG_SQRT_2PI + torch.log(self.scale) + torch.log(self.z)
               + (a * pdf(a) - b * pdf(b)) / (2 * self.z))
        return ent.sum(-1)


# ------------------------------------------------------------------------------------- networks
class Actor(nn.Module):
    """features -> truncated normal on [-1, 1] with mean tanh(m) and std 2*sigmoid(s/2) + min_std."""

    def __init__(self, feat_dim: int, act_dim: int, layers: Sequence[int], act: str, min_std: float):
        super().__init__()
        self.act_dim, self.min_std = act_dim, min_std
        self.net = mlp(feat_dim, tuple(layers), 2 * act_dim, act=act)

    def forward(self, feat: torch.Tensor) -> TruncNormal:
        mean, raw = self.net(feat).chunk(2, -1)
        return TruncNormal(torch.tanh(mean), 2.0 * torch.sigmoid(raw / 2.0) + self.min_std)


class EnsembleMLP(nn.Module):
    """``n`` independent MLPs evaluated together (stacked weights): x (..., in) -> (n, ..., out)."""

    def __init__(self, n: int, inp: int, hidden: Sequence[int], out: int, act: str):
        super().__init__()
        dims = [inp, *hidden, out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(a)
            self.weights.append(nn.Parameter(torch.empty(n, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, b).uniform_(-bound, bound)))
        self.act = activation(act)()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1])
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.matmul(h, w) + b if i == 0 else torch.baddbmm(b, h, w)
            if i < len(self.weights) - 1:
                h = self.act(h)
        return h.reshape(self.n, *lead, -1)


def lambda_return(reward: torch.Tensor, value: torch.Tensor, discount: float,
                  bootstrap: torch.Tensor, lam: float) -> torch.Tensor:
    """TD(lambda) returns along axis 0: R_t = r_t + g * ((1 - lam) * v_{t+1} + lam * R_{t+1}),
    with v_T = R_T = bootstrap. reward, value: (T, ...); bootstrap: (...)."""
    next_values = torch.cat([value[1:], bootstrap[None]], 0)
    inputs = reward + discount * (1.0 - lam) * next_values
    out, last = [], bootstrap
    for t in reversed(range(reward.shape[0])):
        last = inputs[t] + discount * lam * last
        out.append(last)
    return torch.stack(out[::-1], 0)


def conservative_reward(d_prob: torch.Tensor, u: torch.Tensor, penalty_weight: float) -> torch.Tensor:
    """CMIL's reward for imagined steps, ``D - w * u``; ``w == 0`` returns ``D`` itself."""
    if penalty_weight == 0:
        return d_prob
    return d_prob - penalty_weight * u


def imagine(rssm, actor: Actor, start: dict, horizon: int) -> dict:
    """Roll the actor through the prior from ``start`` (flat states, N each). Returns feat and
    deter (H+1, N, .), action, loc, scale (H, N, A). Actions are reparameterised samples of the
    actor on detached features, so gradients reach the actor through the dynamics."""
    state = start
    feats, deters, actions, locs, scales = [rssm.feat(start)], [start["deter"]], [], [], []
    heads = torch.randint(rssm.ensemble, (horizon,)).tolist()
    for t in range(horizon):
        dist = actor(feats[-1].detach())
        a = dist.rsample()
        state = rssm.img_step(state, a, heads[t])
        feats.append(rssm.feat(state)), deters.append(state["deter"])
        actions.append(a), locs.append(dist.loc), scales.append(dist.scale)
    return {"feat": torch.stack(feats), "deter": torch.stack(deters), "action": torch.stack(actions),
            "loc": torch.stack(locs), "scale": torch.stack(scales)}


class frozen:
    """Context manager: parameters of the given modules do not require grad inside."""

    def __init__(self, *modules: nn.Module):
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p in self.params:
            p.requires_grad_(True)


# --------------------------------------------------------------------------------- actor-critic
class ImitationActorCritic(nn.Module):
    def __init__(self, feat_dim: int, act_dim: int, cfg):
        super().__init__()
        self.cfg = cfg
        self.actor = Actor(feat_dim, act_dim, cfg.actor_layers, cfg.act, cfg.actor_min_std)
        self.critic = EnsembleMLP(2, feat_dim + act_dim, cfg.critic_layers, 1, cfg.act)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.disc = Discriminator(feat_dim + act_dim, cfg.disc_hidden, act=cfg.disc_act,
                                  input_noise=cfg.disc_noise)
        self.actor_opt = make_optimizer(self.actor.parameters(), cfg.actor_lr, cfg.opt_eps, cfg.weight_decay)
        self.critic_opt = make_optimizer(self.critic.parameters(), cfg.critic_lr, cfg.opt_eps, cfg.weight_decay)
        self.disc_opt = make_optimizer(self.disc.parameters(), cfg.disc_lr, cfg.opt_eps, cfg.weight_decay)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def bc_loss(self, expert_feat: torch.Tensor, expert_action: torch.Tensor) -> torch.Tensor:
        """NLL of the expert's next action a_t (row t+1) given the posterior features of o_t."""
        return -self.actor(expert_feat[:, :-1]).log_prob(expert_action[:, 1:]).mean()

    def discriminate(self, pair: torch.Tensor) -> torch.Tensor:
        """D(s, a) of concat(features, action) as a probability, without input noise."""
        was = self.disc.training
        self.disc.eval()
        out = reward_from_logits(self.disc(pair), "prob")
        self.disc.train(was)
        return out

    def update(self, wm: WorldModel, post: dict, action: torch.Tensor, expert_post: dict,
               expert_action: torch.Tensor) -> dict[str, torch.Tensor]:
        """One actor, critic and discriminator step; post/expert_post are detached (B, T, .)."""
        cfg = self.cfg
        b, t = action.shape[:2]
        start = {k: v.reshape(b * t, v.shape[-1]) for k, v in post.items()}
        if 0 < cfg.imag_starts < b * t:  # imagine from a random subset of the posterior states
            idx = torch.randperm(b * t, device=action.device)[: cfg.imag_starts]
            start = {k: v[idx] for k, v in start.items()}
        else:
            idx = None
        real_feat, expert_feat = wm.rssm.feat(post), wm.rssm.feat(expert_post)
        g, lam, h = cfg.discount, cfg.lam, cfg.horizon
        weight = (g ** torch.arange(h - 1, device=action.device, dtype=torch.float32))[:, None]
        m: dict[str, torch.Tensor] = {}

        # --- actor: backprop through the frozen dynamics, critics and discriminator
        with frozen(wm, self.critic, self.disc):
            seq = imagine(wm.rssm, self.actor, start, h)
            pair = torch.cat([seq["feat"][:-1], seq["action"]], -1)  # (H, N, F + A)
            d_prob = self.discriminate(pair)
            if cfg.penalty_weight != 0:  # u(h_{i+1}): disagreement about the step (s_i, a_i)
                u = wm.disagreement(seq["deter"][1:])
            else:
                with torch.no_grad():  # for the log only, on a slice of the rollouts
                    u = wm.disagreement(seq["deter"][1:, : cfg.log_disagreement_n])
            reward = conservative_reward(d_prob, u, cfg.penalty_weight)
            q = self.critic(pair).squeeze(-1).min(0).values  # (H, N)
            ret = lambda_return(reward[:-1], q[:-1], g, q[-1], lam)
            objective = cfg.value_mix * q[:-1] + (1.0 - cfg.value_mix) * ret
            ent = TruncNormal(seq["loc"][:-1], seq["scale"][:-1]).entropy()
            actor_loss = -(weight * (objective + cfg.actor_ent * ent)).mean()
            bc = self.bc_loss(expert_feat, expert_action)
            total = actor_loss + cfg.bc_weight * bc if cfg.bc_weight != 0 else actor_loss
        self.actor_opt.zero_grad(set_to_none=True)
        total.backward()
        clip_and_step(self.actor_opt, self.actor.parameters(), cfg.grad_clip)

        # --- critics: lambda-returns of a random target critic on the rollouts (+ real transitions)
        pair, reward = pair.detach(), reward.detach()
        with torch.no_grad():
            tq = self.target_critic(pair).squeeze(-1)[int(torch.randint(2, ()))]
            tret = lambda_return(reward[:-1], tq[:-1], g, tq[-1], lam)
        q_pred = self.critic(pair[:-1]).squeeze(-1)  # (2, H-1, N)
        critic_loss = (weight * (q_pred - tret) ** 2).mean()
        if cfg.critic_real_data:
            with torch.no_grad():
                v_start = (1 - lam) * tq[0] + lam * tret[0]  # V of each imagination start
                if idx is None:
                    v_next = v_start.reshape(b, t)[:, 1:]
                    real_pair = torch.cat([real_feat[:, :-1], action[:, 1:]], -1)
                else:  # only transitions whose next state was an imagination start
                    bi, ti = idx // t, idx % t
                    ok = ti > 0
                    bi, ti, v_next = bi[ok], ti[ok], v_start[ok]
                    real_pair = torch.cat([real_feat[bi, ti - 1], action[bi, ti]], -1)
                r_real = self.discriminate(real_pair)
                target = r_real + g * v_next
            q_real = self.critic(real_pair).squeeze(-1)
            critic_loss = critic_loss + ((q_real - target) ** 2).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        clip_and_step(self.critic_opt, self.critic.parameters(), cfg.grad_clip)

        # --- discriminator: expert (feat, next action) vs imagined (feat, policy action)
        pos = torch.cat([expert_feat[:, :-1], expert_action[:, 1:]], -1).reshape(-1, pair.shape[-1])
        neg_all = pair.reshape(-1, pair.shape[-1])
        neg = neg_all[torch.randint(neg_all.shape[0], (pos.shape[0],), device=pos.device)]
        self.disc.train()
        disc_loss, disc_acc = bce_loss(self.disc, pos, neg)
        if cfg.disc_gp > 0:
            disc_loss = disc_loss + cfg.disc_gp * gradient_penalty(self.disc, pos, neg)
        self.disc_opt.zero_grad(set_to_none=True)
        disc_loss.backward()
        clip_and_step(self.disc_opt, self.disc.parameters(), cfg.grad_clip)

        self.updates += 1
        if int(self.updates) % cfg.target_update_every == 0:
            self.target_critic.load_state_dict(self.critic.state_dict())
        m.update(actor_loss=actor_loss.detach(), bc_loss=bc.detach(), critic_loss=critic_loss.detach(),
                 disc_loss=disc_loss.detach(), disc_acc=disc_acc, reward_mean=reward.mean(),
                 disc_prob_policy=d_prob.detach().mean(), disagreement_policy=u.detach().mean(),
                 penalty_mean=(cfg.penalty_weight * u.detach()).mean(), actor_entropy=ent.detach().mean())
        return m


# ---------------------------------------------------------------------------------------- agent
class LatentAgent(nn.Module):
    """World model + actor-critic + discriminator, with all their optimisers."""

    def __init__(self, obs_shape, act_dim: int, cfg, obs_mean=None, obs_std=None):
        super().__init__()
        self.cfg = cfg
        self.wm = WorldModel(obs_shape, act_dim, cfg, obs_mean, obs_std)
        self.ac = ImitationActorCritic(self.wm.feat_dim, act_dim, cfg)

    def _tensors(self, *batches):
        dev = self.wm.obs_mean.device
        return [torch.as_tensor(np.concatenate([bt[k] for bt in batches]), device=dev)
                for k in ("obs", "action", "is_first")]

    def train_step(self, batch: dict, expert_batch: dict) -> dict[str, torch.Tensor]:
        """One full update on a replay batch and an expert batch (numpy sequences)."""
        obs, action, first = self._tensors(batch, expert_batch)
        post, metrics = self.wm.update(obs, action, first)
        n = len(batch["obs"])
        rp = {k: v[:n] for k, v in post.items()}
        ep = {k: v[n:] for k, v in post.items()}
        metrics.update(self.ac.update(self.wm, rp, action[:n], ep, action[n:]))
        with torch.no_grad():
            stride = max(1, ep["deter"].shape[1] // 8)
            metrics["disagreement_demo"] = self.wm.disagreement(ep["deter"][:, ::stride]).mean()
        return metrics

    def bc_step(self, expert_batch: dict) -> dict[str, torch.Tensor]:
        """BC initialisation: a world-model step on expert sequences, then an actor NLL step."""
        obs, action, first = self._tensors(expert_batch)
        post, metrics = self.wm.update(obs, action, first)
        loss = self.ac.bc_loss(self.wm.rssm.feat(post), action)
        self.ac.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_and_step(self.ac.actor_opt, self.ac.actor.parameters(), self.cfg.grad_clip)
        metrics["bc_loss"] = loss.detach()
        return metrics

    @torch.no_grad()
    def demo_posteriors(self, episodes) -> dict[str, torch.Tensor]:
        """Filter whole demo episodes (``SequenceReplay`` rows) from their first row with the
        current world model. Returns flat tensors over every (o_t, a_t) pair: ``deter``, the
        posterior ``mean`` and ``std`` of o_t, and the expert's ``action`` a_t (row t+1)."""
        deters, means, stds, acts = [], [], [], []
        for ep in episodes:
            obs, action, first = self._tensors({k: v[None] for k, v in ep.items()})
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
        self.ac.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_and_step(self.ac.actor_opt, self.ac.actor.parameters(), self.cfg.grad_clip)
        return {"bc_loss": loss.detach()}

    def policy(self, mode: str = "eval", expl_noise: float = 0.0, episode_len: int | None = None):
        return LatentPolicy(self.wm, self.ac.actor, mode=mode, expl_noise=expl_noise,
                            episode_len=episode_len)

    def full_state(self) -> dict:
        return {"modules": self.state_dict(), "wm_opt": self.wm.opt.state_dict(),
                "actor_opt": self.ac.actor_opt.state_dict(), "critic_opt": self.ac.critic_opt.state_dict(),
                "disc_opt": self.ac.disc_opt.state_dict()}

    def load_full_state(self, state: dict) -> None:
        self.load_state_dict(state["modules"])
        self.wm.opt.load_state_dict(state["wm_opt"])
        self.ac.actor_opt.load_state_dict(state["actor_opt"])
        self.ac.critic_opt.load_state_dict(state["critic_opt"])
        self.ac.disc_opt.load_state_dict(state["disc_opt"])


# -------------------------------------------------------------------------------------- trainer
LOGGED = ("wm_loss", "recon_loss", "kl", "actor_loss", "bc_loss", "critic_loss", "disc_loss",
          "disc_acc", "disagreement_policy", "disagreement_demo", "penalty_mean", "reward_mean")


class LatentTrainer:
    """The agent, the replays (demos + online episodes, and demos alone) and the counters of one
    run, with the phases of training. Every random draw comes from ``run.rng`` or torch's global
    generator, both checkpointed by the harness."""

    def __init__(self, run, cfg):
        self.run, self.cfg = run, cfg
        obs_shape = run.obs_shape
        mean = std = None
        if len(obs_shape) == 1 and cfg.normalize_obs:
            states = np.concatenate([tr.observations[run.obs_key] for tr in run.demos]).astype(np.float64)
            mean = states.mean(0).astype(np.float32)
            std = np.maximum(states.std(0), 1e-2).astype(np.float32)
        self.agent = LatentAgent(obs_shape, run.act_dim, cfg, mean, std).to(run.device)
        self.replay = SequenceReplay(cfg.replay_capacity)
        self.replay.add_trajectories(run.demos, run.obs_key, protected=True)
        self.expert = SequenceReplay(cfg.replay_capacity)
        self.expert.add_trajectories(run.demos, run.obs_key, protected=True)
        if not self.expert.can_sample(cfg.seq_len):
            longest = max(len(t) + 1 for t in run.demos)
            raise_seq_len(cfg.seq_len, longest)
        self.env_steps = 0
        self.grad_steps = 0
        self.next_eval = cfg.eval_every
        self.logs: dict[str, list[torch.Tensor]] = defaultdict(list)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"agent": self.agent.full_state(), "replay": self.replay.state_dict(),
                "env_steps": self.env_steps, "grad_steps": self.grad_steps, "next_eval": self.next_eval}

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_full_state(state["agent"])
        self.replay.load_state_dict(state["replay"])
        self.env_steps = state["env_steps"]
        self.grad_steps = state["grad_steps"]
        self.next_eval = state["next_eval"]

    # -- phases --------------------------------------------------------------------------------
    def _log(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.logs[k].append(v)

    def update(self) -> None:
        cfg, rng = self.cfg, self.run.rng
        batch = self.replay.sample(cfg.batch_size, cfg.seq_len, rng)
        expert = self.expert.sample(cfg.expert_batch_size, cfg.seq_len, rng)
        self._log(self.agent.train_step(batch, expert))
        self.grad_steps += 1

    def pretrain(self, steps: int) -> None:
        """Offline: full agent updates on the demos alone (the replay holds only them now)."""
        for _ in range(steps):
            self.update()

    def pretrain_world_model(self, steps: int) -> None:
        """Offline, before ``pretrain``: world-model steps alone on batches of
        ``batch_size + expert_batch_size`` demo sequences (the same number of sequences as a
        full update's model step, at a fifth of its cost)."""
        cfg = self.cfg
        for _ in range(steps):
            batch = self.expert.sample(cfg.batch_size + cfg.expert_batch_size, cfg.seq_len, self.run.rng)
            _, metrics = self.agent.wm.update(*self.agent._tensors(batch))
            self._log(metrics)
            self.grad_steps += 1

    def bc_init(self, steps: int) -> None:
        """``bc_init_mode="joint"``: each step a world-model step and an actor NLL step on a batch
        of expert sequences (the reference). ``"frozen"``: the demos are filtered once, whole
        episodes from their first step, by the frozen world model; then actor-only NLL steps on
        ``bc_init_batch`` random pairs of them."""
        cfg, rng = self.cfg, self.run.rng
        if steps == 0:
            return
        if cfg.bc_init_mode == "frozen":
            data = self.agent.demo_posteriors(self.expert.episodes)
            n = len(data["action"])
            for _ in range(steps):
                self._log(self.agent.bc_step_frozen(data, rng.integers(0, n, size=cfg.bc_init_batch)))
                self.grad_steps += 1
            return
        for _ in range(steps):
            expert = self.expert.sample(cfg.expert_batch_size, cfg.seq_len, rng)
            self._log(self.agent.bc_step(expert))
            self.grad_steps += 1

    def evaluate(self) -> dict:
        extra = {}
        for k in LOGGED:
            vals = self.logs.get(k)
            extra[k] = float(torch.stack(vals).float().mean()) if vals else float("nan")
        self.run.check_finite({k: v for k, v in extra.items() if self.logs.get(k)}, self.grad_steps)
        extra["replay_steps"] = self.replay.n_steps
        self.logs.clear()
        policy = self.agent.policy("eval", episode_len=self.run.task.max_episode_steps)
        row = self.run.evaluate(policy, self.env_steps, self.grad_steps, extra=extra)
        self.run.checkpoint(self.state_dict())
        return row

    def online(self) -> None:
        """Interact until ``env_steps``: whole episodes go to the replay when they end; after
        ``seed_steps``, every ``train_every`` env steps run ``updates_per_train`` updates;
        evaluate (and checkpoint) at the first episode end after each ``eval_every`` and at the end."""
        cfg, run = self.cfg, self.run
        if self.env_steps >= cfg.env_steps:
            return
        env = run.make_env()
        policy = self.agent.policy("train", expl_noise=cfg.expl_noise)
        random_seed = cfg.seed_policy == "random"
        with run.progress(cfg.env_steps, initial=self.env_steps) as bar:
            while self.env_steps < cfg.env_steps:
                obs, _ = env.reset(seed=int(run.rng.integers(2**31)))
                policy.reset(1)
                observations, actions, done = [obs], [], False
                while not done:
                    if random_seed and self.env_steps < cfg.seed_steps:
                        a = run.rng.uniform(-1, 1, size=run.act_dim).astype(np.float32)
                    else:
                        a = policy(obs[None])[0]
                    obs, _, term, trunc, _ = env.step(a)
                    observations.append(obs), actions.append(a)
                    self.env_steps += 1
                    bar.update(1)
                    if self.env_steps >= cfg.seed_steps and self.env_steps % cfg.train_every == 0:
                        for _ in range(cfg.updates_per_train):
                            self.update()
                    done = term or trunc
                self.replay.add_episode(np.stack(observations), np.stack(actions))
                if self.env_steps >= self.next_eval or self.env_steps >= cfg.env_steps:
                    while self.next_eval <= self.env_steps:
                        self.next_eval += cfg.eval_every
                    row = self.evaluate()
                    bar.set_postfix(score=f"{row['norm_score']:.2f}")
        env.close()


def raise_seq_len(seq_len: int, longest: int):
    from cmil_bench.errors import UserError

    raise UserError(f"seq_len={seq_len} is longer than every demo episode (longest has {longest} "
                    f"rows); set seq_len <= {longest}")


def eval_policy(state: dict, cfg, obs_shape, act_dim: int, task, device, which: str = "eval"):
    """The evaluation policy (actor mean on the filtered latent state) of a checkpoint's
    ``state`` (a ``LatentTrainer.state_dict``); see ``cmil_bench.evaluate``."""
    agent = LatentAgent(obs_shape, act_dim, cfg).to(device)
    agent.load_state_dict(state["agent"]["modules"])
    return agent.policy("eval", episode_len=task.max_episode_steps)
