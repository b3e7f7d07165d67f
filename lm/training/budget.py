"""Wall-clock budgets: how many steps fit, and the schedule that ends there.

A run with ``training.max_wallclock_minutes`` is planned in three moves by the loop:

1. **Measure.** After the step-0 evaluation, the loop runs a few calibration steps (the
   first ones absorb torch.compile and allocator warm-up, the rest are timed), times one
   more evaluation (the first included compiling it), puts the model, the optimizer and
   every random state back exactly as they were, so the calibration leaves no trace in the
   run's numbers, and writes a step-0 checkpoint, timed (a large model's checkpoint takes
   seconds: measured 3 s for the GPT-2-small shape with its AdamW state on an H200 machine).
2. **Plan.** :func:`plan_steps` fixes the number of steps so that training, the periodic
   evaluations and checkpoints, and the final evaluation and checkpoint end at the budget
   (a safety margin kept back); ``training.steps``/``total_tokens``, when set, cap it.
   A batch-size warmup's steps count at their batch's share of a full step's time.
   :func:`plan_schedule` then sets warmup (``warmup_ratio`` of the planned steps) and the
   cosine decay to end on the last planned step. The plan is saved in every checkpoint:
   a resumed run keeps it, so its learning rates are those of an uninterrupted one, and a
   run is reproduced exactly by giving its planned ``steps`` (result.json) without a budget.
3. **Stop.** Whatever the plan, the loop stops when the next steps and the final evaluation
   would cross the budget, then evaluates and checkpoints; result.json records the budget,
   the steps planned and reached, and why it stopped. Time spent by a killed session after
   its last checkpoint still counts (read back from metrics.jsonl).

Everything the budget counts is the loop's wall clock: calibration, training, evaluation
and checkpoints, over all sessions; setup (imports, opening data, building the model) is
not counted, as in result.json's ``wallclock_s``.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from lm.errors import LMError
from lm.training import batch_schedule
from lm.training.run_config import RunConfig

#: Calibration: untimed warm-up steps (torch.compile happens there, however long it takes),
#: then timed steps until both minimums are reached (or their time reaches the cap, a share
#: of the budget); then one more evaluation, timed warm.
WARMUP_STEPS = 3
MIN_TIMED_STEPS = 10
MIN_TIMED_S = 2.0
MAX_CALIBRATION_SHARE = 0.05
#: Kept back from the budget for timing noise.
SAFETY_SHARE = 0.03


def plan_schedule(run: RunConfig, steps: int) -> dict:
    """``{"steps", "warmup_iters", "cosine_cycle_iters"}`` of a run trained for ``steps``.

    A resolved run without a budget already has all three; a budgeted one has
    ``warmup_ratio`` (or ``warmup_iters``) and usually no ``cosine_cycle_iters``.
    """
    sched = run.schedule
    warmup = sched.warmup_iters
    if warmup is None:
        warmup = round((sched.warmup_ratio or 0.0) * steps)
    cosine = sched.cosine_cycle_iters or steps
    return {"steps": steps, "warmup_iters": min(warmup, cosine), "cosine_cycle_iters": cosine}


def plan_steps(
    *,
    budget_s: float,
    spent_s: float,
    step_s: float,
    eval_s: float,
    checkpoint_s: float,
    eval_every: int,
    checkpoint_every: int,
    max_steps: int | None,
) -> int:
    """The number of steps that fits in what is left of the budget.

    Each step costs ``step_s`` plus its share of the periodic evaluations and checkpoints;
    the final evaluation and checkpoint and a safety margin are kept back. At least one
    step; at most ``max_steps`` when set.
    """
    if step_s <= 0:
        raise LMError(f"cannot plan a budget from a measured step time of {step_s} s")
    left = budget_s * (1 - SAFETY_SHARE) - spent_s - eval_s - checkpoint_s
    per_step = step_s + eval_s / eval_every + checkpoint_s / checkpoint_every
    steps = max(1, math.floor(left / per_step))
    return min(steps, max_steps) if max_steps else steps


def spent_before(metrics_path: Path, checkpoint_elapsed: float) -> float:
    """Wall clock already spent by earlier sessions: the checkpoint's, or later, the last
    line a killed session wrote to metrics.jsonl after that checkpoint."""
    spent = checkpoint_elapsed
    if metrics_path.is_file():
        with open(metrics_path, encoding="utf-8") as f:
            for line in f:
                try:
                    spent = max(spent, float(json.loads(line).get("wallclock_s") or 0.0))
                except (ValueError, AttributeError):
                    continue  # a line cut short by the kill
    return spent


class Budget:
    """A run's wall-clock budget while it trains: ``seconds`` (None: the run has none),
    read on ``clock`` (the run's :class:`lm.training.clock.WallClock`). Its decisions are
    rank 0's, shared with every rank through ``dist`` (on ``device``), so all stop together."""

    def __init__(self, seconds: float | None, *, log_every: int, clock, dist, device):
        self.seconds, self.log_every = seconds, log_every
        self.clock, self.dist, self.device = clock, dist, device

    def time_steps(self, step: Callable[[], None]) -> tuple[int, float]:
        """Calibration's measurement: ``step()`` (one training step, waited for) run
        WARMUP_STEPS times untimed, then timed until MIN_TIMED_STEPS and MIN_TIMED_S are
        both reached or the timed seconds reach MAX_CALIBRATION_SHARE of the budget.
        Returns ``(timed steps, their seconds)``."""
        cap = MAX_CALIBRATION_SHARE * self.seconds  # of timed steps; compiling comes before
        timed_steps, timed_s = 0, 0.0
        for i in itertools.count():
            t = time.perf_counter()
            step()
            if i < WARMUP_STEPS:
                continue
            timed_steps, timed_s = timed_steps + 1, timed_s + time.perf_counter() - t
            enough = timed_steps >= MIN_TIMED_STEPS and timed_s >= MIN_TIMED_S
            if self.dist.any(self.dist.main and (enough or timed_s >= cap), self.device):
                return timed_steps, timed_s

    def plan(
        self,
        run: RunConfig,
        *,
        timed_steps: int,
        timed_s: float,
        eval_s: float,
        checkpoint_s: float,
        started: float,
    ) -> dict:
        """The plan (:func:`plan_schedule` of the steps that fit, see :func:`plan_steps`) of
        the measured step, evaluation and checkpoint times, with the measurement (the
        calibration began at ``started``, a ``time.perf_counter()``)."""
        step_s = timed_s / timed_steps
        steps = plan_steps(
            budget_s=self.seconds,
            spent_s=self.clock(),
            step_s=step_s,
            eval_s=eval_s,
            checkpoint_s=checkpoint_s,
            eval_every=run.training.eval_every,
            checkpoint_every=run.training.checkpoint_every,
            max_steps=None,
        )
        t = run.training
        if t.batch_warmup_steps:  # a warmup step takes its batch's share of a full one
            start = batch_schedule.warmup_start(t.batch_size, t.batch_warmup_start)
            steps = batch_schedule.steps_in_time_of(
                steps, t.batch_size, t.batch_warmup_steps, start
            )
        steps = max(1, min(steps, t.steps) if t.steps else steps)
        return {
            **plan_schedule(run, steps),
            "seconds_per_step": round(step_s, 6),
            "eval_s": round(eval_s, 4),
            "calibration_s": round(time.perf_counter() - started, 3),
            "calibration_steps": WARMUP_STEPS + timed_steps,
        }

    def out_of_time(self, step: int, plan: dict, *, eval_s: float, checkpoint_s: float) -> bool:
        """Would the steps up to the next check (the next logging step), then the final
        evaluation and checkpoint (the longer of the last and the planned evaluation time,
        the last checkpoint time), cross the budget? Checked at logging steps only."""
        if self.seconds is None or step % self.log_every:
            return False
        ahead = self.log_every * plan["seconds_per_step"]
        final = max(eval_s, plan["eval_s"]) + checkpoint_s
        late = self.clock() + ahead + final > self.seconds
        return self.dist.any(late and self.dist.main, self.device)
