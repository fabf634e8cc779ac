"""Franka Kitchen tasks and the ``kitchen-paper`` demo source.

Tests that need the paper's demos read them from ../shared/data/cmil-kitchen-demos (never
committed) and skip, saying so, where that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from cmil_bench.errors import UserError  # noqa: E402
from envs.kitchen import MIXED_TASKS, PAPER_CAMERA, completed_subtasks  # noqa: E402
from envs.registry import get_task, make_env  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PAPER_DEMOS = SHARED / "data" / "cmil-kitchen-demos"


def paper_demos() -> Path:
    if not PAPER_DEMOS.is_dir() or not any(PAPER_DEMOS.glob("*.npz")):
        pytest.skip(f"the paper's Kitchen demos are not at {PAPER_DEMOS} (they are never committed)")
    return PAPER_DEMOS


def test_kitchen_tasks_registered():
    st, px = get_task("kitchen-mixed"), get_task("kitchen-mixed-pixels")
    assert st.env_id == px.env_id == "FrankaKitchen-v1"
    assert (st.obs_mode, px.obs_mode) == ("state", "pixels")
    assert st.family == px.family == "kitchen-mixed"
    assert st.max_episode_steps == 280
    assert st.env_kwargs["tasks_to_complete"] == list(MIXED_TASKS)
    assert st.env_kwargs["terminate_on_tasks_completed"] is False
    assert px.camera == PAPER_CAMERA and px.image_size == 64
    assert st.demo_source == "minari:cmil-bench/kitchen-mixed/paper-v0"


def test_kitchen_success_needs_all_four_subtasks():
    spec = get_task("kitchen-mixed")
    shared = ["microwave"]  # the env's episode list, reused across steps: must not be trusted
    infos = [{"step_task_completions": ["microwave"], "episode_task_completions": shared},
             {"step_task_completions": [], "episode_task_completions": shared},
             {"step_task_completions": ["kettle", "light switch"], "episode_task_completions": shared}]
    assert completed_subtasks(infos) == ["microwave", "kettle", "light switch"]
    assert not spec.episode_success(infos)
    infos.append({"step_task_completions": ["slide cabinet"], "episode_task_completions": []})
    assert spec.episode_success(infos)
    # A subtask outside the four does not count.
    assert not spec.episode_success([{"step_task_completions": ["hinge cabinet", "microwave",
                                                                "kettle", "light switch"]}])


def test_kitchen_state_env_return_counts_subtasks():
    spec = get_task("kitchen-mixed")
    env = make_env(spec)
    try:
        assert env.observation_space.shape == (59,)
        assert env.action_space.shape == (9,)
        assert np.allclose(env.action_space.low, -1) and np.allclose(env.action_space.high, 1)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (59,) and obs.dtype == np.float32
        # Open the microwave by hand: set its hinge past the goal and step once.
        u = env.unwrapped
        qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
        qpos[22] = -0.75
        u.robot_env.set_state(qpos, qvel)
        _, r1, term, trunc, info = env.step(np.zeros(9, np.float32))
        _, r2, *_ = env.step(np.zeros(9, np.float32))
        assert r1 == 1.0 and "microwave" in info["step_task_completions"]
        assert r2 == 0.0  # a completed subtask pays once
        assert not term and not trunc
    finally:
        env.close()


def test_kitchen_pixels_render_64(tmp_path):
    spec = get_task("kitchen-mixed-pixels")
    env = make_env(spec)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        frames = [obs]
        rng = np.random.default_rng(0)
        for _ in range(3):
            obs, r, term, trunc, _ = env.step(rng.uniform(-1, 1, 9).astype(np.float32))
            frames.append(obs)
        frames = np.stack(frames)
        assert frames.std() > 10  # a scene, not a blank frame
        assert np.abs(frames[-1].astype(int) - frames[0]).sum() > 0  # the arm moved
    finally:
        env.close()
    if PAPER_DEMOS.is_dir() and any(PAPER_DEMOS.glob("*.npz")):
        # The paper's camera: our first frame looks like the first image of a paper demo.
        with np.load(sorted(PAPER_DEMOS.glob("*.npz"))[0]) as z:
            ref = z["image"][0].astype(np.float32)
        assert np.mean(np.abs(ref - frames[0])) < 30.0


def test_replay_paper_demo_completes_subtasks():
    from envs.sources import _npz_actions, kitchen_paper_files, replay_actions

    files = kitchen_paper_files(paper_demos())
    assert len(files) == 10
    env = make_env(get_task("kitchen-mixed"), render_pixels=False)
    try:
        out = replay_actions(env, _npz_actions(files[0])[1:])
    finally:
        env.close()
    assert out["state"].shape == (281, 59) and out["pixels"] is None
    assert len(out["rewards"]) == 280 and out["truncated"] and not out["terminated"]
    assert len(out["completed"]) >= 2
    assert set(out["completed"]) <= set(MIXED_TASKS)
    assert float(out["rewards"].sum()) == len(out["completed"])
    assert out["tasks_completed"][-1] == len(out["completed"])


def _fake_paper_folder(folder: Path, n: int = 2, steps: int = 4) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for i in range(n):
        action = rng.uniform(-1, 1, (steps + 1, 9)).astype(np.float32)
        action[0] = 0
        np.savez(folder / f"ep{i}-{steps}.npz", action=action,
                 image=np.zeros((steps + 1, 64, 64, 3), np.uint8), reward=np.zeros(steps + 1))
    return folder


def test_convert_kitchen_paper_writes_state_pixel_dataset(tmp_path, monkeypatch):
    from envs.datasets import load_demos
    from envs.sources import convert_named_source

    src = _fake_paper_folder(tmp_path / "npz")
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    path = convert_named_source("kitchen-mixed-pixels", "kitchen-paper", str(src), root=str(root))
    assert Path(path) == root / "cmil-bench" / "kitchen-mixed" / "paper-v0"
    demos = load_demos("minari:cmil-bench/kitchen-mixed/paper-v0", task=get_task("kitchen-mixed"))
    assert len(demos) == 2
    for tr, f in zip(demos.trajectories, sorted(src.glob("*.npz"))):
        assert tr.observations["state"].shape == (5, 59)
        assert tr.observations["pixels"].shape == (5, 64, 64, 3)
        with np.load(f) as z:
            np.testing.assert_allclose(tr.actions, z["action"][1:], atol=1e-6)
    import json
    meta = json.loads((Path(path) / "data" / "metadata.json").read_text())
    assert meta["cmil_source_files"] == ["ep0-4.npz", "ep1-4.npz"]
    assert meta["ref_min_score"] == 0.0
    assert meta["ref_max_score"] == pytest.approx(np.mean([t.ret for t in demos.trajectories]))
    # A second conversion refuses to overwrite unless asked.
    with pytest.raises(UserError, match="already exists"):
        convert_named_source("kitchen-mixed", "kitchen-paper", str(src), root=str(root))


def test_named_source_errors(tmp_path):
    from envs.sources import convert_named_source

    with pytest.raises(UserError, match="unknown demo source 'nope'"):
        convert_named_source("kitchen-mixed", "nope", str(tmp_path))
    with pytest.raises(UserError, match="not to 'door'"):
        convert_named_source("door", "kitchen-paper", str(tmp_path))
    with pytest.raises(UserError, match="holds no .npz"):
        convert_named_source("kitchen-mixed", "kitchen-paper", str(tmp_path), root=str(tmp_path / "m"))
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "x.npz", action=np.zeros((5, 7), np.float32))
    with pytest.raises(UserError, match=r"shape \(5, 7\)"):
        convert_named_source("kitchen-mixed", "kitchen-paper", str(bad), root=str(tmp_path / "m"))


def test_download_without_network_says_what_to_do(tmp_path, monkeypatch):
    import urllib.request

    from envs.sources import convert_named_source

    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("CMIL_BENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError) as exc:
        convert_named_source("kitchen-mixed", "kitchen-paper", None, root=str(tmp_path / "m"))
    msg = str(exc.value)
    assert "raw.githubusercontent.com/victorkolev/cmil" in msg and "--path" in msg
    assert not list((tmp_path / "cache" / "kitchen-paper").glob("*.part"))
