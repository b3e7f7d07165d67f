"""Evaluation over a whole split: against a window-by-window F.cross_entropy loop, every
token predicted once, streamed reads, bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lm.errors import LMError
from lm.inference.evaluate import evaluate
from lm.model import TransformerLM

VOCAB, CONTEXT = 50, 8


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TransformerLM(VOCAB, CONTEXT, 32, 2, 4, 64, 10000.0).eval()


def _tokens(tmp_path, n, seed=0):
    ids = np.random.default_rng(seed).integers(0, VOCAB, n).astype(np.uint16)
    np.save(tmp_path / "t.npy", ids)
    return np.load(tmp_path / "t.npy", mmap_mode="r")


def _slow_loss(model, tokens, context):
    """One window at a time: tokens[s : s+C+1] for s = 0, C, 2C, ..., the last one shorter."""
    tokens = torch.from_numpy(np.asarray(tokens).astype(np.int64))
    total, count, windows = 0.0, 0, 0
    with torch.no_grad():
        for s in range(0, len(tokens) - 1, context):
            chunk = tokens[s : s + context + 1]
            logits = model(chunk[:-1][None])[0]
            total += F.cross_entropy(logits, chunk[1:], reduction="sum").item()
            count += len(chunk) - 1
            windows += 1
    return total / count, count, windows


@pytest.mark.parametrize("n", [2, 9, 8 * 5 + 4, 8 * 6 + 1, 101])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_matches_a_window_by_window_loop(model, tmp_path, n, batch_size):
    tokens = _tokens(tmp_path, n)
    result = evaluate(model, tokens, batch_size)
    loss, count, windows = _slow_loss(model, tokens, CONTEXT)
    assert result["tokens_predicted"] == count == n - 1
    assert result["windows"] == windows == math.ceil((n - 1) / CONTEXT)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert result["context_length"] == CONTEXT and result["batch_size"] == batch_size
    assert result["seconds"] >= 0 and set(result) >= {"tokens_per_s"}


def test_a_shorter_context_than_the_model(model, tmp_path):
    tokens = _tokens(tmp_path, 37)
    result = evaluate(model, tokens, 4, context_length=5)
    loss, count, windows = _slow_loss(model, tokens, 5)
    assert (result["tokens_predicted"], result["windows"]) == (count, windows) == (36, 8)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)


class _Recording:
    """A 1-D token array that records every slice read from it."""

    def __init__(self, data):
        self.data, self.ndim, self.reads = data, 1, []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, key):
        assert isinstance(key, slice), "evaluate must read slices, not the whole array"
        self.reads.append((key.start, key.stop))
        return self.data[key]


def test_reads_the_split_a_batch_at_a_time(model, tmp_path):
    n = 8 * 13 + 5
    tokens = _Recording(_tokens(tmp_path, n))
    evaluate(model, tokens, 3)
    assert max(hi - lo for lo, hi in tokens.reads) <= 3 * CONTEXT + 1
    # consecutive reads share exactly their boundary token and cover the split
    assert tokens.reads[0][0] == 0 and tokens.reads[-1][1] == n
    assert all(a[1] - 1 == b[0] for a, b in zip(tokens.reads, tokens.reads[1:], strict=False))


def test_bad_input(model, tmp_path):
    with pytest.raises(LMError, match="at least 2"):
        evaluate(model, np.zeros(1, dtype=np.uint16), 4)
    with pytest.raises(LMError, match="1-D"):
        evaluate(model, np.zeros((4, 4), dtype=np.uint16), 4)
    bad = np.arange(30, dtype=np.uint16) + 30  # ids 30..59, vocab is 50
    with pytest.raises(
        LMError, match=r"token id 5\d \(in tokens .*\) is outside the model's vocabulary"
    ):
        evaluate(model, bad, 4)
    with pytest.raises(LMError, match="context_length"):
        evaluate(model, np.zeros(10, dtype=np.uint16), 4, context_length=CONTEXT + 1)
    with pytest.raises(LMError, match="batch_size"):
        evaluate(model, np.zeros(10, dtype=np.uint16), 0)
