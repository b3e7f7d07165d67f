"""Learning-rate schedule: linear warmup, then cosine decay to a floor, then flat."""

from __future__ import annotations

import math


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
