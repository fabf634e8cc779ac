"""The report's progress bar and its figure jobs (drawn in worker processes, in parallel with the
bootstrap).

Drawing and saving a figure (PNG and PDF) costs matplotlib 0.3-3 s of Python per figure; a
sweep of ten tasks has some thirty figures. Each figure is a pure function of plain data
(``analysis.figures``), so ``FigureJobs`` hands it to a pool of forked worker processes as soon
as its data is ready and collects the file names at the end. ``jobs=1`` (or a platform without
``fork``) draws each figure in this process instead, at once.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable


def default_jobs() -> int:
    """The CPUs this process may use (at most 8)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


class Progress:
    """A tqdm bar on stderr whose total grows as the work becomes known; ``enabled=None``
    shows it only on a terminal."""

    def __init__(self, enabled: bool | None = None, desc: str = "report"):
        from tqdm.auto import tqdm

        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar = tqdm(total=0, desc=desc, unit="step", disable=not enabled, leave=False,
                         dynamic_ncols=True, file=sys.stderr, mininterval=0.2)

    def add(self, n: int) -> None:
        """``n`` more steps to do."""
        if n:
            self._bar.total = (self._bar.total or 0) + n
            self._bar.refresh()

    def step(self, what: str, n: int = 1) -> None:
        """``n`` steps done; ``what`` is shown next to the bar."""
        self._bar.set_postfix_str(what, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def _fork_context():
    try:
        return multiprocessing.get_context("fork")
    except ValueError:
        return None


class FigureJobs:
    """Figures drawn by ``jobs`` worker processes (or here, one by one, when ``jobs`` <= 1).

    ``submit(what, func, *args)`` starts ``func(*args)`` (a function of ``analysis.figures``
    that returns the paths it wrote); ``results()`` waits for all and returns
    ``[(paths, what), ...]`` in submission order. A failed figure raises its exception there.
    """

    def __init__(self, jobs: int):
        self._progress: Progress | None = None
        ctx = _fork_context() if jobs > 1 else None
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) if ctx else None
        self._done: list[tuple[Any, str]] = []
        if self._pool is not None:
            # With fork, the first submission starts every worker: do it now, before this
            # process has other threads (the progress bar's) that a fork would copy mid-lock.
            self._pool.submit(int)

    def attach(self, progress: Progress) -> None:
        """Count the figures on ``progress`` (create the bar after this object)."""
        self._progress = progress

    def submit(self, what: str, func: Callable[..., Any], *args) -> None:
        if self._progress:
            self._progress.add(1)
        if self._pool is None:
            self._done.append((func(*args), what))
            if self._progress:
                self._progress.step(f"figure: {what}")
            return
        fut: Future = self._pool.submit(func, *args)
        if self._progress:
            fut.add_done_callback(lambda _f, w=what: self._progress.step(f"figure: {w}"))
        self._done.append((fut, what))

    def results(self) -> list[tuple[Any, str]]:
        try:
            return [(r.result() if isinstance(r, Future) else r, what) for r, what in self._done]
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
