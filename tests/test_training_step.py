"""One training step: the batch of the run's stream, the update, the timings, and the
snapshot that lets a calibration leave no trace."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lm.model.config import ModelConfig
from lm.training import AdamW
from lm.training.clock import Phases
from lm.training.distributed import SINGLE
from lm.training.functional import cross_entropy
from lm.training.state import PHASES
from lm.training.step import TrainStep, forward_loss, next_batch

SHAPE = dict(vocab_size=32, context_length=8, d_model=16, num_layers=1, num_heads=2, d_ff=32)
DATA = (np.arange(2_000) * 5 % 32).astype(np.uint16)


def _step(seed=0, clip=1.0):
    torch.manual_seed(seed)
    model = ModelConfig(**SHAPE).build()
    optimizer = AdamW(model.parameters(), lr=0.0)
    phases = Phases(dict.fromkeys(PHASES, 0.0))
    step = TrainStep(
        model, forward_loss(model, None, "cpu", compile=False), optimizer, DATA,
        np.random.default_rng(seed), batch_size=4, context_length=8, clip=clip,
        dist=SINGLE, device=torch.device("cpu"), phases=phases,
    )  # fmt: skip
    return step, model, phases


def test_a_step_trains_on_the_streams_next_batch_at_the_given_rate():
    step, model, phases = _step()
    x, y = next_batch(DATA, 4, 8, torch.device("cpu"), np.random.default_rng(0))
    expected = cross_entropy(model(x), y).item()  # the batch the step draws first
    before = [p.detach().clone() for p in model.parameters()]
    loss, norm = step(0.01)
    assert loss.dtype == torch.float32 and loss.dim() == norm.dim() == 0
    assert loss.item() == expected and norm.item() > 0
    assert all(g["lr"] == 0.01 for g in step.optimizer.param_groups)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step
    assert phases.totals["data"] > 0 and phases.totals["compute"] > 0
    assert phases.totals["eval"] == phases.totals["checkpoint"] == 0


def test_a_step_of_a_smaller_batch_draws_that_many_windows():
    """step(lr, batch): a batch-size warmup's step, the stream's next ``batch`` windows;
    the stream goes on from there."""
    step, model, _ = _step()
    rng = np.random.default_rng(0)
    x, y = next_batch(DATA, 2, 8, torch.device("cpu"), rng)
    assert x.shape == (2, 8)
    expected = cross_entropy(model(x), y).item()
    assert step(0.0, 2)[0].item() == expected
    x, y = next_batch(DATA, 4, 8, torch.device("cpu"), rng)
    assert step(0.0)[0].item() == cross_entropy(model(x), y).item()


def test_the_norm_is_before_clipping():
    clipped, _, _ = _step(clip=1e-3)
    free, _, _ = _step(clip=math.inf)
    assert clipped(0.01)[1].item() == free(0.01)[1].item() > 1e-3


def test_a_snapshot_restored_leaves_no_trace_of_the_steps_between():
    plain, plain_model, _ = _step()
    calibrated, model, _ = _step()
    snapshot = calibrated.snapshot()
    drawn = torch.rand(3)  # what the global stream gives next, at the snapshot
    for _ in range(3):
        calibrated.waited()
        calibrated(0.05)
    torch.rand(5)
    calibrated.restore(snapshot)
    assert torch.equal(torch.rand(3), drawn)
    a = [plain(0.01)[0].item() for _ in range(3)]  # the same batches, the same updates
    b = [calibrated(0.01)[0].item() for _ in range(3)]
    assert a == b
    for p, q in zip(plain_model.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "options",
    [{}, {"logit_softcap": 2.0, "tie_embeddings": True, "value_residual": True, "num_layers": 2}],
    ids=str,
)
def test_a_chunked_loss_is_the_plain_loss_with_the_same_gradients(options):
    """training.loss_chunk: the model stops before its head, the head and the loss go a
    chunk at a time; loss and every parameter's gradient equal the plain step's (the
    recipe's options too: the chunked loss soft-caps as the model's head does)."""
    torch.manual_seed(0)
    model = ModelConfig(**{**SHAPE, **options}).build()
    x, y = next_batch(DATA, 4, 8, torch.device("cpu"), np.random.default_rng(0))
    grads = []
    for chunk in (0, 5):
        model.zero_grad()
        loss = forward_loss(model, None, "cpu", compile=False, loss_chunk=chunk)(x, y)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (plain, plain_grads), (chunked, chunked_grads) = grads
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-6)
    for a, b in zip(chunked_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert model(x, head=False).shape == (4, 8, SHAPE["d_model"])
