"""Loss curves: one run (against steps and wallclock), a sweep (all runs together), the lr toy."""

from __future__ import annotations

import math
import os


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _series(records: list[dict], x: str, y: str) -> tuple[list, list]:
    xs, ys = [], []
    for r in records:
        if r.get(y) is not None and r.get(x) is not None:
            xs.append(r[x])
            ys.append(r[y])
    return xs, ys


def _log_ok(*series) -> bool:
    return all(v > 0 for s in series for v in s)


def plot_run(
    records: list[dict], path: str | os.PathLike, title: str = "", diverged_step: int | None = None
) -> None:
    """Train and val loss against steps (left) and wallclock seconds (right)."""
    from lm.io import atomic_path

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, x, xlabel in ((axes[0], "step", "step"), (axes[1], "wallclock_s", "wallclock (s)")):
        tx, ty = _series(records, x, "train_loss")
        vx, vy = _series(records, x, "val_loss")
        ax.plot(tx, ty, lw=1, alpha=0.8, label="train")
        ax.plot(vx, vy, "o-", ms=3, lw=1.5, label="val")
        if _log_ok(ty, vy) and (ty or vy):
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
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_sweep(
    runs: list[dict], path: str | os.PathLike, title: str = "", swept: str | None = None
) -> None:
    """Every run's train and val loss against steps, log-scaled; diverged runs marked with x.

    ``runs`` items: ``{"label", "records", "status", "diverged_step"}``, plus ``"value"``
    (the swept number) when ``swept`` names a single numeric swept key: a fourth panel
    then shows each run's best val loss against that value (the U of an lr sweep).
    """
    from lm.io import atomic_path

    plt = _pyplot()
    fig, axes = plt.subplots(
        1, 4 if swept else 3, figsize=(21 if swept else 16, 4.6), constrained_layout=True
    )
    panels = (
        (axes[0], "step", "train_loss", "train loss"),
        (axes[1], "step", "val_loss", "val loss"),
        (axes[2], "wallclock_s", "val_loss", "val loss"),
    )
    finite = [
        v
        for run in runs
        for r in run["records"]
        for v in (r.get("train_loss"), r.get("val_loss"))
        if v is not None and math.isfinite(v)
    ]
    # keep the interesting range readable: a diverging run can climb by orders of magnitude
    top = None
    if finite:
        initial = [r["val_loss"] for run in runs for r in run["records"][:1] if r.get("val_loss")]
        top = 1.5 * max(initial) if initial else max(finite)
        bottom = 0.9 * min(finite)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, x, y, ylabel in panels:
        for i, run in enumerate(runs):
            color = colors[i % len(colors)]
            xs, ys = _series(run["records"], x, y)
            diverged = run.get("status") == "diverged"
            label = run["label"] + (" (diverged)" if diverged else "")
            ax.plot(
                xs,
                ys,
                "-" if not diverged else "--",
                color=color,
                lw=1.3,
                label=label,
                marker="o" if y == "val_loss" else None,
                ms=2.5,
            )
            if diverged:
                at = [r for r in run["records"] if r["step"] == run.get("diverged_step")]
                if at:
                    yv = at[-1].get(y)
                    yv = (
                        top
                        if (yv is None or top is None or not math.isfinite(yv) or yv > top)
                        else yv
                    )
                    if yv is not None:
                        ax.plot([at[-1][x]], [yv], "x", color=color, ms=10, mew=2.5)
        if finite and bottom > 0:
            ax.set_yscale("log")
            ax.set_ylim(bottom, top)
        ax.set_xlabel("wallclock (s)" if x == "wallclock_s" else "step")
        ax.set_ylabel(f"{ylabel} (log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    if swept:
        ax = axes[3]
        ok = [
            (r["value"], r["best_val_loss"])
            for r in runs
            if r.get("status") != "diverged" and r.get("best_val_loss") is not None
        ]
        bad = [r["value"] for r in runs if r.get("status") == "diverged"]
        if ok:
            xs, ys = zip(*sorted(ok), strict=True)
            ax.plot(xs, ys, "o-", color="k")
        for v in bad:
            ax.plot([v], [top] if top else [1.0], "x", color="red", ms=10, mew=2.5)
        if all(v > 0 for v, _ in ok) and all(v > 0 for v in bad):
            ax.set_xscale("log")
        if finite and bottom > 0:
            ax.set_yscale("log")
            ax.set_ylim(bottom, top)
        ax.set_xlabel(swept)
        ax.set_ylabel("best val loss (log scale); x = diverged")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title + "   (x: divergence detected)")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_lr_tuning(
    losses: dict[str, list[float]], path: str | os.PathLike, floor: float = 1e-30
) -> None:
    """Loss per iteration for each learning rate, log scale (exact zeros drawn at ``floor``)."""
    from lm.io import atomic_path

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for label, ys in losses.items():
        shown = [max(v, floor) if math.isfinite(v) else float("nan") for v in ys]
        ax.plot(range(len(ys)), shown, "o-", ms=3, label=f"lr={label}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"loss (log scale; 0 drawn at {floor:g})")
    ax.set_title("SGD with lr/sqrt(t+1) on mean(w^2)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
