"""Progress of long steps: a tqdm bar on a terminal, plain lines in a log.

A pipeline step runs with its output piped to a log (and to the terminal that started
Snakemake), where a tqdm bar is a stream of carriage returns nobody can read. There each
long step writes a plain line at a steady cadence instead (every 1% of the work, no
closer than 10 s and no further than 60 s apart)::

    14:02:11 merge: 12,800/31,743 merges (40.3%) | 2,345 merges/s | elapsed 5s | ETA 8s

:func:`progress_bar` picks the form from ``mode``: ``"bar"`` (tqdm), ``"log"`` (plain
lines), ``"none"``, or ``"auto"`` (a bar when stderr is a terminal, else lines). Every
form has tqdm's ``update(n)``, ``set_postfix(**values)`` and ``close()``, so the code that
reports progress does not care which it got.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

MODES = ("auto", "bar", "log", "none")

#: A log line each time this share of the work is done ...
LOG_FRACTION = 0.01
#: ... but no sooner than this many seconds after the previous line (a fast step stays short) ...
LOG_MIN_INTERVAL_S = 10.0
#: ... and at least this often while work goes on, however slow.
LOG_MAX_INTERVAL_S = 60.0


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress MODE`` (and ``--no-progress``, the same as ``--progress none``)."""
    parser.add_argument(
        "--progress",
        choices=MODES,
        default="auto",
        help="how to show progress: a tqdm bar (bar), plain lines at a steady cadence (log: "
        "every 1%% of the work, 10 to 60 s apart; what pipeline steps use), none, or auto: "
        "a bar on a terminal, else log",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const="none",
        help="the same as --progress none",
    )


def resolve_mode(mode: str | bool | None, file: TextIO | None = None) -> str:
    """One of ``bar``, ``log``, ``none`` for ``mode`` (True means auto, False/None none)."""
    if mode is True:
        mode = "auto"
    if mode is False or mode is None:
        return "none"
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        stream = file or sys.stderr
        return "bar" if getattr(stream, "isatty", lambda: False)() else "log"
    return mode


def progress_bar(
    total: float | None,
    desc: str,
    unit: str = "it",
    mode: str | bool | None = "auto",
    *,
    initial: float = 0,
    unit_scale: bool = False,
    file: TextIO | None = None,
    clock=time.monotonic,
):
    """A progress reporter for ``total`` units of work (see the module docstring)."""
    kind = resolve_mode(mode, file)
    if kind == "bar":
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            file=file or sys.stderr,
            mininterval=1.0,
            dynamic_ncols=True,
        )
    if kind == "log":
        return LogProgress(
            total, desc, unit, initial=initial, unit_scale=unit_scale, file=file, clock=clock
        )
    return NoProgress()


class _Reporter:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass


class NoProgress(_Reporter):
    """The reporter when progress is off: accepts every call, shows nothing."""

    n = 0

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        pass


class LogProgress(_Reporter):
    """Plain progress lines: done / total, rate, elapsed time, ETA and any postfix values.

    A line is written when the reporter starts; then each time another
    :data:`LOG_FRACTION` of the work is done, once :data:`LOG_MIN_INTERVAL_S` have passed
    since the previous line; at least every :data:`LOG_MAX_INTERVAL_S`; and when it closes.
    """

    def __init__(
        self,
        total: float | None,
        desc: str,
        unit: str = "it",
        *,
        initial: float = 0,
        unit_scale: bool = False,
        file: TextIO | None = None,
        clock=time.monotonic,
    ):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.unit_scale = unit_scale
        self.file = file
        self.clock = clock
        self.n = self.initial = initial
        self.postfix: dict[str, Any] = {}
        self.start = clock()
        self._closed = False
        self._emit(self.start)

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self.clock()
        since = now - self._last_t
        step = LOG_FRACTION * self.total if self.total else float("inf")
        if since >= LOG_MAX_INTERVAL_S or (
            self.n - self._last_n >= step and since >= LOG_MIN_INTERVAL_S
        ):
            self._emit(now)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n != self._last_n or self.postfix != self._last_postfix:
            self._emit(self.clock(), final=True)

    def line(self, now: float, final: bool = False) -> str:
        """The line describing the state at time ``now`` (``final``: the work has ended,
        possibly short of the total, so no ETA)."""
        elapsed = now - self.start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        unit = "" if self.unit_scale else f" {self.unit}"
        head = self._amount(self.n)
        if self.total:
            head += f"/{self._amount(self.total)}{unit} ({100 * self.n / self.total:.1f}%)"
        else:
            head += unit
        parts = [f"{self.desc}: {head}"]
        if rate is not None:
            parts.append(f"{self._amount(rate, rate=True)}{unit}/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if self.total and rate is not None and self.n < self.total and not final:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        for key, value in self.postfix.items():
            parts.append(f"{key} {value}")
        return time.strftime("%H:%M:%S ") + " | ".join(parts)

    def _emit(self, now: float, final: bool = False) -> None:
        print(self.line(now, final), file=self.file or sys.stderr, flush=True)
        self._last_t, self._last_n, self._last_postfix = now, self.n, dict(self.postfix)

    def _amount(self, x: float, rate: bool = False) -> str:
        if self.unit_scale:  # 12.3 MB
            for prefix in ("", "k", "M", "G", "T", "P"):
                if abs(x) < 1000 or prefix == "P":
                    number = f"{x:.0f}" if not prefix else f"{x:.1f}"
                    return f"{number} {prefix}{self.unit}"
                x /= 1000
        if rate and x < 100:
            return f"{x:.1f}" if x >= 10 else f"{x:.2f}"
        return f"{x:,.0f}"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short and exact enough for an ETA."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"
