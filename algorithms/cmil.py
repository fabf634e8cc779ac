"""CMIL: conservative model-based imitation learning (arXiv 2405.13193).

Imitation without reward labels, framed as fine-tuning:

1. the demos go into the agent's replay and into a separate expert replay;
2. offline pre-training: ``pretrain_wm_steps`` world-model-only steps (0 in the reference; a
   model step costs a fifth of a full update), then ``pretrain_steps`` full agent updates (world
   model, discriminator, actor-critic) on the demos alone, before any environment step;
3. BC initialisation: ``bc_init_steps`` steps fitting the actor to the expert's actions
   (negative log-likelihood on the demos' posterior latent features). ``bc_init_mode="joint"``
   (the reference) also takes a world-model step each time, on ``expert_batch_size`` sequences;
   ``"frozen"`` filters the whole demo episodes once with the pre-trained model (from their
   first step, as the policy does when it acts) and then takes actor-only steps on
   ``bc_init_batch`` random (latent, action) pairs, a fresh posterior sample each time: about a
   hundredth of the cost of a joint step;
4. ``seed_steps`` environment steps with that BC policy, then online fine-tuning: every
   ``train_every`` env steps, ``updates_per_train`` updates.

The world model is an RSSM with an ensemble of ``ensemble_size`` prior heads (see
algorithms/world_model.py); the actor-critic learns in its imagination (algorithms/actor_critic.py)
with the conservative reward ``D(z, a) - penalty_weight * u(z)`` for imagined steps, where D is
the discriminator's probability and u the std of the ensemble's prior means averaged over latent
dimensions (MOPO-style: uncertain model predictions earn less). The actor maximises
``0.05 * Q + 0.95 * lambda-return`` through the model dynamics, plus ``bc_weight`` x the BC
log-likelihood. Every ingredient is a switch: ``penalty_weight=0`` turns conservatism off
(the reward is then exactly D), ``bc_weight=0``, ``pretrain_steps=0``, ``bc_init_steps=0``,
``disc_noise=0``, ``ensemble_size=1``.

Defaults follow the reference code (victorkolev/cmil, configs.yaml); the ``cpu`` preset shrinks
the networks and budgets so one run of a cheap task takes about a minute on one CPU core, and
spends the offline part where it pays at that budget: 600 world-model-only steps, 60 full
updates, 3000 frozen BC steps, and ``kl_scale=0.01``. The KL scale matters for low-dimensional
states: with a unit-variance decoder on a 6- to 28-d state, KL scale 1 lets the posterior carry
only a nat or so beyond what the dynamics predict (posterior std ~1), the first latent of an
episode barely tells start positions apart, and a BC policy on those latents cannot generalise to
new starts (see benchmarks/RESULTS.md, "World models").
"""

from __future__ import annotations

from dataclasses import dataclass

from algorithms.actor_critic import LatentTrainer, eval_policy  # noqa: F401  (the harness API)
from cmil_bench.config import BaseConfig
from cmil_bench.errors import UserError

SEED_POLICIES = ("actor", "random")
BC_INIT_MODES = ("joint", "frozen")
STD_ACTS = ("sigmoid2", "softplus")


@dataclass
class Config(BaseConfig):
    # --- schedule (env steps; one env step = one action, action repeat 1)
    env_steps: int = 200_000
    eval_every: int = 5_000
    pretrain_steps: int = 1_000  # offline agent updates on the demos before any env step
    pretrain_wm_steps: int = 0  # world-model-only steps on the demos before pre-training (0: none)
    bc_init_steps: int = 100  # actor NLL steps on the demos' latents after pre-training
    bc_init_mode: str = "joint"  # "joint": + a world-model step each; "frozen": cached latents
    bc_init_batch: int = 256  # (o, a) pairs per step with bc_init_mode="frozen"
    seed_steps: int = 5_000  # env steps before online updates start
    seed_policy: str = "actor"  # "actor": the (BC-initialised) policy; "random": uniform actions
    train_every: int = 5
    updates_per_train: int = 2
    expl_noise: float = 0.0  # Gaussian noise added to sampled training actions
    # --- replay
    replay_capacity: int = 2_000_000  # env steps kept (demos are never evicted)
    batch_size: int = 32  # replay sequences per update
    expert_batch_size: int = 32  # expert sequences per update
    seq_len: int = 50
    imag_starts: int = 0  # imagine from this many random posterior states of the batch (0 = all)
    # --- world model (RSSM with an ensemble of prior heads)
    deter: int = 400
    stoch: int = 360
    hidden: int = 400
    ensemble_size: int = 10
    act: str = "elu"
    std_act: str = "sigmoid2"
    min_std: float = 0.1
    free_nats: float = 1.0
    kl_balance: float = 0.8  # share of the KL gradient that trains the prior (0.5 = plain KL)
    kl_scale: float = 1.0
    mlp_layers: tuple[int, ...] = (400, 400, 400, 400)  # state encoder / decoder
    cnn_depth: int = 48
    encoder_kernels: tuple[int, ...] = (4, 4, 4, 4)
    decoder_kernels: tuple[int, ...] = (5, 5, 6, 6)
    normalize_obs: bool = True  # standardise states with the demos' mean and std
    symlog_obs: bool = True  # then squash them with symlog (encoder input and decoder target)
    augment: bool = False  # random-shift augmentation of pixel sequences for the world model
    shift_pad: int = 4
    model_lr: float = 3e-4
    # --- actor-critic in imagination
    horizon: int = 15
    discount: float = 0.99
    lam: float = 0.95
    value_mix: float = 0.05  # actor objective: value_mix * Q + (1 - value_mix) * lambda-return
    actor_layers: tuple[int, ...] = (400, 400, 400, 400)
    critic_layers: tuple[int, ...] = (400, 400, 400, 400)
    actor_min_std: float = 0.1
    actor_ent: float = 1e-4
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    target_update_every: int = 100  # hard copies of the twin critics
    critic_real_data: bool = True  # critics also regress D + gamma * V on real replay transitions
    # --- discriminator on (latent features, action)
    disc_hidden: tuple[int, ...] = (200, 200)
    disc_act: str = "elu"
    disc_lr: float = 3e-4
    disc_noise: float = 2.5  # std of Gaussian noise on its inputs while it trains
    disc_gp: float = 0.0  # gradient-penalty weight
    # --- CMIL's own terms
    penalty_weight: float = 10.0  # w in D - w * u; 0 = no conservatism
    bc_weight: float = 10.0  # weight of the BC NLL in the actor loss
    # --- optimisers (Adam, decoupled weight decay) and logging
    opt_eps: float = 1e-5
    grad_clip: float = 100.0
    weight_decay: float = 1e-6
    log_disagreement_n: int = 256  # rollouts used for the disagreement log when w = 0

    def __post_validate__(self):
        name = type(self).__module__.rsplit(".", 1)[-1]
        for k in ("env_steps", "train_every", "updates_per_train", "replay_capacity", "batch_size",
                  "expert_batch_size", "deter", "stoch", "hidden", "ensemble_size", "cnn_depth",
                  "target_update_every", "log_disagreement_n", "bc_init_batch"):
            if getattr(self, k) <= 0:
                raise UserError(f"{name}: {k} must be positive, got {getattr(self, k)}")
        for k in ("pretrain_steps", "pretrain_wm_steps", "bc_init_steps", "seed_steps", "expl_noise", "free_nats",
                  "penalty_weight", "bc_weight", "disc_noise", "disc_gp", "actor_ent", "shift_pad",
                  "imag_starts"):
            if getattr(self, k) < 0:
                raise UserError(f"{name}: {k} must be >= 0, got {getattr(self, k)}")
        if self.seq_len < 3:
            raise UserError(f"{name}: seq_len must be >= 3, got {self.seq_len}")
        if self.horizon < 2:
            raise UserError(f"{name}: horizon must be >= 2, got {self.horizon}")
        for k in ("discount", "lam", "value_mix", "kl_balance"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise UserError(f"{name}: {k} must lie in [0, 1], got {getattr(self, k)}")
        if self.seed_policy not in SEED_POLICIES:
            raise UserError(f"{name}: seed_policy must be one of {SEED_POLICIES}, got {self.seed_policy!r}")
        if self.bc_init_mode not in BC_INIT_MODES:
            raise UserError(f"{name}: bc_init_mode must be one of {BC_INIT_MODES}, got {self.bc_init_mode!r}")
        if self.std_act not in STD_ACTS:
            raise UserError(f"{name}: std_act must be one of {STD_ACTS}, got {self.std_act!r}")
        if len(self.encoder_kernels) != 4 or len(self.decoder_kernels) != 4:
            raise UserError(f"{name}: encoder_kernels and decoder_kernels need 4 entries each")
        if not self.mlp_layers or not self.actor_layers or not self.critic_layers:
            raise UserError(f"{name}: mlp_layers, actor_layers and critic_layers must be non-empty")


PRESETS = {
    # The default CPU sweep: small networks, 600 world-model-only steps + 60 full updates offline,
    # 3000 cheap BC steps on frozen latents, ~300 online updates: 55-60 CPU-seconds per run of a
    # cheap state task on one core (measured, evaluation included); imagination from 48 of the
    # batch's 256 posterior states instead of all of them; KL scale 0.01 (see the docstring);
    # BC weight 100 (10 demos, seeds 0-2: fetch-push 0.58 -> 0.67, pointmaze 0.74 -> 0.77).
    "cpu": {
        "env_steps": 5_000, "eval_every": 2_500, "pretrain_wm_steps": 600, "pretrain_steps": 60,
        "bc_init_steps": 3_000, "bc_init_mode": "frozen", "bc_init_batch": 256, "kl_scale": 0.01,
        "bc_weight": 100.0,
        "seed_steps": 500, "train_every": 15, "updates_per_train": 1,
        "batch_size": 16, "expert_batch_size": 16, "seq_len": 16,
        "deter": 128, "stoch": 32, "hidden": 128, "ensemble_size": 5,
        "mlp_layers": (128, 128), "cnn_depth": 16,
        "actor_layers": (128, 128), "critic_layers": (128, 128), "disc_hidden": (128, 128),
        "imag_starts": 48, "log_disagreement_n": 48,
    },
    # A few seconds: to check that everything runs.
    "smoke": {
        "env_steps": 120, "eval_every": 60, "eval_episodes": 2, "pretrain_steps": 3,
        "bc_init_steps": 3, "seed_steps": 20, "train_every": 20, "updates_per_train": 1,
        "batch_size": 4, "expert_batch_size": 4, "seq_len": 8, "horizon": 5,
        "deter": 32, "stoch": 8, "hidden": 32, "ensemble_size": 3, "mlp_layers": (32,),
        "cnn_depth": 4, "actor_layers": (32,), "critic_layers": (32,), "disc_hidden": (32,),
        "log_disagreement_n": 16,
    },
}


def train(run, cfg: Config) -> None:
    trainer = LatentTrainer(run, cfg)
    state = run.restore()
    if state is not None:
        trainer.load_state_dict(state)
    else:
        trainer.pretrain_world_model(cfg.pretrain_wm_steps)  # offline, on the demos alone
        trainer.pretrain(cfg.pretrain_steps)
        trainer.bc_init(cfg.bc_init_steps)
        trainer.evaluate()  # the offline policy, at 0 env steps (and the first checkpoint)
    trainer.online()
