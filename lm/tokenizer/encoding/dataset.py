"""Encode a text file into one ``.npy`` array of token ids, streaming and in parallel.

    stats = encode_file("data/train.txt", "results/x/tokenizer", "results/x/tokens/train.npy", workers=4)
    ids = np.load("results/x/tokens/train.npy", mmap_mode="r")

- The file is cut into chunks of a few MB at *safe boundaries*
  (:func:`lm.tokenizer.chunks.find_boundary`: offsets that neither a special token
  nor a pre-token straddles), so encoding the chunks apart gives exactly the ids of
  encoding the whole text. The main thread appends each chunk's ids, in file order, to
  the output as soon as they come, so the output is the same for any number of workers.
- With the native engine the workers are threads of this process
  (:func:`native_chunks`): each reads its chunk into a buffer it reuses (``preadv``, the
  GIL released), and its own encoder (the same read-only tables, a pre-token cache of its
  own) writes the ids straight into a reused ``uint16``/``uint32`` buffer with the GIL
  released; the main thread writes that buffer to the file. No Python object per id,
  nothing pickled, nothing copied between processes. With the Python engine (which holds
  the GIL) the workers are forked processes (:class:`lm.tokenizer.chunks.ForkedMap`).
- Either way about ``2 * workers`` chunks are in flight at once: memory does not grow with
  the file, and the id array is never in memory whole.
- The ``.npy`` header has a fixed size whatever the length (numpy pads it for growth),
  so it is written first with length 0 and rewritten with the real length at the end.
  The file is written under a temporary name and renamed when complete.
- The dtype is ``uint16`` when every id fits (vocabulary of at most 65536 ids: half the
  disk and memory-bandwidth of ``uint32`` when training reads it), else ``uint32``.
- Special tokens (``<|endoftext|>`` between documents) are kept as their ids.
"""

from __future__ import annotations

import collections
import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor
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


class _Slot:
    """The buffers of one chunk in flight: its bytes, its ids, its special-token counts;
    reused by chunk after chunk (grown when a chunk is longer than any before)."""

    def __init__(self, dtype: np.dtype, n_specials: int):
        self.dtype = dtype
        self.data = bytearray()
        self.ids = np.empty(0, dtype=dtype)
        self.counts = np.zeros(n_specials, dtype=np.int64)

    def read(self, fd: int, start: int, size: int) -> memoryview:
        """The file's bytes [start, start + size), read into this slot (GIL released)."""
        if len(self.data) < size:
            self.data = bytearray(size)
            self.ids = np.empty(size, dtype=self.dtype)  # at most one id per byte
        view = memoryview(self.data)[:size]
        done = 0
        while done < size:
            if hasattr(os, "preadv"):
                got = os.preadv(fd, [view[done:]], start + done)
            else:  # (no preadv: one copy more)
                block = os.pread(fd, size - done, start + done)
                view[done : done + len(block)] = block
                got = len(block)
            if got <= 0:
                raise LMError(f"the input file shrank while being encoded (at byte {start + done})")
            done += got
        return view


def native_chunks(path: str, tok: Tokenizer, bounds, dtype: np.dtype, workers: int, counts):
    """The ids of each chunk of ``bounds``, in order, by ``workers`` threads (native engine).

    Each item is a view of a reused buffer, valid until the next item is asked for (the
    caller writes it out first). Chunk ``i`` uses slot ``i % window``, and is submitted only
    once chunk ``i - window`` is consumed, so ``window`` slots bound the memory. ``counts``
    (a dict special token -> count) gets the occurrences of the special tokens added.
    """
    order = tok.special_order
    encoders: queue.SimpleQueue = queue.SimpleQueue()
    for enc in tok.native_encoders(workers):
        encoders.put(enc)
    window = 2 * workers if workers > 1 else 1
    slots = [_Slot(dtype, len(order)) for _ in range(min(window, len(bounds)))]
    fd = os.open(path, os.O_RDONLY)

    def encode_chunk(i: int) -> int:
        start, end = bounds[i]
        slot = slots[i % window]
        data = slot.read(fd, start, end - start)
        slot.counts[:] = 0
        enc = encoders.get()
        try:
            n = enc.encode_into(data, slot.ids, slot.counts)
        finally:
            encoders.put(enc)
        if n < 0:  # invalid UTF-8 at byte -1 - n: decode says why
            bytes(data).decode("utf-8")
            raise AssertionError(f"native UTF-8 check rejected valid text at byte {-1 - n}")
        return n

    def result(i: int, n: int) -> np.ndarray:
        slot = slots[i % window]
        for s, c in zip(order, slot.counts.tolist(), strict=True):
            counts[s] += c
        return slot.ids[:n]

    pool = ThreadPoolExecutor(workers, thread_name_prefix="lm-encode") if workers > 1 else None
    try:
        if pool is None:
            for i in range(len(bounds)):
                yield result(i, _located(encode_chunk, i, bounds))
            return
        pending = collections.deque(
            pool.submit(_located, encode_chunk, i, bounds) for i in range(len(slots))
        )
        for i in range(len(bounds)):
            n = pending.popleft().result()
            yield result(i, n)
            if i + window < len(bounds):
                pending.append(pool.submit(_located, encode_chunk, i + window, bounds))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        os.close(fd)


def _located(encode_chunk, i: int, bounds) -> int:
    """``encode_chunk(i)``, its UnicodeDecodeError told as :class:`BadUTF8` at a file offset."""
    try:
        return encode_chunk(i)
    except UnicodeDecodeError as e:
        raise BadUTF8(bounds[i][0] + e.start, e.reason) from None


def write_npy_streaming(out_path, dtype: np.dtype, arrays) -> int:
    """Write the concatenation of ``arrays`` (an iterable) as a 1-D ``.npy``, atomically.
    Returns the number of elements. Each array is written before the next is asked for."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (0,)}
    n = 0
    with atomic_path(out_path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        data_start = f.tell()
        for a in arrays:
            a = np.ascontiguousarray(a, dtype=dtype)
            f.write(memoryview(a).cast("B"))
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
        if tok.native_encoders(1):
            try:
                for (start, end), ids in zip(
                    bounds,
                    native_chunks(path, tok, bounds, dtype, workers, special_counts),
                    strict=True,
                ):
                    bar.update(end - start)
                    yield ids
            except BadUTF8 as e:
                raise utf8_error(path, e.offset, e.reason) from None
            return
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
        "worker_kind": "threads" if tok.native_encoders(1) else "processes",
        "engine": tok.engine,
        "chunks": len(bounds),
        "chunk_size": chunk_size,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_workers_mb": round(peak_rss_mb(children=True), 1),
    }
    stats = with_provenance(stats, "encode")
    write_json(stats_path or default_stats_path(out_path), stats)
    return stats
