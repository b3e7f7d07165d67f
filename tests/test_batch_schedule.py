"""Batch-size warmup (training.batch_warmup_steps, batch_warmup_start): the batch of each
step against a plain re-implementation, the tokens and steps it implies, the config and its
checks, the budget's plan, and a real run that trains on exactly those batches and counts
exactly those tokens."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import micro_run, micro_tokens

from lm.errors import LMError
from lm.training import batch_schedule as bs
from lm.training import budget as wall
from lm.training.clock import WallClock
from lm.training.config import resolve_run, resolve_runs
from lm.training.distributed import SINGLE
from lm.training.loop import train
from lm.training.run_config import RunConfig, resume_differences


def _resolved(name: str, **training) -> RunConfig:
    spec = micro_run(name, **training)
    del spec["name"]
    return resolve_run(name, spec)


SHAPES = [(32, 10, 8), (32, 7, 3), (12, 50, 4), (8, 1, 2), (64, 100, 16), (5, 4, 5), (6, 9, 1)]


def _reference_batch(t: int, batch: int, warmup: int, start: int) -> int:
    """The documented rule with exact fractions: a linear ramp from start at step 1
    towards batch at step warmup + 1, rounded down to a multiple of start; then batch."""
    if t > warmup:
        return batch
    raw = start + Fraction(batch - start, warmup) * (t - 1)
    return min(batch, start * (raw // start))


@pytest.mark.parametrize("batch,warmup,start", SHAPES)
def test_each_steps_batch_is_the_documented_ramp(batch, warmup, start):
    sizes = [bs.batch_size_at(t, batch, warmup, start) for t in range(1, warmup + 5)]
    assert sizes == [_reference_batch(t, batch, warmup, start) for t in range(1, warmup + 5)]
    assert sizes[0] == start and sizes[warmup:] == [batch] * 4
    assert sizes == sorted(sizes)
    assert all(b % start == 0 or b == batch for b in sizes)
    assert len(set(sizes)) <= -(-batch // start) + 1  # few shapes for a compiled step


@pytest.mark.parametrize("batch,warmup,start", SHAPES)
def test_tokens_and_the_steps_a_token_budget_needs(batch, warmup, start):
    ctx = 16

    def summed(n):
        return ctx * sum(_reference_batch(t, batch, warmup, start) for t in range(1, n + 1))

    for n in range(0, warmup + 6):
        assert bs.tokens_through(n, batch, warmup, start, ctx) == summed(n)
    for total in range(1, summed(warmup + 5), 7):
        n = bs.steps_for_tokens(total, batch, warmup, start, ctx)
        assert summed(n) >= total and (n == 1 or summed(n - 1) < total), total
    # the time of 3 full-batch steps: the warmup steps whose batches sum to 3 full ones
    for full in (1, 3, warmup + 2):
        n = bs.steps_in_time_of(full, batch, warmup, start)
        assert summed(n) <= full * batch * ctx < summed(n + 1)


def test_the_warmup_is_checked_where_it_is_set():
    bs.check_batch_warmup(32, 0, 64, 3)  # no warmup: nothing to check
    with pytest.raises(LMError, match=r"batch_warmup_start 64 is above batch_size 32"):
        bs.check_batch_warmup(32, 10, 64, 1)
    with pytest.raises(LMError, match=r"does not divide evenly over the 2 processes"):
        bs.check_batch_warmup(32, 10, 3, 2)
    assert bs.warmup_start(32, None) == 8 and bs.warmup_start(3, None) == 1
    spec = micro_run("bw", steps=10, batch_warmup_steps=5, batch_warmup_start=16)
    with pytest.raises(LMError, match=r"runs\.bw\.training\.batch_warmup_start 16 is above"):
        resolve_runs({"runs": {"bw": {k: v for k, v in spec.items() if k != "name"}}})


def test_config_writes_the_warmup_only_when_set_and_a_token_budget_counts_it():
    plain = _resolved("p", total_tokens=16 * 8 * 20)
    assert plain.training.steps == 20
    assert not {"batch_warmup_steps", "batch_warmup_start"} & set(plain.to_dict()["training"])
    assert [plain.batch_size_at(t) for t in (1, 20)] == [8, 8]
    run = _resolved("w", total_tokens=16 * 8 * 20, batch_warmup_steps=6)
    assert run.to_dict()["training"]["batch_warmup_steps"] == 6
    assert [run.batch_size_at(t) for t in range(1, 8)] == [2, 2, 4, 4, 6, 6, 8]
    # 160 sequences: the warmup's 6 steps take 24, the 136 left are 17 full steps
    assert run.training.steps == 23
    assert run.tokens_through(23) >= 16 * 8 * 20 > run.tokens_through(22)
    assert RunConfig.from_dict(json.loads(json.dumps(run.to_dict()))) == run
    assert resume_differences(plain.to_dict(), run.replace(name="p").to_dict()) == [
        "schedule.cosine_cycle_iters",  # the longer run's schedule ends later
        "training.batch_warmup_steps",
        "training.steps",
    ]


def test_a_budget_plans_the_cheaper_warmup_steps_in():
    def plan(**training):
        run = _resolved("b", max_wallclock_minutes=1, **training)
        budget = wall.Budget(
            60.0, log_every=10, clock=WallClock(0.0), dist=SINGLE, device=torch.device("cpu")
        )
        return budget.plan(run, timed_steps=10, timed_s=0.1, eval_s=0.0, checkpoint_s=0.0,
                           started=0.0)["steps"]  # fmt: skip

    full = plan()
    warm = plan(batch_warmup_steps=100, batch_warmup_start=2)
    saved = sum(1 - bs.batch_size_at(t, 8, 100, 2) / 8 for t in range(1, 101))  # in full steps
    assert warm == bs.steps_in_time_of(full, 8, 100, 2)
    assert abs(warm - (full + saved)) <= 1


def test_a_run_trains_on_the_warmups_batches_and_counts_their_tokens(tmp_path):
    """Step 1 is the loss of the first 2 windows of the batch stream (computed here from
    the model as built and the stream's first draws); every record's tokens are the
    batches' sum; result.json's too."""
    train_npy, valid_npy = micro_tokens(tmp_path)
    run = _resolved(
        "w", steps=12, log_every=1, eval_every=6, batch_warmup_steps=6, batch_warmup_start=2
    )
    result = train(run, train_npy, valid_npy, tmp_path / "out", progress=False)
    records = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().split("\n")[:-1]]  # fmt: skip
    ctx = run.model.context_length
    sizes = [bs.batch_size_at(t, 8, 6, 2) for t in range(1, 13)]
    assert sizes == [2, 2, 4, 4, 6, 6, 8, 8, 8, 8, 8, 8]
    for r in records:
        assert r["tokens"] == ctx * sum(sizes[: r["step"]]), r
    assert result["tokens"] == ctx * sum(sizes) == run.tokens_through(12)

    torch.manual_seed(run.training.seed)
    model = run.model.build()
    data = np.load(train_npy)
    starts = np.random.default_rng(run.training.seed).integers(0, len(data) - ctx, size=2)
    x = torch.tensor(np.stack([data[s : s + ctx] for s in starts]).astype(np.int64))
    y = torch.tensor(np.stack([data[s + 1 : s + ctx + 1] for s in starts]).astype(np.int64))
    with torch.no_grad():
        first = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    step1 = next(r for r in records if r["step"] == 1)
    assert step1["train_loss"] == pytest.approx(first, rel=1e-5)
