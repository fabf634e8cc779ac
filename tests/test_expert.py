"""`cmil-bench expert`: the SAC trainer's policy file acts exactly as the trained actor, the file is
read back safely or refused with one line, and the whole path (train, export, card, demos from
the file) runs on a task the project does not ship (gymnasium's MountainCarContinuous-v0)."""

from __future__ import annotations

import os
import re
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

from algorithms import sac_expert  # noqa: E402
from cmil_bench.errors import UserError  # noqa: E402
from envs.experts import policy_file_expert  # noqa: E402
from helpers import assert_clean_failure, call_cli_subprocess, minari_path_set  # noqa: E402

CAR = {"description": "gymnasium MountainCarContinuous-v0, 200 steps", "env_id": "MountainCarContinuous-v0",
       "episode_steps": 200, "success": None, "eval_episodes": 2, "references": {"demo": 90.0}}


def _fake_env(act_dim: int):
    return types.SimpleNamespace(action_space=gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32))


def _export(tmp_path, hidden=(16, 8), obs_dim=5, act_dim=3):
    torch.manual_seed(0)
    cfg = sac_expert.Config(hidden=hidden)
    agent = sac_expert.Agent(obs_dim, act_dim, cfg, torch.device("cpu"))
    path = tmp_path / "p.pt"
    torch.save(sac_expert.policy_payload(agent.actor.state_dict(), cfg, obs_dim, act_dim), path)
    return agent, path


def test_policy_file_acts_as_the_trained_actor(tmp_path):
    agent, path = _export(tmp_path)
    expert = policy_file_expert(path, _fake_env(3))
    states = np.random.default_rng(1).normal(size=(64, 5)).astype(np.float32) * 3
    np.testing.assert_array_equal(expert.act_state(states), agent.act(states))
    np.testing.assert_array_equal(expert(states[0]), agent.act(states[:1])[0])
    # Only the mean half of the last layer is kept: the file is deterministic and small.
    payload = torch.load(path, weights_only=True)
    assert payload["layers"][-1]["weight"].shape == (3, 8)


def test_policy_file_refusals(tmp_path):
    _, path = _export(tmp_path)
    with pytest.raises(UserError, match="the policy acts in 3 dimensions, the task's actions have shape"):
        policy_file_expert(path, _fake_env(2))
    with pytest.raises(UserError, match="reads 5-d states, the task gives"):
        policy_file_expert(path, _fake_env(3))(np.zeros(4))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a policy")
    with pytest.raises(UserError, match="not a readable expert policy file"):
        policy_file_expert(junk, _fake_env(3))
    other = tmp_path / "other.pt"
    torch.save({"layers": []}, other)
    with pytest.raises(UserError, match="not an expert policy file of cmil-bench"):
        policy_file_expert(other, _fake_env(3))


@pytest.mark.slow  # trains SAC for a few seconds, in processes
def test_expert_trains_exports_and_feeds_demos(tmp_path):
    policy = tmp_path / "experts" / "car.pt"
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump({"car": {**CAR, "demos": "minari:cmil-bench/car/expert-v0",
                                             "expert": str(policy)}}))
    run = tmp_path / "run"
    argv = ["expert", "--tasks", str(tasks), "--task", "car", "--preset", "smoke", "--out", str(run),
            "--episodes", "3", "--progress", "off"]
    res = call_cli_subprocess(argv)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(policy), str(policy.with_suffix(".md"))]
    assert (run / "metrics.csv").exists() and policy.stat().st_size < 20_000

    # The card: the command, the env steps and the file's own score on 3 fresh episodes.
    card = policy.with_suffix(".md").read_text()
    assert "cmil-bench expert --tasks" in card and "| env steps | " in card
    m = re.search(r"return over 3 episodes \| \*\*(-?[\d.]+) ± ([\d.]+)\*\*", card)
    assert m, card
    env = gym.make("MountainCarContinuous-v0", max_episode_steps=200)
    from cmil_bench.expert import CARD_SEED_BASE
    expert, rets = policy_file_expert(policy, env), []
    for i in range(3):
        obs, _ = env.reset(seed=CARD_SEED_BASE + i)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(expert(obs))
            ret, done = ret + r, term or trunc
        rets.append(ret)
    assert float(m.group(1)) == pytest.approx(np.mean(rets), abs=0.06)

    # Exporting again from the finished run's checkpoint writes the same file.
    before = policy.read_bytes()
    res = call_cli_subprocess(argv + ["--from-checkpoint"])
    assert res.returncode == 0, res.stderr
    assert policy.read_bytes() == before

    # `cmil-bench demos` rolls the file out: the dataset's actions are the file's actions.
    root = tmp_path / "datasets"
    res = call_cli_subprocess(["demos", "--tasks", str(tasks), "--task", "car", "--episodes", "2",
                               "--root", str(root)])
    assert res.returncode == 0, res.stderr
    import minari
    with minari_path_set(root):
        ds = minari.load_dataset("cmil-bench/car/expert-v0")
        ep = next(iter(ds.iterate_episodes()))
    obs = np.asarray(ep.observations["state"] if isinstance(ep.observations, dict) else ep.observations)
    np.testing.assert_allclose(ep.actions, expert.act_state(obs[:-1].astype(np.float32)), atol=1e-6)


@pytest.mark.slow  # starts processes
def test_expert_refusals(tmp_path):
    tasks = tmp_path / "tasks.yaml"
    no_refs = {k: v for k, v in CAR.items() if k != "references"}
    tasks.write_text(yaml.safe_dump({"car": {**CAR, "demos": "x", "expert": str(tmp_path / "car.pt")},
                                     "bare": {**no_refs, "demos": "x", "expert": str(tmp_path / "b.pt")},
                                     "scripted": {**CAR, "demos": "x", "expert": "pointmaze"}}))
    out = tmp_path / "run"
    base = ["expert", "--tasks", str(tasks), "--preset", "smoke", "--out", str(out)]
    res = call_cli_subprocess(base + ["--task", "bare"])
    assert_clean_failure(res.returncode, res.stderr, "bare", "references", out=tmp_path)
    assert not out.exists()
    res = call_cli_subprocess(base + ["--task", "car", "--from-checkpoint"])
    assert_clean_failure(res.returncode, res.stderr, "no checkpoint", str(out))
    res = call_cli_subprocess(base + ["--task", "scripted"])
    assert_clean_failure(res.returncode, res.stderr, "--policy")
    res = call_cli_subprocess(base + ["--task", "car", "--set", "tau=2"])
    assert_clean_failure(res.returncode, res.stderr, "tau", out=tmp_path)
    # A missing policy file stops demo collection with one line saying how to get it.
    res = call_cli_subprocess(["demos", "--tasks", str(tasks), "--task", "car", "--episodes", "1",
                               "--root", str(tmp_path / "ds")])
    assert_clean_failure(res.returncode, res.stderr, "car.pt", "cmil-bench expert --task car")
    assert not (tmp_path / "ds" / "cmil-bench").exists()


@pytest.mark.parametrize("task", ["hopper", "walker2d", "halfcheetah", "ant"])
def test_shipped_policy_file_is_the_one_its_card_describes(task):
    """Each shipped `experts/<task>.pt` is the file its card hashes, loads for its task, and on the
    card's first reset seed scores within the card's 50-episode range: a swapped file, a stale
    card, or an env or loader change that alters the policy's behaviour fails here."""
    import hashlib
    from pathlib import Path

    from cmil_bench.expert import CARD_SEED_BASE, default_policy_path, score_policy
    from envs.registry import get_task

    spec = get_task(task)
    path = default_policy_path(spec)
    card = Path(path).with_suffix(".md")
    assert path.is_file() and card.is_file(), f"{task}: the repository ships {path.name} and its card"
    text = card.read_text()
    digest = re.search(r"sha256 ([0-9a-f]{16})", text)
    assert digest and hashlib.sha256(path.read_bytes()).hexdigest().startswith(digest[1])
    m = re.search(r"\*\*([\d.]+) ± [\d.]+\*\* \(reset seeds (\d+)\.\.\d+; "
                  r"min ([\d.-]+), max ([\d.-]+)\)", text)
    assert m and int(m[2]) == CARD_SEED_BASE, "the card states its 50-episode return and seeds"
    lo, hi = float(m[3]), float(m[4])
    ret = float(score_policy(spec, path, episodes=1)[0])
    # 0.5% slack for floating point across machines and MuJoCo builds; a wrong file misses by far.
    assert lo - 0.005 * abs(lo) <= ret <= hi + 0.005 * abs(hi), (task, ret, lo, hi)
