"""The demo loader: every layout round-trips, errors name the bad file, subsampling is deterministic."""

from __future__ import annotations

import time

import gymnasium as gym
import h5py
import numpy as np
import pytest

from cmil_bench.errors import UserError
from envs.datasets import (
    DemoSet,
    Trajectory,
    describe_episode_ids,
    inspect_source,
    load_demos,
    resolve_source,
    subsample,
)
from envs.registry import TaskSpec


def _truncate(path, frac=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * frac)])


def _check_common(demos, exp):
    trajs = demos.trajectories
    assert len(trajs) == exp["n_episodes"]
    assert [len(t) for t in trajs] == exp["lengths"]
    np.testing.assert_allclose([t.ret for t in trajs], exp["returns"], rtol=1e-5, atol=1e-5)
    assert [t.terminated for t in trajs] == exp["terminated"]
    assert [t.truncated for t in trajs] == exp["truncated"]
    for t in trajs:
        T = len(t)
        assert t.rewards.shape == (T,)
        assert t.actions.shape == (T, exp["act_dim"])
        assert t.actions.dtype == np.float32
        assert set(t.observations) == set(exp["obs_shape"])
        for key, shape in exp["obs_shape"].items():
            assert t.observations[key].shape == (T + 1, *shape)
            assert t.observations[key].dtype == (np.uint8 if key == "pixels" else np.float32)
        for key, arr in t.infos.items():
            assert arr.shape[0] == T, key


# ----------------------------------------------------------------------------- D4RL HDF5


def test_d4rl_roundtrip(d4rl_hdf5, demo_expect):
    exp = demo_expect["d4rl_hdf5"]
    for source in (f"d4rl:{d4rl_hdf5}", str(d4rl_hdf5)):
        demos = load_demos(source)
        assert demos.meta["kind"] == "d4rl"
        _check_common(demos, exp)
    trajs = demos.trajectories
    # 4 ended episodes + the trailing partial one
    assert exp["n_episodes"] == 5 and demos.meta["trailing_partial_episode"]
    assert demos.meta["final_obs"] == "repeated last observation"
    for t, rows, final, succ in zip(trajs, exp["obs_rows"], exp["final_obs"], exp["success"]):
        np.testing.assert_array_equal(t.observations["state"][:-1], rows)
        np.testing.assert_array_equal(t.observations["state"][-1], final)
        assert t.success is succ
        assert set(t.infos) == {"goal_achieved", "qpos", "qvel"}
        assert t.infos["qpos"].shape == (len(t), 30)
    # actions and rewards are the file's rows, in order
    np.testing.assert_array_equal(np.concatenate([t.actions for t in trajs]), exp["actions"])
    np.testing.assert_array_equal(np.concatenate([t.rewards for t in trajs]), exp["rewards"])
    assert demos.meta["metadata"]["algorithm"] == "human demonstrations"


def test_d4rl_next_observations_give_final_row(tmp_path, demo_writers):
    path = tmp_path / "with_next.hdf5"
    exp = demo_writers.d4rl(path, next_observations=True, trailing=0)
    demos = load_demos(f"d4rl:{path}")
    assert demos.meta["final_obs"] == "next_observations"
    assert len(demos.trajectories) == 4
    for t, rows, final in zip(demos.trajectories, exp["obs_rows"], exp["final_obs"]):
        np.testing.assert_array_equal(t.observations["state"][:-1], rows)
        np.testing.assert_array_equal(t.observations["state"][-1], final)
        # the final row is not the next episode's reset observation (the file's next row)
        assert not np.array_equal(t.observations["state"][-1], t.observations["state"][-2])


def test_d4rl_images_become_pixels(tmp_path, demo_writers):
    path = tmp_path / "pix.h5"
    exp = demo_writers.d4rl(path, image=True, lengths=(4, 6), ends=("timeout", "terminal"), trailing=0,
                            act_dim=9)
    demos = load_demos(str(path))
    _check_common(demos, exp)
    np.testing.assert_array_equal(demos.trajectories[1].observations["pixels"][:-1], exp["obs_rows"][1])


def test_d4rl_without_timeouts_splits_at_terminals(tmp_path, demo_writers):
    path = tmp_path / "no_timeouts.hdf5"
    demo_writers.d4rl(path, lengths=(5, 8), ends=("terminal", "terminal"), trailing=3, timeouts=False,
                      infos=False)
    demos = load_demos(f"d4rl:{path}")
    assert [len(t) for t in demos.trajectories] == [5, 8, 3]
    assert [t.terminated for t in demos.trajectories] == [True, True, False]
    assert demos.trajectories[0].infos == {}


def test_d4rl_missing_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=np.zeros((5, 3), np.float32))
        f.create_dataset("rewards", data=np.zeros(5, np.float32))
        f.create_dataset("terminals", data=np.zeros(5, bool))
    with pytest.raises(UserError, match="actions") as err:
        load_demos(f"d4rl:{path}")
    assert str(path) in str(err.value)


def test_d4rl_truncated_file_names_file(d4rl_hdf5):
    _truncate(d4rl_hdf5)
    with pytest.raises(UserError) as err:
        load_demos(f"d4rl:{d4rl_hdf5}")
    assert str(d4rl_hdf5) in str(err.value)


def test_d4rl_empty_file(tmp_path):
    path = tmp_path / "empty.hdf5"
    with h5py.File(path, "w") as f:
        for key, shape in (("observations", (0, 3)), ("actions", (0, 2)), ("rewards", (0,)),
                           ("terminals", (0,))):
            f.create_dataset(key, data=np.zeros(shape, np.float32))
    with pytest.raises(UserError, match="empty"):
        load_demos(str(path))


# ----------------------------------------------------------------------------- npz (DreamerV2)


def test_npz_roundtrip(npz_folder, demo_expect):
    exp = demo_expect["npz_folder"]
    for source in (f"npz:{npz_folder}", str(npz_folder)):
        demos = load_demos(source)
        assert demos.meta["kind"] == "npz"
        _check_common(demos, exp)
    trajs = demos.trajectories
    assert describe_episode_ids(trajs) == exp["ids"] == sorted(exp["ids"])
    for t, data in zip(trajs, exp["data"]):
        np.testing.assert_array_equal(t.observations["pixels"], data["image"])
        np.testing.assert_array_equal(t.actions, data["action"][1:])
        np.testing.assert_array_equal(t.rewards, data["reward"][1:])


def test_npz_state_key_becomes_state(tmp_path, demo_writers):
    exp = demo_writers.npz(tmp_path / "eps", lengths=(5, 7), terminal=(True, False), state_dim=11,
                           compressed=False)
    demos = load_demos(f"npz:{tmp_path / 'eps'}")
    _check_common(demos, exp)
    np.testing.assert_array_equal(demos.trajectories[0].observations["state"], exp["data"][0]["state"])


def test_npz_truncated_file_names_file(npz_folder):
    victim = sorted(npz_folder.glob("*.npz"))[1]
    _truncate(victim)
    with pytest.raises(UserError) as err:
        load_demos(f"npz:{npz_folder}")
    assert str(victim) in str(err.value)


def test_npz_missing_key_names_key_and_file(tmp_path):
    folder = tmp_path / "eps"
    folder.mkdir()
    np.savez(folder / "ep0.npz", image=np.zeros((4, 64, 64, 3), np.uint8), reward=np.zeros(4, np.float32))
    with pytest.raises(UserError, match="action") as err:
        load_demos(f"npz:{folder}")
    assert "ep0.npz" in str(err.value)


def test_npz_empty_folder(tmp_path):
    with pytest.raises(UserError, match="no .npz"):
        load_demos(f"npz:{tmp_path}")


def test_real_kitchen_demos(kitchen_demo_dir):
    demos = load_demos(f"npz:{kitchen_demo_dir}")
    assert len(demos.trajectories) == 10
    for t in demos.trajectories:
        assert len(t) == 280
        assert t.observations["pixels"].shape == (281, 64, 64, 3)
        assert t.actions.shape == (280, 9)
        assert np.abs(t.actions).max() <= 1.0
        assert t.truncated and not t.terminated
    ids = describe_episode_ids(demos)
    assert ids == sorted(ids) and ids[0].startswith("20231122T054551")


# ----------------------------------------------------------------------------- Minari


def test_minari_roundtrip_by_id_path_and_prefix(minari_dataset, demo_expect):
    exp = demo_expect["minari_dataset"]
    for source in (exp["id"], f"minari:{exp['id']}", str(minari_dataset), f"minari:{minari_dataset}",
                   "cmil-test/door"):  # no version: the newest local one
        demos = load_demos(source)
        assert demos.meta["kind"] == "minari"
        assert demos.meta["dataset_id"] == exp["id"]
        _check_common(demos, {**exp, "obs_shape": {"state": (39,)}})
    trajs = demos.trajectories
    assert describe_episode_ids(trajs) == exp["ids"]
    assert demos.meta["action_low"] == [-1.0] * 28 and demos.meta["action_high"] == [1.0] * 28
    for t, raw, succ in zip(trajs, exp["raw_obs"], exp["success"]):
        np.testing.assert_allclose(t.observations["state"], raw, rtol=1e-6)
        # the reset info row is dropped: step t's info is row t
        assert t.infos["success"].shape == (len(t),)
        assert bool(t.infos["success"][-1]) is succ and not t.infos["success"][:-1].any()
        assert t.success is succ


def test_minari_dict_obs_flattened(minari_dict_dataset, demo_expect):
    exp = demo_expect["minari_dict_dataset"]
    space = exp["obs_space"]
    demos = load_demos(f"minari:{exp['id']}")
    assert demos.meta["state_from"] == "gymnasium.spaces.flatten"
    for t, raw in zip(demos.trajectories, exp["raw_obs"]):
        want = np.stack(
            [gym.spaces.flatten(space, {k: v[i] for k, v in raw.items()}) for i in range(len(t) + 1)]
        )
        np.testing.assert_allclose(t.observations["state"], want, rtol=1e-6)
        assert t.observations["state"].shape == (len(t) + 1, 8)


def test_minari_dict_obs_uses_task_flatten(minari_dict_dataset, demo_expect):
    exp = demo_expect["minari_dict_dataset"]
    seen = []

    def flatten(obs):
        seen.append(obs)
        return np.concatenate([obs["observation"], obs["desired_goal"]])

    task = TaskSpec(name="pm-test", env_id="PointMaze_UMaze-v3", obs_mode="state", max_episode_steps=50,
                    flatten=flatten)
    demos = load_demos(exp["id"], task=task)
    assert demos.meta["state_from"] == "task.flatten"
    assert isinstance(seen[0], dict) and seen[0]["observation"].shape == (4,)
    for t, raw in zip(demos.trajectories, exp["raw_obs"]):
        want = np.concatenate([raw["observation"], raw["desired_goal"]], axis=1)
        np.testing.assert_allclose(t.observations["state"], want, rtol=1e-6)


def test_minari_state_pixels_kept(minari_root, demo_writers):
    exp = demo_writers.minari(minari_root, "cmil-test/pix-v0", lengths=(3, 4), terminal=(False, True),
                              obs="state_pixels")
    demos = load_demos("minari:cmil-test/pix-v0")
    _check_common(demos, {**exp, "obs_shape": {"state": (39,), "pixels": (64, 64, 3)}})
    for t, raw in zip(demos.trajectories, exp["raw_obs"]):
        np.testing.assert_allclose(t.observations["state"], raw["state"])
        # JPEG on disk: close to the written frames, not bit-exact
        diff = np.abs(t.observations["pixels"].astype(int) - raw["pixels"].astype(int))
        assert diff.mean() < 3.0


def test_minari_missing_id_says_where_it_looked(minari_root):
    with pytest.raises(UserError) as err:
        load_demos("minari:D4RL/door/human-v2")
    msg = str(err.value)
    assert "D4RL/door/human-v2" in msg and str(minari_root) in msg
    with pytest.raises(UserError, match=str(minari_root)):
        load_demos("D4RL/kitchen/mixed-v2")


def test_minari_corrupt_data_names_path(minari_dataset):
    main = minari_dataset / "data" / "main_data.hdf5"
    _truncate(main)
    with pytest.raises(UserError) as err:
        load_demos(str(minari_dataset))
    assert str(minari_dataset) in str(err.value)


# ----------------------------------------------------------------------------- sources and errors


def test_missing_paths_are_user_errors(tmp_path):
    for source, needle in [
        (f"d4rl:{tmp_path / 'nope.hdf5'}", "nope.hdf5"),
        (f"npz:{tmp_path / 'nodir'}", "nodir"),
        (str(tmp_path / "missing.hdf5"), "missing.hdf5"),
        (f"minari:{tmp_path / 'no_dataset'}", "no_dataset"),
        ("", "non-empty"),
        ("d4rl:", "d4rl"),
    ]:
        with pytest.raises(UserError, match=needle):
            load_demos(source)


def test_bare_sources_recognised_by_shape(d4rl_hdf5, npz_folder, minari_dataset, tmp_path):
    assert resolve_source(str(d4rl_hdf5))[0] == "d4rl"
    assert resolve_source(str(npz_folder))[0] == "npz"
    assert resolve_source(str(minari_dataset))[0] == "minari"
    assert resolve_source(str(minari_dataset / "data"))[0] == "minari"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="neither"):
        load_demos(str(other))


# ----------------------------------------------------------------------------- subsample


def _toy(m):
    return DemoSet(
        source="toy:set",
        trajectories=[
            Trajectory(observations={"state": np.zeros((3, 2), np.float32)},
                       actions=np.zeros((2, 1), np.float32), rewards=np.zeros(2, np.float32),
                       episode_id=f"e{i}")
            for i in range(m)
        ],
    )


def test_subsample_deterministic_and_ordered():
    demos = _toy(20)
    a = subsample(demos, 5, seed=3)
    b = subsample(demos, 5, seed=3)
    assert describe_episode_ids(a) == describe_episode_ids(b)
    idx = [demos.trajectories.index(t) for t in a]
    assert idx == sorted(idx) and len(set(idx)) == 5
    want = sorted(np.random.default_rng(3).choice(20, size=5, replace=False))
    assert idx == list(want)
    # ten seeds cannot all pick the same 5 of 20 (C(20,5) = 15504 subsets)
    picks = {tuple(describe_episode_ids(subsample(demos, 5, seed=s))) for s in range(10)}
    assert len(picks) > 1
    # lists work too, and n == M keeps everything in order
    assert subsample(demos.trajectories, 20, seed=0) == demos.trajectories


def test_subsample_errors():
    demos = _toy(4)
    with pytest.raises(UserError, match="asked for 5 demos but toy:set has only 4 episodes"):
        subsample(demos, 5, seed=0)
    for bad in (0, -2):
        with pytest.raises(UserError, match=str(bad)):
            subsample(demos, bad, seed=0)
    with pytest.raises(UserError):
        subsample(demos, 2.5, seed=0)


def test_describe_episode_ids_falls_back_to_position():
    t = _toy(2).trajectories
    t[1].episode_id = ""
    assert describe_episode_ids(t) == ["e0", "#1"]


# ----------------------------------------------------------------------------- inspect and speed


def test_inspect_source_summary(d4rl_hdf5, minari_dataset, npz_folder):
    text = inspect_source(str(d4rl_hdf5))
    assert "kind: d4rl" in text and "episodes: 5" in text
    assert "state (39,) float32" in text and "actions: (28,) float32" in text
    assert "success rate: 0.600" in text and "min 5 / mean 11.8 / max 20" in text
    text = inspect_source(f"minari:{minari_dataset}")
    assert "episodes: 4" in text and "bounds [-1, 1]" in text and "success rate: 0.500" in text
    text = inspect_source(f"npz:{npz_folder}")
    assert "episodes: 3" in text and "pixels (64, 64, 3) uint8" in text and "success" not in text
    with pytest.raises(UserError):
        inspect_source(str(npz_folder / "absent.npz"))


def test_loading_50x300_state_dataset_is_fast(tmp_path, demo_writers, minari_root):
    path = tmp_path / "big.hdf5"
    demo_writers.d4rl(path, lengths=[300] * 50, ends=["timeout"] * 50, trailing=0)
    demo_writers.minari(minari_root, "cmil-test/big-v0", lengths=[300] * 50, terminal=[False] * 50)
    for source in (f"d4rl:{path}", "minari:cmil-test/big-v0"):
        load_demos(source)  # warm the imports and file cache
        t0 = time.perf_counter()
        demos = load_demos(source)
        elapsed = time.perf_counter() - t0
        assert len(demos.trajectories) == 50 and demos.n_steps == 15000
        assert elapsed < 1.0, f"{source} took {elapsed:.2f}s"
