"""Encode a text file into one ``.npy`` array of token ids, streaming and in parallel.

    stats = encode_file("data/train.txt", "results/x/tokenizer", "results/x/tokens/train.npy", workers=4)
    ids = np.load("results/x/tokens/train.npy", mmap_mode="r")

- The file is cut into chunks of a few MB at *safe boundaries*
  (:func:`lm.tokenizer.chunks.find_boundary`: offsets that neither a special token
  nor a pre-token straddles), so encoding the chunks apart gives exactly the ids of
  encoding the whole text. Forked worker processes encode chunks
  (:class:`lm.tokenizer.chunks.ForkedMap`); the main process appends each chunk's ids, in
  file order, to the output as soon as they come. About ``2 * workers`` chunk results
  exist at once: memory does not grow with the file, and the id array is never in memory
  whole.
- The ``.npy`` header has a fixed size whatever the length (numpy pads it for growth),
  so it is written first with length 0 and rewritten with the real length at the end.
  The file is written under a temporary name and renamed when complete.
- The dtype is ``uint16`` when every id fits (vocabulary of at most 65536 ids: half the
  disk and memory-bandwidth of ``uint32`` when training reads it), else ``uint32``.
- Special tokens (``<|endoftext|>`` between documents) are kept as their ids.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from lm.errors import LMError
from lm.io import atomic_path, peak_rss_mb, write_json
from lm.progress import progress_bar
from lm.provenance import with_provenance
from lm.tokenizer.chunks import (
    BadUTF8,
    ForkedMap,
    chunk_size_for,
    file_chunks,
    read_range,
    utf8_error,
)
from lm.tokenizer.encoding.tokenizer import Tokenizer
from lm.tokenizer.pretokenize import DEFAULT_SPECIAL_TOKENS


def choose_dtype(vocab_size: int) -> tuple[np.dtype, str]:
    """The smallest unsigned dtype holding every id, and a sentence saying why."""
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16), (
            f"uint16: the vocabulary has {vocab_size} ids, all below 65536, so 2 bytes per token "
            f"suffice (half the disk and memory bandwidth of uint32)"
        )
    return np.dtype(np.uint32), (
        f"uint32: the vocabulary has {vocab_size} ids, more than the 65536 that uint16 can hold"
    )


def default_stats_path(out_path: str | os.PathLike) -> Path:
    """``tokens/train.npy`` -> ``tokens/train.stats.json``."""
    out = Path(out_path)
    return out.with_name(out.name.removesuffix(".npy") + ".stats.json")


def _encoder(path: str, tokenizer: Tokenizer, dtype: np.dtype):
    """The task of a worker: the ids of the file's bytes [start, end) as an array."""

    def encode_range(chunk: tuple[int, int]) -> np.ndarray:
        start, end = chunk
        data = read_range(path, start, end)
        try:
            return tokenizer.encode_to_array(data, dtype)
        except UnicodeDecodeError as e:
            raise BadUTF8(start + e.start, e.reason) from None

    return encode_range


def write_npy_streaming(out_path, dtype: np.dtype, arrays) -> int:
    """Write the concatenation of ``arrays`` (an iterable) as a 1-D ``.npy``, atomically.
    Returns the number of elements."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (0,)}
    n = 0
    with atomic_path(out_path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        data_start = f.tell()
        for a in arrays:
            a = np.ascontiguousarray(a, dtype=dtype)
            f.write(a.tobytes())
            n += len(a)
        f.seek(0)
        np.lib.format.write_array_header_1_0(f, {**header, "shape": (n,)})
        if f.tell() != data_start:  # numpy pads the header so this never happens; be sure
            raise RuntimeError("npy header changed size while rewriting the shape")
    return n


def encode_file(
    input_path: str | os.PathLike,
    tokenizer: Tokenizer | str | os.PathLike,
    out_path: str | os.PathLike,
    special_tokens=DEFAULT_SPECIAL_TOKENS,
    workers: int = 1,
    chunk_size: int | None = None,
    stats_path: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """Encode a UTF-8 text file into ``out_path`` (``.npy``); write and return its stats.

    ``tokenizer`` is a :class:`Tokenizer` or a directory holding ``vocab.json`` and
    ``merges.txt`` (then loaded with ``special_tokens``). Raises ``LMError`` for a missing
    input or tokenizer, and for invalid UTF-8 (naming the byte offset and line).
    """
    path = str(input_path)
    p = Path(path)
    if not p.is_file():
        raise LMError(
            f"input file {path} does not exist" if not p.exists() else f"input {path} is not a file"
        )
    special_tokens = list(special_tokens)
    tok = (
        tokenizer
        if isinstance(tokenizer, Tokenizer)
        else Tokenizer.from_dir(tokenizer, special_tokens)
    )
    specials = tok.special_tokens
    dtype, why = choose_dtype(tok.vocab_size)
    size = p.stat().st_size
    workers = max(1, int(workers))
    chunk_size = chunk_size or chunk_size_for(size, workers)
    if chunk_size < 1:
        raise LMError(f"chunk_size must be a positive number of bytes, got {chunk_size}")

    t0 = time.perf_counter()
    bounds = file_chunks(path, specials, chunk_size)
    workers = max(1, min(workers, len(bounds)))
    bar = progress_bar(size, f"encode {p.name}", "B", progress, unit_scale=True)
    special_counts = dict.fromkeys(specials, 0)
    special_by_id = {tok.special_ids[s]: s for s in specials}

    def arrays():
        try:
            with ForkedMap(_encoder(path, tok, dtype), bounds, workers, what="encoding") as results:
                for (start, end), result in zip(bounds, results, strict=True):
                    if special_by_id:
                        ids, counts = np.unique(
                            result[np.isin(result, list(special_by_id))], return_counts=True
                        )
                        for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
                            special_counts[special_by_id[i]] += c
                    bar.update(end - start)
                    yield result
        except BadUTF8 as e:
            raise utf8_error(path, e.offset, e.reason) from None

    try:
        n_tokens = write_npy_streaming(out_path, dtype, arrays())
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    stats = {
        "input": path,
        "output": str(out_path),
        "tokens": n_tokens,
        "bytes": size,
        "bytes_per_token": round(size / n_tokens, 4) if n_tokens else None,
        "seconds": round(seconds, 4),
        "mb_per_s": round(size / 1e6 / seconds, 3) if seconds > 0 else None,
        "tokens_per_s": round(n_tokens / seconds, 1) if seconds > 0 else None,
        "dtype": dtype.name,
        "dtype_reason": why,
        "vocab_size": tok.vocab_size,
        "special_tokens": specials,
        "special_token_counts": special_counts,
        "workers": workers,
        "engine": tok.engine,
        "chunks": len(bounds),
        "chunk_size": chunk_size,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_workers_mb": round(peak_rss_mb(children=True), 1),
    }
    stats = with_provenance(stats, "encode")
    write_json(stats_path or default_stats_path(out_path), stats)
    return stats
