"""Training data: token files on disk, checked once, sampled as random windows.

A token file is a 1-D ``.npy`` array of unsigned integer ids (``uint16`` when the vocab
fits, else ``uint32``), written by the encode stage. It is opened with
``np.load(mmap_mode="r")``: a batch reads only its own windows from disk, never the
whole file.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

import numpy as np
import torch

from lm.errors import LMError

SCAN_CHUNK = 1 << 24  # tokens per chunk when scanning a file for its max id (32 MiB of uint16)


def open_tokens(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a token file and check its shape and dtype (not its contents)."""
    path = Path(path)
    if not path.is_file():
        raise LMError(
            f"token file {path} does not exist; run the encode stage first (lm encode) or fix the path"
        )
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise LMError(
            f"token file {path} is not a readable .npy array ({e}); re-run the encode stage to rewrite it"
        ) from e
    if tokens.ndim != 1:
        raise LMError(
            f"token file {path} has shape {tokens.shape}; expected a 1-D array of token ids, as written by the encode stage"
        )
    # Batches read random windows: tell the kernel not to read around each one (its
    # read-ahead would otherwise map megabytes per window into this process).
    if isinstance(tokens.base, mmap.mmap) and hasattr(mmap, "MADV_RANDOM"):
        with contextlib.suppress(OSError):
            tokens.base.madvise(mmap.MADV_RANDOM)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise LMError(
            f"token file {path} has dtype {tokens.dtype}; token ids must be integers (uint16 or uint32) — re-encode it"
        )
    return tokens


def check_tokens(
    tokens: np.ndarray, vocab_size: int, *, name: str = "token file", chunk: int = SCAN_CHUNK
) -> int:
    """Check that every id in ``tokens`` is a valid index into a ``vocab_size`` embedding.

    The dtype must be able to hold ids up to ``vocab_size - 1`` (a ``uint16`` file for a
    100k vocab has been truncated), and the largest id, found by scanning the array in
    chunks (never whole in memory), must be below ``vocab_size``. Returns the max id.
    """
    info = np.iinfo(tokens.dtype)
    if info.max < vocab_size - 1:
        raise LMError(
            f"{name} has dtype {tokens.dtype} (ids up to {info.max}) but the model's vocab_size is "
            f"{vocab_size}: ids above {info.max} cannot be stored, so the file was written for a smaller "
            f"vocab — re-encode with the run's tokenizer (uint32 for vocabs over 65536) or set model.vocab_size to match the tokenizer"
        )
    if len(tokens) == 0:
        raise LMError(f"{name} is empty; encode a non-empty split")
    hi, lo = None, None
    for part in _chunks(tokens, chunk):
        phi, plo = int(part.max()), int(part.min())
        hi = phi if hi is None else max(hi, phi)
        lo = plo if lo is None else min(lo, plo)
    if lo < 0:
        raise LMError(
            f"{name} holds a negative token id ({lo}); re-encode it with the encode stage"
        )
    if hi >= vocab_size:
        raise LMError(
            f"{name} holds token id {hi} but the model's vocab_size is {vocab_size} (ids must be < vocab_size): "
            f"the tokens come from a larger vocab than the model — set model.vocab_size >= {hi + 1} "
            f"(or the dataset's tokenizer.vocab_size), or re-encode with the tokenizer the run is meant to use"
        )
    return hi


def _chunks(tokens: np.ndarray, chunk: int):
    """Successive pieces of ``tokens``. A file's memory map is read with plain file reads,
    so scanning a multi-GB split neither holds it nor leaves it resident in this process."""
    if isinstance(tokens, np.memmap) and isinstance(tokens.base, mmap.mmap) and tokens.filename:
        with open(tokens.filename, "rb") as f:
            f.seek(tokens.offset)
            remaining = len(tokens)
            while remaining:
                part = np.fromfile(f, dtype=tokens.dtype, count=min(chunk, remaining))
                if len(part) == 0:
                    raise LMError(
                        f"token file {tokens.filename} is shorter than its header says; re-encode it"
                    )
                remaining -= len(part)
                yield part
        return
    for start in range(0, len(tokens), chunk):
        yield tokens[start : start + chunk]


def check_length(tokens: np.ndarray, context_length: int, *, name: str = "token file") -> None:
    if len(tokens) < context_length + 1:
        raise LMError(
            f"{name} has {len(tokens)} tokens, fewer than context_length + 1 = {context_length + 1} "
            f"needed for one input window and its next-token targets; use a larger split or a smaller model.context_length"
        )


def sample_starts(
    n_tokens: int, batch_size: int, context_length: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Uniform random window starts in ``[0, n_tokens - context_length)``."""
    high = n_tokens - context_length
    if rng is None:
        return np.random.randint(0, high, size=batch_size)
    return rng.integers(0, high, size=batch_size)


def gather_windows(
    dataset: np.ndarray, starts: np.ndarray, context_length: int, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the windows ``dataset[s : s + context_length + 1]`` and split into inputs/targets."""
    offsets = np.arange(context_length + 1)
    windows = np.asarray(dataset[starts[:, None] + offsets], dtype=np.int64)  # reads only these
    batch = torch.from_numpy(windows)
    device = torch.device(device)
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        batch = batch.to(device)
    return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


def get_batch(
    dataset: np.ndarray,
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch_size`` random windows: inputs ``x`` and next-token targets ``y``.

    Both are ``(batch_size, context_length)`` int64 tensors on ``device`` with
    ``y[:, i] == x[:, i + 1]``. ``dataset`` is any 1-D integer array, typically a
    memory map (only the sampled windows are read). Pass a seeded
    ``np.random.Generator`` as ``rng`` for reproducible batches; without one the
    global ``np.random`` state is used. On CUDA the batch goes through pinned memory
    and is copied asynchronously.
    """
    check_length(dataset, context_length, name="dataset")
    starts = sample_starts(len(dataset), batch_size, context_length, rng)
    return gather_windows(dataset, starts, context_length, device)
