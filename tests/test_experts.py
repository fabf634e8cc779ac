"""Scripted experts and demo collection into local Minari datasets."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from cmil_bench.errors import UserError  # noqa: E402
from envs.collect import (  # noqa: E402
    collect_demos,
    expert_success_rate,
    make_expert,
    random_policy_stats,
    rollout,
)
from envs.experts import EXPERTS  # noqa: E402
from envs.registry import TASKS, get_task, make_env, register  # noqa: E402


@pytest.mark.parametrize("name", ["pointmaze-umaze", "fetch-push"])
def test_expert_succeeds_and_beats_random(name):
    spec = get_task(name)
    assert spec.expert in EXPERTS
    exp = expert_success_rate(name, episodes=5, seed=100)
    assert exp["episodes"] == 5 and exp["success_rate"] >= 0.8
    rnd = random_policy_stats(name, episodes=3, seed=100)
    assert exp["mean_return"] > rnd["mean_return"]


def test_fetch_expert_also_solves_standard_fetch_push():
    """The pusher walks around the block when it starts on the wrong side (FetchPush-v4 ranges)."""
    spec = dataclasses.replace(get_task("fetch-push"), name="fetch-push-v4-test",
                               env_id="FetchPush-v4", env_kwargs={})
    res = expert_success_rate(spec, episodes=5, seed=7)
    assert res["success_rate"] >= 0.8


def test_expert_actions_are_valid_and_it_acts_in_pixel_mode():
    spec = get_task("fetch-push-pixels")
    env = make_env(spec)
    try:
        expert = make_expert(spec, env)
        seen = []

        def policy(obs, raw):
            assert obs.shape == (64, 64, 3)
            a = expert(raw)
            seen.append(a)
            return a

        out = rollout(env, spec, policy, seed=3, keep_obs=False, on_reset=expert.reset)
        assert out["success"]
        acts = np.stack(seen)
        assert acts.dtype == np.float32
        assert np.all(acts >= env.action_space.low) and np.all(acts <= env.action_space.high)
    finally:
        env.close()


def test_pointmaze_expert_follows_the_maze():
    """From the far arm of the U the path has to go round the wall, not through it."""
    env = make_env("pointmaze-umaze")
    try:
        expert = make_expert(get_task("pointmaze-umaze"), env)
        maze = env.unwrapped.maze
        start = maze.cell_rowcol_to_xy(np.array([3, 1]))  # bottom-left; goal cell is top-left
        goal = maze.cell_rowcol_to_xy(np.array([1, 1]))
        wp = expert.waypoint(np.asarray(start), np.asarray(goal))
        # first waypoint: along the bottom corridor (same row), not up through the wall
        assert tuple(maze.cell_xy_to_rowcol(wp)) in {(3, 2), (3, 3)}
    finally:
        env.close()


def _load(root, dataset_id, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return minari.load_dataset(dataset_id)


def test_collect_demos_state_dataset_roundtrip(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    path = collect_demos("pointmaze-umaze", 2, seed=5, root=str(root), random_episodes=2)
    assert os.path.isdir(path) and str(root) in path
    ds = _load(root, "cmil-bench/pointmaze-umaze/expert-v0", monkeypatch)
    assert ds.total_episodes == 2
    assert set(ds.observation_space.spaces) == {"state"}
    meta = ds.storage.metadata
    assert meta["ref_max_score"] > meta["ref_min_score"]
    assert meta["cmil_pixels"] is False
    eps = list(ds.iterate_episodes())
    for ep in eps:
        assert ep.observations["state"].shape == (301, 6)
        assert ep.observations["state"].dtype == np.float32
        assert ep.actions.shape == (300, 2) and ep.rewards.shape == (300,)
        assert ep.infos["success"].shape == (301,) and ep.infos["success"].any()
        assert ep.truncations[-1] and not ep.terminations.any()
    assert np.isclose(np.mean([ep.rewards.sum() for ep in eps]), meta["ref_max_score"])
    # deterministic: the same seed gives the same episodes
    collect_demos("pointmaze-umaze", 2, seed=5, root=str(root), random_episodes=2, overwrite=True)
    again = _load(root, "cmil-bench/pointmaze-umaze/expert-v0", monkeypatch)
    again = list(again.iterate_episodes())
    for a, b in zip(eps, again):
        np.testing.assert_array_equal(a.actions, b.actions)


def test_collect_demos_pixel_dataset_roundtrip(tmp_path, monkeypatch):
    root = tmp_path / "m"
    collect_demos("fetch-push", 2, seed=0, root=str(root), pixels=True,
                  dataset_id="cmil-bench/test/px-v0", random_episodes=1)
    ds = _load(root, "cmil-bench/test/px-v0", monkeypatch)
    assert ds.total_episodes == 2
    assert set(ds.observation_space.spaces) == {"state", "pixels"}
    ep = next(iter(ds.iterate_episodes()))
    assert ep.observations["pixels"].shape == (51, 64, 64, 3)
    assert ep.observations["pixels"].dtype == np.uint8
    assert ep.observations["state"].shape == (51, 28)
    assert ep.infos["success"][-1]
    # no failed attempt, so episode 0 used reset seed 0; frames are stored losslessly: they
    # equal a fresh render of that reset
    assert ds.storage.metadata["cmil_attempts"] == 2
    env = make_env("fetch-push-pixels")
    try:
        first, _ = env.reset(seed=0)
    finally:
        env.close()
    np.testing.assert_array_equal(first, ep.observations["pixels"][0])


def test_collect_demos_refuses_to_overwrite(tmp_path):
    collect_demos("fetch-push", 1, root=str(tmp_path), random_episodes=1)
    with pytest.raises(UserError, match="overwrite"):
        collect_demos("fetch-push", 1, root=str(tmp_path), random_episodes=1)


def test_collect_demos_gives_up_after_5x_attempts(tmp_path):
    never = dataclasses.replace(get_task("fetch-push"), name="test-never-succeeds",
                                max_episode_steps=3, success_mode="custom",
                                success_fn=lambda infos: False)
    register(never)
    try:
        with pytest.raises(UserError, match="only 0 of 10"):
            collect_demos("test-never-succeeds", 2, root=str(tmp_path), random_episodes=1)
    finally:
        TASKS.pop("test-never-succeeds", None)


class _FallsEveryOther:
    """A Hopper "expert" that stands still (runs to a 15-step limit) in even episodes and pushes
    itself over (terminates after 6 steps) in odd ones; a new one is made per episode."""

    made = 0

    def __init__(self, env):
        self.push = -1.0 if _FallsEveryOther.made % 2 else 0.0
        _FallsEveryOther.made += 1

    def reset(self, raw):
        pass

    def __call__(self, raw):
        return np.full(3, self.push, dtype=np.float32)


class _AlwaysFalls(_FallsEveryOther):
    def __init__(self, env):
        self.push = -1.0


def test_full_length_demos_skip_episodes_that_end_early(tmp_path, monkeypatch):
    """With full_length_demos the collector keeps only episodes that reach the time limit (the
    DAC/GAIL protocol's full trajectories); without it, a return-scored task keeps every one."""
    monkeypatch.setitem(EXPERTS, "test-falls-every-other", _FallsEveryOther)
    base = dataclasses.replace(get_task("hopper"), name="test-hopper-short", family="",
                               max_episode_steps=15, expert="test-falls-every-other")
    for full, dataset in ((True, "test/hopper-full-v0"), (False, "test/hopper-all-v0")):
        _FallsEveryOther.made = 0
        register(dataclasses.replace(base, full_length_demos=full))
        try:
            collect_demos("test-hopper-short", 3, root=str(tmp_path), dataset_id=dataset,
                          random_episodes=1)
        finally:
            TASKS.pop("test-hopper-short", None)
        ds = _load(tmp_path, dataset, monkeypatch)
        lengths = [len(ep.rewards) for ep in ds.iterate_episodes()]
        if full:
            assert lengths == [15, 15, 15] and ds.storage.metadata["cmil_attempts"] == 5
            assert ds.storage.metadata["cmil_full_length_demos"] is True
        else:
            assert lengths == [15, 6, 15] and ds.storage.metadata["cmil_attempts"] == 3
    # An expert whose every episode ends early is refused with one line that says why.
    monkeypatch.setitem(EXPERTS, "test-falls-every-other", _AlwaysFalls)
    register(dataclasses.replace(base, full_length_demos=True))
    try:
        with pytest.raises(UserError, match="ran to the time limit in only 0 of 5 episodes"):
            collect_demos("test-hopper-short", 1, root=str(tmp_path), dataset_id="test/hopper-none-v0",
                          random_episodes=1)
    finally:
        TASKS.pop("test-hopper-short", None)


def test_collect_demos_bad_input(tmp_path):
    with pytest.raises(UserError, match="no-such-task"):
        collect_demos("no-such-task", 2, root=str(tmp_path))
    with pytest.raises(UserError, match="episodes"):
        collect_demos("pointmaze-umaze", 0, root=str(tmp_path))
    with pytest.raises(UserError, match="no-such-task"):
        expert_success_rate("no-such-task")
