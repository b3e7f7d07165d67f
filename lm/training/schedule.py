"""Learning-rate schedules: linear warmup, then either cosine decay to a floor (``cosine``,
the default), or a constant rate and a decay over the last part of the run to the floor
(``wsd``, warmup-stable-decay); then flat at the floor."""

from __future__ import annotations

import math

from lm.errors import LMError

SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("linear", "1-sqrt")


def get_lr_cosine_schedule(
    it: int, max_lr: float, min_lr: float, warmup_iters: int, cosine_cycle_iters: int
) -> float:
    """Learning rate at iteration ``it`` (counting from 0).

    - warmup, ``it < warmup_iters``: ``it / warmup_iters * max_lr`` (0 at it=0)
    - cosine, ``warmup_iters <= it <= cosine_cycle_iters``:
      ``min_lr + (1 + cos(pi * (it - warmup_iters) / (cosine_cycle_iters - warmup_iters))) / 2 * (max_lr - min_lr)``
    - after, ``it > cosine_cycle_iters``: ``min_lr``
    """
    if it < warmup_iters:
        return it / warmup_iters * max_lr
    if it > cosine_cycle_iters:
        return min_lr
    span = cosine_cycle_iters - warmup_iters
    if span <= 0:  # no room for a cosine: warmup ends right at the cycle's end
        return max_lr if it == warmup_iters else min_lr
    progress = (it - warmup_iters) / span
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def get_lr_wsd_schedule(
    it: int,
    max_lr: float,
    min_lr: float,
    warmup_iters: int,
    decay_end_iters: int,
    decay_fraction: float,
    decay_shape: str = "linear",
) -> float:
    """Warmup-stable-decay ("trapezoidal") learning rate at iteration ``it`` (from 0).

    - warmup, ``it < warmup_iters``: ``it / warmup_iters * max_lr``, as the cosine's
    - stable, up to the decay's start ``s = max(warmup_iters, (1 - decay_fraction) * decay_end_iters)``:
      ``max_lr``
    - decay, ``s < it < decay_end_iters``: ``min_lr + f(p) * (max_lr - min_lr)`` with
      ``p = (it - s) / (decay_end_iters - s)`` and ``f(p) = 1 - p`` (``linear``) or
      ``1 - sqrt(p)`` (``1-sqrt``: falls fast at first, then slowly into the floor)
    - after, ``it >= decay_end_iters``: ``min_lr``

    So the decay takes the last ``decay_fraction`` of the ``decay_end_iters`` steps (the
    run's steps, as a cosine's cycle): a run may be continued from a checkpoint taken
    before the decay at its constant rate, and only the decay repeated.
    """
    if decay_shape not in DECAY_SHAPES:
        raise LMError(f"decay_shape must be one of {', '.join(DECAY_SHAPES)}, got {decay_shape!r}")
    if it < warmup_iters:
        return it / warmup_iters * max_lr
    if it >= decay_end_iters:
        return min_lr
    start = max(float(warmup_iters), (1.0 - decay_fraction) * decay_end_iters)
    if it <= start:
        return max_lr
    progress = (it - start) / (decay_end_iters - start)
    factor = 1.0 - progress if decay_shape == "linear" else 1.0 - math.sqrt(progress)
    return min_lr + factor * (max_lr - min_lr)


def scheduled_lr(it: int, schedule, max_lr: float, min_lr: float, plan: dict) -> float:
    """The learning rate of step ``it`` of a run whose ``schedule`` section
    (:class:`lm.training.run_config.ScheduleConfig`) names the shape and whose ``plan``
    (:func:`lm.training.budget.plan_schedule`) holds its warmup and its end."""
    warmup, end = plan["warmup_iters"], plan["cosine_cycle_iters"]
    if schedule.name == "cosine":
        return get_lr_cosine_schedule(it, max_lr, min_lr, warmup, end)
    if schedule.name == "wsd":
        return get_lr_wsd_schedule(
            it, max_lr, min_lr, warmup, end, schedule.decay_fraction, schedule.decay_shape
        )
    raise LMError(f"schedule.name must be one of {', '.join(SCHEDULES)}, got {schedule.name!r}")
