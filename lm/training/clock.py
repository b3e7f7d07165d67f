"""The training loop's clocks: the run's wall clock over all its sessions, and the time
spent in each phase of the loop (result.json's ``time_breakdown_s``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class WallClock:
    """Seconds of training so far: ``spent`` by earlier sessions (a resumed run's), plus this
    session's since the clock was made. Calling it reads it."""

    def __init__(self, spent: float = 0.0):
        self.spent = spent
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return self.spent + (time.perf_counter() - self.start)


class Phases:
    """Time per phase: ``totals`` (a dict of phase -> seconds, added to in place; the loop's
    saved ``timings``) and ``last``, the duration of each phase's latest timing (0 until
    timed), which the budget plans with."""

    def __init__(self, totals: dict[str, float]):
        self.totals = totals
        self.last = dict.fromkeys(totals, 0.0)

    def add(self, phase: str, seconds: float) -> None:
        self.totals[phase] += seconds
        self.last[phase] = seconds

    @contextmanager
    def time(self, phase: str) -> Iterator[None]:
        """Time the ``with`` block as ``phase``."""
        t = time.perf_counter()
        yield
        self.add(phase, time.perf_counter() - t)

    def restore(self, totals: dict[str, float]) -> None:
        """Set the totals back to a copy taken earlier (``last`` keeps its durations)."""
        self.totals.clear()
        self.totals.update(totals)
