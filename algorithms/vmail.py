"""V-MAIL: variational model-based adversarial imitation learning (Rafailov et al., 2021).

The model-based imitation baseline without conservatism: a latent world model (one prior, no
ensemble) is learned from the replay; a discriminator on (latent features, action) tells expert
posterior latents with the expert's actions from imagined latents with the policy's actions; the
actor maximises the lambda-return of the reward ``D`` (the discriminator's probability) over
imagined rollouts by backpropagating through the model dynamics. No offline pre-training, no
BC initialisation or BC term, no uncertainty penalty; a gradient penalty (weight 1) on the
discriminator; exploration noise 0.3 on the training actions; the first ``seed_steps`` env
steps take uniform random actions.

It shares every part with CMIL (algorithms/world_model.py, algorithms/actor_critic.py,
algorithms/discriminator.py), so the two differ only in the settings below. Defaults follow the
reference code (rmrafailov/VMAIL, Dreamer-v1 sizes); differences from it: twin Q critics with
target copies (the shared actor-critic) instead of one state-value network, and the gradient
penalty on interpolated inputs (algorithms.discriminator.gradient_penalty).
"""

from __future__ import annotations

from dataclasses import dataclass

from algorithms import cmil
from algorithms.actor_critic import LatentTrainer, eval_policy  # noqa: F401  (the harness API)


@dataclass
class Config(cmil.Config):
    # Every field is documented in algorithms.cmil.Config; these are V-MAIL's values.
    pretrain_steps: int = 0
    bc_init_steps: int = 0
    seed_steps: int = 1_000
    seed_policy: str = "random"
    expl_noise: float = 0.3
    batch_size: int = 128
    expert_batch_size: int = 128
    deter: int = 200
    stoch: int = 30
    hidden: int = 200
    ensemble_size: int = 1
    std_act: str = "softplus"
    free_nats: float = 3.0
    kl_balance: float = 0.5
    cnn_depth: int = 32
    model_lr: float = 6e-4
    value_mix: float = 0.0
    actor_layers: tuple[int, ...] = (400, 400, 400, 400)
    critic_layers: tuple[int, ...] = (400, 400, 400)
    actor_lr: float = 8e-5
    critic_lr: float = 8e-5
    critic_real_data: bool = False
    disc_hidden: tuple[int, ...] = (400, 400)
    disc_lr: float = 8e-5
    disc_noise: float = 0.0
    disc_gp: float = 1.0
    penalty_weight: float = 0.0
    bc_weight: float = 0.0
    weight_decay: float = 0.0


PRESETS = {
    # CMIL's cpu sizes without its offline phases; at ~460 updates the reference learning rates
    # (8e-5) barely move the actor, so actor, critic and discriminator use 3e-4 (CMIL's), and the
    # KL scale is 0.01 for the reason given in algorithms.cmil's docstring.
    # One update every 7 env steps (~700 updates; was 10: 10 demos, seeds 0-2, fetch-push 0.05 -> 0.24,
    # pointmaze 0.27 -> 0.48, ~50-56 s a run).
    "cpu": {**cmil.PRESETS["cpu"], "pretrain_wm_steps": 0, "pretrain_steps": 0, "bc_init_steps": 0,
            "bc_init_mode": "joint", "bc_weight": 0.0, "ensemble_size": 1, "seed_steps": 500, "train_every": 7,
            "actor_lr": 3e-4, "critic_lr": 3e-4, "disc_lr": 3e-4},
    "smoke": {**cmil.PRESETS["smoke"], "pretrain_steps": 0, "bc_init_steps": 0, "ensemble_size": 1},
}


def train(run, cfg: Config) -> None:
    trainer = LatentTrainer(run, cfg)
    state = run.restore()
    if state is not None:
        trainer.load_state_dict(state)
    trainer.online()
