"""Named demo sources: published demonstrations turned into local Minari datasets.

``cmil-bench demos --task T --source NAME --path DIR`` calls ``convert_named_source``. A named
source knows which task family it belongs to, where its files come from, and how to turn them
into a Minari dataset with the observation format of the harness (``Dict{state, pixels}``), so
that the state and pixel variants of a task train on the same episodes.

``kitchen-paper`` — the 10 Franka Kitchen demonstrations of the CMIL paper (public repository
victorkolev/cmil, folder data/kitchen; one DreamerV2 ``.npz`` per episode with 64x64 images and
actions but no states). They carry no licence, so the project never ships them: ``--path`` names a
local copy, and without ``--path`` they are downloaded (urllib) into
``$CMIL_BENCH_CACHE/kitchen-paper`` (default ``~/.cache/cmil-bench``) on a machine with network.
Each demo's 280 actions are replayed open-loop in ``FrankaKitchen-v1`` from ``reset(seed=0)``,
recording the 59-d states, the 64x64 frames of the paper's camera, the rewards (one per
subtask completed) and which subtasks the replay completes. The two simulators differ slightly,
so replays complete 2 to 4 of the 4 subtasks; the dataset's ``ref_max_score`` (and the metadata
key ``cmil_demo_return``) hold the replays' mean score, the demo reference of norm_score.

``cmil-shadowhand`` — the 20 ShadowHand Baoding demonstrations of the CMIL paper (same repository,
folder data/shadowhand), with recorded states: see ``envs.baoding_demos``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cmil_bench.errors import UserError
from envs.collect import _datasets_root, clear_dataset_path

# ----------------------------------------------------------------------------- the paper's Kitchen demos

KITCHEN_PAPER_REPO = "victorkolev/cmil"
KITCHEN_PAPER_COMMIT = "ddb448dfd81e9128953574db5b9ab285f2ae7d10"
KITCHEN_PAPER_FOLDER = "data/kitchen"
KITCHEN_PAPER_FILES = (
    "20231122T054551-5fa998422c7d4c9bb63e563fcc951d5d-280.npz",
    "20231122T054659-5e926c986f984c528461eacf85a1daad-280.npz",
    "20231122T055731-1bcf5cff53b043fba5d1c484f336bb22-280.npz",
    "20231122T060036-46c6375ca6ef42508ab0b35333461cc1-280.npz",
    "20231122T060046-d9e196abf3324d909de996aa8afdfac1-280.npz",
    "20231122T060430-d8000a52f7474d559330ea29799bc143-280.npz",
    "20231122T060450-425be6cc38ba428da6a38aa4befdf817-280.npz",
    "20231122T060902-5f26ecd4899446019d36ab400214babc-280.npz",
    "20231122T060912-5b58e1c5b25b43919639025d91058622-280.npz",
    "20231122T061228-6cb77b1e93ff4eafbcc665d6fb8eb8b5-280.npz",
)
REPLAY_SEED = 0


def kitchen_paper_url(name: str) -> str:
    return (f"https://raw.githubusercontent.com/{KITCHEN_PAPER_REPO}/{KITCHEN_PAPER_COMMIT}/"
            f"{KITCHEN_PAPER_FOLDER}/{name}")


def cache_dir() -> Path:
    """Where downloaded sources are kept: ``$CMIL_BENCH_CACHE`` or ``~/.cache/cmil-bench``."""
    return Path(os.environ.get("CMIL_BENCH_CACHE", "~/.cache/cmil-bench")).expanduser()


def fetch_files(urls: dict[str, str], dest: Path, offline_hint: str, timeout: float = 60.0) -> Path:
    """Download ``urls`` ({relative path: url}) under ``dest``; files already there are kept.
    Needs network: only the demos command calls it, never a run or a test."""
    for rel, url in urls.items():
        target = dest / rel
        if target.is_file() and target.stat().st_size > 0:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as f:
                shutil.copyfileobj(resp, f)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot download {url} ({type(exc).__name__}: {exc}); {offline_hint}") from None
        os.replace(tmp, target)
    return dest


def download_kitchen_paper(dest: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Download the paper's 10 Kitchen demos into ``dest`` (files already there are kept).

    Raises UserError naming the URL and the offline alternative when a download fails.
    """
    dest = Path(dest) if dest is not None else cache_dir() / "kitchen-paper"
    dest.mkdir(parents=True, exist_ok=True)
    return fetch_files({name: kitchen_paper_url(name) for name in KITCHEN_PAPER_FILES}, dest,
                       f"without network, copy the folder {KITCHEN_PAPER_FOLDER} of "
                       f"github.com/{KITCHEN_PAPER_REPO} to this machine and pass --path DIR",
                       timeout=timeout)


def kitchen_paper_files(path: str | os.PathLike) -> list[Path]:
    """The ``.npz`` episodes in ``path`` (sorted by name), checked to be paper-Kitchen shaped."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"kitchen-paper: no such folder {folder} (expected the paper's .npz demos)")
    files = sorted(p for p in folder.glob("*.npz") if p.is_file())
    if not files:
        raise UserError(f"kitchen-paper: folder {folder} holds no .npz episodes")
    for p in files:
        actions = _npz_actions(p)
        if actions.ndim != 2 or actions.shape[1] != 9 or actions.shape[0] < 2:
            raise UserError(
                f"kitchen-paper: {p} has actions of shape {actions.shape}; a Kitchen demo has "
                f"(T+1, 9) (a zero first row, then T steps)")
        if not np.all(np.isfinite(actions)):
            raise UserError(f"kitchen-paper: {p} has non-finite actions")
    return files


def _npz_actions(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "action" not in z.files:
                raise UserError(f"kitchen-paper: {path} has no 'action' array (keys: {sorted(z.files)})")
            return np.asarray(z["action"], dtype=np.float32)
    except UserError:
        raise
    except Exception as exc:  # zip/zlib/format errors of a damaged file
        raise UserError(f"kitchen-paper: cannot read {path}: {type(exc).__name__}: {exc}") from None


def _npz_first_image(path: Path) -> np.ndarray | None:
    with np.load(path, allow_pickle=False) as z:
        return np.asarray(z["image"][0]) if "image" in z.files else None


def replay_actions(env, actions: np.ndarray, seed: int = REPLAY_SEED) -> dict:
    """Replay ``actions`` open-loop from ``env.reset(seed=seed)``.

    ``env`` is a Kitchen env from ``envs.registry.make_env(task, render_pixels=...)``: with
    ``True`` its observations are ``Dict{state, pixels}``, with ``False`` state vectors (then
    ``pixels`` is None). Its info carries the env's subtask lists. Returns the
    observations (T+1 rows each), rewards, terminated/truncated flags of the last step, the
    subtasks completed (in order), and per-step infos ``success`` (all subtasks done so far) and
    ``tasks_completed`` (count so far), each with T+1 rows (the reset's first).
    """
    from envs.kitchen import completed_subtasks

    goal = list(env.unwrapped.goal.keys()) if hasattr(env.unwrapped, "goal") else []
    obs, info = env.reset(seed=seed)
    with_pixels = isinstance(obs, dict)
    states = [obs["state"] if with_pixels else obs]
    pixels = [obs["pixels"]] if with_pixels else []
    rewards, infos = [], []
    count = [0]
    terminated = truncated = False
    for a in actions:
        obs, r, terminated, truncated, info = env.step(np.asarray(a, dtype=np.float32))
        states.append(obs["state"] if with_pixels else obs)
        if with_pixels:
            pixels.append(obs["pixels"])
        rewards.append(float(r))
        infos.append({"step_task_completions": list(info.get("step_task_completions", ()))})
        count.append(len(completed_subtasks(infos)))
        if terminated or truncated:
            break
    done = completed_subtasks(infos)
    n_goal = len(goal) if goal else None
    success = np.array([n_goal is not None and c >= n_goal for c in count], dtype=bool)
    return {
        "state": np.stack(states).astype(np.float32),
        "pixels": np.stack(pixels).astype(np.uint8) if with_pixels else None,
        "actions": np.asarray(actions[: len(rewards)], dtype=np.float32),
        "rewards": np.asarray(rewards, dtype=np.float64),
        "terminated": bool(terminated),
        "truncated": bool(truncated),
        "completed": done,
        "tasks_completed": np.asarray(count, dtype=np.int64),
        "success": success,
    }


def _convert_kitchen_paper(spec, path: str | None, dataset_id: str, root: str | None,
                           overwrite: bool) -> str:
    from envs.registry import make_env

    folder = Path(path).expanduser() if path else download_kitchen_paper()
    files = kitchen_paper_files(folder)
    env = make_env(spec, render_pixels=True)
    replays = []
    try:
        for p in files:
            acts = _npz_actions(p)[1:]  # the first row is DreamerV2's zero placeholder
            out = replay_actions(env, acts, seed=REPLAY_SEED)
            ref = _npz_first_image(p)
            out["file"] = p.name
            out["frame0_mae"] = (float(np.mean(np.abs(ref.astype(np.float32) - out["pixels"][0])))
                                 if ref is not None and ref.shape == out["pixels"][0].shape else None)
            replays.append(out)
    finally:
        env.close()
    scores = [float(np.sum(r["rewards"])) for r in replays]
    meta = {
        "cmil_source": "kitchen-paper",
        "cmil_source_path": str(folder.resolve()),
        "cmil_source_files": [r["file"] for r in replays],
        "cmil_replay_seed": REPLAY_SEED,
        "cmil_replay_completed": [r["completed"] for r in replays],
        "cmil_replay_scores": scores,
        "cmil_demo_return": float(np.mean(scores)),
        "cmil_random_return": 0.0,
        "cmil_frame0_mae": [r["frame0_mae"] for r in replays],
        "cmil_task_family": spec.family or spec.name,
        "cmil_camera": {k: (list(map(float, v)) if isinstance(v, (list, tuple)) else v)
                        for k, v in spec.camera.items()},
    }
    return write_state_pixel_dataset(
        spec, replays, dataset_id=dataset_id, root=root, overwrite=overwrite,
        ref_min_score=0.0, ref_max_score=float(np.mean(scores)),
        algorithm_name="replay:kitchen-paper",
        description=(f"The CMIL paper's {len(replays)} Franka Kitchen demonstrations "
                     f"(github.com/{KITCHEN_PAPER_REPO}, {KITCHEN_PAPER_FOLDER}) replayed open-loop "
                     f"in {spec.env_id} from reset(seed={REPLAY_SEED}); observations: 59-d state and "
                     f"64x64 pixels; rewards count completed subtasks"),
        extra_metadata=meta,
    )


# ----------------------------------------------------------------------------- writing datasets


# The dataset root is switched with envs.collect._datasets_root (one place for it).


def write_state_pixel_dataset(spec, episodes: list[dict], *, dataset_id: str, root: str | None,
                              overwrite: bool, ref_min_score: float, ref_max_score: float,
                              algorithm_name: str, description: str,
                              extra_metadata: dict | None = None) -> str:
    """Write ``episodes`` (dicts with state, pixels, actions, rewards, terminated, truncated, and
    either ``infos`` (arrays of T+1 rows) or success and tasks_completed) as a local Minari dataset
    with ``Dict{state, pixels}`` observations. Returns the dataset folder."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    if not episodes:
        raise UserError("no episodes to write")
    with _datasets_root(root):
        path = clear_dataset_path(dataset_id, overwrite, "pass --overwrite")
        buffers = []
        for i, ep in enumerate(episodes):
            T = len(ep["rewards"])
            terms = np.zeros(T, dtype=bool)
            truncs = np.zeros(T, dtype=bool)
            terms[-1] = ep["terminated"]
            truncs[-1] = ep["truncated"] and not ep["terminated"]
            buffers.append(EpisodeBuffer(
                id=i, seed=int(ep.get("seed", REPLAY_SEED)),
                observations={"state": ep["state"], "pixels": ep["pixels"]},
                actions=ep["actions"], rewards=ep["rewards"],
                terminations=terms, truncations=truncs,
                infos=ep.get("infos") or {
                    "success": np.asarray(ep["success"], dtype=bool),
                    "tasks_completed": np.asarray(ep["tasks_completed"], dtype=np.int64)},
            ))
        s = spec.image_size
        obs_space = gym.spaces.Dict({
            "state": gym.spaces.Box(-np.inf, np.inf, shape=episodes[0]["state"].shape[1:], dtype=np.float32),
            "pixels": gym.spaces.Box(0, 255, shape=(s, s, 3), dtype=np.uint8),
        })
        act_dim = episodes[0]["actions"].shape[1]
        act_space = gym.spaces.Box(-1.0, 1.0, shape=(act_dim,), dtype=np.float32)
        base = gym.spec(spec.env_id)
        env_spec = dataclasses.replace(base, kwargs={**base.kwargs, **spec.env_kwargs},
                                       max_episode_steps=spec.max_episode_steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = minari.create_dataset_from_buffers(
                dataset_id=dataset_id, buffer=buffers, env=env_spec, eval_env=env_spec,
                algorithm_name=algorithm_name, author={"cmil-bench"},
                author_email={"cmil-bench@localhost"}, code_permalink="envs/sources.py",
                action_space=act_space, observation_space=obs_space,
                ref_min_score=float(ref_min_score), ref_max_score=float(ref_max_score),
                description=description, jpeg_encoding=False,
            )
        if extra_metadata:
            ds.storage.update_metadata(extra_metadata)
        return str(path)


# ----------------------------------------------------------------------------- registry


def _convert_cmil_shadowhand(spec, path, dataset_id, root, overwrite) -> str:
    from envs.baoding_demos import convert  # the Baoding demos (envs/baoding_demos.py)

    return convert(spec, path, dataset_id, root, overwrite)


@dataclass(frozen=True)
class NamedSource:
    name: str
    families: tuple[str, ...]
    default_dataset_id: str
    convert: Callable[..., str]
    description: str = ""


NAMED_SOURCES: dict[str, NamedSource] = {
    "kitchen-paper": NamedSource(
        name="kitchen-paper",
        families=("kitchen-mixed",),
        default_dataset_id="cmil-bench/kitchen-mixed/paper-v0",
        convert=_convert_kitchen_paper,
        description="the CMIL paper's 10 Franka Kitchen demos, replayed in FrankaKitchen-v1",
    ),
    "cmil-shadowhand": NamedSource(
        name="cmil-shadowhand",
        families=("baoding",),
        default_dataset_id="cmil-bench/baoding/paper-v0",
        convert=_convert_cmil_shadowhand,
        description="the CMIL paper's 20 ShadowHand Baoding demos (recorded states, re-rendered frames)",
    ),
}



def convert_named_source(task: str, source: str, path: str | None = None, *, root: str | None = None,
                         dataset_id: str | None = None, overwrite: bool = False) -> str:
    """Turn the named demo ``source`` of ``task`` into a local Minari dataset; returns its folder.

    ``path`` is where the source's files are (None: download them where that is possible);
    ``root`` the Minari root (default ``$MINARI_DATASETS_PATH`` or ~/.minari/datasets);
    ``dataset_id`` defaults to the source's (``cmil-bench/kitchen-mixed/paper-v0`` for
    ``kitchen-paper``), which is the task's default demo source.
    """
    from envs.registry import get_task

    if source not in NAMED_SOURCES:
        raise UserError(f"unknown demo source {source!r}; named sources: {', '.join(sorted(NAMED_SOURCES))}")
    named = NAMED_SOURCES[source]
    spec = get_task(task)
    family = spec.family or spec.name
    if family not in named.families:
        raise UserError(f"demo source {source!r} belongs to task(s) {', '.join(named.families)}, "
                        f"not to {task!r}")
    return named.convert(spec, path, dataset_id or named.default_dataset_id, root, overwrite)
