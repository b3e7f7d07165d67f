"""The loss curves of one training run, against steps and wallclock (``lm train``'s curves.png).

Curves over several runs are the reports' (:mod:`lm.reports.plots`), kept apart so that
editing them changes no training step's code version.
"""

from __future__ import annotations

import os

from lm.plotting import log_ok, pyplot, save, series


def plot_run(
    records: list[dict], path: str | os.PathLike, title: str = "", diverged_step: int | None = None
) -> None:
    """Train and val loss against steps (left) and wallclock seconds (right)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, x, xlabel in ((axes[0], "step", "step"), (axes[1], "wallclock_s", "wallclock (s)")):
        tx, ty = series(records, x, "train_loss")
        vx, vy = series(records, x, "val_loss")
        ax.plot(tx, ty, lw=1, alpha=0.8, label="train")
        ax.plot(vx, vy, "o-", ms=3, lw=1.5, label="val")
        if log_ok(ty, vy) and (ty or vy):
            ax.set_yscale("log")
        if diverged_step is not None:
            at = [r[x] for r in records if r["step"] == diverged_step]
            if at:
                ax.axvline(
                    at[0], color="red", ls="--", lw=1, label=f"diverged (step {diverged_step})"
                )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(title)
    save(fig, path)
