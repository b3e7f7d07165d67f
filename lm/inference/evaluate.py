"""Evaluation: the loss and perplexity of a model over a whole token split.

``evaluate(model, tokens, batch_size, context_length, device)`` predicts every token of
the split after the first exactly once. The split is cut into windows of
``context_length + 1`` tokens that share their boundary tokens: window ``i`` covers
``tokens[i*C : i*C + C + 1]``, feeds its first ``C`` tokens and predicts its last ``C``.
The last window is whatever remains (shorter, down to one prediction). So with ``N``
tokens there are ``ceil((N - 1) / C)`` windows and ``N - 1`` predictions, and the loss is
their mean negative log-likelihood (nats per token); perplexity is ``exp(loss)``.

Each prediction sees the tokens since the start of its window only (between 0 and
``C - 1`` of them), so this is the loss of the model used with non-overlapping contexts,
slightly above what a sliding window would give; it is what CS336 and nanoGPT report.
Windows go through the model a batch at a time, read from the memory-mapped file batch
by batch (the split is never loaded whole), without autograd.

**Bits per byte.** A loss per token depends on the tokenizer: a tokenizer that packs more
text into a token has fewer, harder tokens to predict. The comparable figure is the loss per
byte of text, ``bits/byte = (nats/token) / ln 2 / (bytes/token)``, with bytes/token of the
split exactly as ``lm encode`` counted it (``{split}.stats.json``: ``bytes`` / ``tokens``).
Convention: bytes are the UTF-8 bytes of the split's text file, all of them (the 13 bytes of
each ``<|endoftext|>`` separator and every newline included); tokens are all ids of its
encoding (a special token counts as one). The loss averages over ``tokens - 1`` predictions
and the ratio uses all ``tokens``: one token in a split of millions.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from lm.errors import LMError
from lm.inference.run import load_run, read_run, run_checkpoint, run_name, torch_threads
from lm.io import write_json
from lm.progress import progress_bar
from lm.provenance import with_provenance
from lm.runtime import pick_device
from lm.training.data import open_tokens


def perplexity(loss: float) -> float:
    """``exp(loss)``: ``inf`` when it overflows, NaN for a NaN loss."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def evaluate(
    model: torch.nn.Module,
    tokens: np.ndarray,
    batch_size: int = 16,
    context_length: int | None = None,
    device: str | torch.device | None = None,
    *,
    progress: bool = False,
) -> dict:
    """Mean next-token loss of ``model`` over every token of ``tokens`` (a 1-D array,
    typically ``np.load(path, mmap_mode="r")``), with windows of ``context_length``
    (default: the model's) predictions, ``batch_size`` windows per forward.

    Returns ``loss`` (nats per predicted token; NaN if the model's outputs are), ``perplexity``,
    ``tokens_predicted`` (``len(tokens) - 1``), ``windows``, ``context_length``,
    ``batch_size``, ``seconds`` and ``tokens_per_s``. Token ids outside the model's vocabulary
    raise an ``LMError``. The model is put in eval mode.
    """
    from lm.training.functional import cross_entropy

    if getattr(tokens, "ndim", 1) != 1:
        raise LMError(f"tokens must be a 1-D array of token ids, got shape {tuple(tokens.shape)}")
    n = len(tokens)
    if n < 2:
        raise LMError(
            f"the split has {n} token(s); evaluation needs at least 2 (one to condition on, one to predict)"
        )
    context = int(context_length or model.context_length)
    if not 1 <= context <= model.context_length:
        raise LMError(
            f"context_length must be in 1..{model.context_length} (the model's context), got {context}"
        )
    if batch_size < 1:
        raise LMError(f"batch_size must be at least 1, got {batch_size}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    vocab = model.vocab_size

    full = (n - 1) // context  # windows with all C predictions
    rest = (n - 1) - full * context  # predictions in the last, shorter window
    batches = [(w, min(batch_size, full - w)) for w in range(0, full, batch_size)]
    if rest:
        batches.append((full, 0))  # (first window, 0) marks the partial window

    def load(lo: int, hi: int) -> torch.Tensor:
        chunk = np.asarray(tokens[lo:hi])
        top, bottom = int(chunk.max()), int(chunk.min())
        if top >= vocab or bottom < 0:
            bad = top if top >= vocab else bottom
            raise LMError(
                f"token id {bad} (in tokens {lo}..{hi - 1}) is outside the model's vocabulary "
                f"(0..{vocab - 1}); evaluate on a split encoded with the run's tokenizer"
            )
        return torch.from_numpy(chunk.astype(np.int64)).to(device)

    bar = progress_bar(n - 1, "evaluate", "tokens", progress)
    model.eval()
    total_nll = 0.0
    t0 = time.perf_counter()
    try:
        for first, count in batches:
            lo = first * context
            if count:  # `count` full windows, consecutive: tokens lo .. lo + count*C
                chunk = load(lo, lo + count * context + 1)
                x = chunk[:-1].view(count, context)
                y = chunk[1:].view(count, context)
            else:
                chunk = load(lo, n)
                x, y = chunk[None, :-1], chunk[None, 1:]
            with torch.inference_mode():
                mean = cross_entropy(model(x), y)
            total_nll += mean.item() * y.numel()  # float64 sum of per-batch sums
            bar.update(y.numel())
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    loss = total_nll / (n - 1)
    return {
        "loss": loss,
        "perplexity": perplexity(loss),
        "tokens_predicted": n - 1,
        "windows": full + (1 if rest else 0),
        "context_length": context,
        "batch_size": batch_size,
        "seconds": seconds,
        "tokens_per_s": (n - 1) / seconds if seconds > 0 else None,
    }


def bits_per_byte(loss_nats_per_token: float | None, bytes_per_token: float | None) -> float | None:
    """``(nats/token) / ln 2 / (bytes/token)``; None when either is unknown or not finite."""
    if loss_nats_per_token is None or bytes_per_token is None:
        return None
    if not (math.isfinite(loss_nats_per_token) and bytes_per_token > 0):
        return None
    return loss_nats_per_token / math.log(2) / bytes_per_token


def split_stats_path(tokens_path: str | os.PathLike) -> Path:
    """Where ``lm encode`` puts the stats of ``tokens/valid.npy``: ``tokens/valid.stats.json``."""
    p = Path(tokens_path)
    return p.with_name(p.name.removesuffix(".npy") + ".stats.json")


def split_bytes_per_token(stats_path: str | os.PathLike, n_tokens: int) -> dict:
    """``bytes``, ``tokens`` and the exact ``bytes_per_token`` of an encoded split, read from
    the ``{split}.stats.json`` that ``lm encode`` wrote beside it. Raises an ``LMError`` when
    the file is unreadable or describes a different number of tokens than the split has (a
    stale stats file: re-encode the split)."""
    path = Path(stats_path)
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LMError(
            f"cannot read the split's stats {path} ({e}); it is written by `lm encode --stats`"
        ) from e
    size, tokens = stats.get("bytes"), stats.get("tokens")
    if not isinstance(size, int) or not isinstance(tokens, int) or tokens < 1:
        raise LMError(
            f"{path} has no integer 'bytes' and 'tokens'; re-encode the split (lm encode)"
        )
    if tokens != n_tokens:
        raise LMError(
            f"{path} counts {tokens} tokens but the split has {n_tokens}: the stats belong to "
            "another encoding; re-encode the split (lm encode) so both are written together"
        )
    return {"bytes": size, "tokens": tokens, "bytes_per_token": size / tokens}


# ---------------------------------------------------------------------------- runs on disk


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _advise_sequential(tokens: np.ndarray) -> None:
    """Tell the kernel a memory-mapped split is read front to back (``open_tokens`` advises
    random access, for training's batches)."""
    import mmap

    if isinstance(getattr(tokens, "base", None), mmap.mmap) and hasattr(mmap, "MADV_SEQUENTIAL"):
        with contextlib.suppress(OSError):
            tokens.base.madvise(mmap.MADV_SEQUENTIAL)


def evaluate_run(
    run_dir: str | os.PathLike,
    valid_tokens: str | os.PathLike,
    out: str | os.PathLike,
    *,
    valid_stats: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    batch_size: int = 16,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate a run written by ``lm train`` over a whole split and write the record to
    ``out`` (JSON, atomically); returns the record (what ``lm evaluate`` does).

    The record holds the loss, perplexity and bits per byte (from ``valid_stats``, default
    :func:`split_stats_path` of the split, skipped with a note when that file is absent),
    the run's status and its training validation loss. A diverged run is a result, not an
    error: without a checkpoint, or with non-finite outputs, its record has null numbers
    and a note. ``checkpoint`` defaults to the run's ``checkpoints/final.pt``; a missing
    checkpoint of a run that did not diverge is an ``LMError``."""
    config, result = read_run(run_dir)
    status = (result or {}).get("status", "unfinished")
    ckpt, present = run_checkpoint(run_dir, checkpoint, status)
    record = {
        "run": run_name(config, run_dir),
        "run_dir": str(run_dir),
        "status": status,
        "diverged_step": (result or {}).get("diverged_step"),
        "checkpoint": str(ckpt),
        "checkpoint_step": None,
        "split": str(valid_tokens),
        "tokens_predicted": None,
        "windows": None,
        "context_length": config["model"]["context_length"],
        "batch_size": batch_size,
        "loss": None,
        "perplexity": None,
        "bits_per_byte": None,
        "bytes_per_token": None,
        "split_bytes": None,
        "split_tokens": None,
        "training_final_val_loss": (result or {}).get("final_val_loss"),
        "seconds": None,
        "tokens_per_s": None,
        "device": None,
        "note": None,
    }
    if not present:
        record["note"] = "the run diverged and left no checkpoint: nothing to evaluate"
        record = with_provenance(record, "evaluate")
        write_json(out, record)
        return record
    if batch_size < 1:
        raise LMError(f"batch size (--batch-size) must be at least 1, got {batch_size}")
    tokens = open_tokens(valid_tokens)
    stats_path = Path(valid_stats or split_stats_path(valid_tokens))
    split = None
    if valid_stats or stats_path.is_file():
        split = split_bytes_per_token(stats_path, len(tokens))
        record.update(
            bytes_per_token=split["bytes_per_token"],
            split_bytes=split["bytes"],
            split_tokens=split["tokens"],
        )
    _advise_sequential(tokens)
    dev = pick_device(device)
    with torch_threads(threads):
        model, _, step = load_run(run_dir, ckpt, dev)
        metrics = evaluate(model, tokens, batch_size, device=dev, progress=progress)
    loss, ppl = metrics["loss"], metrics["perplexity"]
    record.update(
        checkpoint_step=step,
        tokens_predicted=metrics["tokens_predicted"],
        windows=metrics["windows"],
        context_length=metrics["context_length"],
        loss=_finite(loss),
        perplexity=_finite(ppl),
        bits_per_byte=bits_per_byte(_finite(loss), split and split["bytes_per_token"]),
        seconds=round(metrics["seconds"], 3),
        tokens_per_s=round(metrics["tokens_per_s"], 1) if metrics["tokens_per_s"] else None,
        device=str(dev),
    )
    if not math.isfinite(loss):
        record["note"] = (
            "the loss is not finite (the model's outputs are NaN/inf"
            + (", the run diverged" if status == "diverged" else "")
            + "): loss and perplexity are null"
        )
    elif not math.isfinite(ppl):
        record["note"] = f"perplexity exp({loss:.1f}) overflows a float: null"
    elif split is None:
        record["note"] = (
            f"no stats of the split at {stats_path} (written by lm encode): bits per byte unknown"
        )
    record = with_provenance(record, "evaluate")
    write_json(out, record)
    return record
