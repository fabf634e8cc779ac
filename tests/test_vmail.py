"""V-MAIL: its settings and short runs through the harness from states and from pixels."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms import cmil, vmail
from algorithms.latent_agent import LatentAgent, LatentConfig
from cmil_bench.config import build_config
from cmil_bench.errors import UserError

torch.set_num_threads(1)


def test_vmail_defaults():
    cfg = build_config(vmail.Config, vmail.PRESETS, None, {}, "vmail")
    assert cfg.ensemble_size == 1 and cfg.std_act == "softplus" and cfg.kl_balance == 0.5
    assert cfg.gp_weight == 1.0 and cfg.disc_noise == 0 and cfg.expl_noise == 0.3
    assert cfg.seed_policy == "random" and not cfg.critic_real_data and cfg.value_mix == 0
    for preset in ("cpu", "smoke"):
        c = build_config(vmail.Config, vmail.PRESETS, preset, {}, "vmail")
        assert c.ensemble_size == 1 and c.seed_policy == "random"


def test_vmail_and_cmil_configs_are_siblings_on_the_latent_config():
    """Both extend the shared LatentConfig; V-MAIL has no CMIL-only key, and neither module
    imports the other."""
    assert issubclass(vmail.Config, LatentConfig) and issubclass(cmil.Config, LatentConfig)
    assert not issubclass(vmail.Config, cmil.Config) and not issubclass(cmil.Config, vmail.Config)
    shared = set(LatentConfig.__dataclass_fields__)
    assert set(vmail.Config.__dataclass_fields__) == shared
    assert set(cmil.Config.__dataclass_fields__) - shared == {
        "pretrain_wm_steps", "pretrain_steps", "bc_init_steps", "bc_init_mode", "bc_init_lr", "bc_init_batch",
        "penalty_weight", "bc_weight"}
    with pytest.raises(UserError, match="penalty_weight"):
        build_config(vmail.Config, vmail.PRESETS, "cpu", {"penalty_weight": "1"}, "vmail")
    for mod in (vmail, cmil):
        tree = ast.parse(Path(mod.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not imported & {"algorithms.cmil", "algorithms.vmail"}, mod.__name__
        assert not names & {"cmil", "vmail"}, mod.__name__
    # the old names are gone
    for old in ("env_steps", "disc_gp", "replay_capacity", "opt_eps", "act", "disc_act"):
        with pytest.raises(UserError, match=old):
            build_config(vmail.Config, vmail.PRESETS, None, {old: "1"}, "vmail")


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
