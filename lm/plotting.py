"""Plots as files: matplotlib without a display, and the helpers every curve shares.

The curves themselves live with what they show: one run's in :mod:`lm.training.plots`, the
lr toy's in :mod:`lm.training.lr_tuning`, the reports' over several runs in
:mod:`lm.reports.plots`.
"""

from __future__ import annotations

import os

from lm.io import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def series(records: list[dict], x: str, y: str) -> tuple[list, list]:
    """The ``(xs, ys)`` of the records that have both ``x`` and ``y``."""
    xs, ys = [], []
    for r in records:
        if r.get(y) is not None and r.get(x) is not None:
            xs.append(r[x])
            ys.append(r[y])
    return xs, ys


def log_ok(*series) -> bool:
    """Whether every value is positive, so a log scale can show them."""
    return all(v > 0 for s in series for v in s)


def save(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically, and close it."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    pyplot().close(fig)
