"""Roll out a task's scripted expert and write its successful episodes as a local Minari dataset.

Nothing here touches the network: datasets are written with ``minari.create_dataset_from_buffers``
from a list of ``EpisodeBuffer`` (no ``DataCollector``, so no jax).

Dataset layout (what ``minari.load_dataset(id)`` gives back):
  - observations: ``Dict`` with ``state`` (float32, (T+1, D)) and, with pixels, ``pixels``
    (uint8, (T+1, S, S, 3), stored losslessly, not JPEG);
  - actions (T, A) float32, rewards (T,), terminations / truncations (T,);
  - infos: ``success`` (bool, T+1 rows: the reset's and then every step's, Minari's convention);
  - episode attribute ``seed``: the reset seed (``seed + attempt``);
  - metadata: ``ref_min_score`` (mean return of a uniform random policy on ``random_episodes``
    episodes), ``ref_max_score`` (mean return of the kept demos), and ``cmil_*`` keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from cmil_bench.errors import UserError
from envs.registry import TaskSpec, get_task, make_env

MAX_ATTEMPT_FACTOR = 5
REPO = Path(__file__).resolve().parents[1]  # expert policy files are relative to it


def _spec(task: TaskSpec | str) -> TaskSpec:
    return get_task(task) if isinstance(task, str) else task


def expert_factory(spec: TaskSpec) -> Callable[[gym.Env], Any]:
    """What builds the expert of ``spec`` from its env: a scripted expert named in
    envs.experts.EXPERTS, one given by dotted name (``pkg.module:Class``), or a policy file
    (``*.pt``). UserError with one line when the task has none or it cannot be found."""
    from envs.experts import EXPERTS, policy_file_expert
    from envs.registry import resolve_dotted

    name = spec.expert
    if not name:
        raise UserError(f"task {spec.name!r} has no expert (its demos come from {spec.demo_source})")
    if name.endswith(".pt"):
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = REPO / path
        if not path.is_file():
            fam = spec.family or spec.name
            raise UserError(
                f"task {spec.name!r}: no expert policy file {name} (looked for {path}); train one "
                f"with `cmil-bench expert --task {fam}`, or write the demos yourself as the Minari "
                f"dataset {default_dataset_id(spec)}")
        return lambda env: policy_file_expert(path, env, spec.flatten)
    if name in EXPERTS:
        return EXPERTS[name]
    if ":" in name or "." in name:
        factory = resolve_dotted(name, f"task {spec.name!r}: expert")
        if not callable(factory):
            raise UserError(f"task {spec.name!r}: expert {name!r} is not callable")
        return factory
    raise UserError(f"task {spec.name!r}: unknown expert {name!r}; known: {sorted(EXPERTS)}, a "
                    "dotted name (package.module:Class) or a policy file (*.pt)")


def make_expert(spec: TaskSpec, env: gym.Env):
    return expert_factory(spec)(env)


def rollout(env: gym.Env, spec: TaskSpec, policy: Callable[[Any, Any], np.ndarray] | None,
            seed: int, keep_obs: bool = True,
            on_reset: Callable[[Any], None] | None = None) -> dict:
    """One episode from ``reset(seed=seed)``.

    ``policy(obs, raw_obs) -> action``; ``None`` samples the action space uniformly. The result
    holds ``observations`` (list of T+1 wrapped observations when ``keep_obs``), ``actions``,
    ``rewards``, ``terminated``, ``truncated``, ``infos`` (without ``raw_obs``), ``success``,
    ``ret``, ``length`` and ``success_flags`` (``info[spec.success_key]`` per row, T+1 rows, the
    reset's first). ``on_reset(raw_obs)`` is called after the reset (an expert's reset).
    """
    obs, info = env.reset(seed=seed)
    raw = info["raw_obs"]
    if on_reset is not None:
        on_reset(raw)
    observations = [obs] if keep_obs else []
    actions, rewards, infos = [], [], [_strip(info)]
    terminated = truncated = False
    while not (terminated or truncated):
        if policy is None:
            action = env.action_space.sample()
        else:
            action = policy(obs, raw)
        obs, reward, terminated, truncated, info = env.step(action)
        raw = info["raw_obs"]
        if keep_obs:
            observations.append(obs)
        actions.append(np.asarray(action, dtype=np.float32))
        rewards.append(float(reward))
        infos.append(_strip(info))
    step_infos = infos[1:]
    return {
        "observations": observations,
        "actions": np.stack(actions),
        "rewards": np.asarray(rewards, dtype=np.float64),
        "terminated": bool(terminated),
        "truncated": bool(truncated),
        "infos": infos,
        "success": spec.episode_success(step_infos),
        "ret": float(np.sum(rewards)),
        "length": len(actions),
        "success_flags": np.array([bool(i.get(spec.success_key, False)) for i in infos]),
    }


def _strip(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "raw_obs"}


def _run_expert(env: gym.Env, spec: TaskSpec, seed: int, keep_obs: bool) -> dict:
    expert = make_expert(spec, env)
    return rollout(env, spec, lambda _obs, raw: expert(raw), seed, keep_obs=keep_obs,
                   on_reset=expert.reset)


def expert_success_rate(task: TaskSpec | str, episodes: int = 100, seed: int = 0) -> dict:
    """Roll out the expert on reset seeds ``seed .. seed+episodes-1`` (state observations).

    Returns ``success_rate``, ``mean_return``, ``std_return``, ``mean_length``, ``episodes``.
    """
    spec = _spec(task)
    if episodes < 1:
        raise UserError(f"episodes must be >= 1, got {episodes}")
    env = make_env(spec, render_pixels=False)
    try:
        outs = [_run_expert(env, spec, seed + i, keep_obs=False) for i in range(episodes)]
    finally:
        env.close()
    return _summary(outs)


def random_policy_stats(task: TaskSpec | str, episodes: int = 20, seed: int = 0) -> dict:
    """Uniform random actions (action space seeded with ``seed``) on reset seeds ``seed + i``."""
    spec = _spec(task)
    if episodes < 1:
        raise UserError(f"episodes must be >= 1, got {episodes}")
    env = make_env(spec, seed=seed, render_pixels=False)
    try:
        outs = [rollout(env, spec, None, seed + i, keep_obs=False) for i in range(episodes)]
    finally:
        env.close()
    return _summary(outs)


def _summary(outs: list[dict]) -> dict:
    rets = np.array([o["ret"] for o in outs])
    return {
        "episodes": len(outs),
        "success_rate": float(np.mean([o["success"] for o in outs])),
        "mean_return": float(rets.mean()),
        "std_return": float(rets.std()),
        "mean_length": float(np.mean([o["length"] for o in outs])),
    }


@contextlib.contextmanager
def _datasets_root(root: str | os.PathLike | None):
    """Point Minari at ``root`` (if given) for the duration of the block."""
    if root is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(root).expanduser().resolve())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def clear_dataset_path(dataset_id: str, overwrite: bool, how: str) -> Path:
    """The folder of ``dataset_id`` under the current Minari root, made ready for a new dataset:
    an existing dataset is an error unless ``overwrite`` (``how`` says how to ask for it), and
    a folder that is not a Minari dataset is never removed. Call inside ``_datasets_root``."""
    from minari.storage.datasets_root_dir import get_dataset_path

    try:
        path = Path(get_dataset_path(dataset_id))
    except Exception as exc:
        raise UserError(f"bad dataset id {dataset_id!r}: {exc}") from None
    if path.exists():
        if not overwrite:
            raise UserError(f"dataset {dataset_id!r} already exists at {path}; {how} to replace it")
        if not (path / "data").is_dir():
            raise UserError(f"refusing to overwrite {path}: it does not look like a Minari dataset")
        shutil.rmtree(path)
    return path


def default_dataset_id(spec: TaskSpec) -> str:
    src = spec.demo_source
    if src.startswith("minari:"):
        return src[len("minari:"):]
    return f"cmil-bench/{spec.family or spec.name}/expert-v0"


def collect_demos(task: str, episodes: int, seed: int = 0, root: str | None = None,
                  dataset_id: str | None = None, pixels: bool = False,
                  overwrite: bool = False, random_episodes: int = 20) -> str:
    """Write ``episodes`` successful expert episodes of ``task`` as a local Minari dataset.

    Episode ``i`` of the attempts resets with seed ``seed + i``; failed attempts (an episode that
    fails the task's success rule, or, for a task with ``full_length_demos``, one that ends
    before its time limit) are skipped, and
    after ``5 * episodes`` attempts without enough successes a ``UserError`` is raised. Frames are
    recorded when ``pixels`` is true or the task is a pixel task. The dataset goes to ``root``,
    else ``$MINARI_DATASETS_PATH``, else Minari's default (~/.minari/datasets). Returns the path
    of the dataset's folder.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    spec = get_task(task)
    if not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise UserError(f"episodes must be a positive integer, got {episodes!r}")
    if not isinstance(random_episodes, (int, np.integer)) or random_episodes < 1:
        raise UserError(f"random_episodes must be a positive integer, got {random_episodes!r}")
    pixels = bool(pixels) or spec.obs_mode == "pixels"
    dataset_id = dataset_id or default_dataset_id(spec)
    expert_factory(spec)  # a task without a usable expert stops before the dataset is touched

    with _datasets_root(root):
        path = clear_dataset_path(dataset_id, overwrite, "pass overwrite=True")

        env = make_env(spec, render_pixels=pixels)
        act_space = env.action_space
        kept: list[dict] = []
        attempts = 0
        try:
            while len(kept) < episodes:
                if attempts >= MAX_ATTEMPT_FACTOR * episodes:
                    what = "succeeded" if spec.success_mode != "none" else "ran to the time limit"
                    if spec.success_mode != "none" and spec.full_length_demos:
                        what += " and ran to the time limit"
                    raise UserError(
                        f"task {spec.name}: the expert {spec.expert!r} {what} in only "
                        f"{len(kept)} "
                        f"of {attempts} episodes (seeds {seed}..{seed + attempts - 1}); "
                        f"{episodes} successful demos were asked for")
                out = _run_expert(env, spec, seed + attempts, keep_obs=True)
                out["seed"] = seed + attempts
                attempts += 1
                # A task without a success rule (scored by return) keeps every expert episode,
                # unless it asks for full-length demos and this one ended early.
                ok = out["success"] or spec.success_mode == "none"
                if spec.full_length_demos and out["terminated"]:
                    ok = False
                if ok:
                    kept.append(out)
        finally:
            env.close()

        rand = random_policy_stats(spec, episodes=random_episodes, seed=seed)
        demo_mean = float(np.mean([o["ret"] for o in kept]))
        buffers = [_to_buffer(EpisodeBuffer, i, o, pixels) for i, o in enumerate(kept)]
        obs_space = _dataset_obs_space(kept[0], pixels, spec)
        env_spec = dataclasses.replace(
            gym.spec(spec.env_id),
            kwargs={**gym.spec(spec.env_id).kwargs, **spec.env_kwargs},
            max_episode_steps=spec.max_episode_steps,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=env_spec,
                eval_env=env_spec,
                algorithm_name=f"scripted-expert:{spec.expert}",
                author={"cmil-bench"},
                author_email={"cmil-bench@localhost"},
                code_permalink="envs/collect.py",
                action_space=act_space,
                observation_space=obs_space,
                ref_min_score=rand["mean_return"],
                ref_max_score=demo_mean,
                description=f"{len(kept)} successful scripted-expert episodes of task "
                f"{spec.family or spec.name} ({spec.env_id}); observations: state"
                + (f" and {spec.image_size}x{spec.image_size} pixels" if pixels else ""),
                jpeg_encoding=False,
            )
        ds.storage.update_metadata({
            "cmil_task_family": spec.family or spec.name,
            "cmil_expert": spec.expert,
            "cmil_attempts": attempts,
            "cmil_full_length_demos": bool(spec.full_length_demos),
            "cmil_seed": int(seed),
            "cmil_random_episodes": int(random_episodes),
            "cmil_random_return": rand["mean_return"],
            "cmil_demo_return": demo_mean,
            "cmil_pixels": bool(pixels),
            "cmil_camera": {
                k: (list(map(float, v)) if isinstance(v, (list, tuple, np.ndarray)) else v)
                for k, v in spec.camera.items()},
        })
        return str(path)


def _dataset_obs_space(out: dict, pixels: bool, spec: TaskSpec) -> gym.spaces.Dict:
    first = out["observations"][0]
    state = first["state"] if isinstance(first, dict) else first
    spaces = {"state": gym.spaces.Box(-np.inf, np.inf, shape=np.shape(state), dtype=np.float32)}
    if pixels:
        s = spec.image_size
        spaces["pixels"] = gym.spaces.Box(0, 255, shape=(s, s, 3), dtype=np.uint8)
    return gym.spaces.Dict(spaces)


def _to_buffer(EpisodeBuffer, idx: int, out: dict, pixels: bool):
    obs = out["observations"]
    if pixels:
        observations = {
            "state": np.stack([o["state"] for o in obs]).astype(np.float32),
            "pixels": np.stack([o["pixels"] for o in obs]).astype(np.uint8),
        }
    else:
        observations = {"state": np.stack(obs).astype(np.float32)}
    return EpisodeBuffer(
        id=idx,
        seed=int(out["seed"]),
        observations=observations,
        actions=out["actions"].astype(np.float32),
        rewards=out["rewards"].astype(np.float64),
        terminations=_last(out["length"], out["terminated"]),
        truncations=_last(out["length"], out["truncated"]),
        infos={"success": out["success_flags"]},
    )


def _last(n: int, flag: bool) -> np.ndarray:
    a = np.zeros(n, dtype=bool)
    a[-1] = flag
    return a
