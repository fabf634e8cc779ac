"""Hyperparameter dataclasses: presets, ``--set key=value`` overrides, and type checking.

Every algorithm keeps all of its hyperparameters in one dataclass ``Config`` that extends
``BaseConfig``; a module-level ``PRESETS`` dict maps a preset name (e.g. ``cpu``) to overrides.
Presets compose as overlays: ``--preset cpu,pixels`` applies ``cpu``, then ``pixels``.
Resolution order: dataclass defaults < each named preset, left to right < ``--set`` overrides.
Nothing here knows tasks: per-task values come from the sweep YAML (``task_settings``), which
the Snakefile passes as ``--set``. Renamed and removed keys (``RENAMED``, ``REMOVED``) are
refused wherever they appear, with a message that names the new key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from cmil_bench.errors import UserError


@dataclass
class BaseConfig:
    """Fields shared by every algorithm's config (the run protocol, not the method)."""

    # Evaluate (and checkpoint) every this many steps of the algorithm's budget axis
    # (env steps for online algorithms, gradient steps for offline ones).
    eval_every: int = 1000
    # Evaluation episodes per evaluation; 0 means the task's default.
    eval_episodes: int = 0
    # "cpu", "cuda", "cuda:1" or "auto" (cuda when available).
    device: str = "cpu"
    # torch intra-op threads; 1 keeps many concurrent runs from fighting over cores.
    torch_threads: int = 1


def field_names(cfg_cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg_cls)]


def _list_parts(raw: str) -> list:
    """The items of a list written on the command line: JSON (``["a=1", "b"]``, what the
    Snakefile passes) or bare and comma-separated (``64,64`` or ``(64, 64)``)."""
    text = raw.strip()
    if text.startswith("["):
        try:
            val = json.loads(text)
        except ValueError:
            val = None
        if isinstance(val, list):
            return val
    return [p.strip().strip("'\"") for p in text.strip("()[] ").split(",") if p.strip()]


def _coerce(name: str, raw: Any, typ: Any) -> Any:
    """Turn ``raw`` (a string from the command line, or a YAML value) into ``typ``."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
            return None
        for a in args:
            try:
                return _coerce(name, raw, a)
            except UserError:
                pass
        raise UserError(f"config key {name!r}: cannot read {raw!r} as {typ}")
    if origin in (tuple, list):
        inner = (typing.get_args(typ) or (str,))[0]
        if isinstance(raw, str):
            parts = _list_parts(raw)
        elif isinstance(raw, (list, tuple)):
            parts = list(raw)
        else:
            raise UserError(f"config key {name!r}: expected a list, got {raw!r}")
        vals = [_coerce(name, p.strip() if isinstance(p, str) else p, inner) for p in parts]
        return tuple(vals) if origin is tuple else vals
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        s = str(raw).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise UserError(f"config key {name!r}: expected true/false, got {raw!r}")
    if typ is int:
        if isinstance(raw, bool):
            raise UserError(f"config key {name!r}: expected an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        try:
            f = float(str(raw).strip())
        except ValueError:
            raise UserError(f"config key {name!r}: expected an integer, got {raw!r}") from None
        if not f.is_integer():
            raise UserError(f"config key {name!r}: expected an integer, got {raw!r}")
        return int(f)
    if typ is float:
        if isinstance(raw, bool):
            raise UserError(f"config key {name!r}: expected a number, got {raw!r}")
        try:
            return float(str(raw).strip()) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError):
            raise UserError(f"config key {name!r}: expected a number, got {raw!r}") from None
    if typ is str:
        if not isinstance(raw, (str, int, float)):
            raise UserError(f"config key {name!r}: expected a string, got {raw!r}")
        return str(raw)
    return raw


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise UserError(f"--set expects key=value, got {item!r}")
        out[k] = v
    return out


# Old key -> its new name. Refused in presets, --set and the sweep YAML, whichever names an
# algorithm's Config has, so that an old name never silently does something else.
RENAMED: dict[str, str] = {
    "grad_steps": "total_steps",
    "env_steps": "total_steps",
    "disc_gp": "gp_weight",
    "act": "activation",
    "disc_act": "disc_activation",
    "encoder_depth": "cnn_depth",
    "replay_capacity": "replay_size",
    "gamma": "discount",
    "max_grad_norm": "grad_clip",
    "opt_eps": "adam_eps",
}
_PER_TASK_GONE = "per-task values come from the sweep YAML's task_settings"
# Old key -> why it is gone.
REMOVED: dict[str, str] = {
    "task_total_steps": _PER_TASK_GONE,
    "task_eval_every": _PER_TASK_GONE,
    "per_task": _PER_TASK_GONE,
}


def check_key_name(key: str, where: str) -> None:
    """UserError when ``key`` is an old name (``where`` says where it was written)."""
    if key in RENAMED:
        raise UserError(f"config key {key!r} (from {where}) is now called {RENAMED[key]!r}")
    if key in REMOVED:
        raise UserError(f"config key {key!r} (from {where}) was removed: {REMOVED[key]}")


# ------------------------------------------------------------------ presets change scale only
# A preset (``PRESETS`` in algorithms/*.py) may change only these keys: how big and how long, never
# what the method does. Scale is: the budget and the evaluation (total_steps, eval_every,
# eval_episodes), where it runs (device, torch_threads), network widths and depths, batch and
# sequence sizes (imag_starts counts imagined trajectories per update, a batch size like the
# replay batch it is drawn from), replay capacity, the number of environments and rollout sizes,
# a diagnostic's sample size (log_disagreement_n), and the warm-up phases measured in env steps or
# updates before a learner starts (seed_steps, random_steps, learning_starts, actor_delay): a
# reference warm-up of 5,000 env steps does not fit in a budget of a few thousand. Not scale, so
# never in a preset: learning rates, loss weights and scales, update ratios (train_every,
# updates_per_train), update counts of an offline phase (pretrain_steps, bc_init_steps), epochs,
# horizons, the ensemble size (the sweep YAML may set it), another learner or BC start; such a
# change is a named variant in config/*.yaml. tests/test_presets.py checks every preset.
_RUN_SCALE = frozenset({"total_steps", "eval_every", "eval_episodes", "device", "torch_threads"})
_LATENT_SCALE = _RUN_SCALE | {
    "seed_steps", "replay_size", "batch_size", "expert_batch_size", "seq_len", "imag_starts",
    "deter", "stoch", "hidden", "mlp_layers", "cnn_depth", "actor_layers", "critic_layers",
    "disc_hidden", "log_disagreement_n"}
SCALE_KEYS: dict[str, frozenset[str]] = {
    "bc": _RUN_SCALE | {"batch_size", "hidden", "cnn_depth"},
    "gail": _RUN_SCALE | {"n_envs", "rollout_len", "num_minibatches", "disc_batch_size", "hidden",
                          "disc_hidden", "cnn_depth", "feature_dim"},
    "dac": _RUN_SCALE | {"batch_size", "replay_size", "actor_hidden", "critic_hidden", "disc_hidden",
                         "cnn_depth", "feature_dim", "random_steps", "learning_starts", "actor_delay"},
    "vmail": _LATENT_SCALE,
    "cmil": _LATENT_SCALE | {"bc_init_batch"},
}


def check_scale_only(algo: str, presets: dict[str, dict]) -> None:
    """UserError naming every preset key of ``algo`` that is not a scale key (``SCALE_KEYS``)."""
    if algo not in SCALE_KEYS:
        raise UserError(f"no scale keys are listed for algorithm {algo!r} (cmil_bench.config.SCALE_KEYS)")
    bad = [f"{name}.{k}" for name, layer in presets.items() for k in layer if k not in SCALE_KEYS[algo]]
    if bad:
        raise UserError(f"{algo}: presets change scale only; not scale keys: {', '.join(bad)} "
                        "(make such a change a named variant in config/*.yaml)")


def preset_changes(cfg_cls, presets: dict[str, dict] | None, preset: str | list[str] | None,
                   algo: str = "") -> list[tuple[str, Any, Any]]:
    """``(key, reference default, value after the presets)`` for every key that the preset(s)
    change, in the Config's field order (a key set to its default is left out)."""
    ref = cfg_cls()
    cfg = build_config(cfg_cls, presets, preset, None, algo)
    return [(f.name, getattr(ref, f.name), getattr(cfg, f.name)) for f in dataclasses.fields(cfg_cls)
            if getattr(cfg, f.name) != getattr(ref, f.name)]


def preset_names(preset: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"cpu,pixels"`` (or ``["cpu", "pixels"]``) -> ``["cpu", "pixels"]``; None or "" -> []."""
    if not preset:
        return []
    parts = preset.split(",") if isinstance(preset, str) else list(preset)
    names = [str(p).strip() for p in parts]
    if not all(names):
        raise UserError(f"--preset {preset!r} has an empty name; write e.g. --preset cpu,pixels")
    return names


def build_config(cfg_cls, presets: dict[str, dict] | None, preset: str | list[str] | None,
                 overrides: dict[str, Any] | None, algo: str = ""):
    """Resolve defaults < presets (left to right) < overrides into an instance of ``cfg_cls``,
    checking every key. ``preset`` is a comma-separated string or a list of preset names."""
    hints = typing.get_type_hints(cfg_cls)
    names = field_names(cfg_cls)
    presets = presets or {}
    layers: list[tuple[str, dict]] = []
    for name in preset_names(preset):
        if name not in presets:
            known = ", ".join(sorted(presets)) or "none"
            raise UserError(f"unknown preset {name!r} for algorithm {algo!r}; known presets: {known}")
        layers.append((f"preset {name!r}", presets[name]))
    if overrides:
        layers.append(("--set", overrides))
    values: dict[str, Any] = {}
    for where, layer in layers:
        for k, v in layer.items():
            check_key_name(k, where)
            if k not in names:
                raise UserError(
                    f"unknown config key {k!r} for algorithm {algo!r} (from {where}); "
                    f"valid keys: {', '.join(names)}")
            values[k] = _coerce(k, v, hints[k])
    cfg = cfg_cls(**values)
    validate(cfg, algo)
    return cfg


def validate(cfg, algo: str = "") -> None:
    """Generic checks of every field, by name and type, before anything is written.

    Rules (a sequence value, e.g. ``hidden=(256, 256)``, is checked element by element):

    * every float is finite (no NaN, no +-inf);
    * learning rates, ``lr`` and ``*_lr``: > 0;
    * sizes: ``hidden``, ``deter``, ``stoch``, ``seq_len``, ``horizon`` and the names ending in
      ``_hidden``, ``_layers``, ``batch_size``, ``_batch``, ``depth``, ``_dim``, ``_size``,
      ``_kernels`` or starting with ``n_`` / ``num_``: > 0;
    * budgets: ``total_steps``, ``torch_threads``
      and every ``*_every``: > 0; ``eval_episodes`` >= 0 (0: the task's default);
    * counts that may be zero (``*_steps``, ``*_starts``, ``*_delay``, ``*_iters``, ``*_epochs``,
      ``*_batches``, ``*_n``): >= 0;
    * discounts and mixing weights (``discount``, ``gamma``, ``lam``, ``gae_lambda``,
      ``kl_balance``, ``tau``, ``demo_ratio``, ``eval_ema_tau``): in [0, 1];
    * a field declared with ``metadata={"zero_off": True}`` (0 switches it off, e.g. a schedule
      period) needs only >= 0, whatever its name.

    Then the algorithm's own ``__post_validate__`` (choices, cross-field rules). Every failure is
    a UserError naming the key, the algorithm and the value.
    """
    import math

    def numbers(v):
        items = v if isinstance(v, (list, tuple)) else (v,)
        return [x for x in items if isinstance(x, (int, float)) and not isinstance(x, bool)]

    def fail(name, what, v):
        raise UserError(f"config key {name!r} for {algo!r} must be {what}, got {v!r}")

    size_ends = ("_hidden", "_layers", "batch_size", "_batch", "depth", "_dim", "_size",
                 "_kernels")
    zero_ok_ends = ("_steps", "_starts", "_delay", "_iters", "_epochs", "_batches", "_n")
    unit = ("discount", "gamma", "lam", "gae_lambda", "kl_balance", "tau", "demo_ratio",
            "eval_ema_tau")
    for f in dataclasses.fields(cfg):
        name, v = f.name, getattr(cfg, f.name)
        nums = numbers(v)
        if any(isinstance(x, float) and not math.isfinite(x) for x in nums):
            fail(name, "a finite number", v)
        if f.metadata.get("zero_off"):
            if any(x < 0 for x in nums):
                fail(name, ">= 0 (0: off)", v)
        elif name == "lr" or name.endswith("_lr"):
            if any(x <= 0 for x in nums):
                fail(name, "a positive learning rate", v)
        elif (name in ("hidden", "deter", "stoch", "seq_len", "horizon")
              or name.endswith(size_ends) or name.startswith(("n_", "num_"))):
            if any(x <= 0 for x in nums):
                fail(name, "a positive size", v)
        elif name in ("total_steps", "torch_threads") or name.endswith("_every"):
            if any(x <= 0 for x in nums):
                fail(name, "a positive budget" if name != "torch_threads" else "a positive integer", v)
        elif name == "eval_episodes" or name.endswith(zero_ok_ends):
            if any(x < 0 for x in nums):
                fail(name, ">= 0", v)
        elif name in unit:
            if any(not 0 <= x <= 1 for x in nums):
                fail(name, "in [0, 1]", v)
    if hasattr(cfg, "__post_validate__"):
        cfg.__post_validate__()


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
