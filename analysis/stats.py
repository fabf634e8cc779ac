"""Interval estimates: rliable's stratified bootstrap (95 % percentile CIs), vectorised.

What is computed is rliable's: its estimators (``rliable.metrics``: aggregate_iqm, _median,
_mean, _optimality_gap, probability_of_improvement; ``rliable.library.score_distributions``)
on rliable's resamples (``StratifiedBootstrap`` / ``StratifiedIndependentBootstrap``), with
arch's percentile interval. How it is computed differs: rliable draws one resample at a time and
calls the estimator on it (IQM and the probability of improvement go through scipy at 0.3-8 ms a
call), which made a 2,000-run report take 20 minutes. Here

* every resampling index of all ``reps`` resamples is drawn in one call, in the order rliable
  draws them (``np.random.choice(n, shape)`` per resample and per array is
  ``np.random.randint(0, n, shape)``; consecutive calls on the legacy global generator equal one
  call of the stacked shape, also with one bound per element for independent arrays);
* each estimator is written once for a stack of resamples (``(reps, runs, ...)``), with the
  same arithmetic as rliable's: the IQM partitions at the same cut points as
  ``scipy.stats.trim_mean``; the probability of improvement counts the pairs x > y plus half
  the ties, which is the Mann-Whitney U that rliable takes from scipy (exactly, in floats);
* the interval is ``np.percentile`` at arch's two percentiles of the same statistics.

The point estimate is rliable's own function on the data. ``tests/test_report.py`` checks,
for every quantity, that the estimates equal rliable's own ``get_interval_estimates`` /
``create_performance_profile`` under the same global seed (so: on the same resampling
indices) to float tolerance.

rliable's bootstrap classes draw from numpy's *global* generator, so every draw here runs under
``_seeded``: the global state is set from the report seed and a label naming the quantity (so
that a CI does not change when another algorithm is added to the report) and restored
afterwards. The labels and seeds are those of the rliable-calling version, so intervals are
unchanged from it.

Score matrices are ``(runs, settings)``: a *setting* is one (task, demo count, demo source).
Aggregates need the same number of runs in every column; ``score_matrix`` keeps, per setting,
the runs with the smallest seeds up to the common count (the runs left out are reported).
Per-setting estimates instead pass one array per setting (rliable's independent stratified
bootstrap), which uses every run.
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
# Elements of resampled data held at once (the resamples are processed in chunks of this size).
CHUNK_ELEMENTS = 4_000_000
IQM_CUT = 0.25


@contextlib.contextmanager
def _seeded(seed: int, label: str):
    state = np.random.get_state()
    np.random.seed((int(seed) * 1_000_003 + zlib.crc32(label.encode())) % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


def interval(scores, func: Callable, reps: int, seed: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and (2, ...) CI of any ``func`` through rliable itself, one resample at a
    time (slow; the quantities of the report use the vectorised functions below)."""
    with _seeded(seed, label):
        point, ci = rly.get_interval_estimates({label: scores}, func, method=METHOD, reps=reps,
                                               confidence_interval_size=CONFIDENCE)
    return np.asarray(point[label], dtype=float), np.asarray(ci[label], dtype=float)


# -- the vectorised stratified bootstrap ----------------------------------------------------------

def resample_indices(shape: tuple[int, ...], reps: int) -> np.ndarray:
    """The run indices of ``reps`` resamples of a ``shape`` = (runs, ...) array, as
    ``rliable.library.StratifiedBootstrap`` draws them from the global generator: one run index
    per element (the other axes are strata), shape ``(reps, *shape)``."""
    return np.random.randint(0, shape[0], size=(reps, *shape))


def independent_indices(shapes: Sequence[tuple[int, ...]], reps: int) -> list[np.ndarray]:
    """The run indices of ``reps`` resamples of several arrays resampled independently, as
    ``StratifiedIndependentBootstrap`` draws them (per resample, each array in turn)."""
    sizes = [int(np.prod(s)) for s in shapes]
    high = np.concatenate([np.full(n, s[0], dtype=np.int64) for n, s in zip(sizes, shapes)])
    flat = np.random.randint(0, np.broadcast_to(high, (reps, high.size)))
    out, start = [], 0
    for n, s in zip(sizes, shapes):
        out.append(flat[:, start:start + n].reshape(reps, *s))
        start += n
    return out


def take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``x`` resampled along its first axis by ``idx`` of shape ``(reps, *x.shape)``: element
    ``[r, i, j, ...]`` is ``x[idx[r, i, j, ...], j, ...]`` (the other axes stay in place)."""
    nd = idx.ndim
    strata = [np.arange(n).reshape([1] * k + [n] + [1] * (nd - k - 1))
              for k, n in enumerate(x.shape[1:], start=2)]
    return x[(idx, *strata)]


def _percentile_ci(stats_: np.ndarray) -> np.ndarray:
    """arch's percentile interval of ``(reps, k)`` statistics: ``(2, k)``."""
    alpha = (1.0 - CONFIDENCE) / 2
    return np.percentile(stats_, [100 * alpha, 100 * (1.0 - alpha)], axis=0)


def _chunks(reps: int, per_rep: int):
    step = max(1, CHUNK_ELEMENTS // max(1, per_rep))
    for start in range(0, reps, step):
        yield slice(start, min(reps, start + step))


def bootstrap(x: np.ndarray, batch_func: Callable[[np.ndarray], np.ndarray], reps: int, seed: int,
              label: str) -> np.ndarray:
    """CI ``(2, k)`` of ``batch_func`` (a stack ``(B, *x.shape)`` -> ``(B, k)``) under rliable's
    stratified bootstrap of ``x``."""
    x = np.asarray(x, dtype=float)
    with _seeded(seed, label):
        idx = resample_indices(x.shape, reps)
    out = np.concatenate([np.asarray(batch_func(take(x, idx[c])), dtype=float).reshape(
        c.stop - c.start, -1) for c in _chunks(reps, x.size)])
    return _percentile_ci(out)


def bootstrap_independent(arrays: Sequence[np.ndarray], batch_func: Callable, reps: int,
                          seed: int, label: str) -> np.ndarray:
    """CI ``(2, k)`` of ``batch_func(*stacks)`` under rliable's independent stratified bootstrap
    of ``arrays`` (each resampled over its own runs)."""
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    with _seeded(seed, label):
        idx = independent_indices([a.shape for a in arrays], reps)
    per_rep = sum(a.size for a in arrays)
    out = np.concatenate([np.asarray(batch_func(*[take(a, i[c]) for a, i in zip(arrays, idx)]),
                                     dtype=float).reshape(c.stop - c.start, -1)
                          for c in _chunks(reps, per_rep)])
    return _percentile_ci(out)


# -- estimators on stacks of resamples (B, runs, ...) ---------------------------------------------

def batch_iqm(x: np.ndarray) -> np.ndarray:
    """Interquartile mean of all entries of each ``x[b]`` (scipy's trim_mean at 0.25, as
    ``rliable.metrics.aggregate_iqm``; NaN where a resample holds a NaN, as scipy propagates)."""
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    low = int(IQM_CUT * n)
    high = n - low
    part = np.partition(flat, (low, high - 1), axis=1)
    out = np.mean(part[:, low:high], axis=1)
    nan = np.isnan(flat).any(axis=1)
    if nan.any():
        out[nan] = np.nan
    return out


def batch_iqm_per_step(x: np.ndarray) -> np.ndarray:
    """IQM over runs and settings at each evaluation: ``x`` is (B, runs, settings, evals)."""
    b, t = x.shape[0], x.shape[-1]
    moved = np.moveaxis(x, -1, 1).reshape(b * t, -1)
    return batch_iqm(moved).reshape(b, t)


def batch_aggregates(x: np.ndarray, with_gap: bool, gamma: float = 1.0) -> np.ndarray:
    """(B, 3 or 4): IQM, median and mean of the per-setting means, optimality gap of each
    ``x[b]`` (runs x settings), as rliable.metrics computes them."""
    task_means = np.mean(x, axis=1)
    cols = [batch_iqm(x), np.median(task_means, axis=1), np.mean(task_means, axis=1)]
    if with_gap:
        cols.append(gamma - np.mean(np.minimum(x, gamma).reshape(x.shape[0], -1), axis=1))
    return np.stack(cols, axis=1)


def batch_poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) averaged over settings for each resample pair ``x[b]`` (runs_x x settings),
    ``y[b]`` (runs_y x settings): the Mann-Whitney U of x over y (pairs x > y plus half the
    ties) divided by runs_x * runs_y, as ``rliable.metrics.probability_of_improvement``."""
    xe, ye = x[:, :, None, :], y[:, None, :, :]
    u = (xe > ye).sum(axis=(1, 2)) + 0.5 * (xe == ye).sum(axis=(1, 2))
    per_task = u / (x.shape[1] * y.shape[1])
    nan = np.isnan(x).any(axis=1) | np.isnan(y).any(axis=1)
    if nan.any():
        per_task = np.where(nan, np.nan, per_task)
    return np.mean(per_task, axis=1)


def batch_score_distribution(x: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """(B, len(taus)): fraction of the entries of each ``x[b]`` above each tau."""
    flat = x.reshape(x.shape[0], -1)
    return (flat[:, :, None] > np.asarray(taus)[None, None, :]).sum(axis=1) / flat.shape[1]


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
    matrix = np.asarray(matrix, dtype=float)
    point = aggregate_func(with_gap)(matrix)
    ci = bootstrap(matrix, lambda s: batch_aggregates(s, with_gap), reps, seed, label)
    return {name: (float(point[i]), float(ci[0, i]), float(ci[1, i]))
            for i, name in enumerate(aggregate_names(with_gap))}


# -- per-setting means (all runs, unequal counts allowed) ------------------------------------

def _column_means(*columns: np.ndarray) -> np.ndarray:
    return np.array([metrics.aggregate_mean(c) for c in columns], dtype=float)


def _batch_column_means(*stacks: np.ndarray) -> np.ndarray:
    return np.stack([np.mean(np.mean(s, axis=1), axis=1) for s in stacks], axis=1)


def setting_means(columns: Sequence[np.ndarray], reps: int, seed: int, label: str) -> list[tuple]:
    """Mean and CI per setting; ``columns`` holds one 1-D array of run scores per setting."""
    arrays = [np.asarray(c, dtype=float).reshape(-1, 1) for c in columns]
    point = _column_means(*arrays)
    ci = bootstrap_independent(arrays, _batch_column_means, reps, seed, label)
    return [(float(point[i]), float(ci[0, i]), float(ci[1, i])) for i in range(len(arrays))]


def iqm_interval(values: np.ndarray, reps: int, seed: int, label: str) -> tuple[float, float, float]:
    """IQM of a run x setting matrix (or 1-D run scores) with its CI."""
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    ci = bootstrap(x, batch_iqm, reps, seed, label)
    return iqm(x), float(ci[0, 0]), float(ci[1, 0])


# -- probability of improvement ----------------------------------------------------------------

def poi(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) averaged over settings (``rliable.metrics.probability_of_improvement``);
    ``x``: runs_x x settings, ``y``: runs_y x settings."""
    return float(metrics.probability_of_improvement(np.asarray(x, dtype=float),
                                                    np.asarray(y, dtype=float)))


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int, seed: int,
                               label: str) -> tuple[float, float, float]:
    """P(X > Y) averaged over settings with its CI (runs of X and Y resampled independently)."""
    ci = bootstrap_independent([x, y], batch_poi, reps, seed, label)
    return poi(x, y), float(ci[0, 0]), float(ci[1, 0])


# -- performance profiles ----------------------------------------------------------------------

def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of all run scores above each tau (``rliable.metrics.score_distributions``)."""
    return np.asarray(rly.score_distributions(np.asarray(scores, dtype=float), taus), dtype=float)


def performance_profile(matrix: np.ndarray, taus: np.ndarray, reps: int, seed: int,
                        label: str) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of runs with score > tau for each tau, with (2, len(taus)) CIs."""
    matrix = np.asarray(matrix, dtype=float)
    taus = np.asarray(taus, dtype=float)
    prof = score_distribution(matrix, taus)
    cis = bootstrap(matrix, lambda s: batch_score_distribution(s, taus), reps, seed, label)
    return prof, cis


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
    return iqm_per_step(x), bootstrap(x, batch_iqm_per_step, reps, seed, label)
