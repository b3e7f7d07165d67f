"""One training step: the next batch of the run's stream, forward and loss, backward,
clipping, the optimizer step.

:func:`forward_loss` is the one definition of a step's forward and loss (the loop's, and
``benchmarks/bench_gpu.py``'s); :class:`TrainStep` is the step itself, with the snapshot
that lets a budget's calibration run steps and leave no trace of them.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from lm.training import checkpoint as ckpt
from lm.training.data import gather_windows
from lm.training.functional import chunked_cross_entropy, cross_entropy, gradient_clipping


def forward_loss(
    module, amp_dtype: torch.dtype | None, device_type: str, compile: bool, loss_chunk: int = 0
):
    """The run's loss of a batch, ``loss_of(x, y)``: the forward under autocast (when
    ``amp_dtype``), then the float32 cross-entropy; compiled together when asked, so the
    loss over all the logits (a small model's largest tensors) is fused with the forward.
    With ``loss_chunk`` tokens, the model stops before its head and the head and the loss
    run a chunk at a time (:func:`chunked_cross_entropy`, with the model's logit soft-cap):
    the logits of the whole batch are never made. The one definition of a training step's
    forward, used by the loop and bench_gpu.py."""
    if loss_chunk:
        model = ckpt.unwrap(getattr(module, "module", module))  # under DDP too
        head, cap = model.lm_head, getattr(model, "logit_softcap", None)

        def loss_of(x, y):
            with torch.autocast(
                device_type=device_type, dtype=amp_dtype, enabled=amp_dtype is not None
            ):
                hidden = module(x, head=False)
                return chunked_cross_entropy(hidden, head.weight, y, loss_chunk, cap)

    elif amp_dtype is None:

        def loss_of(x, y):
            return cross_entropy(module(x), y)

    else:

        def loss_of(x, y):
            with torch.autocast(device_type=device_type, dtype=amp_dtype):
                logits = module(x)
            return cross_entropy(logits, y)

    return torch.compile(loss_of) if compile else loss_of


def next_batch(data, batch_size, context_length, device, rng, shard=slice(None)):
    """The global batch's window starts, drawn from the run's stream; this rank's slice of them."""
    starts = rng.integers(0, len(data) - context_length, size=batch_size)
    return gather_windows(data, starts[shard], context_length, device)


class TrainStep:
    """``step(lr)``: one optimizer step of ``model`` at learning rate ``lr`` on the next
    global batch (``batch_size`` windows of ``context_length`` tokens of ``data``, drawn
    from ``batch_rng``; this rank's slice of it under DDP). ``loss_of`` is the step's
    forward and loss (:func:`forward_loss`; of the DDP wrapper under DDP), ``clip`` the
    gradient norm bound (``math.inf``: none). Returns the loss and the gradient norm before
    clipping, as 0-d float32 tensors left on the device. The time of the batch and of the
    rest is added to ``phases`` (:class:`lm.training.clock.Phases`) as data and compute;
    ``sync_timing`` waits for CUDA at their boundary, so that the split is exact.
    ``step(lr, batch)`` trains on a global batch of ``batch`` windows instead (a batch-size
    warmup's; a multiple of the process count)."""

    def __init__(
        self, model, loss_of, optimizer, data, batch_rng: np.random.Generator, *,
        batch_size, context_length, clip, dist, device, phases, sync_timing=False,
    ):  # fmt: skip
        self.model, self.loss_of, self.optimizer = model, loss_of, optimizer
        self.data, self.batch_rng = data, batch_rng
        self.batch_size, self.context_length, self.clip = batch_size, context_length, clip
        self.dist, self.device, self.phases = dist, device, phases
        self.sync_timing = sync_timing and device.type == "cuda"
        self.shard = dist.shard(batch_size)

    def _sync(self) -> None:
        if self.sync_timing:
            torch.cuda.synchronize(self.device)

    def __call__(self, lr: float, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = time.perf_counter()
        batch = batch or self.batch_size
        shard = self.shard if batch == self.batch_size else self.dist.shard(batch)
        x, y = next_batch(self.data, batch, self.context_length, self.device, self.batch_rng, shard)
        self._sync()
        t1 = time.perf_counter()
        for group in self.optimizer.param_groups:  # a Muon group runs at a multiple
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with self.dist.guard("averaging gradients"):
            loss = self.loss_of(x, y)
            loss.backward()
        norm = gradient_clipping(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss, norm = loss.detach().float(), norm.detach().float()
        self._sync()
        t2 = time.perf_counter()
        self.phases.add("data", t1 - t0)
        self.phases.add("compute", t2 - t1)
        return loss, norm

    def waited(self) -> None:
        """One step at learning rate 0, its loss waited for: what a calibration times."""
        self(0.0)[0].item()

    def snapshot(self) -> dict:
        """What a step changes: the model, the optimizer, the batch stream and the global
        random states (copies); :meth:`restore` puts them back."""
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "batch": copy.deepcopy(self.batch_rng.bit_generator.state),
            "rng": ckpt.rng_state(),
        }

    def restore(self, snapshot: dict) -> None:
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.batch_rng.bit_generator.state = snapshot["batch"]
        ckpt.set_rng_state(snapshot["rng"])
