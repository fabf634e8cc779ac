"""The cheap tasks, their wrappers (state / pixels / both) and off-screen rendering."""

from __future__ import annotations

import gc
import os

import gymnasium as gym
import mujoco
import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from cmil_bench.errors import UserError  # noqa: E402
from envs.registry import get_task, list_tasks, make_env  # noqa: E402
from envs.wrappers import OffscreenFrames  # noqa: E402

STATE_DIMS = {"pointmaze-umaze": 6, "fetch-push": 28}
ACT_DIMS = {"pointmaze-umaze": 2, "fetch-push": 4}


def _frames_env(env: gym.Env) -> OffscreenFrames:
    e = env
    while not isinstance(e, OffscreenFrames):
        e = e.env
    return e


@pytest.mark.parametrize("name", sorted(STATE_DIMS))
def test_state_task_shapes_and_raw_obs(name):
    spec = get_task(name)
    assert name in list_tasks() and name + "-pixels" in list_tasks()
    assert spec.obs_mode == "state" and get_task(name + "-pixels").obs_mode == "pixels"
    assert spec.demo_source == f"minari:cmil-bench/{name}/expert-v0"
    env = make_env(name, seed=0)
    try:
        assert env.observation_space.shape == (STATE_DIMS[name],)
        assert env.observation_space.dtype == np.float32
        assert env.action_space.shape == (ACT_DIMS[name],)
        obs, info = env.reset(seed=0)
        assert obs.shape == (STATE_DIMS[name],) and obs.dtype == np.float32
        raw = info["raw_obs"]
        np.testing.assert_array_equal(obs, spec.flatten(raw))
        # state = observation followed by the goal
        np.testing.assert_allclose(obs[-raw["desired_goal"].size:], raw["desired_goal"], rtol=1e-6)
        steps, truncated, terminated = 0, False, False
        while not (truncated or terminated):
            obs, r, terminated, truncated, info = env.step(env.action_space.sample())
            steps += 1
            assert obs.dtype == np.float32 and np.isfinite(obs).all()
        assert truncated and not terminated and steps == spec.max_episode_steps
        assert env.get_wrapper_attr("last_raw_obs") is info["raw_obs"]
    finally:
        env.close()


@pytest.mark.parametrize("name", sorted(STATE_DIMS))
def test_pixel_task_step_gives_uint8_frames(name):
    env = make_env(name + "-pixels", seed=0)
    try:
        assert env.observation_space.shape == (64, 64, 3)
        assert env.observation_space.dtype == np.uint8
        obs, info = env.reset(seed=1)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        assert obs.std() > 5  # a scene, not a blank frame
        assert "raw_obs" in info  # the expert can act in pixel mode
        frames = [obs]
        for _ in range(15):
            obs, *_ = env.step(np.ones(env.action_space.shape, dtype=np.float32))
            frames.append(obs)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        assert np.abs(frames[-1].astype(int) - frames[0]).sum() > 0  # the agent moved on screen
    finally:
        env.close()


def test_render_pixels_true_gives_state_and_pixels():
    spec = get_task("fetch-push")
    env = make_env(spec, render_pixels=True)
    try:
        assert isinstance(env.observation_space, gym.spaces.Dict)
        assert set(env.observation_space.spaces) == {"state", "pixels"}
        obs, info = env.reset(seed=3)
        assert obs["state"].shape == (28,) and obs["state"].dtype == np.float32
        assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
        np.testing.assert_array_equal(obs["state"], spec.flatten(info["raw_obs"]))
    finally:
        env.close()
    # and a pixel task asked for no frames gives the state vector
    env = make_env("fetch-push-pixels", render_pixels=False)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (28,) and obs.dtype == np.float32
    finally:
        env.close()


def test_state_and_pixel_twins_share_dynamics():
    a = make_env("pointmaze-umaze")
    b = make_env("pointmaze-umaze-pixels")
    try:
        _, ia = a.reset(seed=7)
        _, ib = b.reset(seed=7)
        for _ in range(10):
            act = np.array([0.5, -0.3], dtype=np.float32)
            _, ra, *_, ia = a.step(act)
            _, rb, *_, ib = b.step(act)
        np.testing.assert_allclose(ia["raw_obs"]["observation"], ib["raw_obs"]["observation"])
        assert ra == rb
    finally:
        a.close()
        b.close()


def test_fast_render_settings_applied():
    fast = make_env("pointmaze-umaze-pixels")
    slow = None
    try:
        viewer = _frames_env(fast).viewer
        assert viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] == 0
        assert viewer.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] == 0
        assert viewer.model.vis.quality.offsamples == 0
        from envs.wrappers import make_task_env

        slow = make_task_env(get_task("pointmaze-umaze-pixels"), fast_render=False)
        sview = _frames_env(slow).viewer
        assert sview.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] == 1
        f1, _ = fast.reset(seed=2)
        f2, _ = slow.reset(seed=2)
        # same scene and camera: the frames differ only by shading details
        assert np.abs(f1.astype(int) - f2).mean() < 20
    finally:
        fast.close()
        if slow is not None:
            slow.close()


def test_two_pixel_envs_in_one_process_keep_rendering():
    """A dropped env's GL objects must not be freed in another env's context (black frames)."""
    first = make_env("pointmaze-umaze-pixels")
    first.reset(seed=0)
    second = make_env("pointmaze-umaze-pixels")
    second.reset(seed=0)
    del first
    gc.collect()
    try:
        for _ in range(5):
            obs, *_ = second.step(second.action_space.sample())
            assert obs.mean() > 10
    finally:
        second.close()
    third = make_env("fetch-push-pixels")
    try:
        obs, _ = third.reset(seed=0)
        assert obs.mean() > 10
    finally:
        third.close()


def test_fetch_push_start_and_goal_distribution():
    spec = get_task("fetch-push")
    env = make_env(spec)
    try:
        grip0 = None
        for seed in range(8):
            _, info = env.reset(seed=seed)
            raw = info["raw_obs"]
            grip, obj, goal = raw["observation"][:3], raw["observation"][3:6], raw["desired_goal"]
            grip0 = grip if grip0 is None else grip0
            np.testing.assert_allclose(grip, grip0, atol=1e-6)
            kw = spec.env_kwargs
            np.testing.assert_allclose(obj[:2] - grip[:2], kw["object_offset"], atol=0.03)
            off = goal[:2] - grip[:2] - np.asarray(kw["goal_offset"])
            assert np.all(np.abs(off) <= np.asarray(kw["goal_noise"]) + 0.03)
            assert np.linalg.norm(goal[:2] - obj[:2]) > 0.05  # not solved at reset
    finally:
        env.close()


def test_renderer_unavailable_is_a_user_error(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with pytest.raises(UserError, match="MUJOCO_GL=egl or MUJOCO_GL=osmesa"):
        make_env("pointmaze-umaze-pixels")


def test_unknown_task_is_a_user_error():
    with pytest.raises(UserError, match="no-such-task"):
        get_task("no-such-task")
    with pytest.raises(UserError, match="no-such-task"):
        make_env("no-such-task")
