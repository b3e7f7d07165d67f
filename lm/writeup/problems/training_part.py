"""The handout's training part: the learning rate of SGD on a toy problem, and the resource
accounting of training with AdamW (memory, FLOPs per step, days of training)."""

from __future__ import annotations

from lm.writeup.facts import Section
from lm.writeup.problems.model_part import ACCOUNTING
from lm.writeup.problems.spec import Answer, Problem, code, figure, fill

ADAMW_MEMORY = (
    "- parameters {parameters_bytes|x/1e9:.2f} GB, gradients {gradients_bytes|x/1e9:.2f} GB, "
    "optimizer state {optimizer_state_bytes|x/1e9:.2f} GB;"
)
ADAMW_ACTIVATIONS = "- activations {activation_bytes_per_example|x/1e9:.2f} GB per sequence."
ADAMW_BATCH = (
    "**(b)** memory(B) = **{memory_formula/evaluated!s}**, so the largest batch in "
    "{memory_budget_gb:g} GB is **{largest_batch}**."
)
ADAMW_STEP = (
    "**(c)** One AdamW step at batch {batch} costs {total|x/1e15:.2f} PFLOP: forward "
    "{forward|x/1e15:.2f} PFLOP, backward twice that ({backward|x/1e15:.2f} PFLOP), and the "
    "update {optimizer|x/1e9:.1f} GFLOP:"
)
ADAMW_DAYS = (
    "**(d)** {steps} steps at batch {batch} are {total_flops:.3g} FLOPs. At "
    "{peak_flops_per_s|x/1e12:g} TFLOP/s peak and {mfu|100*x:.0f}% MFU that is "
    "**{days:,.0f} days** on one GPU."
)


def adamw_accounting(s: Section, a: Answer) -> None:
    """(a) the memory formula, (b) the largest batch, (c) FLOPs per step, (d) days."""
    adamw = a["adamw"]
    s.add(
        f"For {code(adamw.get('model'))} ("
        + fill(s, adamw, "{parameters} parameters P), `float32`, decimal GB."),
        "",
        "**(a)** Peak memory of AdamW training, parameters + gradients + the two moments + "
        "activations (the handout's list, each op keeping its output), as a formula in the batch size B:",
        "",
        "```",
        f"memory(B) = {adamw.get('memory_formula', 'symbolic_bytes')}",
        "```",
        "",
        fill(s, adamw, ADAMW_MEMORY, "memory_formula"),
        fill(s, adamw, ADAMW_ACTIVATIONS, "memory_formula"),
        "",
        fill(s, adamw, ADAMW_BATCH),
        "",
        fill(s, adamw, ADAMW_STEP, "step_flops"),
        "",
        "```",
        f"FLOPs per step = {adamw.get('step_flops', 'formula')}",
        "```",
        "",
        fill(s, adamw, ADAMW_DAYS, "training"),
    )
    s.cite(adamw.path)


def _toy_outcome(s: Section, a: Answer, i: int, run: dict) -> str:
    """What the loss does at the toy's ``i``-th learning rate."""
    rep = a["report"]
    if run["outcome"] == "diverges":
        return "the loss grows: each step overshoots further" + (
            fill(s, rep, " (to {final_over_initial:.3g}x its start)", "runs", i)
            if run.get("final_over_initial") is not None
            else ""
        )
    if run["outcome"] == "collapses":
        return fill(
            s, rep, "the loss falls to about zero by iteration {collapsed_at_iteration}", "runs", i
        )
    if run["outcome"] == "decays":
        return fill(
            s, rep, "the loss falls steadily, to {final_over_initial:.3g} of its start", "runs", i
        )
    return "the loss does not move"


def sgd_toy(s: Section, a: Answer) -> None:
    """Each learning rate of the toy and what its loss does, and the plot."""
    rep = a["report"]
    s.add(
        fill(s, rep, "The toy: {problem!s}, for {iterations} iterations (seed {seed}):"),
        "",
    )
    for i, r in enumerate(rep.get("runs")):
        lr = s.num(rep, "runs", i, "lr", fmt="g")
        s.add(f"- lr {lr}: **{r['outcome']}**: {_toy_outcome(s, a, i, r)}.")
    figure(s, a.role.get("curves"), "loss per iteration of the SGD toy")


LEARNING_RATE_TUNING = Problem(
    "learning_rate_tuning",
    "Tuning the learning rate (the SGD toy)",
    role="lr_tuning",
    kind=sgd_toy,
    unset="the SGD toy is not part of any target.",
    elsewhere="the SGD toy {name}",
    needs={"report": ("report",)},
    missing="the learning-rate toy report",
)
ADAMW_ACCOUNTING = Problem(
    "adamwAccounting",
    "Resource accounting for training with AdamW",
    kind=adamw_accounting,
    **ACCOUNTING,
)

PROBLEMS = (LEARNING_RATE_TUNING, ADAMW_ACCOUNTING)
