"""V-MAIL: variational model-based adversarial imitation learning (Rafailov et al., 2021).

The model-based imitation baseline without conservatism: a latent world model (one prior, no
ensemble) is learned from the replay; a discriminator on (latent features, action) tells expert
posterior latents with the expert's actions from imagined latents with the policy's actions; the
actor maximises the lambda-return of the reward ``D`` (the discriminator's probability) over
imagined rollouts by backpropagating through the model dynamics. No offline pre-training, no
BC initialisation or BC term, no uncertainty penalty; a gradient penalty (weight 1) on the
discriminator; exploration noise 0.3 on the training actions; the first ``seed_steps`` env
steps take uniform random actions.

The agent is the shared latent agent (algorithms/latent_agent.py) as it is, with V-MAIL's
settings below. Defaults follow the reference code (rmrafailov/VMAIL, Dreamer-v1 sizes);
differences from it: twin Q critics with target copies (the shared actor-critic) instead of one
state-value network, and the gradient penalty on interpolated inputs
(algorithms.discriminator.gradient_penalty).
"""

from __future__ import annotations

from dataclasses import dataclass

from algorithms.latent_agent import LatentConfig, LatentTrainer, eval_policy

__all__ = ["PRESETS", "Config", "eval_policy", "train"]  # the harness API (cmil_bench.run)


@dataclass
class Config(LatentConfig):
    # Every field is documented in algorithms.latent_agent.LatentConfig; these are V-MAIL's
    # values where they differ from its defaults.
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
    gp_weight: float = 1.0
    weight_decay: float = 0.0


PRESETS = {
    # Scale only (cmil_bench.config.SCALE_KEYS): CPU sizes and the sweep's matched budget.
    "cpu": {
        "total_steps": 2_400, "eval_every": 600,
        "batch_size": 16, "expert_batch_size": 16, "seq_len": 16,
        "deter": 128, "hidden": 128,
        "mlp_layers": (128, 128), "cnn_depth": 16,
        "actor_layers": (128, 128), "critic_layers": (128, 128), "disc_hidden": (128, 128),
        "imag_starts": 48, "log_disagreement_n": 48,
    },
    # A few seconds of sizes.
    "smoke": {
        "total_steps": 120, "eval_every": 60, "eval_episodes": 2, "seed_steps": 20,
        "batch_size": 4, "expert_batch_size": 4, "seq_len": 8,
        "deter": 32, "stoch": 8, "hidden": 32, "mlp_layers": (32,),
        "cnn_depth": 4, "actor_layers": (32,), "critic_layers": (32,), "disc_hidden": (32,),
        "log_disagreement_n": 16,
    },
}


def train(run, cfg: Config) -> None:
    trainer = LatentTrainer(run, cfg)
    state = run.restore()
    if state is not None:
        trainer.load_state_dict(state)
    trainer.online()
