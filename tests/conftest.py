"""Shared fixtures: small demo datasets written in each real on-disk layout.

Path fixtures (each writes into the test's ``tmp_path`` and returns the path):
  - ``d4rl_hdf5``       a D4RL-layout HDF5 file, Adroit-door shaped (obs 39-d, act 28-d), with
                         terminals, timeouts, infos/* and metadata/*, plus a trailing partial episode
  - ``npz_folder``      a folder of DreamerV2-layout ``.npz`` episodes (Kitchen-shaped, 9-d actions)
  - ``minari_dataset``  a Minari dataset (Box obs 39-d, act 28-d) written with
                         ``minari.create_dataset_from_buffers``; MINARI_DATASETS_PATH points at its root
  - ``minari_dict_dataset``  the same with a PointMaze-like Dict observation
  - ``kitchen_demo_dir`` the real CMIL Kitchen demos under ../shared (skips when absent)
  - ``demo_root``       (module scope) a Minari root with three scripted-expert demos of
                         pointmaze-umaze and fetch-push (with pixels), for smoke runs
  - ``fetch_demos``     (session scope) a Minari root with the same three fetch-push demos only
  - ``demo_source``     (session scope) ``d4rl:PATH`` of a 6-episode PointMaze-shaped demo file
  - ``workflow_copy``   a folder with a copy of the Snakefile, config/ and profiles/

``reference_run(algo, sets=None)`` (session scope) runs one uninterrupted smoke run through the
command line, once per session for each (algo, sets), and returns its folder; the fault,
determinism, resume and CLI tests compare their runs with it.

``demo_expect`` is a dict the path fixtures fill with what a loader must find, keyed by fixture
name (episode count, lengths, returns, ends, shapes, ...). ``demo_writers`` gives the writer
functions for custom sizes: ``demo_writers.d4rl(path, ...)``, ``.npz(folder, ...)``,
``.minari(root, dataset_id, ...)``; each returns such an expectation dict.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import minari_path_set, run_argv, write_pointmaze_demos

os.environ.setdefault("MUJOCO_GL", "egl")

try:  # keep tests light on the 2 shared cores
    import torch

    torch.set_num_threads(1)
except Exception:  # pragma: no cover - torch is installed, but the fixtures do not need it
    pass

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
KITCHEN_DEMOS = SHARED / "data" / "cmil-kitchen-demos"

DOOR_OBS, DOOR_ACT = 39, 28  # AdroitHandDoor-v1 / D4RL door-human shapes


def _episode_ends(lengths, ends):
    ends = list(ends) if ends is not None else ["timeout"] * len(lengths)
    assert len(ends) == len(lengths)
    return ends


def write_d4rl_hdf5(
    path,
    lengths=(12, 20, 7, 15),
    ends=("timeout", "terminal", "timeout", "terminal"),
    trailing=5,
    obs_dim=DOOR_OBS,
    act_dim=DOOR_ACT,
    seed=0,
    next_observations=False,
    image=False,
    infos=True,
    timeouts=True,
):
    """Write one flat D4RL-layout HDF5 file; ``trailing`` rows after the last end form a partial episode.

    Episode i "succeeds" (infos/goal_achieved true on its last 3 steps) when i is even.
    """
    import h5py

    rng = np.random.default_rng(seed)
    ends = _episode_ends(lengths, ends)
    all_lengths = list(lengths) + ([trailing] if trailing else [])
    n = int(sum(all_lengths))
    if image:
        obs = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    else:
        obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    nxt = None
    if next_observations:
        nxt = np.empty_like(obs)
        nxt[:-1] = obs[1:]
    actions = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    rewards = rng.normal(size=n).astype(np.float32)
    terminals = np.zeros(n, dtype=bool)
    touts = np.zeros(n, dtype=bool)
    goal = np.zeros(n, dtype=bool)
    exp = {"n_episodes": len(all_lengths), "lengths": all_lengths, "returns": [], "terminated": [],
           "truncated": [], "success": [], "obs_rows": [], "final_obs": [], "act_dim": act_dim,
           "obs_shape": {"pixels": (64, 64, 3)} if image else {"state": (obs_dim,)}}
    start = 0
    for i, T in enumerate(all_lengths):
        e = start + T - 1
        partial = i >= len(lengths)
        kind = "partial" if partial else ends[i]
        if kind == "terminal":
            terminals[e] = True
        elif kind == "timeout":
            touts[e] = True
        if i % 2 == 0:
            goal[max(start, e - 2) : e + 1] = True
        if nxt is not None:
            # the row after an episode's last step is the next episode's reset, not its next obs
            nxt[e] = (rng.integers(0, 256, size=obs.shape[1:], dtype=np.uint8) if image
                      else rng.normal(size=obs.shape[1:]).astype(np.float32))
        final = nxt[e] if nxt is not None else obs[e]
        exp["returns"].append(float(np.sum(rewards[start : e + 1], dtype=np.float64)))
        exp["terminated"].append(kind == "terminal")
        exp["truncated"].append(kind != "terminal")
        exp["success"].append(i % 2 == 0)
        exp["obs_rows"].append(obs[start : e + 1].copy())
        exp["final_obs"].append(np.array(final))
        start = e + 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=obs)
        f.create_dataset("actions", data=actions)
        f.create_dataset("rewards", data=rewards)
        f.create_dataset("terminals", data=terminals)
        if timeouts:
            f.create_dataset("timeouts", data=touts)
        if nxt is not None:
            f.create_dataset("next_observations", data=nxt)
        if infos:
            f.create_dataset("infos/goal_achieved", data=goal)
            f.create_dataset("infos/qpos", data=rng.normal(size=(n, 30)).astype(np.float32))
            f.create_dataset("infos/qvel", data=rng.normal(size=(n, 30)).astype(np.float32))
        f.create_dataset("metadata/algorithm", data="human demonstrations")
        f.create_dataset("metadata/policy/fc0/weight", data=np.zeros((4, 4), np.float32))
    exp["actions"] = actions
    exp["rewards"] = rewards
    return exp


def write_npz_folder(
    folder,
    lengths=(10, 14, 8),
    terminal=(False, True, False),
    act_dim=9,
    state_dim=None,
    seed=0,
    compressed=True,
    image_size=64,
):
    """Write DreamerV2-layout episodes, one ``.npz`` each; file names sort in reverse writing order.

    Returns the expectation in sorted-name order (the order a loader must return).
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save = np.savez_compressed if compressed else np.savez
    eps = []
    for i, (T, term) in enumerate(zip(lengths, terminal)):
        rows = T + 1
        action = rng.uniform(-1, 1, size=(rows, act_dim)).astype(np.float32)
        action[0] = 0.0
        reward = rng.integers(0, 2, size=rows).astype(np.float32)
        reward[0] = 0.0
        is_first = np.zeros(rows, bool)
        is_first[0] = True
        is_last = np.zeros(rows, bool)
        is_last[-1] = True
        is_terminal = np.zeros(rows, bool)
        is_terminal[-1] = bool(term)
        data = {
            "image": rng.integers(0, 256, size=(rows, image_size, image_size, 3), dtype=np.uint8),
            "action": action,
            "reward": reward,
            "is_first": is_first,
            "is_last": is_last,
            "is_terminal": is_terminal,
        }
        if state_dim:
            data["state"] = rng.normal(size=(rows, state_dim)).astype(np.float32)
        # later episodes get earlier names, so name order != writing order
        stem = f"20240101T{99 - i:02d}0000-{i:032x}-{T}"
        save(folder / f"{stem}.npz", **data)
        eps.append((stem, T, term, data))
    eps.sort(key=lambda e: e[0])
    return {
        "n_episodes": len(eps),
        "ids": [e[0] for e in eps],
        "lengths": [e[1] for e in eps],
        "terminated": [bool(e[2]) for e in eps],
        "truncated": [not e[2] for e in eps],
        "returns": [float(e[3]["reward"][1:].sum(dtype=np.float64)) for e in eps],
        "data": [e[3] for e in eps],
        "act_dim": act_dim,
        "obs_shape": {"pixels": (image_size, image_size, 3),
                      **({"state": (state_dim,)} if state_dim else {})},
    }


def _pointmaze_space():
    from gymnasium import spaces

    box = lambda d: spaces.Box(-np.inf, np.inf, (d,), np.float64)  # noqa: E731
    return spaces.Dict({"achieved_goal": box(2), "desired_goal": box(2), "observation": box(4)})


def write_minari_dataset(
    root,
    dataset_id="cmil-test/door-v0",
    lengths=(9, 13, 6, 11),
    terminal=(False, True, False, True),
    obs="box",
    obs_dim=DOOR_OBS,
    act_dim=DOOR_ACT,
    seed=0,
    jpeg_encoding=True,
):
    """Write a Minari dataset under ``root`` the way DataCollector lays it out (infos has T+1 rows,
    the first from reset). ``obs``: ``box`` (state vector), ``dict`` (PointMaze-like Dict) or
    ``state_pixels`` (Dict with ``state`` and 64x64x3 ``pixels``).

    Episode i succeeds (info ``success`` true on its last step) when i is odd.
    Returns the expectation dict; the dataset folder is ``root / dataset_id``.
    """
    import minari
    from gymnasium import spaces
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(seed)
    act_space = spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
    if obs == "box":
        obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float64)
    elif obs == "dict":
        obs_space = _pointmaze_space()
    elif obs == "state_pixels":
        obs_space = spaces.Dict(
            {
                "pixels": spaces.Box(0, 255, (64, 64, 3), np.uint8),
                "state": spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            }
        )
    else:
        raise ValueError(obs)
    buffers, raw_obs, returns, success = [], [], [], []
    for i, (T, term) in enumerate(zip(lengths, terminal)):
        if obs == "box":
            o = rng.normal(size=(T + 1, obs_dim))
        elif obs == "dict":
            o = {"achieved_goal": rng.normal(size=(T + 1, 2)), "desired_goal": rng.normal(size=(T + 1, 2)),
                 "observation": rng.normal(size=(T + 1, 4))}
        else:
            # smooth images survive JPEG nearly unchanged
            ramp = np.linspace(0, 200, 64, dtype=np.float32)
            img = np.broadcast_to(ramp[None, :, None] + np.zeros((64, 1, 3), np.float32), (64, 64, 3))
            pix = np.stack([np.clip(img + 5 * t, 0, 255) for t in range(T + 1)]).astype(np.uint8)
            o = {"pixels": pix, "state": rng.normal(size=(T + 1, obs_dim)).astype(np.float32)}
        a = rng.uniform(-1, 1, size=(T, act_dim)).astype(np.float32)
        r = rng.normal(size=T)
        succ = np.zeros(T + 1, dtype=bool)
        succ[-1] = i % 2 == 1
        terms = np.zeros(T, dtype=bool)
        truncs = np.zeros(T, dtype=bool)
        (terms if term else truncs)[-1] = True
        buffers.append(
            EpisodeBuffer(id=i, seed=i, observations=o, actions=a, rewards=r.tolist(),
                          terminations=terms.tolist(), truncations=truncs.tolist(),
                          infos={"success": succ, "dist": rng.normal(size=T + 1)})
        )
        raw_obs.append(o)
        returns.append(float(r.sum()))
        success.append(i % 2 == 1)
    root = Path(root)
    with minari_path_set(root), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            dataset_id, buffers, observation_space=obs_space, action_space=act_space,
            algorithm_name="scripted", author="cmil-bench tests", author_email="tests@example.invalid",
            code_permalink="https://example.invalid/cmil-bench", description="test fixture",
            jpeg_encoding=jpeg_encoding,
        )
    return {
        "id": dataset_id, "root": root, "path": root / dataset_id, "obs_space": obs_space,
        "n_episodes": len(lengths), "lengths": list(lengths), "returns": returns,
        "terminated": [bool(t) for t in terminal], "truncated": [not t for t in terminal],
        "success": success, "raw_obs": raw_obs, "act_dim": act_dim,
        "ids": [str(i) for i in range(len(lengths))],
    }


@pytest.fixture
def demo_expect():
    return {}


@pytest.fixture
def demo_writers():
    return SimpleNamespace(d4rl=write_d4rl_hdf5, npz=write_npz_folder, minari=write_minari_dataset)


@pytest.fixture
def d4rl_hdf5(tmp_path, demo_expect):
    path = tmp_path / "d4rl" / "door-human-v1.hdf5"
    demo_expect["d4rl_hdf5"] = write_d4rl_hdf5(path)
    return path


@pytest.fixture
def npz_folder(tmp_path, demo_expect):
    folder = tmp_path / "npz_demos"
    demo_expect["npz_folder"] = write_npz_folder(folder)
    return folder


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari_datasets"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture
def minari_dataset(minari_root, demo_expect):
    exp = write_minari_dataset(minari_root, "cmil-test/door-v0", obs="box")
    demo_expect["minari_dataset"] = exp
    return exp["path"]


@pytest.fixture
def minari_dict_dataset(minari_root, demo_expect):
    exp = write_minari_dataset(minari_root, "cmil-test/pointmaze-v0", obs="dict", act_dim=2)
    demo_expect["minari_dict_dataset"] = exp
    return exp["path"]


@pytest.fixture
def kitchen_demo_dir():
    if not KITCHEN_DEMOS.is_dir() or not any(KITCHEN_DEMOS.glob("*.npz")):
        pytest.skip(f"real Kitchen demos not found at {KITCHEN_DEMOS}")
    return KITCHEN_DEMOS


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """A local Minari root with three expert demos of pointmaze-umaze (states) and of
    fetch-push (states and pixels: its 50-step episodes keep pixel runs short), set as
    MINARI_DATASETS_PATH for the module that uses it."""
    from envs.collect import collect_demos

    root = tmp_path_factory.mktemp("minari")
    with minari_path_set(root):
        collect_demos("pointmaze-umaze", 3, seed=0, root=str(root), random_episodes=2)
        collect_demos("fetch-push", 3, seed=0, root=str(root), pixels=True, random_episodes=2)
        yield root


@pytest.fixture(scope="session")
def fetch_demos(tmp_path_factory):
    """Three expert episodes of fetch-push with states and pixels (50 steps each)."""
    from envs.collect import collect_demos

    root = tmp_path_factory.mktemp("minari")
    collect_demos("fetch-push", 3, seed=0, root=str(root), pixels=True, random_episodes=2)
    return root


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory) -> str:
    """``d4rl:PATH`` of a 6-episode PointMaze-shaped demo file, written once per session."""
    return write_pointmaze_demos(tmp_path_factory.mktemp("fault-demos") / "pointmaze.hdf5")


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, demo_source):
    """``reference_run(algo, sets=None)``: the folder of one uninterrupted run (smoke preset +
    ``sets``, seed 0, ``demo_source``), made once per session for each (algo, sets)."""
    from cmil_bench import cli

    made: dict = {}

    def run(algo: str, sets: dict | None = None) -> Path:
        key = (algo, tuple(sorted((sets or {}).items())))
        if key not in made:
            out = tmp_path_factory.mktemp(f"reference-{algo}") / "run"
            rc = cli.main(run_argv(out, demo_source, algo=algo, sets=sets))
            assert rc == 0, f"reference {algo} run failed with exit status {rc}"
            made[key] = out
        return made[key]

    return run


@pytest.fixture
def workflow_copy(tmp_path) -> Path:
    """A folder holding a copy of the Snakefile, config/ and profiles/ (for Snakemake runs)."""
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    shutil.copytree(REPO / "config", work / "config")
    shutil.copytree(REPO / "profiles", work / "profiles")
    return work
