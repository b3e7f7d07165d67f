"""Pre-tokenization: split text into pre-tokens and count them, streaming and in parallel.

BPE merges never cross a pre-token boundary, so training only needs how often each
distinct pre-token occurs. This module computes that count for a file:

1. The text is split on the special tokens (they never take part in training).
2. Each piece is split with the GPT-2 pattern :data:`GPT2_PATTERN` (``regex`` package).
3. Pre-tokens are counted.

The file is never read whole. It is cut into chunks of about ``chunk_size`` bytes at
*safe boundaries*: byte offsets where the splitting above would cut anyway, so counting
the chunks separately gives exactly the counts of the whole file (see
:func:`find_boundary`). Chunks are counted by ``workers`` processes; the sum does not
depend on the number of workers or on the chunk size.
"""

from __future__ import annotations

import heapq
import math
import multiprocessing as mp
import os
import queue
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import regex

from lm.errors import LMError
from lm.progress import progress_bar
from lm.tokenizer.native import module as native_module

#: The special tokens of a corpus unless it names others: the document separator of the
#: TinyStories and OpenWebText files.
DEFAULT_SPECIAL_TOKENS = ("<|endoftext|>",)

#: The GPT-2 pre-tokenization pattern (contractions, letters, numbers, other symbols, whitespace).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PATTERN)

#: :data:`GPT2_PATTERN` for ASCII-only text, in the stdlib ``re`` engine (about twice as fast
#: as ``regex`` with ``\p{..}`` classes). Same alternatives in the same order, with each class
#: spelled out over ASCII: ``\p{L}`` is ``[A-Za-z]``, ``\p{N}`` is ``[0-9]``, and the pattern's
#: ``\s`` is ``[\t\n\x0b\x0c\r ]`` (``regex`` does not count ``\x1c``-``\x1f`` as white space,
#: though ``str.isspace`` does); ``(?!\S)`` becomes "not followed by a non-space". On a string
#: of ASCII characters it finds exactly the pre-tokens of ``PRETOKEN_RE`` (tested per
#: character class for all 128 characters and on every short string over each kind of
#: character); use it only on ASCII strings (:func:`find_pretokens` checks).
GPT2_ASCII_PATTERN = (
    r"'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^\t\n\x0b\x0c\r A-Za-z0-9]+"
    r"|[\t\n\x0b\x0c\r ]+(?![^\t\n\x0b\x0c\r ])|[\t\n\x0b\x0c\r ]+"
)
PRETOKEN_ASCII_RE = re.compile(GPT2_ASCII_PATTERN)


def find_pretokens(text: str) -> list[str]:
    """``PRETOKEN_RE.findall(text)``, with the faster ASCII pattern when ``text`` is ASCII."""
    return (PRETOKEN_ASCII_RE if text.isascii() else PRETOKEN_RE).findall(text)


#: Upper bound on the bytes one task reads at once (a chunk may run past it only
#: to reach the next safe boundary).
MAX_CHUNK_SIZE = 4 << 20
#: Lower bound, so tiny files are not cut into pointlessly small tasks.
MIN_CHUNK_SIZE = 64 << 10

# A text byte position p is a safe boundary when the byte before it is printable ASCII
# other than space (so not whitespace) and the byte at p is a space or a newline.
# Every alternative of the GPT-2 pattern either contains no whitespace or contains only
# whitespace, and a leading space is only ever at the start of a match; so no match can
# hold both the non-space before p and the space at p: the match covering p-1 ends at p.
# The pattern has no look-behind, so matching from p on does not depend on what
# came before. Splitting there leaves the pre-tokens unchanged.
_SAFE_TEXT_BOUNDARY = re.compile(rb"[\x21-\x7e](?=[ \n])")
_BOUNDARY_WINDOW = 1 << 16


def special_split_re(special_tokens: list[str]) -> regex.Pattern | None:
    """A pattern matching any special token, longest first (so overlapping tokens split greedily)."""
    if not special_tokens:
        return None
    alternatives = sorted(set(special_tokens), key=lambda s: (-len(s), s))
    return regex.compile("|".join(regex.escape(s) for s in alternatives))


def split_on_special(text: str, special_tokens: list[str]) -> list[str]:
    """The pieces of ``text`` between special tokens (the special tokens themselves dropped)."""
    pattern = special_split_re(special_tokens)
    return [text] if pattern is None else pattern.split(text)


def pretokenize(text: str, special_tokens: list[str] = ()) -> list[str]:
    """All pre-tokens of ``text``, in order (special tokens dropped). For tests and small inputs."""
    out: list[str] = []
    for piece in split_on_special(text, list(special_tokens)):
        out.extend(PRETOKEN_RE.findall(piece))
    return out


def find_boundary(f, offset: int, size: int, special_bytes: list[bytes]) -> int:
    """The first safe chunk boundary at or after ``offset`` in the open binary file ``f``.

    A safe boundary is a byte offset ``p`` that no special-token occurrence spans, and that
    is either the start of a special token, or a space/newline right after a printable
    non-space ASCII character (see ``_SAFE_TEXT_BOUNDARY``). Splitting the file at such a
    ``p`` changes neither the special-token split nor the pre-tokens. The result depends
    only on the file and ``offset`` (never on how much is read at a time), and is
    non-decreasing in ``offset``, so the boundaries tile the file. Returns ``size`` if no
    safe boundary follows (a chunk then runs to the end of the file).
    """
    if offset <= 0:
        return 0
    if offset >= size:
        return size
    longest = max((len(s) for s in special_bytes), default=1)
    pos = offset
    while pos < size:
        base = max(0, pos - longest)
        f.seek(base)
        buf = f.read(pos + _BOUNDARY_WINDOW + longest - base)
        lo, hi = pos - base, min(pos + _BOUNDARY_WINDOW, size) - base
        for p in _candidates(buf, lo, hi, special_bytes):
            if not _spanned(buf, p, special_bytes):
                return base + p
        pos += _BOUNDARY_WINDOW
    return size


def _candidates(buf: bytes, lo: int, hi: int, special_bytes: list[bytes]):
    """Candidate boundaries p in ``buf[lo:hi]``, in increasing order (lazily)."""
    text = (m.end() for m in _SAFE_TEXT_BOUNDARY.finditer(buf, lo - 1, hi))
    specials = []
    for s in special_bytes:
        j = buf.find(s, lo, hi + len(s) - 1)
        while 0 <= j < hi:
            specials.append(j)
            j = buf.find(s, j + 1, hi + len(s) - 1)
    return heapq.merge(sorted(specials), text)


def _spanned(buf: bytes, p: int, special_bytes: list[bytes]) -> bool:
    """Whether an occurrence of a special token starts before ``p`` and ends after it."""
    for s in special_bytes:
        j = buf.find(s, max(0, p - len(s) + 1), p + len(s) - 1)
        while 0 <= j < p:
            if j + len(s) > p:
                return True
            j = buf.find(s, j + 1, p + len(s) - 1)
    return False


def chunk_size_for(size: int, workers: int) -> int:
    """A chunk size giving each worker a few chunks, within [MIN_CHUNK_SIZE, MAX_CHUNK_SIZE]."""
    target = math.ceil(size / max(1, 4 * workers))
    return max(MIN_CHUNK_SIZE, min(MAX_CHUNK_SIZE, target))


@dataclass
class CorpusCounts:
    """Pre-token counts of a file, and what the report needs to know about the file."""

    # pre-token -> occurrences: str keys, or UTF-8 bytes (count_pretokens(as_bytes=True))
    counts: dict = field(default_factory=Counter)
    n_bytes: int = 0
    n_special: int = 0  # special-token occurrences
    n_chunks: int = 0
    trailing_text: bool = False  # non-whitespace text after the last special token

    @property
    def n_documents(self) -> int:
        """Documents: each special token ends one, and text after the last one is one more."""
        return self.n_special + int(self.trailing_text)


@dataclass
class _ChunkResult:
    index: int
    n_bytes: int
    n_special: int
    # non-whitespace text after the chunk's last special token (or anywhere if it has none)
    tail_text: bool


class _BadUTF8(Exception):
    def __init__(self, offset: int, reason: str):
        super().__init__(offset, reason)
        self.offset, self.reason = offset, reason


def _count_chunk(
    f, start: int, end: int, index: int, special_re, counts, special_bytes=()
) -> _ChunkResult:
    f.seek(start)
    data = f.read(end - start)
    if not isinstance(counts, Counter):  # the native engine's counter
        n_special, tail_text, bad = counts.add(data, special_bytes)
        if bad >= 0:  # the Python decoder names the error, exactly as below
            _decode_or_raise(data[bad:], start + bad)
            raise AssertionError(f"native UTF-8 check rejected valid text at byte {start + bad}")
        return _ChunkResult(index, len(data), n_special, tail_text)
    text = _decode_or_raise(data, start)
    pieces = [text] if special_re is None else special_re.split(text)
    findall = PRETOKEN_RE.findall
    update = counts.update
    for piece in pieces:
        if piece:
            update(findall(piece))
    return _ChunkResult(index, len(data), len(pieces) - 1, bool(pieces[-1].strip()))


def _decode_or_raise(data: bytes, start: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadUTF8(start + e.start, e.reason) from None


def _chunk_bounds(f, size: int, chunk_size: int, special_bytes: list[bytes], indices):
    """(index, start, end) of the given chunk indices; empty chunks skipped."""
    for k in indices:
        start = find_boundary(f, k * chunk_size, size, special_bytes)
        end = find_boundary(f, (k + 1) * chunk_size, size, special_bytes)
        if end > start:
            yield k, start, end


def _count_chunks(
    path: str, size: int, chunk_size: int, special_tokens: list[str], indices, on_chunk=None
):
    """Count the given chunks in this process. Returns (counts, [_ChunkResult]); counts is a
    ``Counter`` of str, or the native engine's counter of bytes."""
    special_re = special_split_re(special_tokens)
    special_bytes = [s.encode("utf-8") for s in special_tokens]
    native = native_module()
    counts = Counter() if native is None else native.Counter()
    # for the native engine: the special tokens in the order the pattern tries them
    ordered = sorted(set(special_tokens), key=lambda s: (-len(s), s))
    native_specials = [s.encode("utf-8") for s in ordered]
    results = []
    with open(path, "rb") as f:
        for k, start, end in _chunk_bounds(f, size, chunk_size, special_bytes, indices):
            results.append(_count_chunk(f, start, end, k, special_re, counts, native_specials))
            if on_chunk is not None:
                on_chunk(end - start)
    return counts, results


def _worker(
    rank: int, n_workers: int, path, size, chunk_size, special_tokens, n_chunks, out: mp.Queue
):
    """Count chunks rank, rank + n_workers, ...; send progress, then the counts (or the error)."""
    try:
        counts, results = _count_chunks(
            path,
            size,
            chunk_size,
            special_tokens,
            range(rank, n_chunks, n_workers),
            on_chunk=lambda n: out.put(("progress", n)),
        )
        if not isinstance(counts, Counter):  # native: a compact blob, not a pickled dict
            counts = counts.to_bytes()
        out.put(("done", rank, counts, results))
    except _BadUTF8 as e:
        out.put(("utf8", rank, e.offset, e.reason))
    except BaseException:
        out.put(("crash", rank, traceback.format_exc()))


def _line_and_column(path: str, offset: int) -> tuple[int, int]:
    """1-based line and byte column of byte ``offset`` in ``path``, reading it in blocks."""
    line, last_nl, pos = 1, -1, 0
    with open(path, "rb") as f:
        while pos < offset:
            block = f.read(min(1 << 20, offset - pos))
            if not block:
                break
            n = block.count(b"\n")
            if n:
                line += n
                last_nl = pos + block.rindex(b"\n")
            pos += len(block)
    return line, offset - last_nl


def count_pretokens(
    input_path: str | os.PathLike,
    special_tokens: list[str] = (),
    workers: int = 1,
    chunk_size: int | None = None,
    progress: bool = False,
    as_bytes: bool = False,
) -> CorpusCounts:
    """Count the pre-tokens of a UTF-8 file, streaming it in chunks over ``workers`` processes.

    The result is the same for every ``workers`` and ``chunk_size``, and for either engine
    (:mod:`lm.tokenizer.native`). Its ``counts`` map each pre-token to its occurrences: a
    ``Counter`` of str, or with ``as_bytes`` a dict of UTF-8 bytes (what BPE training wants,
    and what the native engine makes without decoding). Raises ``LMError``
    for a missing or unreadable file, and for invalid UTF-8 (naming the byte offset and line
    of the first bad byte).
    """
    path = str(input_path)
    p = Path(path)
    if not p.exists():
        raise LMError(f"input file {path} does not exist")
    if not p.is_file():
        raise LMError(f"input {path} is not a regular file")
    size = p.stat().st_size
    special_tokens = list(special_tokens)
    workers = max(1, int(workers))
    if chunk_size is None:
        chunk_size = chunk_size_for(size, workers)
    if chunk_size < 1:
        raise LMError(f"chunk_size must be a positive number of bytes, got {chunk_size}")
    n_chunks = max(1, math.ceil(size / chunk_size))
    workers = min(workers, n_chunks)

    def make_bar():
        return progress_bar(size, "pre-tokenize", "B", progress, unit_scale=True)

    if workers == 1:
        bar = make_bar()
        try:
            counts, results = _count_chunks(
                path,
                size,
                chunk_size,
                special_tokens,
                range(n_chunks),
                on_chunk=bar.update,
            )
        except _BadUTF8 as e:
            _raise_bad_utf8(path, e.offset, e.reason)
        finally:
            bar.close()
    else:
        counts, results = _count_parallel(
            path, size, chunk_size, special_tokens, n_chunks, workers, make_bar
        )

    if isinstance(counts, Counter):
        if as_bytes:
            counts = {t.encode("utf-8"): n for t, n in counts.items()}
    else:  # the native engine's counter (bytes)
        raw = counts.to_dict()
        counts = raw if as_bytes else Counter({t.decode("utf-8"): n for t, n in raw.items()})
    out = CorpusCounts(counts=counts, n_bytes=size, n_chunks=len(results))
    trailing = False
    for r in sorted(results, key=lambda r: r.index):
        out.n_special += r.n_special
        trailing = r.tail_text if r.n_special else (trailing or r.tail_text)
    out.trailing_text = trailing
    return out


def _raise_bad_utf8(path: str, offset: int, reason: str):
    line, column = _line_and_column(path, offset)
    raise LMError(
        f"{path}: invalid UTF-8 at byte offset {offset} (line {line}, byte {column} of the line): "
        f"{reason}; the corpus must be UTF-8 text (re-encode it, e.g. with iconv -t UTF-8)"
    )


def _count_parallel(path, size, chunk_size, special_tokens, n_chunks, workers, make_bar):
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, workers, path, size, chunk_size, special_tokens, n_chunks, out),
            daemon=True,
        )
        for rank in range(workers)
    ]
    for proc in procs:
        proc.start()
    bar = make_bar()  # after the fork: tqdm may start a monitor thread
    counts = None  # a Counter, or the native engine's counter
    results = []
    bad: list[tuple[int, str]] = []
    pending = set(range(workers))
    try:
        while pending:
            try:
                msg = out.get(timeout=1.0)
            except queue.Empty:
                dead = [r for r in pending if procs[r].exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"pre-tokenization worker {dead[0]} died (exit code {procs[dead[0]].exitcode}); "
                        f"out of memory? try fewer --workers"
                    ) from None
                continue
            kind = msg[0]
            if kind == "progress":
                bar.update(msg[1])
            elif kind == "done":
                _, rank, part, part_results = msg
                pending.discard(rank)
                results.extend(part_results)
                if isinstance(part, bytes):  # native counts, serialized
                    if counts is None:
                        counts = native_module().Counter()
                    counts.merge_bytes(part)
                elif counts is None:
                    counts = part
                else:
                    if len(part) > len(counts):
                        counts, part = part, counts
                    counts.update(part)
            elif kind == "utf8":
                pending.discard(msg[1])
                bad.append((msg[2], msg[3]))
            else:
                pending.discard(msg[1])
                raise RuntimeError(f"pre-tokenization worker {msg[1]} failed:\n{msg[2]}")
    finally:
        bar.close()
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
    if bad:
        offset, reason = min(bad)
        _raise_bad_utf8(path, offset, reason)
    if counts is None:
        counts = Counter() if native_module() is None else native_module().Counter()
    return counts, results
