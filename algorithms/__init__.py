"""Algorithms. Each module exposes ``Config`` (one dataclass with every hyperparameter),
``PRESETS`` (named overrides, e.g. ``cpu``), ``train(run, cfg)`` and ``eval_policy(...)``
(the evaluation policy rebuilt from a checkpoint); see cmil_bench.run."""

from __future__ import annotations

import importlib
import importlib.util

from cmil_bench.errors import UserError

ALGORITHMS = {
    "bc": "algorithms.bc",
    "gail": "algorithms.gail",
    "dac": "algorithms.dac",
    "vmail": "algorithms.vmail",
    "cmil": "algorithms.cmil",
}


def available() -> list[str]:
    """Algorithms whose module exists in this checkout."""
    out = []
    for name, mod in ALGORITHMS.items():
        if importlib.util.find_spec(mod) is not None:
            out.append(name)
    return out


def get_algorithm(name: str):
    if name not in ALGORITHMS or importlib.util.find_spec(ALGORITHMS[name]) is None:
        raise UserError(f"unknown algorithm {name!r}; known algorithms: {', '.join(available())}")
    return importlib.import_module(ALGORITHMS[name])
