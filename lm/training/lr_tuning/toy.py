"""The CS336 learning-rate toy: SGD with a 1/sqrt(t) decay on ``mean(w**2)``.

A 10x10 weight starts at ``5 * randn`` (seeded) and SGD steps ``w -= lr / sqrt(t + 1) * grad``
(t counting from 0) for a few iterations at each learning rate. The loss is
``mean(w**2)``, so its gradient is ``w / 50`` and every step multiplies w by
``1 - lr / (50 * sqrt(t + 1))``: at lr 10 the factor is just below 1 (slow decay), at lr
100 it hits 0 at t = 3 (the loss collapses to ~0), at lr 1000 its magnitude is ~20
(divergence). The report classifies each lr from the numbers, not from this argument.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from lm.io import write_json, write_text
from lm.plotting import pyplot, save
from lm.provenance import with_provenance

COLLAPSE = 1e-6  # final/initial loss below this: collapsed to ~0


class SGD(torch.optim.Optimizer):
    """SGD whose step size decays as lr / sqrt(t + 1), the handout's example optimizer."""

    def __init__(self, params, lr: float = 1e-3):
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = state.get("t", 0)
                p -= group["lr"] / math.sqrt(t + 1) * p.grad
                state["t"] = t + 1
        return loss


def run_toy(lr: float, iterations: int = 10, seed: int = 0) -> list[float]:
    """Loss before each SGD iteration at learning rate ``lr``."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.nn.Parameter(5 * torch.randn((10, 10), generator=gen))
    opt = SGD([weights], lr=lr)
    losses = []
    for _ in range(iterations):
        opt.zero_grad()
        loss = (weights**2).mean()
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses


def classify(losses: list[float]) -> str:
    """decays | collapses | diverges | flat, from the loss values alone."""
    first, last = losses[0], losses[-1]
    if not all(math.isfinite(v) for v in losses) or last > first:
        return "diverges"
    if last <= COLLAPSE * first:
        return "collapses"
    if last < first:
        return "decays"
    return "flat"


def lr_tuning(
    out: str | os.PathLike, lrs=(1e1, 1e2, 1e3), iterations: int = 10, seed: int = 0
) -> dict:
    """Run the toy at each lr; write report.json, report.md and curves.png under ``out``."""
    out = Path(out)
    rows = []
    for lr in lrs:
        losses = run_toy(lr, iterations, seed)
        outcome = classify(losses)
        below = [i for i, v in enumerate(losses) if v <= COLLAPSE * losses[0]]
        rows.append(
            {
                "lr": lr,
                "outcome": outcome,
                "losses": [v if math.isfinite(v) else None for v in losses],
                "initial_loss": losses[0],
                "final_loss": losses[-1] if math.isfinite(losses[-1]) else None,
                "final_over_initial": losses[-1] / losses[0] if math.isfinite(losses[-1]) else None,
                "collapsed_at_iteration": below[0] if below else None,
            }
        )
    report = {
        "problem": "minimise mean(w**2), w = 5*randn(10, 10); SGD step w -= lr/sqrt(t+1) * grad",
        "seed": seed,
        "iterations": iterations,
        "runs": rows,
    }
    report = with_provenance(report, "lr-tuning")
    write_json(out / "report.json", report)
    plot_lr_tuning(
        {f"{r['lr']:g}": [v if v is not None else math.inf for v in r["losses"]] for r in rows},
        out / "curves.png",
    )

    lines = [
        "# Learning-rate tuning toy (CS336 assignment 1)",
        "",
        f"SGD with step size lr/sqrt(t+1) on loss = mean(w²), w a 10×10 weight initialised to "
        f"5·randn (torch seed {seed}), {iterations} iterations. Loss before each iteration:",
        "",
        "| iteration | " + " | ".join(f"lr = {r['lr']:g}" for r in rows) + " |",
        "| ---: | " + " | ".join("---:" for _ in rows) + " |",
    ]
    for i in range(iterations):
        cells = [f"{r['losses'][i]:.4g}" if r["losses"][i] is not None else "inf/nan" for r in rows]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines += ["", "## Outcome", ""]
    for r in rows:
        detail = {
            "decays": f"the loss falls steadily, to {r['final_over_initial']:.3g} of its start",
            "collapses": f"the loss drops to ~0 (below {COLLAPSE:g} of its start) by iteration {r['collapsed_at_iteration']}",
            "diverges": "the loss grows: the step overshoots more each iteration"
            + (
                f" (to {r['final_over_initial']:.3g}× its start)" if r["final_over_initial"] else ""
            ),
            "flat": "the loss does not move",
        }[r["outcome"]]
        lines.append(f"- **lr = {r['lr']:g}: {r['outcome']}** — {detail}.")
    lines += [
        "",
        "Each step multiplies w by 1 − lr/(50·sqrt(t+1)) (the gradient of mean(w²) is w/50): a factor "
        "near 1 decays slowly, near 0 collapses, and far below −1 diverges.",
        "",
        "![loss per iteration](curves.png)",
        "",
    ]
    write_text(out / "report.md", "\n".join(lines))
    return report


def plot_lr_tuning(
    losses: dict[str, list[float]], path: str | os.PathLike, floor: float = 1e-30
) -> None:
    """Loss per iteration for each learning rate, log scale (exact zeros drawn at ``floor``)."""
    plt = pyplot()
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
    save(fig, path)
