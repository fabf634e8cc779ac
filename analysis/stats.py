"""Interval estimates, all through rliable's stratified bootstrap (95 % percentile CIs).

rliable's bootstrap classes draw their resampling indices from numpy's *global* generator
(``np.random.choice``), so every call here runs under ``_seeded``: the global state is set from
the report seed and a label naming the quantity (so that a CI does not change when another
algorithm is added to the report) and restored afterwards.

Score matrices are ``(runs, settings)``: a *setting* is one (task, demo count, demo source).
Aggregates need the same number of runs in every column; ``score_matrix`` keeps, per setting,
the runs with the smallest seeds up to the common count (the runs left out are reported).
Per-setting estimates instead pass one array per setting (rliable's independent stratified
bootstrap), which uses every run.

Estimators. Every estimator is rliable's own (aggregate_iqm, _median, _mean,
_optimality_gap, probability_of_improvement, score_distributions); rliable's IQM and
probability of improvement go through scipy at 0.3-8 ms a call, so ``--reps`` trades the
report's time against the resolution of its intervals.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics

CONFIDENCE = 0.95
METHOD = "percentile"


@contextlib.contextmanager
def _seeded(seed: int, label: str):
    state = np.random.get_state()
    np.random.seed((int(seed) * 1_000_003 + zlib.crc32(label.encode())) % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


def interval(scores, func: Callable, reps: int, seed: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and (2, ...) CI of ``func`` on one score array (or list of arrays)."""
    with _seeded(seed, label):
        point, ci = rly.get_interval_estimates({label: scores}, func, method=METHOD, reps=reps,
                                               confidence_interval_size=CONFIDENCE)
    return np.asarray(point[label], dtype=float), np.asarray(ci[label], dtype=float)


# -- aggregates over runs x settings ---------------------------------------------------------

def aggregate_names(with_gap: bool) -> list[str]:
    return ["IQM", "Median", "Mean"] + (["Optimality Gap"] if with_gap else [])


def iqm(x: np.ndarray) -> float:
    """Interquartile mean of all entries (``rliable.metrics.aggregate_iqm``)."""
    return float(metrics.aggregate_iqm(np.asarray(x, dtype=float)))


def aggregate_func(with_gap: bool, gamma: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """IQM, median, mean (and optimality gap at ``gamma``) of a runs x settings matrix."""
    def func(x: np.ndarray) -> np.ndarray:
        vals = [iqm(x), metrics.aggregate_median(x), metrics.aggregate_mean(x)]
        if with_gap:
            vals.append(metrics.aggregate_optimality_gap(x, gamma))
        return np.array(vals, dtype=float)
    return func


def score_matrix(finals: pd.DataFrame, settings: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """``(runs, settings)`` matrix of one algorithm's final scores, and the runs it kept.

    ``finals`` holds one algorithm's runs with columns ``setting``, ``seed``, ``score``. Each
    column keeps the runs with the smallest seeds, as many as the setting with fewest runs.
    """
    groups = [finals[finals["setting"] == s].sort_values("seed") for s in settings]
    n = min(len(g) for g in groups)
    if n == 0:
        raise ValueError("a setting has no runs")
    kept = [g.iloc[:n] for g in groups]
    matrix = np.stack([g["score"].to_numpy(dtype=float) for g in kept], axis=1)
    return matrix, pd.concat(kept)


def aggregates(matrix: np.ndarray, with_gap: bool, reps: int, seed: int, label: str) -> dict:
    """{name: (value, lo, hi)} for IQM, median, mean (and optimality gap)."""
    point, ci = interval(matrix, aggregate_func(with_gap), reps, seed, label)
    return {name: (float(point[i]), float(ci[0, i]), float(ci[1, i]))
            for i, name in enumerate(aggregate_names(with_gap))}


# -- per-setting means (all runs, unequal counts allowed) ------------------------------------

def _column_means(*columns: np.ndarray) -> np.ndarray:
    return np.array([metrics.aggregate_mean(c) for c in columns], dtype=float)


def setting_means(columns: Sequence[np.ndarray], reps: int, seed: int, label: str) -> list[tuple]:
    """Mean and CI per setting; ``columns`` holds one 1-D array of run scores per setting."""
    arrays = [np.asarray(c, dtype=float).reshape(-1, 1) for c in columns]
    point, ci = interval(arrays, _column_means, reps, seed, label)
    return [(float(point[i]), float(ci[0, i]), float(ci[1, i])) for i in range(len(arrays))]


def iqm_interval(values: np.ndarray, reps: int, seed: int, label: str) -> tuple[float, float, float]:
    """IQM of a run x setting matrix (or 1-D run scores) with its CI."""
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    point, ci = interval(x, lambda s: np.array([iqm(s)]), reps, seed, label)
    return float(point[0]), float(ci[0, 0]), float(ci[1, 0])


# -- probability of improvement ----------------------------------------------------------------

def poi(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) averaged over settings (``rliable.metrics.probability_of_improvement``);
    ``x``: runs_x x settings, ``y``: runs_y x settings."""
    return float(metrics.probability_of_improvement(np.asarray(x, dtype=float),
                                                    np.asarray(y, dtype=float)))


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int, seed: int,
                               label: str) -> tuple[float, float, float]:
    """P(X > Y) averaged over settings with its CI (runs of X and Y resampled independently)."""
    point, ci = interval([x, y], poi, reps, seed, label)
    return float(point), float(np.ravel(ci[0])[0]), float(np.ravel(ci[1])[0])


# -- performance profiles ----------------------------------------------------------------------

def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of all run scores above each tau (``rliable.metrics.score_distributions``)."""
    return np.asarray(metrics.score_distributions(np.asarray(scores, dtype=float), taus), dtype=float)


def performance_profile(matrix: np.ndarray, taus: np.ndarray, reps: int, seed: int,
                        label: str) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of runs with score > tau for each tau, with (2, len(taus)) CIs."""
    with _seeded(seed, label):
        prof, cis = rly.create_performance_profile({label: matrix}, taus, reps=reps,
                                                   method=METHOD,
                                                   confidence_interval_size=CONFIDENCE)
    return np.asarray(prof[label], dtype=float), np.asarray(cis[label], dtype=float)


# -- curves --------------------------------------------------------------------------------------

def iqm_per_step(x: np.ndarray) -> np.ndarray:
    """IQM over runs (and settings) at each evaluation: ``x`` is runs x settings x evals
    (``rliable.metrics.aggregate_iqm`` applied to each evaluation, as rliable's own
    sample-efficiency curves do)."""
    x = np.asarray(x, dtype=float)
    return np.array([metrics.aggregate_iqm(x[..., t]) for t in range(x.shape[-1])])


def curve(values: np.ndarray, reps: int, seed: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """IQM over runs at each evaluation with pointwise CIs; ``values`` is runs x evals.

    rliable's stratified bootstrap of a runs x 1 x evals array resamples the runs
    independently at every evaluation, so the bands are pointwise.
    """
    x = np.asarray(values, dtype=float)[:, None, :]
    point, ci = interval(x, iqm_per_step, reps, seed, label)
    return point, ci
