"""A run's metrics: one record per logged step, written to ``metrics.jsonl`` and sent on.

:class:`Recorder` keeps the train losses and gradient norms of the steps since the last
record (on the device, so a step never waits for the host), and its :meth:`Recorder.record`
makes a logged step's record: the means over those steps (and over the ranks under DDP),
the tokens per second since the last record, the divergence check (:func:`divergence`);
then appends the record to ``metrics.jsonl`` (flushed: a killed run loses nothing logged),
shows it on the progress line, and hands it to every *sink*.

A sink is any object with ``log(record: dict) -> None`` and ``close() -> None``; rank 0
gets the run's sinks, the other ranks none (:mod:`lm.training.trackers`: Weights & Biases,
TensorBoard).

A record::

    {"step", "tokens", "wallclock_s", "lr", "train_loss", "val_loss", "grad_norm", "tokens_per_s"}

with None for what the step did not measure (``val_loss`` between evaluations) and for a
non-finite loss (strict JSON; the reason is in result.json).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from lm.io import atomic_open
from lm.progress import progress_bar
from lm.training.trackers import close_sinks

#: The values of a record that a non-finite number is dropped from.
MEASURED = ("train_loss", "val_loss", "grad_norm")


class MetricsFile:
    """metrics.jsonl: rewritten with ``records`` (the checkpoint's) when opened, then
    appended a line at a time and flushed."""

    def __init__(self, path: Path, records: list[dict]):
        self.path = path
        with atomic_open(path, "w", encoding="utf-8") as f:  # exactly the checkpoint's records
            for r in records:
                f.write(json.dumps(r) + "\n")
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def log(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def divergence(
    step: int, train_loss: float | None, val_loss: float | None, *, start, factor
) -> str | None:
    """Why the run diverged at ``step``, or None: a non-finite loss, or one above ``factor``
    times ``start`` (the initial val loss; no such check when either is None)."""
    for what, value in (("train loss", train_loss), ("val loss", val_loss)):
        if value is None:
            continue
        if not math.isfinite(value):
            return f"{what} is {value} at step {step}"
        if factor is not None and start is not None and value > factor * start:
            return f"{what} {value:.4g} at step {step} is above {factor:g} x the initial val loss {start:.4g}"
    return None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class Recorder:
    """The records of a run: ``state`` (:class:`lm.training.state.LoopState`) holds them and
    the divergence status; ``clock`` is the run's wall clock; ``file`` is rank 0's
    :class:`MetricsFile` (None on the other ranks); ``sinks`` take every record."""

    def __init__(self, state, *, dist, device, clock, divergence_factor, file, sinks: list):
        self.state, self.dist, self.clock = state, dist, clock
        self.factor = divergence_factor
        self.file, self.sinks = file, sinks
        self.losses = [
            torch.tensor(v, dtype=torch.float32, device=device) for v in state.pending_losses
        ]
        self.norms = [
            torch.tensor(v, dtype=torch.float32, device=device) for v in state.pending_norms
        ]
        self.mark = (clock(), state.tokens)  # wall clock and tokens at the last record
        self.bar = None

    def add(self, loss: torch.Tensor, norm: torch.Tensor) -> None:
        """One step's train loss and gradient norm (0-d tensors, left on the device)."""
        self.losses.append(loss)
        self.norms.append(norm)

    def pending(self) -> tuple[list[float], list[float]]:
        """The train losses and grad norms since the last record, averaged over ranks (each
        rank's are of its own slice of the batch), as floats. A collective under DDP."""
        if not self.losses:
            return [], []
        both = self.dist.mean(torch.stack([torch.stack(self.losses), torch.stack(self.norms)]))
        losses, norms = both.tolist()
        return losses, norms

    def clear(self) -> None:
        self.losses.clear()
        self.norms.clear()

    def record(self, step: int, lr: float | None, val_loss: float | None) -> dict:
        """The record of ``step`` (see the module's doc), written and sent on."""
        losses, norms = self.pending()
        self.clear()
        state = self.state
        train_loss, grad_norm = _mean(losses), _mean(norms)
        now = self.clock()
        dt, new_tokens = now - self.mark[0], state.tokens - self.mark[1]
        rate = new_tokens / dt if dt > 0 and new_tokens > 0 else None
        self.mark = (now, state.tokens)
        rec = {
            "step": step,
            "tokens": state.tokens,
            "wallclock_s": round(now, 4),
            "lr": lr,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "grad_norm": grad_norm,
            "tokens_per_s": round(rate, 1) if rate else None,
        }
        start = state.records[0]["val_loss"] if state.records else val_loss
        reason = None
        if state.status != "diverged":
            reason = divergence(step, train_loss, val_loss, start=start, factor=self.factor)
        if reason is not None:
            state.status, state.diverged_step, state.diverged_reason = "diverged", step, reason
        for k in MEASURED:
            if rec[k] is not None and not math.isfinite(rec[k]):
                rec[k] = None  # strict JSON; the reason is in result.json
        state.records.append(rec)
        for sink in ([self.file] if self.file is not None else []) + self.sinks:
            sink.log(rec)
        self._show(rec, val_loss)
        return rec

    def _show(self, rec: dict, val_loss: float | None) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix(
            loss=f"{rec['train_loss']:.3f}" if rec["train_loss"] is not None else "nan",
            **({"val_loss": f"{val_loss:.3f}"} if val_loss is not None else {}),
            **{"tokens/s": f"{rec['tokens_per_s']:,.0f}" if rec["tokens_per_s"] else "-"},
            refresh=False,
        )

    def open_progress(self, total: int, name: str, progress, initial: int) -> None:
        """The progress line of ``total`` steps (``progress``: see lm.progress), from ``initial``."""
        self.bar = progress_bar(total, name, "steps", progress, initial=initial)

    def advance(self) -> None:
        self.bar.update(1)

    def close_progress(self) -> None:
        self.bar.close()
        self.bar = None

    def close(self) -> None:
        """Close metrics.jsonl and every sink."""
        if self.file is not None:
            self.file.close()
        close_sinks(self.sinks)
