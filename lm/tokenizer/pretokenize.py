"""Pre-tokenization: split text into pre-tokens and count them, streaming and in parallel.

BPE merges never cross a pre-token boundary, so training only needs how often each
distinct pre-token occurs. This module computes that count for a file:

1. The text is split on the special tokens (they never take part in training).
2. Each piece is split with the GPT-2 pattern :data:`GPT2_PATTERN` (``regex`` package).
3. Pre-tokens are counted.

The file is never read whole. It is cut into chunks of about ``chunk_size`` bytes at
*safe boundaries*: byte offsets where the splitting above would cut anyway, so counting
the chunks separately gives exactly the counts of the whole file (see
:func:`lm.tokenizer.chunks.find_boundary`). Chunks are counted by ``workers`` forked
processes (:class:`lm.tokenizer.chunks.ForkedMap`), each into its own counter, sent back
once; the sum does not depend on the number of workers or on the chunk size.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import regex

from lm.errors import LMError
from lm.progress import progress_bar
from lm.tokenizer.chunks import (
    BadUTF8,
    ForkedMap,
    chunk_size_for,
    decode_utf8,
    file_chunks,
    read_range,
    utf8_error,
)
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


@dataclass
class CorpusCounts:
    """Pre-token counts of a file, and what the report needs to know about the file."""

    # pre-token -> occurrences: str keys, or UTF-8 bytes (count_pretokens(as_bytes=True)),
    # or the native engine's own counter (count_pretokens(as_bytes="native"))
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
    n_bytes: int
    n_special: int
    # non-whitespace text after the chunk's last special token (or anywhere if it has none)
    tail_text: bool


class _ChunkCounter:
    """Counts the pre-tokens of chunks of one file into one counter: a ``Counter`` of str,
    or the native engine's counter of bytes. In forked workers each has its own copy."""

    def __init__(self, path: str, special_tokens: list[str]):
        self.path = path
        self.special_re = special_split_re(special_tokens)
        native = native_module()
        self.counts = Counter() if native is None else native.Counter()
        # for the native engine: the special tokens in the order the pattern tries them
        ordered = sorted(set(special_tokens), key=lambda s: (-len(s), s))
        self.native_specials = [s.encode("utf-8") for s in ordered]

    def count(self, chunk: tuple[int, int]) -> _ChunkResult:
        """Add the pre-tokens of the file's bytes ``[start, end)``."""
        start, end = chunk
        data = read_range(self.path, start, end)
        counts = self.counts
        if not isinstance(counts, Counter):  # the native engine's counter
            n_special, tail_text, bad = counts.add(data, self.native_specials)
            if bad >= 0:  # the Python decoder names the error, exactly as below
                decode_utf8(data[bad:], start + bad)
                raise AssertionError(
                    f"native UTF-8 check rejected valid text at byte {start + bad}"
                )
            return _ChunkResult(len(data), n_special, tail_text)
        text = decode_utf8(data, start)
        pieces = [text] if self.special_re is None else self.special_re.split(text)
        findall = PRETOKEN_RE.findall
        update = counts.update
        for piece in pieces:
            if piece:
                update(findall(piece))
        return _ChunkResult(len(data), len(pieces) - 1, bool(pieces[-1].strip()))

    def total(self):
        """What a worker sends back: the counter, or the native one as a compact blob."""
        return self.counts if isinstance(self.counts, Counter) else self.counts.to_bytes()

    def add_total(self, part) -> None:
        """Add a worker's :meth:`total` to this counter."""
        if isinstance(part, bytes):
            self.counts.merge_bytes(part)
        else:
            if len(part) > len(self.counts):  # add the smaller to the larger
                self.counts, part = part, self.counts
            self.counts.update(part)


def count_pretokens(
    input_path: str | os.PathLike,
    special_tokens: list[str] = (),
    workers: int = 1,
    chunk_size: int | None = None,
    progress: bool = False,
    as_bytes: bool | str = False,
) -> CorpusCounts:
    """Count the pre-tokens of a UTF-8 file, streaming it in chunks over ``workers`` processes.

    The result is the same for every ``workers`` and ``chunk_size``, and for either engine
    (:mod:`lm.tokenizer.native`). Its ``counts`` map each pre-token to its occurrences: a
    ``Counter`` of str, or with ``as_bytes`` a dict of UTF-8 bytes (what BPE training wants,
    and what the native engine makes without decoding). With ``as_bytes="native"`` and the
    native engine, ``counts`` is the engine's counter itself, keys never made into Python
    objects (``len()`` and ``.total`` give its size; ``native.train_merges`` reads it); with
    the Python engine it is the dict of bytes, as for ``as_bytes=True``. Raises ``LMError``
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

    counter = _ChunkCounter(path, special_tokens)
    chunks = file_chunks(path, special_tokens, chunk_size)
    run = ForkedMap(counter.count, chunks, workers, finish=counter.total, what="pre-tokenization")
    results = []
    with run as chunk_results:
        bar = progress_bar(size, "pre-tokenize", "B", progress, unit_scale=True)  # after the
        try:  # fork: tqdm may start a monitor thread
            for (start, end), result in zip(chunks, chunk_results, strict=True):
                results.append(result)
                bar.update(end - start)
        except BadUTF8 as e:
            raise utf8_error(path, e.offset, e.reason) from None
        finally:
            bar.close()
    for part in run.finished:  # forked workers: their totals (else counter has it all)
        counter.add_total(part)
    counts = counter.counts

    if isinstance(counts, Counter):
        if as_bytes:
            counts = {t.encode("utf-8"): n for t, n in counts.items()}
    elif as_bytes != "native":  # the native engine's counter (bytes)
        raw = counts.to_dict()
        counts = raw if as_bytes else Counter({t.decode("utf-8"): n for t, n in raw.items()})
    out = CorpusCounts(counts=counts, n_bytes=size, n_chunks=len(results))
    trailing = False
    for r in results:
        out.n_special += r.n_special
        trailing = r.tail_text if r.n_special else (trailing or r.tail_text)
    out.trailing_text = trailing
    return out
