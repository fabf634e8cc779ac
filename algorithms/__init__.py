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

# Trainers of expert policies on a task's reward (`cmil-bench expert`): the same module contract,
# without demos (``NEEDS_DEMOS = False``); no sweep runs them.
EXPERT_TRAINERS = {
    "sac-expert": "algorithms.sac_expert",
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


def get_run_module(name: str):
    """The module of a run's ``algo``: an algorithm or an expert trainer."""
    return get_expert_trainer(name) if name in EXPERT_TRAINERS else get_algorithm(name)


def get_expert_trainer(name: str):
    if name not in EXPERT_TRAINERS:
        raise UserError(f"unknown expert trainer {name!r}; known: {', '.join(EXPERT_TRAINERS)}")
    return importlib.import_module(EXPERT_TRAINERS[name])
