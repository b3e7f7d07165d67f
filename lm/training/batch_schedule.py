"""Batch-size warmup: the global batch of each step, and the tokens and steps it implies.

``training.batch_warmup_steps: W`` with ``training.batch_warmup_start: s`` grows the global
batch from ``s`` sequences at step 1 towards ``batch_size`` linearly over the first ``W``
steps, in whole multiples of ``s``; every later step trains on ``batch_size``:

    b(t) = min(batch_size, s · ⌊(s + (batch_size − s)·(t − 1)/W) / s⌋)    for t ≤ W

Multiples of ``s``, so that a compiled step sees at most ``batch_size / s`` shapes and
(with ``s`` a multiple of the process count) every size splits evenly over the processes.
``s`` left unset is a quarter of the batch.
torch-free: resolution turns a token budget into steps with it.
"""

from __future__ import annotations

from lm.errors import LMError


def warmup_start(batch_size: int, start: int | None) -> int:
    """The warmup's first batch: ``start``, or a quarter of ``batch_size`` (at least 1)."""
    return start if start is not None else max(1, batch_size // 4)


def check_batch_warmup(batch_size: int, warmup_steps: int, start: int | None, processes: int,
                       where: str = "training") -> None:  # fmt: skip
    """Raise naming the setting when the warmup cannot be run as given."""
    if not warmup_steps:
        return
    s = warmup_start(batch_size, start)
    if s > batch_size:
        raise LMError(
            f"{where}.batch_warmup_start {s} is above batch_size {batch_size}; the warmup "
            f"grows the batch up to batch_size, so start below it"
        )
    if s % processes:
        raise LMError(
            f"{where}.batch_warmup_start {s} does not divide evenly over the {processes} "
            f"processes; pick a multiple of {processes}"
        )


def batch_size_at(step: int, batch_size: int, warmup_steps: int, start: int) -> int:
    """The global batch of step ``step`` (the first step is 1); see the module's doc."""
    if step > warmup_steps:
        return batch_size
    s, w = start, warmup_steps
    return min(batch_size, s * ((s * w + (batch_size - s) * (step - 1)) // (s * w)))


def warmup_tokens(batch_size: int, warmup_steps: int, start: int, context_length: int) -> int:
    """The tokens of the warmup's steps (all ``warmup_steps`` of them)."""
    return context_length * sum(
        batch_size_at(t, batch_size, warmup_steps, start) for t in range(1, warmup_steps + 1)
    )


def tokens_through(
    steps: int, batch_size: int, warmup_steps: int, start: int, context_length: int
) -> int:
    """The tokens trained on by the end of step ``steps``."""
    if steps > warmup_steps:
        full = (steps - warmup_steps) * batch_size * context_length
        return warmup_tokens(batch_size, warmup_steps, start, context_length) + full
    return context_length * sum(
        batch_size_at(t, batch_size, warmup_steps, start) for t in range(1, steps + 1)
    )


def steps_for_tokens(
    total_tokens: int, batch_size: int, warmup_steps: int, start: int, context_length: int
) -> int:
    """The fewest steps (at least 1) that train on ``total_tokens`` tokens or more."""
    done, step = 0, 0
    while step < warmup_steps and done < total_tokens:
        step += 1
        done += context_length * batch_size_at(step, batch_size, warmup_steps, start)
    if done >= total_tokens:
        return max(1, step)
    full = batch_size * context_length
    return step + -(-(total_tokens - done) // full)


def steps_in_time_of(full_steps: int, batch_size: int, warmup_steps: int, start: int) -> int:
    """How many steps take the time of ``full_steps`` steps at ``batch_size``, counting a
    warmup step's time as its share of the full batch (a step's time is nearly its
    batch's: its matmuls are)."""
    budget, step = full_steps * batch_size, 0  # in sequences
    while step < warmup_steps:
        b = batch_size_at(step + 1, batch_size, warmup_steps, start)
        if b > budget:
            return step
        budget -= b
        step += 1
    return step + budget // batch_size
