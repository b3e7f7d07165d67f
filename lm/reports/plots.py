"""The curves of the reports over several runs: a sweep's (all runs together, and the best
loss against the swept value), a race's (against wall-clock) and a comparison's (runs of different datasets or tokenizers,
per token and per byte)."""

from __future__ import annotations

import math
import os

from lm.plotting import log_ok, pyplot, save, series


def plot_sweep(
    runs: list[dict], path: str | os.PathLike, title: str = "", swept: str | None = None
) -> None:
    """Every run's train and val loss against steps, log-scaled; diverged runs marked with x.

    ``runs`` items: ``{"label", "records", "status", "diverged_step"}``, plus ``"value"``
    (the swept number) when ``swept`` names a single numeric swept key: a fourth panel
    then shows each run's best val loss against that value (the U of an lr sweep).
    """
    plt = pyplot()
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
            xs, ys = series(run["records"], x, y)
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
    save(fig, path)


def plot_comparison(runs: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Runs of different datasets or tokenizers side by side: validation loss (nats/token)
    against training tokens and against wallclock, and bits per byte against tokens.

    ``runs`` items: ``{"label", "records", "bytes_per_token"}``; the loss in bits per byte of
    a run is ``val_loss / ln 2 / bytes_per_token`` (the run is left out of that panel when
    its bytes per token are unknown). Training loss is drawn thin beside each val curve.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = (
        (axes[0], "tokens", 1.0, "loss (nats/token)", "per token, against tokens"),
        (axes[1], "wallclock_s", 1.0, "loss (nats/token)", "per token, against wallclock"),
        (axes[2], "tokens", None, "loss (bits/byte)", "per byte of text (comparable)"),
    )
    for ax, x, scale, ylabel, heading in panels:
        ax.set_title(heading, fontsize=10)
        shown = []
        for i, run in enumerate(runs):
            per_byte = scale is None
            bpt = run.get("bytes_per_token")
            if per_byte and not bpt:
                continue
            k = 1 / math.log(2) / bpt if per_byte else scale
            color = colors[i % len(colors)]
            tx, ty = series(run["records"], x, "train_loss")
            vx, vy = series(run["records"], x, "val_loss")
            ty, vy = [k * v for v in ty], [k * v for v in vy]
            ax.plot(tx, ty, lw=0.8, alpha=0.45, color=color)
            ax.plot(vx, vy, "o-", ms=2.5, lw=1.5, color=color, label=f"{run['label']} (val)")
            shown += ty + vy
        finite = [v for v in shown if math.isfinite(v)]
        if finite and log_ok(finite):
            ax.set_yscale("log")
        ax.set_xlabel("training tokens" if x == "tokens" else "wallclock (s)")
        ax.set_ylabel(ylabel + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.grid(alpha=0.3, which="both")
        if shown:
            ax.legend(fontsize=8)
    fig.suptitle(title + "   (thin: training loss)")
    save(fig, path)


def plot_race(
    runs: list[dict], contributions: list[dict], path: str | os.PathLike, title: str = ""
) -> None:
    """A race: every member's validation loss against wall-clock (the chosen members bold,
    the other points of the LR sweeps thin), and each part's contribution in bits/byte.

    ``runs`` items: ``{"label", "records", "chosen"}``; ``contributions`` items:
    ``{"part", "bpb_contribution"}`` (:func:`lm.reports.race.race_report`).
    """
    plt = pyplot()
    fig, (curves, bars) = plt.subplots(
        1, 2, figsize=(15, 5), constrained_layout=True, gridspec_kw={"width_ratios": [2, 1]}
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    shown = []
    for i, run in enumerate(sorted(runs, key=lambda r: r["chosen"])):
        xs, ys = series(run["records"], "wallclock_s", "val_loss")
        ys_ok = [y for y in ys if math.isfinite(y)]
        shown += ys_ok
        if run["chosen"]:
            curves.plot(
                xs, ys, "o-", ms=2.5, lw=1.8, color=colors[i % len(colors)], label=run["label"]
            )
        else:
            curves.plot(xs, ys, "--", lw=0.8, alpha=0.6, color="grey", label=run["label"])
    if shown and log_ok(shown):
        curves.set_yscale("log")
        initial = max(shown)
        curves.set_ylim(0.97 * min(shown), min(initial, 1.6 * min(shown)))
    curves.set_xlabel("wall-clock (s)")
    curves.set_ylabel("validation loss (nats/token)")
    curves.set_title("validation loss against wall-clock", fontsize=10)
    curves.grid(alpha=0.3, which="both")
    curves.legend(fontsize=7)
    done = [c for c in contributions if c.get("bpb_contribution") is not None]
    if done:
        names = [c["part"] for c in done]
        values = [c["bpb_contribution"] for c in done]
        bars.barh(names, values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
        bars.axvline(0, color="k", lw=0.8)
        bars.invert_yaxis()
    bars.set_xlabel("recipe without the part − recipe (bits/byte)")
    bars.set_title("what each part is worth (> 0: it helps)", fontsize=10)
    bars.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    save(fig, path)
