"""V-MAIL: its settings and short runs through the harness from states and from pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms import cmil, vmail
from algorithms.actor_critic import LatentAgent
from cmil_bench.config import build_config

torch.set_num_threads(1)


def test_vmail_defaults_turn_cmil_pieces_off():
    cfg = build_config(vmail.Config, vmail.PRESETS, None, {}, "vmail")
    assert cfg.penalty_weight == 0 and cfg.bc_weight == 0 and cfg.ensemble_size == 1
    assert cfg.pretrain_steps == 0 and cfg.bc_init_steps == 0
    assert cfg.disc_gp == 1.0 and cfg.disc_noise == 0 and cfg.expl_noise == 0.3
    assert cfg.seed_policy == "random" and not cfg.critic_real_data and cfg.value_mix == 0
    for preset in ("cpu", "smoke"):
        c = build_config(vmail.Config, vmail.PRESETS, preset, {}, "vmail")
        assert c.ensemble_size == 1 and c.pretrain_steps == 0 and c.penalty_weight == 0
        assert c.pretrain_wm_steps == 0 and c.bc_init_steps == 0  # no offline phase, no BC
    # the same keys as CMIL, so either can be ablated towards the other
    assert set(vmail.Config.__dataclass_fields__) == set(cmil.Config.__dataclass_fields__)


def test_vmail_update_reward_is_the_discriminator():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = build_config(vmail.Config, vmail.PRESETS, "smoke", {}, "vmail")

    def batch():
        first = np.zeros((4, 8), bool)
        first[:, 0] = True
        return {"obs": rng.normal(size=(4, 8, 5)).astype(np.float32),
                "action": rng.uniform(-1, 1, size=(4, 8, 2)).astype(np.float32), "is_first": first}

    agent = LatentAgent((5,), 2, cfg)
    m = agent.train_step(batch(), batch())
    assert m["reward_mean"] == m["disc_prob_policy"]
    assert m["disagreement_policy"] == 0 and m["penalty_mean"] == 0
    assert torch.isfinite(m["disc_loss"])  # includes the gradient penalty


@pytest.mark.slow
@pytest.mark.parametrize("task", ["fetch-push", "fetch-push-pixels"])
def test_vmail_smoke_run(task, tmp_path, monkeypatch, fetch_demos):
    from cmil_bench.run import execute

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(fetch_demos))
    monkeypatch.setenv("MUJOCO_GL", "egl")
    path = execute(algo="vmail", task=task, n_demos=2, seed=0, out=tmp_path / "run", preset="smoke",
                   overrides={"eval_episodes": "1"}, show_progress=False)
    df = pd.read_csv(path)
    # no offline phase: the first evaluation comes after the first eval_every env steps
    assert df["env_steps"].iloc[0] >= 60 and df["env_steps"].iloc[-1] >= 120
    assert df["grad_steps"].iloc[-1] > 0
    for col in ("wm_loss", "disc_acc", "actor_loss", "critic_loss", "disagreement_policy",
                "disagreement_demo", "penalty_mean"):
        assert col in df.columns, col
    assert np.isfinite(df["wm_loss"].iloc[-1]) and np.isfinite(df["disc_acc"].iloc[-1])
    assert (df["disagreement_policy"].dropna() == 0).all()
    assert np.isfinite(df["norm_score"]).all()
