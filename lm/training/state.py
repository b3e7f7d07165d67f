"""The training loop's own state: what a resumed run needs besides the model, the optimizer
and the random streams. Saved whole in every checkpoint (``extra["loop"]``), so its fields
are the checkpoint format: rename none of them."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The phases the loop times (result.json's ``time_breakdown_s``): data = batch sampling and
#: copy, compute = forward, backward, clipping and the optimizer step, log, eval, checkpoint.
PHASES = ("data", "compute", "log", "eval", "checkpoint")


@dataclass
class LoopState:
    """Everything besides model/optimizer/RNG that a resumed run needs; saved in checkpoints."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # wallclock seconds of training so far, over all sessions
    records: list = field(default_factory=list)  # metrics.jsonl lines so far
    pending_losses: list = field(default_factory=list)  # train losses since the last record
    pending_norms: list = field(default_factory=list)
    status: str = "running"  # running | ok | diverged
    diverged_step: int | None = None
    diverged_reason: str | None = None
    timings: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    sessions: int = 0
    plan: dict | None = None  # steps, warmup_iters, cosine_cycle_iters (+ calibration of a budget)
    stop_reason: str | None = None  # steps | budget | diverged
