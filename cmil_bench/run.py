"""One run: (algorithm, task, demo count, seed) -> metrics.csv + config.json + checkpoint.

The ``Run`` object is the whole contract between the harness and an algorithm. An algorithm
module exposes ``Config`` (a dataclass extending ``BaseConfig``), ``PRESETS`` and
``train(run, cfg)``; inside ``train`` it

  * reads the demos (``run.demos``, a list of ``Trajectory``; ``run.obs_key`` says which
    observation key its mode uses) and the spaces (``run.observation_space``,
    ``run.action_space``; actions live in [-1, 1]),
  * builds training environments with ``run.make_env()`` and draws every random number from
    ``run.rng`` (numpy) or torch's global generator, both of which are checkpointed,
  * calls ``run.evaluate(policy, env_steps, grad_steps, extra)`` every ``cfg.eval_every``
    steps, then ``run.checkpoint(state)`` with everything needed to continue,
  * on start calls ``run.restore()``, which returns that state (or None on a fresh start),
  * checks its losses with ``run.check_finite({...}, step)``.

It also exposes ``eval_policy(state, cfg, obs_shape, act_dim, episode_len, device, which)``, which
rebuilds from a checkpoint's ``state`` the policy its evaluations used (``cmil_bench.evaluate``
scores it again), and optionally ``EVAL_POLICIES``, the names ``which`` accepts.

Files in the run folder:
  ``config.json``     resolved config (exactly what ran), the presets and --set overrides that
                      made it, versions, git revision, demo source and episode ids
  ``progress.csv``    evaluation rows so far (a run in progress has only this)
  ``checkpoint.pt``   the last checkpoint (written atomically at every evaluation)
  ``metrics.csv``     written once, atomically, when the run completes
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from cmil_bench.config import config_to_dict
from cmil_bench.errors import TrainingDiverged, UserError

METRIC_COLUMNS = [
    "algo", "variant", "task", "obs_mode", "demo_source", "n_demos", "seed",
    "env_steps", "grad_steps", "wall_s", "eval_return", "eval_success", "norm_score",
]
EVAL_SEED_BASE = 1_000_000
# MUJOCO_GL values with which MuJoCo loads without any OpenGL (no pixel observations possible).
RENDERING_OFF = ("disable", "disabled", "off", "false", "0")
RANDOM_REF_SEED = 777


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("cmil-bench", "torch", "numpy", "gymnasium", "gymnasium-robotics", "mujoco",
                "minari", "h5py", "pandas", "rliable"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _git_revision() -> str:
    here = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if rev.returncode == 0:
            return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """``write(file)`` into ``PATH.tmpPID``, fsync, then rename over ``path``: a process killed at
    any moment leaves the old file or the new one, never a torn one (execute removes the
    leftover temporary)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(Path(path), text.encode())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but torch sees no CUDA device here")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_CHECKPOINT_KEYS = ("config_hash", "algo_state", "rows", "wall_s", "rng", "torch_rng",
                    "np_global_rng", "py_rng")


def play_episodes(envs, seeds, policy) -> tuple[list[float], list[list[dict]]]:
    """One episode in each of ``envs`` (reset with ``seeds``), acting in lockstep with ``policy``.

    Returns each episode's return and its list of step infos. The policy always sees the whole
    batch, in a fixed order, so a stateful policy keeps one row per episode: ``policy.reset(n)``
    is called first when it exists, and an episode that has ended keeps feeding its last
    observation (its actions are dropped) until every episode has ended.
    """
    obs = [e.reset(seed=int(s))[0] for e, s in zip(envs, seeds)]
    ret = [0.0] * len(envs)
    infos: list[list[dict]] = [[] for _ in envs]
    active = [True] * len(envs)
    if callable(getattr(policy, "reset", None)):
        policy.reset(len(envs))
    while any(active):
        acts = np.clip(np.asarray(policy(np.stack(obs)), dtype=np.float32), -1.0, 1.0)
        for j, env in enumerate(envs):
            if not active[j]:
                continue
            obs[j], r, term, trunc, info = env.step(acts[j])
            ret[j] += float(r)
            infos[j].append(info)
            active[j] = not (term or trunc)
    return ret, infos


class Run:
    """State and services of one run; see the module docstring for the contract."""

    def __init__(self, *, algo: str, variant: str, task, cfg, demoset, demos, seed: int,
                 out: Path, device: torch.device, show_progress: bool | None = None,
                 config_record: dict | None = None, spaces: tuple | None = None):
        from envs.registry import make_env  # local: keeps `cmil-bench --help` fast

        self._make_env = make_env
        self.algo, self.variant, self.task, self.cfg = algo, variant, task, cfg
        self.demoset, self.demos, self.seed = demoset, demos, seed
        self.out = Path(out)
        self.device = device
        self.obs_key = "state" if task.obs_mode == "state" else "pixels"
        for tr in demos:
            if self.obs_key not in tr.observations:
                raise UserError(
                    f"demo source {demoset.source!r} has no {self.obs_key!r} observations "
                    f"(keys: {sorted(tr.observations)}), which task {task.name!r} needs")
        self.rng = np.random.default_rng(seed)
        self.rows: list[dict] = []
        self.eval_episodes = cfg.eval_episodes or task.eval_episodes
        self._eval_envs: list = []
        self._wall_offset = 0.0
        self._t0 = time.perf_counter()
        self._record = config_record or {}
        self._config_hash = hashlib.sha256(
            json.dumps(self._record.get("identity", {}), sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        if spaces is None:  # execute() probes them before the run folder is made
            spaces = task_spaces(task, make_env)
        self.observation_space, self.action_space = spaces
        low, high = self.action_space.low, self.action_space.high
        if not (np.allclose(low, -1) and np.allclose(high, 1)):
            raise UserError(f"task {task.name!r}: actions must lie in [-1, 1], got {low}..{high}")
        self.ref_random, self.ref_demo = self._references()
        if show_progress is None:
            show_progress = sys.stderr.isatty()
        self.show_progress = show_progress
        self.restored = False

    # -- environments ---------------------------------------------------------------------
    def make_env(self):
        """A fresh training environment of the task (observations in the task's mode)."""
        return self._make_env(self.task)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self.observation_space.shape)

    @property
    def act_dim(self) -> int:
        return int(self.action_space.shape[0])

    # -- reference returns for norm_score ---------------------------------------------------
    def _references(self) -> tuple[float, float]:
        task = self.task
        if task.ref_demo_return is not None:
            ref_demo = float(task.ref_demo_return)
        elif self.demoset.meta.get("ref_demo_return") is not None:
            ref_demo = float(self.demoset.meta["ref_demo_return"])
        else:
            ref_demo = float(np.mean([t.ret for t in self.demoset.trajectories]))
        if task.ref_random_return is not None:
            ref_random = float(task.ref_random_return)
        else:
            ref_random = self._random_return()
        if abs(ref_demo - ref_random) < 1e-8:
            raise UserError(f"task {task.name!r}: demo return {ref_demo} equals the random return; "
                            "norm_score is undefined")
        return ref_random, ref_demo

    def _random_return(self) -> float:
        """Mean return of a uniform random policy on the evaluation seeds (rewards need no pixels)."""
        import dataclasses as dc
        state_task = dc.replace(self.task, obs_mode="state")
        env = self._make_env(state_task)
        rng = np.random.default_rng(RANDOM_REF_SEED)
        rets = []
        for i in range(self.eval_episodes):
            env.reset(seed=EVAL_SEED_BASE + i)
            done, ret = False, 0.0
            while not done:
                a = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
                _, r, term, trunc, _ = env.step(a)
                ret += float(r)
                done = term or trunc
            rets.append(ret)
        env.close()
        return float(np.mean(rets))

    def normalize(self, ret: float) -> float:
        return (ret - self.ref_random) / (self.ref_demo - self.ref_random)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, policy: Callable[[np.ndarray], np.ndarray], env_steps: int, grad_steps: int,
                 extra: dict[str, Any] | None = None) -> dict:
        """Run the evaluation episodes with fixed seeds and append one metrics row.

        ``policy`` maps a batch of observations (N, *obs_shape) to actions (N, act_dim); it should
        be deterministic (the mean action). A stateful policy (e.g. a recurrent latent filter)
        also has ``reset(n)``: see ``play_episodes``. The global RNG states are untouched by
        evaluation.
        """
        n_par = min(self.eval_episodes, 10)
        while len(self._eval_envs) < n_par:
            self._eval_envs.append(self.make_env())
        rets, succ = [], []
        torch_state = torch.get_rng_state()
        for start in range(0, self.eval_episodes, n_par):
            idx = list(range(start, min(start + n_par, self.eval_episodes)))
            ep_ret, infos = play_episodes(self._eval_envs[: len(idx)],
                                          [EVAL_SEED_BASE + i for i in idx], policy)
            rets += ep_ret
            succ += [float(self.task.episode_success(inf)) for inf in infos]
        torch.set_rng_state(torch_state)
        ret = float(np.mean(rets))
        row = {
            "algo": self.algo, "variant": self.variant, "task": self.task.name,
            "obs_mode": self.task.obs_mode, "demo_source": self.demoset.source,
            "n_demos": len(self.demos), "seed": self.seed,
            "env_steps": int(env_steps), "grad_steps": int(grad_steps),
            "wall_s": round(self.wall_s(), 3),
            "eval_return": ret, "eval_success": float(np.mean(succ)),
            "norm_score": self.normalize(ret),
        }
        for k, v in (extra or {}).items():
            row[k] = float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v
        self.rows.append(row)
        self._write_progress()
        return row

    def wall_s(self) -> float:
        return self._wall_offset + time.perf_counter() - self._t0

    def _write_progress(self) -> None:
        atomic_write_text(self.out / "progress.csv", self._frame().to_csv(index=False))

    def _frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        cols = METRIC_COLUMNS + [c for c in df.columns if c not in METRIC_COLUMNS]
        return df.reindex(columns=cols)

    # -- checks -----------------------------------------------------------------------------
    def check_finite(self, losses: dict[str, Any], step: int) -> None:
        """Raise TrainingDiverged naming the first loss that is NaN or Inf."""
        for name, v in losses.items():
            x = float(v.detach().cpu()) if isinstance(v, torch.Tensor) else float(v)
            if not np.isfinite(x):
                raise TrainingDiverged(
                    f"loss {name!r} became {x} at step {step} ({self.algo} on {self.task.name}, "
                    f"seed {self.seed}); the last good checkpoint is kept in {self.out}")

    # -- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def checkpoint(self, state: dict) -> None:
        """Save the algorithm's ``state`` with the harness's own (RNGs, rows, wall time)."""
        payload = {
            "config_hash": self._config_hash,
            "algo_state": state,
            "rows": self.rows,
            "wall_s": self.wall_s(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "np_global_rng": np.random.get_state(),
            "py_rng": random.getstate(),
        }
        _atomic_write(self.checkpoint_path, lambda f: torch.save(payload, f))

    def restore(self) -> dict | None:
        """The state of the last checkpoint of this same run, or None for a fresh start."""
        if not self.checkpoint_path.exists():
            return None
        try:
            payload = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        except Exception as e:  # a torn or foreign file: start clean rather than guess
            print(f"[cmil-bench] ignoring unreadable checkpoint {self.checkpoint_path}: "
                  f"{type(e).__name__}: {e}", file=sys.stderr)
            return None
        missing = [k for k in _CHECKPOINT_KEYS if not isinstance(payload, dict) or k not in payload]
        if missing:
            print(f"[cmil-bench] ignoring checkpoint {self.checkpoint_path} without "
                  f"{', '.join(missing)}; starting clean", file=sys.stderr)
            return None
        if payload.get("config_hash") != self._config_hash:
            print(f"[cmil-bench] checkpoint in {self.out} belongs to another config; starting clean",
                  file=sys.stderr)
            return None
        self.rows = list(payload["rows"])
        self._wall_offset = float(payload["wall_s"])
        self._t0 = time.perf_counter()
        self.rng.bit_generator.state = payload["rng"]
        torch.set_rng_state(payload["torch_rng"])
        np.random.set_state(payload["np_global_rng"])
        random.setstate(payload["py_rng"])
        self.restored = True
        self._write_progress()
        return payload["algo_state"]

    # -- progress bar -----------------------------------------------------------------------
    def progress(self, total: int, initial: int = 0, unit: str = "step"):
        from tqdm.auto import tqdm
        return tqdm(total=total, initial=initial, unit=unit, disable=not self.show_progress,
                    desc=f"{self.variant} {self.task.name} d{len(self.demos)} s{self.seed}",
                    dynamic_ncols=True, leave=False)

    # -- completion -------------------------------------------------------------------------
    def finish(self) -> Path:
        if not self.rows:
            raise RuntimeError(f"{self.algo} finished without a single evaluation")
        path = self.out / "metrics.csv"
        atomic_write_text(path, self._frame().to_csv(index=False))
        (self.out / "progress.csv").unlink(missing_ok=True)
        for ev in self._eval_envs:
            ev.close()
        return path


# -- checks before anything is written -----------------------------------------------------------

_IDENTITY_KEYS = ("algo", "variant", "task", "n_demos", "demo_source", "seed")
_ABSENT = object()


def _plain(value):
    """``value`` as config.json stores it (tuples become lists, other objects strings)."""
    return json.loads(json.dumps(value, default=str))


def identity_differences(recorded: dict, requested: dict) -> list[tuple[str, Any, Any]]:
    """``[(key, recorded value, requested value)]`` for every identity key that differs between
    a folder's config.json and a request; the resolved config is compared key by key (as
    ``config.KEY``), whatever its keys are."""
    diffs = []
    for key in _IDENTITY_KEYS:
        have, want = recorded.get(key, _ABSENT), requested[key]
        if have is _ABSENT or _plain(have) != _plain(want):
            diffs.append((key, have, want))
    diffs += _mapping_differences("config", recorded.get("config", _ABSENT), requested["config"])
    have_def = recorded.get("task_definition", _ABSENT)
    want_def = requested.get("task_definition", _ABSENT)
    # Prose is not identity; folders written before it was left out recorded a description.
    from envs.catalog import defining_part
    have_def, want_def = (defining_part(d) if isinstance(d, dict) else d
                          for d in (have_def, want_def))
    if have_def is not _ABSENT or want_def is not _ABSENT:  # recorded for added tasks only
        diffs += _mapping_differences("task_definition", have_def, want_def)
    return diffs


def _mapping_differences(name: str, have, want) -> list[tuple[str, Any, Any]]:
    """``[(name.KEY, recorded, requested)]`` for every key of two mappings that differs, or
    ``[(name, recorded, requested)]`` when either is not a mapping (absent, say)."""
    want = _plain(want) if want is not _ABSENT else want
    if not isinstance(have, dict) or not isinstance(want, dict):
        return [] if have is not _ABSENT and _plain(have) == want else [(name, have, want)]
    diffs = []
    for key in sorted(set(have) | set(want)):
        h, w = have.get(key, _ABSENT), want.get(key, _ABSENT)
        if h is _ABSENT or w is _ABSENT or _plain(h) != w:
            diffs.append((f"{name}.{key}", h, w))
    return diffs


def _short(value) -> str:
    if value is _ABSENT:
        return "absent"
    text = json.dumps(_plain(value)) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_folder_identity(out: Path, requested: dict) -> None:
    """UserError when ``out/config.json`` records a run other than ``requested`` (the dict of
    ``_identity``); nothing to check when the folder or its config.json does not exist."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise UserError(f"run folder {str(out)!r} has an unreadable config.json ({e}); pass "
                        "--force to start it clean, or choose another --out") from None
    diffs = identity_differences(recorded, requested)
    if not diffs:
        return
    if any(k == "algo" for k, _, _ in diffs):  # another algorithm: its whole config differs
        diffs = [d for d in diffs if not d[0].startswith("config.")]
        diffs.append(("config", recorded.get("config", _ABSENT), requested["config"]))
    state = "a finished" if (Path(out) / "metrics.csv").exists() else "an unfinished"
    shown = ", ".join(f"{k} (folder {_short(a)}, requested {_short(b)})" for k, a, b in diffs[:4])
    more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
    raise UserError(f"run folder {str(out)!r} holds {state} run of another configuration; "
                    f"differing keys: {shown}{more}. Choose another --out, or pass --force to "
                    "start it clean")


def task_spaces(spec, make_env=None) -> tuple:
    """(observation space, action space) of the task's environment (built once and closed)."""
    if make_env is None:
        from envs.registry import make_env
    probe = make_env(spec)
    try:
        return probe.observation_space, probe.action_space
    finally:
        probe.close()


def check_demo_shapes(spec, source: str, demos, spaces: tuple) -> None:
    """UserError naming both shapes when the demos' observations (in the task's mode) or actions
    do not have the shapes of the task's spaces."""
    key = "state" if spec.obs_mode == "state" else "pixels"
    obs_shape, act_shape = tuple(spaces[0].shape), tuple(spaces[1].shape)
    for tr in demos:
        if key not in tr.observations:
            raise UserError(
                f"demo source {source!r} has no {key!r} observations "
                f"(keys: {sorted(tr.observations)}), which task {spec.name!r} needs")
        have = tuple(np.shape(tr.observations[key])[1:])
        if have != obs_shape:
            raise UserError(
                f"demo source {source!r} does not fit task {spec.name!r}: its {key} observations "
                f"have shape {have}, the task's have shape {obs_shape}")
        have = tuple(np.shape(tr.actions)[1:])
        if have != act_shape:
            raise UserError(
                f"demo source {source!r} does not fit task {spec.name!r}: its actions have shape "
                f"{have}, the task's have shape {act_shape}")


def _identity(algo, variant, task, n_demos, seed, source, cfg) -> dict:
    """What a run folder holds: the request and its resolved config, and the task's definition
    when it is not the built-in one (``envs.catalog.added_definition``): an added task's name
    says nothing about its env, episode length or references, which may change under it. Built-in
    tasks record no definition, so their identity (and checkpoint hash) is that of older runs."""
    from envs.catalog import added_definition

    identity = {"algo": algo, "variant": variant, "task": task, "n_demos": n_demos, "seed": seed,
                "demo_source": source, "config": config_to_dict(cfg)}
    defined = added_definition(task)
    if defined is not None:
        identity["task_definition"] = _plain(defined)
    return identity


def execute(*, algo: str, task: str, n_demos: int, seed: int, out: str | Path,
            preset: str | list[str] | None = None, overrides: dict[str, str] | None = None,
            demo_source: str | None = None, variant: str | None = None, force: bool = False,
            show_progress: bool | None = None, expert_trainer: bool = False) -> Path:
    """Run one (algorithm, task, demo count, seed) to completion; returns the metrics.csv path.

    A finished run (metrics.csv present) of the same request is left alone, and an interrupted
    one resumes from its checkpoint. A folder whose config.json records another request
    (algorithm, variant, task, demo count, demo source, seed, resolved config, or the definition
    of a task not built in), finished or not, is refused with a UserError naming the differing
    keys. ``force`` starts the folder
    clean whatever it holds. Every input (config values, demo source, demo shapes against the
    task's spaces) is checked before the folder is created or changed.
    ``preset`` names presets to overlay, left to right (``"cpu,pixels"`` or a list).
    ``expert_trainer``: ``algo`` names an ``algorithms.EXPERT_TRAINERS`` module, which learns from
    the task's reward without demos (``n_demos`` 0, demo source ``"none"``).
    """
    from algorithms import get_algorithm, get_expert_trainer
    from cmil_bench.config import build_config, preset_names
    from envs.datasets import DemoSet, load_demos, subsample
    from envs.registry import get_task

    module = get_expert_trainer(algo) if expert_trainer else get_algorithm(algo)
    needs_demos = getattr(module, "NEEDS_DEMOS", True)
    spec = get_task(task)
    presets = preset_names(preset)
    cfg = build_config(module.Config, getattr(module, "PRESETS", {}), presets, overrides, algo)
    variant = variant or algo
    gl = os.environ.get("MUJOCO_GL", "")
    if spec.obs_mode == "pixels" and gl.strip().lower() in RENDERING_OFF:
        raise UserError(f"task {task!r} observes pixels, but MUJOCO_GL={gl!r} switches MuJoCo's "
                        "rendering off; use MUJOCO_GL=egl or MUJOCO_GL=osmesa")
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"run folder {str(out)!r} exists and is not a folder")
    source = (demo_source or spec.demo_source) if needs_demos else "none"
    if not source:
        raise UserError(f"task {task!r} names no demo source; pass --demo-source")
    if not needs_demos and spec.ref_demo_return is None:
        raise UserError(f"task {task!r} has no demo reference return (`references: {{demo: D}}` in "
                        f"its definition), which norm_score needs when a run has no demos")
    # A folder holds one run: another configuration's (finished or not) is refused, the same
    # one finished is left alone, the same one unfinished resumes.
    requested = _identity(algo, variant, task, n_demos, seed, source, cfg)
    metrics = out / "metrics.csv"
    if not force:
        check_folder_identity(out, requested)
        if metrics.exists():
            return _already_complete(metrics)

    # Every input is checked before the run folder is touched: bad input leaves nothing behind.
    if needs_demos:
        demoset = load_demos(source, task=spec)
        demos = subsample(demoset, n_demos, seed)
    else:
        demoset, demos = DemoSet(source, []), []
    device = resolve_device(cfg.device)
    spaces = task_spaces(spec)
    check_demo_shapes(spec, demoset.source, demos, spaces)

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run folder {str(out)!r}: {e.strerror or e}") from None
    with RunFolderLock(out):
        if not force:  # another process may have started or finished it while we loaded
            check_folder_identity(out, requested)
            if metrics.exists():
                return _already_complete(metrics)
        else:
            for name in ("metrics.csv", "progress.csv", "checkpoint.pt", "config.json"):
                (out / name).unlink(missing_ok=True)
        _remove_stale_temporaries(out)
        return _execute_locked(module, algo=algo, variant=variant, task=task, spec=spec, cfg=cfg,
                               n_demos=n_demos, seed=seed, out=out, presets=presets,
                               overrides=overrides, demoset=demoset, demos=demos,
                               device=device, show_progress=show_progress, spaces=spaces)


def _already_complete(metrics: Path) -> Path:
    print(f"[cmil-bench] {metrics} exists: run already complete (use --force to redo)",
          file=sys.stderr)
    return metrics


def _remove_stale_temporaries(out: Path) -> None:
    """Remove half-written ``NAME.tmpPID`` files left by a process killed while writing."""
    for p in out.glob("*.tmp*"):
        if p.is_file() and p.name.rpartition(".tmp")[2].isdigit():
            p.unlink(missing_ok=True)


class RunFolderLock:
    """Exclusive lock on a run folder (``OUT/.lock``) while one process runs in it.

    A second ``cmil-bench run`` on the same folder (a duplicate job, a manual rerun while the
    workflow still runs it) stops with a UserError instead of interleaving its checkpoints with
    the first. The kernel drops the lock when the process ends, however it ends (SIGKILL too),
    so a crash never leaves a stale lock. File systems without locks run unlocked.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> "RunFolderLock":
        try:
            import fcntl
        except ImportError:  # not POSIX
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
                os.close(fd)
                raise UserError(
                    f"run folder {str(self.folder)!r} is in use by another cmil-bench process "
                    f"({holder}); wait for it to end or choose another --out") from None
            print(f"[cmil-bench] cannot lock {self.path} ({e.strerror}); running unlocked",
                  file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _execute_locked(module, *, algo, variant, task, spec, cfg, n_demos, seed, out, presets,
                    overrides, demoset, demos, device, show_progress, spaces=None) -> Path:
    from envs.datasets import describe_episode_ids

    torch.set_num_threads(cfg.torch_threads)
    seed_everything(seed)
    identity = _identity(algo, variant, task, n_demos, seed, demoset.source, cfg)
    record = {
        "identity": identity,
        "algo": algo, "variant": variant, "task": task, "obs_mode": spec.obs_mode,
        "env_id": spec.env_id, "env_kwargs": spec.env_kwargs, "n_demos": n_demos, "seed": seed,
        "presets": presets, "overrides": overrides or {},
        "config": config_to_dict(cfg),
        "demo_source": demoset.source, "demo_meta": demoset.meta,
        "demo_episode_ids": describe_episode_ids(demos),
        "demo_returns": [t.ret for t in demos],
        "versions": _versions(), "git_revision": _git_revision(),
        "host": platform.node(), "device": str(device),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "command": sys.argv,
    }
    if "task_definition" in identity:  # compared with the next request (check_folder_identity)
        record["task_definition"] = identity["task_definition"]
    run = Run(algo=algo, variant=variant, task=spec, cfg=cfg, demoset=demoset, demos=demos,
              seed=seed, out=out, device=device, show_progress=show_progress,
              config_record=record, spaces=spaces)
    record["ref_random_return"] = run.ref_random
    record["ref_demo_return"] = run.ref_demo
    record["eval_episodes"] = run.eval_episodes
    record["eval_seeds"] = [EVAL_SEED_BASE + i for i in range(run.eval_episodes)]
    atomic_write_text(out / "config.json", json.dumps(record, indent=2, default=str))
    module.train(run, cfg)
    return run.finish()
