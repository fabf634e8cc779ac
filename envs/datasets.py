"""Demo datasets: one loader interface over Minari, D4RL-layout HDF5 files and DreamerV2 npz folders.

Every loader returns ``Trajectory`` objects (see below). A *source* is a string:
  - ``minari:<dataset id or path>``  a local Minari dataset (``MINARI_DATASETS_PATH`` or ~/.minari)
  - ``d4rl:<file.hdf5>``            a D4RL-layout HDF5 file read with h5py
  - ``npz:<folder>``                 a folder of DreamerV2-style ``.npz`` episodes
A bare path or id is recognised by its shape (a folder of .npz files, an .hdf5/.h5 file, a Minari
dataset folder, or else a Minari dataset id).

Nothing here touches the network: Minari ids are resolved in the local root only.

How each layout becomes a ``Trajectory``:

* Minari: a Box observation becomes ``state`` (or ``pixels`` for a uint8 HxWx3 image box); a Dict
  observation whose keys are ``state``/``pixels`` is kept as is; any other Dict/Tuple observation is
  flattened to ``state`` with ``task.flatten`` (one raw observation at a time) when a task with a
  ``flatten`` is given, else with ``gymnasium.spaces.flatten`` order (the space's key order).
  Minari records the reset info too (T+1 rows); the reset row is dropped so ``infos`` has T rows,
  row t being the info returned by step t.
* D4RL HDF5: ``observations, actions, rewards, terminals, timeouts (optional), infos/*, metadata/*``
  with one row per step. Episodes end at ``terminals | timeouts``; rows after the last end form a
  trailing partial episode (marked ``truncated``). D4RL stores no observation after the last step
  of an episode: ``next_observations[last]`` is used when the file has it, otherwise the last
  observation is repeated as the final row (``meta['final_obs']`` says which).
  ``(N, 64, 64, 3)`` uint8 observations become ``pixels``.
* npz (DreamerV2): ``image`` (T+1, 64, 64, 3), ``action`` (T+1, A) whose first row is the zero
  placeholder, ``reward`` (T+1), ``is_first``, ``is_last``, ``is_terminal``. ``actions = action[1:]``,
  ``rewards = reward[1:]``, ``terminated = is_terminal[-1]``, ``truncated = is_last[-1]`` and not
  terminated. A ``state``/``observation``-like key becomes ``state``; other per-step keys become
  infos (rows 1:). Files are read in name order and the episode id is the file stem.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from cmil_bench.errors import UserError


@dataclass(eq=False)
class Trajectory:
    """One episode. ``observations[key]`` has T+1 rows (the last is the final observation).

    Equality is identity (``eq=False``): comparing array fields elementwise is ambiguous, and
    identity lets ``t in demos`` / ``list.index`` work.

    Keys: ``state`` (float32, (T+1, D)) and/or ``pixels`` (uint8, (T+1, 64, 64, 3), HWC).
    ``terminated`` is a true terminal (not a time limit); ``truncated`` a time-limit end.
    ``infos`` holds optional per-step arrays with T rows (e.g. ``success``).
    """

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool = False
    truncated: bool = False
    episode_id: str = ""
    infos: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def ret(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))

    @property
    def success(self) -> bool | None:
        """Whether any step's info marks success; None when the episode has no success info."""
        key = success_key(self.infos)
        if key is None:
            return None
        return bool(np.any(np.asarray(self.infos[key]) != 0))


@dataclass
class DemoSet:
    """All episodes of one source, plus what the run records about it."""

    source: str
    trajectories: list[Trajectory]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.trajectories)

    @property
    def n_steps(self) -> int:
        return int(sum(len(t) for t in self.trajectories))

    @property
    def episode_ids(self) -> list[str]:
        return describe_episode_ids(self.trajectories)


SUCCESS_KEYS = ("success", "is_success", "goal_achieved")
STATE_KEYS = ("state", "states", "observation", "observations", "obs", "proprio")
KINDS = ("minari", "d4rl", "npz")
_H5_SUFFIXES = (".hdf5", ".h5")


def success_key(infos: dict[str, np.ndarray]) -> str | None:
    """The info key that marks success (``success``, ``is_success`` or ``goal_achieved``), if any."""
    for key in SUCCESS_KEYS:
        if key in infos:
            return key
    return None


# ----------------------------------------------------------------------------- source resolution


def minari_root() -> Path:
    """Where local Minari datasets live: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".minari" / "datasets"


def _minari_data_dir(path: Path) -> Path | None:
    """The ``data`` folder of a Minari dataset folder (or the folder itself), else None."""
    for cand in (path / "data", path):
        if (cand / "metadata.json").is_file() or (cand / "main_data.hdf5").is_file():
            return cand
    return None


_VERSION_RE = re.compile(r"-v(\d+)$")


def _resolve_minari_id(dataset_id: str) -> Path:
    """Find ``dataset_id`` under the local Minari root (the newest version when none is given)."""
    root = minari_root()
    direct = root / dataset_id
    if _minari_data_dir(direct) is not None:
        return direct
    if not _VERSION_RE.search(dataset_id):
        parent = (root / dataset_id).parent
        stem = Path(dataset_id).name
        found = []
        if parent.is_dir():
            for cand in parent.iterdir():
                m = _VERSION_RE.search(cand.name)
                if m and cand.name[: m.start()] == stem and _minari_data_dir(cand) is not None:
                    found.append((int(m.group(1)), cand))
        if found:
            return max(found)[1]
    if dataset_id.startswith("cmil-bench/"):
        how = (f"make it with `cmil-bench demos --task {dataset_id.split('/')[1]}` (a task's scripted "
               "expert) or `cmil-bench demos --task ... --source NAME --path DIR`")
    else:
        how = (f"on a machine with network run `minari download {dataset_id}`, then copy it into "
               "that root")
    raise UserError(
        f"no Minari dataset {dataset_id!r} under {root} (the local Minari root, set by "
        f"MINARI_DATASETS_PATH or ~/.minari/datasets); nothing is downloaded during a run: {how}, "
        f"or pass a path"
    )


def _looks_like_path(s: str) -> bool:
    return (
        s.startswith(("/", "./", "../", "~"))
        or s in (".", "..")
        or s.lower().endswith(_H5_SUFFIXES + (".npz",))
    )


def resolve_source(source: str) -> tuple[str, Path]:
    """Split ``source`` into its kind (``minari``, ``d4rl``, ``npz``) and the local path it names.

    Raises UserError when the path or dataset id does not exist or has an unknown shape.
    """
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"demo source must be a non-empty string, got {source!r}")
    source = source.strip()
    kind, sep, rest = source.partition(":")
    if sep and kind in KINDS:
        if not rest:
            raise UserError(f"demo source {source!r} names no {kind} dataset after '{kind}:'")
        return _resolve_explicit(kind, rest, source)
    return _resolve_bare(source)


def _resolve_explicit(kind: str, rest: str, source: str) -> tuple[str, Path]:
    path = Path(rest).expanduser()
    if kind == "minari":
        if path.exists():
            if _minari_data_dir(path) is None:
                raise UserError(
                    f"demo source {source!r}: {path} is not a Minari dataset folder "
                    f"(no data/metadata.json or data/main_data.hdf5)"
                )
            return kind, path
        if _looks_like_path(rest):
            raise UserError(f"demo source {source!r}: no such Minari dataset folder {path}")
        return kind, _resolve_minari_id(rest)
    if kind == "d4rl":
        if path.is_file():
            return kind, path
        if path.is_dir():
            raise UserError(f"demo source {source!r}: {path} is a folder, expected a D4RL .hdf5 file")
        # A bare D4RL dataset name: look where D4RL keeps its downloads.
        d4rl_dir = Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()
        if not _looks_like_path(rest):
            for suffix in ("", ".hdf5", ".h5"):
                cand = d4rl_dir / (rest + suffix)
                if cand.is_file():
                    return kind, cand
        raise UserError(f"demo source {source!r}: no such D4RL HDF5 file {path} (also looked in {d4rl_dir})")
    # npz
    if path.is_dir() or (path.is_file() and path.suffix == ".npz"):
        return kind, path
    raise UserError(f"demo source {source!r}: no such npz folder {path}")


def _resolve_bare(source: str) -> tuple[str, Path]:
    path = Path(source).expanduser()
    if path.is_dir():
        if _minari_data_dir(path) is not None:
            return "minari", path
        if any(path.glob("*.npz")):
            return "npz", path
        raise UserError(
            f"demo source {source!r}: folder {path} holds neither .npz episodes nor a Minari dataset"
        )
    if path.is_file():
        if path.suffix.lower() in _H5_SUFFIXES:
            return "d4rl", path
        if path.suffix.lower() == ".npz":
            return "npz", path
        raise UserError(
            f"demo source {source!r}: {path} is neither an .hdf5/.h5 file nor an .npz episode"
        )
    if _looks_like_path(source):
        raise UserError(f"demo source {source!r}: no such file or folder {path}")
    try:
        return "minari", _resolve_minari_id(source)
    except UserError as exc:
        raise UserError(f"demo source {source!r} is no file or folder here, and {exc}") from None


# ----------------------------------------------------------------------------- public API


def load_demos(source: str, task: Any = None) -> DemoSet:
    """Load every episode of ``source`` (see the module docstring) as a DemoSet.

    ``task`` (an ``envs.registry.TaskSpec``) is only used to flatten dict observations that are not
    already ``{state, pixels}``: ``task.flatten`` gets one raw observation at a time.
    """
    kind, path = resolve_source(source)
    if kind == "minari":
        trajs, meta = _load_minari(path, source, task)
    elif kind == "d4rl":
        trajs, meta = _load_d4rl(path, source)
    else:
        trajs, meta = _load_npz(path, source)
    if not trajs:
        raise UserError(f"demo source {source!r} ({path}) holds no episodes")
    meta = {"kind": kind, "path": str(path), **meta, "n_episodes": len(trajs)}
    meta["n_steps"] = int(sum(len(t) for t in trajs))
    return DemoSet(source=source, trajectories=trajs, meta=meta)


def subsample(demos: DemoSet | Sequence[Trajectory], n: int, seed: int) -> list[Trajectory]:
    """Choose ``n`` episodes without replacement, deterministically from ``seed``.

    The choice is ``numpy.random.default_rng(seed).choice(M, n, replace=False)``, returned in the
    order of the original episodes.
    """
    if isinstance(demos, DemoSet):
        trajs, name = list(demos.trajectories), demos.source
    else:
        trajs, name = list(demos), "the demo list"
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise UserError(f"number of demos must be an integer, got {n!r}")
    n = int(n)
    if n <= 0:
        raise UserError(f"number of demos must be positive, got {n}")
    if n > len(trajs):
        raise UserError(f"asked for {n} demos but {name} has only {len(trajs)} episodes")
    idx = np.random.default_rng(seed).choice(len(trajs), size=n, replace=False)
    return [trajs[i] for i in np.sort(idx)]


def describe_episode_ids(trajs: DemoSet | Iterable[Trajectory]) -> list[str]:
    """The episode ids of ``trajs`` (``#<position>`` for an episode without an id)."""
    if isinstance(trajs, DemoSet):
        trajs = trajs.trajectories
    return [t.episode_id if t.episode_id else f"#{i}" for i, t in enumerate(trajs)]


def _fmt_num(x: float) -> str:
    return f"{x:.4g}"


def _fmt_bounds(low: Any, high: Any) -> str:
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if low.size and np.all(low == low.flat[0]) and np.all(high == high.flat[0]):
        return f"[{_fmt_num(low.flat[0])}, {_fmt_num(high.flat[0])}]"
    return (f"per-dim low in [{_fmt_num(low.min())}, {_fmt_num(low.max())}], "
            f"high in [{_fmt_num(high.min())}, {_fmt_num(high.max())}]")


def inspect_source(source: str) -> str:
    """A human-readable summary of ``source``: kind, episodes, lengths, shapes, returns, success."""
    demos = load_demos(source)
    trajs = demos.trajectories
    meta = demos.meta
    lengths = np.array([len(t) for t in trajs])
    returns = np.array([t.ret for t in trajs])
    lines = [
        f"source: {source}",
        f"kind: {meta['kind']} ({meta['path']})",
    ]
    for key in ("dataset_id", "env_id"):
        if meta.get(key):
            lines.append(f"{key.replace('_', ' ')}: {meta[key]}")
    lines.append(f"episodes: {len(trajs)}  steps: {int(lengths.sum())}")
    lines.append(f"length: min {lengths.min()} / mean {lengths.mean():.1f} / max {lengths.max()}")
    first = trajs[0]
    obs_desc = ", ".join(
        f"{k} {tuple(v.shape[1:])} {v.dtype}" for k, v in sorted(first.observations.items())
    )
    lines.append(f"observations: {obs_desc}")
    if meta.get("raw_observation_space"):
        lines.append(f"raw observation space: {meta['raw_observation_space']}")
    act = first.actions
    act_line = f"actions: {tuple(act.shape[1:])} {act.dtype}"
    if meta.get("action_low") is not None and meta.get("action_high") is not None:
        act_line += f", bounds {_fmt_bounds(meta['action_low'], meta['action_high'])}"
    else:
        all_act = np.concatenate([t.actions.reshape(len(t), -1) for t in trajs])
        if all_act.size:
            act_line += f", observed range [{_fmt_num(all_act.min())}, {_fmt_num(all_act.max())}]"
    lines.append(act_line)
    lines.append(
        "returns: mean {} / std {} / min {} / max {}".format(
            *(_fmt_num(f(returns)) for f in (np.mean, np.std, np.min, np.max))
        )
    )
    n_term = sum(t.terminated for t in trajs)
    n_trunc = sum(t.truncated for t in trajs)
    lines.append(f"ends: {n_term} terminated, {n_trunc} truncated, {len(trajs) - n_term - n_trunc} other")
    succ = [t.success for t in trajs]
    if any(s is not None for s in succ):
        known = [s for s in succ if s is not None]
        key = success_key(next(t.infos for t in trajs if success_key(t.infos)))
        lines.append(
            f"success rate: {np.mean(known):.3f} ({sum(known)}/{len(known)} episodes, "
            f"info {key!r} at any step)"
        )
    info_keys = sorted(first.infos)
    if info_keys:
        lines.append(f"infos: {', '.join(info_keys)}")
    if meta.get("final_obs"):
        lines.append(f"final observation: {meta['final_obs']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers


def _is_image(arr: np.ndarray, per_step_ndim: int = 3) -> bool:
    """(rows, H, W, C) uint8 with C in 1/3/4 (or channels first) counts as an image batch."""
    return arr.dtype == np.uint8 and arr.ndim == per_step_ndim + 1 and (
        arr.shape[-1] in (1, 3, 4) or arr.shape[1] in (1, 3, 4)
    )


def _to_hwc(arr: np.ndarray) -> np.ndarray:
    if arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3, 4):
        arr = np.moveaxis(arr, 1, -1)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _state(arr: Any, rows: int) -> np.ndarray:
    return np.asarray(arr, dtype=np.float32).reshape(rows, -1)


def _flatten_infos(infos: Any, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if not isinstance(infos, dict):
        return out
    for key, val in infos.items():
        name = f"{prefix}{key}"
        if isinstance(val, dict):
            out.update(_flatten_infos(val, name + "/"))
        else:
            arr = np.asarray(val)
            if arr.ndim >= 1 and arr.dtype.kind in "biuf":
                out[name] = arr
    return out


def _step_infos(infos: dict[str, np.ndarray], T: int, drop_first: bool) -> dict[str, np.ndarray]:
    """Keep the per-step arrays with T rows (or T+1 rows, dropping the first) as infos."""
    out = {}
    for key, arr in infos.items():
        if arr.shape[0] == T + 1 and drop_first:
            out[key] = arr[1:]
        elif arr.shape[0] == T:
            out[key] = arr
    return out


def _unbatch(x: Any, t: int) -> Any:
    if isinstance(x, dict):
        return {k: _unbatch(v, t) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_unbatch(v, t) for v in x)
    return x[t]


def _flatten_batch(space: Any, x: Any, rows: int) -> np.ndarray:
    """``gymnasium.spaces.flatten`` applied to every row of a batched observation, vectorised."""
    from gymnasium import spaces

    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        return _state(x, rows)
    if isinstance(space, spaces.Discrete):
        idx = np.asarray(x, dtype=np.int64).reshape(rows) - int(space.start)
        out = np.zeros((rows, int(space.n)), dtype=np.float32)
        out[np.arange(rows), idx] = 1.0
        return out
    if isinstance(space, spaces.Dict):
        parts = [_flatten_batch(sub, x[k], rows) for k, sub in space.spaces.items()]
        return np.concatenate(parts, axis=1) if parts else np.zeros((rows, 0), np.float32)
    if isinstance(space, spaces.Tuple):
        parts = [_flatten_batch(sub, x[i], rows) for i, sub in enumerate(space.spaces)]
        return np.concatenate(parts, axis=1) if parts else np.zeros((rows, 0), np.float32)
    return np.stack([np.asarray(spaces.flatten(space, _unbatch(x, t)), np.float32) for t in range(rows)])


def _leading_rows(x: Any) -> int:
    if isinstance(x, dict):
        return _leading_rows(next(iter(x.values())))
    if isinstance(x, tuple):
        return _leading_rows(x[0])
    return int(np.asarray(x).shape[0])


# ----------------------------------------------------------------------------- Minari


def _space_str(space: Any) -> str:
    return re.sub(r"\s+", " ", str(space))


def _load_minari(path: Path, source: str, task: Any) -> tuple[list[Trajectory], dict]:
    from gymnasium import spaces

    data_dir = _minari_data_dir(path)
    if data_dir is None:  # resolve_source checked this; a race with a deleted folder lands here
        raise UserError(f"demo source {source!r}: {path} is not a Minari dataset folder")
    try:
        from minari.dataset.minari_dataset import MinariDataset

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = MinariDataset(data_dir)
            obs_space, act_space = ds.observation_space, ds.action_space
            episodes = list(ds.iterate_episodes())
            dataset_id = ds.id
            env_spec = ds.env_spec
    except (OSError, ValueError, KeyError, TypeError, AssertionError, json.JSONDecodeError) as exc:
        raise UserError(
            f"cannot read Minari dataset {path} (demo source {source!r}): {type(exc).__name__}: {exc}"
        ) from None

    flatten = getattr(task, "flatten", None) if task is not None else None
    as_is = isinstance(obs_space, spaces.Dict) and 0 < len(obs_space.spaces) and set(
        obs_space.spaces
    ) <= {"state", "pixels"}
    trajs = []
    for ep in episodes:
        T = len(ep.rewards)
        obs_raw = ep.observations
        rows = _leading_rows(obs_raw)
        if rows != T + 1:
            raise UserError(
                f"Minari dataset {path}: episode {ep.id} has {rows} observations for {T} steps "
                f"(expected {T + 1})"
            )
        if isinstance(obs_space, spaces.Box):
            arr = np.asarray(obs_raw)
            obs = {"pixels": _to_hwc(arr)} if _is_image(arr) else {"state": _state(arr, rows)}
        elif as_is:
            obs = {}
            for key, val in obs_raw.items():
                obs[key] = _to_hwc(np.asarray(val)) if key == "pixels" else _state(val, rows)
        elif flatten is not None:
            obs = {
                "state": np.stack(
                    [np.asarray(flatten(_unbatch(obs_raw, t)), np.float32).ravel() for t in range(rows)]
                )
            }
        else:
            obs = {"state": _flatten_batch(obs_space, obs_raw, rows)}
        actions = np.asarray(ep.actions)
        if actions.dtype.kind == "f":
            actions = actions.astype(np.float32, copy=False)
        if actions.shape[0] != T:
            raise UserError(f"Minari dataset {path}: episode {ep.id} has {actions.shape[0]} actions "
                            f"for {T} steps")
        infos = _step_infos(_flatten_infos(ep.infos or {}), T, drop_first=True)
        term = bool(np.asarray(ep.terminations)[-1]) if T else False
        trunc = bool(np.asarray(ep.truncations)[-1]) and not term if T else False
        trajs.append(
            Trajectory(
                observations=obs,
                actions=actions,
                rewards=np.asarray(ep.rewards, dtype=np.float32),
                terminated=term,
                truncated=trunc,
                episode_id=str(ep.id),
                infos=infos,
            )
        )
    meta: dict = {
        "dataset_id": dataset_id,
        "env_id": getattr(env_spec, "id", "") or "",
        "raw_observation_space": _space_str(obs_space),
        "action_space": _space_str(act_space),
    }
    if isinstance(act_space, spaces.Box):
        meta["action_low"] = np.asarray(act_space.low, dtype=np.float64).tolist()
        meta["action_high"] = np.asarray(act_space.high, dtype=np.float64).tolist()
    if flatten is not None and not as_is and not isinstance(obs_space, spaces.Box):
        meta["state_from"] = "task.flatten"
    elif not as_is and not isinstance(obs_space, spaces.Box):
        meta["state_from"] = "gymnasium.spaces.flatten"
    return trajs, meta


# ----------------------------------------------------------------------------- D4RL HDF5


def _h5_read_group(group: Any, n: int, prefix: str = "") -> dict[str, np.ndarray]:
    import h5py

    out = {}
    for key, val in group.items():
        if isinstance(val, h5py.Group):
            out.update(_h5_read_group(val, n, f"{prefix}{key}/"))
        elif val.ndim >= 1 and val.shape[0] == n and val.dtype.kind in "biuf":
            out[f"{prefix}{key}"] = val[()]
    return out


def _h5_small_meta(group: Any, prefix: str = "") -> dict:
    import h5py

    out: dict = {}
    for key, val in group.items():
        if isinstance(val, h5py.Group):
            out.update(_h5_small_meta(val, f"{prefix}{key}/"))
        elif val.size <= 64:
            v = val[()]
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, np.ndarray):
                v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v.tolist()]
            elif isinstance(v, np.generic):
                v = v.item()
            out[f"{prefix}{key}"] = v
    return out


def _load_d4rl(path: Path, source: str) -> tuple[list[Trajectory], dict]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("observations", "actions", "rewards", "terminals") if k not in f]
            if missing:
                raise UserError(
                    f"D4RL file {path} lacks the required key(s) {', '.join(missing)} "
                    f"(has: {', '.join(sorted(f.keys())) or 'nothing'})"
                )
            obs_node = f["observations"]
            if isinstance(obs_node, h5py.Group):
                obs_all = {k: v[()] for k, v in obs_node.items() if isinstance(v, h5py.Dataset)}
            else:
                obs_all = {"": obs_node[()]}
            actions = f["actions"][()]
            rewards = np.asarray(f["rewards"][()], dtype=np.float32).reshape(-1)
            terminals = np.asarray(f["terminals"][()]).reshape(-1).astype(bool)
            n = rewards.shape[0]
            timeouts = (
                np.asarray(f["timeouts"][()]).reshape(-1).astype(bool)
                if "timeouts" in f
                else np.zeros(n, dtype=bool)
            )
            next_obs = None
            if "next_observations" in f and isinstance(f["next_observations"], h5py.Dataset):
                next_obs = {"": f["next_observations"][()]}
            has_infos = "infos" in f and isinstance(f["infos"], h5py.Group)
            infos = _h5_read_group(f["infos"], n) if has_infos else {}
            has_meta = "metadata" in f and isinstance(f["metadata"], h5py.Group)
            metadata = _h5_small_meta(f["metadata"]) if has_meta else {}
    except UserError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"cannot read D4RL HDF5 file {path} (demo source {source!r}): {exc}") from None

    if n == 0:
        raise UserError(f"D4RL file {path} holds no steps (empty dataset)")
    # Map observation arrays to the state/pixels keys.
    obs_keys: dict[str, np.ndarray] = {}
    state_parts = []
    for arr in obs_all.values():
        if _is_image(arr):
            obs_keys["pixels"] = _to_hwc(arr)
        else:
            state_parts.append(_state(arr, arr.shape[0]))
    if state_parts:
        obs_keys["state"] = np.concatenate(state_parts, axis=1)
    if next_obs is not None:
        nxt = next_obs[""]
        next_keys = {"pixels": _to_hwc(nxt)} if _is_image(nxt) else {"state": _state(nxt, nxt.shape[0])}
        if set(next_keys) != set(obs_keys) or any(next_keys[k].shape != obs_keys[k].shape for k in next_keys):
            next_keys = None
    else:
        next_keys = None
    for name, arr in [("actions", actions), ("terminals", terminals), ("timeouts", timeouts)] + [
        (f"observations/{k}" if k else "observations", v) for k, v in obs_all.items()
    ]:
        if arr.shape[0] != n:
            raise UserError(f"D4RL file {path}: {name} has {arr.shape[0]} rows but rewards has {n}")
    if actions.dtype.kind == "f":
        actions = actions.astype(np.float32, copy=False)

    ends = np.flatnonzero(terminals | timeouts)
    segments = []
    start = 0
    for e in ends:
        segments.append((start, int(e), bool(terminals[e]), bool(timeouts[e]) and not bool(terminals[e])))
        start = int(e) + 1
    trailing = start < n
    if trailing:
        segments.append((start, n - 1, False, True))

    trajs = []
    for i, (s, e, term, trunc) in enumerate(segments):
        obs = {}
        for key, arr in obs_keys.items():
            last = next_keys[key][e : e + 1] if next_keys is not None else arr[e : e + 1]
            obs[key] = np.concatenate([arr[s : e + 1], last], axis=0)
        trajs.append(
            Trajectory(
                observations=obs,
                actions=actions[s : e + 1],
                rewards=rewards[s : e + 1],
                terminated=term,
                truncated=trunc,
                episode_id=str(i),
                infos={k: v[s : e + 1] for k, v in infos.items()},
            )
        )
    meta: dict = {
        "final_obs": "next_observations" if next_keys is not None else "repeated last observation",
        "trailing_partial_episode": trailing,
        "has_timeouts": bool(timeouts.any()),
    }
    if metadata:
        meta["metadata"] = metadata
    return trajs, meta


# ----------------------------------------------------------------------------- npz (DreamerV2)

_NPZ_KNOWN = {"image", "action", "reward", "is_first", "is_last", "is_terminal", "discount"}
_NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def _read_npz(path: Path, source: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except _NPZ_ERRORS as exc:
        raise UserError(f"cannot read npz episode {path} (demo source {source!r}): "
                        f"{type(exc).__name__}: {exc}") from None


def _npz_episode(path: Path, source: str) -> Trajectory:
    data = _read_npz(path, source)
    missing = [k for k in ("action", "reward") if k not in data]
    state_key = next((k for k in STATE_KEYS if k in data), None)
    if "image" not in data and state_key is None:
        missing.append("image (or a state key: " + "/".join(STATE_KEYS) + ")")
    if missing:
        raise UserError(
            f"npz episode {path} lacks the required key(s) {', '.join(missing)} "
            f"(has: {', '.join(sorted(data)) or 'nothing'})"
        )
    rows = int(data["action"].shape[0]) if data["action"].ndim else 0
    if rows < 2:
        raise UserError(f"npz episode {path} has {rows} rows; a DreamerV2 episode needs at least 2 "
                        "(reset + one step)")
    for key in ("reward", "image", state_key, "is_first", "is_last", "is_terminal", "discount"):
        if key and key in data and (data[key].ndim == 0 or data[key].shape[0] != rows):
            raise UserError(
                f"npz episode {path}: {key} has shape {data[key].shape}, expected {rows} rows like action"
            )
    obs = {}
    if "image" in data:
        img = data["image"]
        if not _is_image(img):
            raise UserError(f"npz episode {path}: image has shape {img.shape} {img.dtype}, "
                            "expected (T+1, H, W, 3) uint8")
        obs["pixels"] = _to_hwc(img)
    if state_key is not None:
        obs["state"] = _state(data[state_key], rows)
    if "is_terminal" in data:
        term = bool(data["is_terminal"][-1])
    elif "discount" in data:
        term = bool(data["discount"][-1] == 0)
    else:
        term = False
    last = bool(data["is_last"][-1]) if "is_last" in data else True
    used = _NPZ_KNOWN | {state_key}
    infos = {
        k: v[1:]
        for k, v in data.items()
        if k not in used and v.ndim >= 1 and v.shape[0] == rows and v.dtype.kind in "biuf"
    }
    actions = data["action"][1:]
    if actions.dtype.kind == "f":
        actions = actions.astype(np.float32, copy=False)
    return Trajectory(
        observations=obs,
        actions=actions,
        rewards=np.asarray(data["reward"][1:], dtype=np.float32).reshape(-1),
        terminated=term,
        truncated=last and not term,
        episode_id=path.stem,
        infos=infos,
    )


def _load_npz(path: Path, source: str) -> tuple[list[Trajectory], dict]:
    files = [path] if path.is_file() else sorted(p for p in path.glob("*.npz") if p.is_file())
    if not files:
        raise UserError(f"npz folder {path} (demo source {source!r}) holds no .npz episodes (empty dataset)")
    trajs = [_npz_episode(p, source) for p in files]
    keys = {tuple(sorted((k, v.shape[1:]) for k, v in t.observations.items())) for t in trajs}
    if len(keys) > 1:
        raise UserError(f"npz folder {path}: episodes disagree on observation keys/shapes: {sorted(keys)}")
    return trajs, {"files": [p.name for p in files]}
