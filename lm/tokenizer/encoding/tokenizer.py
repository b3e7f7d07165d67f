"""Byte-level BPE encoding and decoding: the ``Tokenizer`` class (CS336 interface).

    tok = Tokenizer.from_files("vocab.json", "merges.txt", special_tokens=["<|endoftext|>"])
    ids = tok.encode("Hello world<|endoftext|>")
    tok.decode(ids)                     # 'Hello world<|endoftext|>'
    for i in tok.encode_iterable(open("big.txt")):   # lazy, constant memory
        ...

What ``encode`` computes (and what every speed-up below preserves exactly):

1. Split the text on the special tokens (longest first, so of two overlapping special
   tokens the longer wins); each special token becomes its own id.
2. Split each piece in between into pre-tokens with the GPT-2 pattern
   (:data:`lm.tokenizer.pretokenize.GPT2_PATTERN`).
3. Inside each pre-token, start from its bytes and repeatedly merge the adjacent pair
   with the lowest merge rank (all its occurrences, left to right) until no pair of the
   merge list is left. This gives the ids of GPT-2 / tiktoken / HuggingFace ``tokenizers``
   for the same vocabulary and merges.

How it is made fast, in plain Python:

- *Words*. A text is first cut at every space followed by a non-space character
  (``text.split(" ")`` when every space of the text is so followed, else one ``re`` split).
  Such a position is always a pre-token boundary of the GPT-2 pattern (see
  :data:`lm.tokenizer.encoding.fast._WORD_SPLIT`), so each piece between two cuts, a "word" such
  as ``" world,"``, has ids that do not depend on its context. Words repeat a lot (a few tens of thousands of
  distinct words per megabyte of text), so their ids are kept in a bounded cache and the
  hot path is: one split, one dict lookup per word, and C-level list extensions
  (``functools.reduce(operator.iadd, ...)``) with the cached id lists.
- *Cache misses* are handled in bulk, a window of text at a time (from the first unit of
  text with a word not cached yet): the new words are joined and pre-tokenized with one
  regex pass (the stdlib ``re`` form of the pattern for ASCII text, about twice as fast as
  ``regex``: :data:`lm.tokenizer.pretokenize.GPT2_ASCII_PATTERN`); pre-tokens that are whole
  vocabulary tokens (checked once, at construction, to be reachable by the merges) need no
  merging; the rest are merged all at once with numpy (:meth:`Tokenizer._merge_many`).
- Long pre-tokens (a run of thousands of spaces, a CJK paragraph) use a heap, so merging
  is O(n log n) instead of O(n^2).
- :meth:`Tokenizer.encode_parallel` spreads a large text over threads (native engine) or
  forked processes that inherit the tokenizer and the text (nothing is pickled but the
  ids coming back, one ``uint16``/``uint32`` array per piece:
  :class:`lm.tokenizer.chunks.ForkedMap`); :mod:`lm.tokenizer.encoding.dataset` spreads a
  file over processes by byte offsets. Both cut at safe points.

The word cache and the fast merge paths live in :mod:`lm.tokenizer.encoding.fast` (the mixin
:class:`lm.tokenizer.encoding.fast.CachedEncoding`); :meth:`Tokenizer._merge_simple`, here, is the
readable reference they equal.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lm.errors import LMError
from lm.tokenizer.chunks import ForkedMap
from lm.tokenizer.encoding.fast import _WORD_SPLIT, CachedEncoding, PairTable
from lm.tokenizer.native import module as native_module
from lm.tokenizer.pretokenize import DEFAULT_SPECIAL_TOKENS, GPT2_PATTERN

#: Pre-tokens cached by each native encoder (so per thread): those of up to 16 bytes in two
#: tables of at most 20 MB together (a full set drops its oldest entry), the rest in a map
#: emptied when it holds a quarter of this. Large enough for the frequent pre-tokens of a
#: large web corpus, whose misses (a BPE merge each) would otherwise dominate encoding.
NATIVE_CACHE_SIZE = 1 << 20
# The native encoder a thread of Tokenizer._encode_threaded uses (owner: its tokenizer).
_THREAD = threading.local()


class Tokenizer(CachedEncoding):
    """Byte-level BPE tokenizer: ``encode``, ``encode_iterable``, ``decode``.

    ``vocab`` maps ids to token bytes; ``merges`` lists merges ``(a, b)`` in creation
    (rank) order. Special tokens not in the vocabulary get new ids after the largest one.
    Raises ``LMError`` if the vocabulary lacks a single byte, or a merge names a token
    that is not in it.
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]],
        special_tokens: list[str] | None = None,
    ):
        self.vocab: dict[int, bytes] = {}
        for token_id, token in vocab.items():
            if not isinstance(token, bytes | bytearray):
                raise LMError(
                    f"vocab id {token_id}: token must be bytes, got {type(token).__name__}"
                )
            if (
                isinstance(token_id, bool)
                or not isinstance(token_id, int | np.integer)
                or token_id < 0
            ):
                raise LMError(f"vocab id {token_id!r} is not a non-negative integer")
            self.vocab[int(token_id)] = bytes(token)
        self.merges: list[tuple[bytes, bytes]] = [(bytes(a), bytes(b)) for a, b in merges]
        # bytes -> id (the lowest id when a token appears twice)
        self._token_id: dict[bytes, int] = {}
        for token_id in sorted(self.vocab):
            self._token_id.setdefault(self.vocab[token_id], token_id)

        missing = [b for b in range(256) if bytes([b]) not in self._token_id]
        if missing:
            shown = ", ".join(f"0x{b:02x}" for b in missing[:8])
            raise LMError(
                f"the vocabulary lacks {len(missing)} of the 256 single bytes ({shown}...); a byte-level "
                f"BPE vocabulary must hold every byte so that any text can be encoded"
            )

        self.special_tokens: list[str] = list(dict.fromkeys(special_tokens or []))
        next_id = max(self.vocab, default=-1) + 1
        self.special_ids: dict[str, int] = {}
        for s in self.special_tokens:
            if not isinstance(s, str) or not s:
                raise LMError(f"special token {s!r} must be a non-empty string")
            b = s.encode("utf-8")
            if b not in self._token_id:
                self.vocab[next_id] = b
                self._token_id[b] = next_id
                next_id += 1
            self.special_ids[s] = self._token_id[b]
        self._special_re = None
        #: the special tokens in match order (longest first): the order of the native
        #: encoder's special-token counts (Encoder.encode_into)
        self.special_order = sorted(self.special_tokens, key=lambda s: (-len(s), s))
        if self.special_tokens:
            alternatives = self.special_order
            self._special_re = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self._max_special = max((len(s) for s in self.special_tokens), default=0)

        self._build_merge_tables()
        self._build_seed_caches()
        self._native_encoder = None
        self._native_copies: list = []  # more encoders, one per extra thread (encode_parallel)
        self._encoder()  # the native engine's encoder, built now if that engine is on
        # Cached ids are tuples: the cyclic GC stops tracking a tuple of ints, so that a
        # full collection does not walk the (up to ~10^6) cached id sequences.
        self._word_cache: dict[str, tuple[int, ...]] = dict(self._seed_words)
        self._head_cache: dict[str, tuple[int, ...]] = dict(self._seed_heads)
        self._pretoken_cache: dict[str, tuple[int, ...]] = dict(self._seed_pretokens)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_files(
        cls,
        vocab_path: str | os.PathLike,
        merges_path: str | os.PathLike,
        special_tokens: list[str] | None = None,
    ) -> Tokenizer:
        """Load ``vocab.json`` + ``merges.txt`` (GPT-2 format, :mod:`lm.tokenizer.serialization`)."""
        from lm.tokenizer.serialization import load_tokenizer

        vocab, merges = load_tokenizer(vocab_path, merges_path)
        return cls(vocab, merges, special_tokens)

    @classmethod
    def from_dir(
        cls, tokenizer_dir: str | os.PathLike, special_tokens: list[str] | None = None
    ) -> Tokenizer:
        """Load a tokenizer directory as ``lm train-bpe`` writes it: ``DIR/vocab.json`` +
        ``DIR/merges.txt``, with ``special_tokens``, or by default (None) those it was
        trained with, as ``DIR/stats.json`` lists them (``<|endoftext|>`` when it lists none).

        Raises ``LMError`` saying how to make the directory when it or its vocabulary is
        missing, and naming the file and line of a malformed one.
        """
        from lm.tokenizer.serialization import MERGES_FILE, VOCAB_FILE, load_tokenizer

        d = Path(tokenizer_dir)
        if not d.is_dir():
            raise LMError(
                f"tokenizer directory {d} does not exist; train one with `lm train-bpe ... --out {d}`"
            )
        if not (d / VOCAB_FILE).is_file():
            raise LMError(
                f"no tokenizer at {d} ({VOCAB_FILE} missing); train one with `lm train-bpe ... --out {d}`"
            )
        trained, recorded = _recorded_special_tokens(d)
        if special_tokens is None:
            special_tokens = list(DEFAULT_SPECIAL_TOKENS) if trained is None else trained
        vocab, merges = load_tokenizer(
            d / VOCAB_FILE, d / MERGES_FILE, trained if recorded else None
        )
        return cls(vocab, merges, special_tokens)

    def _build_merge_tables(self) -> None:
        tid = self._token_id
        self._byte_ids = [tid[bytes([b])] for b in range(256)]
        self._byte_ids_np = np.array(self._byte_ids, dtype=np.int64)
        self._merge_ids: list[tuple[int, int, int]] = []  # (left, right, merged) by rank
        # (left id, right id) -> (rank, merged id); the first rank wins for a repeated pair.
        self._pair: dict[tuple[int, int], tuple[int, int]] = {}
        created: dict[int, int] = {}  # token id -> rank of the merge that first made it
        well_ordered = True
        for rank, (a, b) in enumerate(self.merges):
            for part in (a, b):
                if part not in tid:
                    raise LMError(
                        f"merge {rank} ({a!r}, {b!r}): {part!r} is not in the vocabulary; "
                        f"the merges and the vocabulary do not belong together"
                    )
            if a + b not in tid:
                raise LMError(
                    f"merge {rank} ({a!r}, {b!r}): the merged token {a + b!r} is not in the "
                    f"vocabulary; the merges and the vocabulary do not belong together"
                )
            ia, ib, iab = tid[a], tid[b], tid[a + b]
            self._pair.setdefault((ia, ib), (rank, iab))
            self._merge_ids.append((ia, ib, iab))
            created.setdefault(iab, rank)
            for part, pid in ((a, ia), (b, ib)):
                if len(part) > 1 and created.get(pid, rank) >= rank:
                    well_ordered = False  # a part made later than (or never by) an earlier merge
        # The heap algorithm equals rank-order merging when every merge only uses tokens
        # made by earlier merges (true of any trained BPE, GPT-2's included).
        self._well_ordered = well_ordered

        self._pair_table = PairTable(self._pair, width=max(self.vocab) + 1)

        # Whole-token shortcut: a pre-token whose bytes are one token that the merges
        # actually produce from those bytes encodes to that one id. (Checked here for
        # every token, so the shortcut never disagrees with merging.)
        candidates = [t for t in self._token_id if len(t) > 1]
        self._whole: dict[bytes, int] = {bytes([b]): i for b, i in enumerate(self._byte_ids)}
        if candidates:
            for token, ids in zip(
                candidates, self._merge_many(candidates, use_whole=False), strict=True
            ):
                if len(ids) == 1:
                    self._whole[token] = ids[0]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_word_cache"] = dict(self._seed_words)
        state["_head_cache"] = dict(self._seed_heads)
        state["_pretoken_cache"] = dict(self._seed_pretokens)
        state["_native_encoder"] = None  # rebuilt on first use
        state["_native_copies"] = []
        return state

    def _encoder(self):
        """The native engine's encoder for this vocabulary, or ``None`` when the Python
        engine is to be used (:mod:`lm.tokenizer.native`)."""
        native = native_module()
        if native is None:
            return None
        if getattr(_THREAD, "owner", None) is self:  # a thread of _encode_threaded
            return _THREAD.encoder
        if self._native_encoder is None:
            self._native_encoder = native.Encoder(
                self._byte_ids,
                self._merge_ids,
                [(s.encode("utf-8"), self.special_ids[s]) for s in self.special_order],
                well_ordered=self._well_ordered,
                cache_limit=NATIVE_CACHE_SIZE,
            )
        return self._native_encoder

    def native_encoders(self, n: int) -> list:
        """``n`` native encoders for ``n`` threads (the same read-only tables, a cache each),
        kept for the next call; an empty list when the Python engine is on. An encoder runs
        without the GIL, one thread at a time (it holds a lock while encoding)."""
        base = self._encoder()
        if base is None:
            return []
        while len(self._native_copies) < n - 1:
            self._native_copies.append(base.copy())
        return [base, *self._native_copies[: n - 1]]

    @property
    def engine(self) -> str:
        """``"native"`` or ``"python"``: the engine that :meth:`encode` uses now."""
        return "python" if native_module() is None else "native"

    def encode_to_array(self, text: str | bytes, dtype=np.uint32) -> np.ndarray:
        """The ids of ``text`` as a numpy array (no Python object per id with the native
        engine). ``text`` may also be UTF-8 bytes; invalid UTF-8 raises ``UnicodeDecodeError``
        exactly as ``bytes.decode`` does."""
        ids = self._native_ids(text)
        if ids is not None:
            return ids.astype(dtype, copy=False)
        if not isinstance(text, str):
            text = bytes(text).decode("utf-8")
        return np.array(self._encode_python(text) if text else [], dtype=dtype)

    def _native_ids(self, text: str | bytes) -> np.ndarray | None:
        """The ids of ``text`` (uint32) by the native engine; ``None`` when the Python engine
        is on, or for a text the native one leaves to it (lone surrogates, not UTF-8)."""
        enc = self._encoder()
        if enc is None:
            return None
        try:
            ids = enc.encode(text)
        except UnicodeEncodeError:  # lone surrogates: the Python path says what is wrong
            return None
        if isinstance(ids, int):  # offset of the first invalid byte: decode names the error
            bytes(text).decode("utf-8")
            raise AssertionError(f"native UTF-8 check rejected valid text at byte {ids}")
        return np.frombuffer(ids, dtype=np.uint32)

    @functools.cached_property
    def vocab_size(self) -> int:
        """Number of ids (largest id + 1), special tokens included. (Computed once: like the
        tables encoding uses, it follows the vocabulary the tokenizer was made with.)"""
        return max(self.vocab) + 1

    # ------------------------------------------------------------------ encoding

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``."""
        if not isinstance(text, str):
            raise LMError(f"encode expects a str, got {type(text).__name__}")
        if not text:
            return []
        ids = self._native_ids(text)
        if ids is not None:
            return ids.tolist()
        return self._encode_python(text)

    def _encode_python(self, text: str) -> list[int]:
        """:meth:`encode` by the Python engine (the reference)."""
        # Encoding makes no reference cycles, but it allocates enough containers (word
        # lists, and ~10^5 cache entries when filling) to set off collections that walk the
        # whole heap, caches included, several times per megabyte: pause the cyclic GC.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            if self._special_re is None:
                return self._encode_units(self._units([text], []))
            parts = self._special_re.split(text)
            special_ids = [self.special_ids[s] for s in parts[1::2]]
            return self._encode_units(self._units(parts[0::2], special_ids))
        finally:
            if gc_was_on:
                gc.enable()

    def encode_iterable(self, iterable: Iterable[str], chunk_chars: int = 1 << 20) -> Iterator[int]:
        """Lazily yield the ids of the concatenation of the strings in ``iterable``.

        Gives exactly ``encode("".join(iterable))``, holding about ``chunk_chars`` characters
        at a time (more only while a single pre-token or special token is longer): text is
        encoded up to the last point that neither a pre-token nor a special token can
        straddle, and the rest is kept for the next round.
        """
        parts: list[str] = []
        size = 0
        threshold = chunk_chars
        for s in iterable:
            if not s:
                continue
            parts.append(s)
            size += len(s)
            if size < threshold:
                continue
            buf = "".join(parts)
            cut = self._stream_cut(buf)
            if cut > 0:
                yield from self.encode(buf[:cut])
                buf = buf[cut:]
                threshold = chunk_chars
            else:  # nothing safe to emit yet (one huge pre-token): wait for twice as much
                threshold = 2 * len(buf)
            parts = [buf]
            size = len(buf)
        if parts:
            yield from self.encode("".join(parts))

    def safe_cut(self, text: str, at: int) -> int:
        """The first position ``p >= at`` where ``text`` can be cut and both halves encoded apart
        (ids of ``text[:p]`` + ids of ``text[p:]`` == ids of ``text``); ``len(text)`` if none."""
        n = len(text)
        pos = max(at, 1)
        while pos < n:
            m = _WORD_SPLIT.search(text, pos)
            if m is None:
                break
            p = m.start()
            if not self._special_spans(text, p):
                return p
            pos = p + 1
        return n

    def encode_parallel(
        self, text: str, workers: int | None = None, chunk_chars: int = 1 << 18
    ) -> list[int]:
        """``encode(text)`` computed by ``workers`` threads (native engine) or processes (Python
        engine; default: all CPUs) on pieces cut at safe points. Worth it from a few hundred
        kilobytes of text on."""
        workers = workers or os.cpu_count() or 1
        if workers <= 1 or len(text) <= chunk_chars:
            return self.encode(text)
        bounds = [0]
        while bounds[-1] < len(text):
            bounds.append(self.safe_cut(text, bounds[-1] + chunk_chars))
        spans = list(itertools.pairwise(bounds))
        workers = min(workers, len(spans))
        if self._encoder() is not None:
            return self._encode_threaded(text, spans, workers)
        # The Python engine: forked processes, which inherit this tokenizer (its caches
        # included) and the text, so only the ids of each piece travel (as one array).
        dtype = np.uint32 if self.vocab_size > 65536 else np.uint16

        def encode_piece(span: tuple[int, int]) -> np.ndarray:
            return self.encode_to_array(text[span[0] : span[1]], dtype)

        with ForkedMap(encode_piece, spans, workers, what="encoding") as results:
            pieces = list(results)
        return np.concatenate(pieces).tolist() if pieces else []

    def _encode_threaded(self, text: str, spans: list[tuple[int, int]], workers: int) -> list[int]:
        """The native engine's :meth:`encode_parallel`: threads, since its encoder runs without
        the GIL; each thread has its own encoder (same tables, its own cache), kept for the
        next call. Thread k encodes pieces k, k + workers, ..."""
        dtype = np.uint32 if self.vocab_size > 65536 else np.uint16
        encoders = self.native_encoders(workers)
        shares = [spans[k::workers] for k in range(workers)]

        def share(k: int) -> list[np.ndarray]:
            _THREAD.owner, _THREAD.encoder = self, encoders[k]
            try:
                return [self.encode_to_array(text[a:b], dtype) for a, b in shares[k]]
            finally:
                _THREAD.owner = _THREAD.encoder = None

        with ThreadPoolExecutor(workers - 1) as pool:
            futures = [pool.submit(share, k) for k in range(1, workers)]
            per_share = [share(0), *(f.result() for f in futures)]
        pieces = [per_share[i % workers][i // workers] for i in range(len(spans))]
        return np.concatenate(pieces).tolist() if pieces else []

    def _special_spans(self, text: str, p: int) -> bool:
        """Whether cutting before the space at ``p`` could change the special-token split: a
        special token starts before ``p`` and ends after it, or starts right after the space
        (then the space ends a text piece instead of starting the word " X...")."""
        for s in self.special_tokens:
            j = text.find(s, max(0, p - len(s) + 1), p + len(s) - 1)
            if 0 <= j < p or text.startswith(s, p + 1):
                return True
        return False

    def _stream_cut(self, buf: str) -> int:
        """The last position of ``buf`` up to which it can be encoded now, whatever follows (0: none)."""
        n = len(buf)
        # (a) a cut before a space + non-space, far enough from the end that any special
        # token crossing it would lie inside buf (so _special_spans sees it).
        limit = n - self._max_special - 2
        while limit > 0:
            p = buf.rfind(" ", 0, limit + 1)
            if p <= 0:
                break
            if not buf[p + 1].isspace() and not self._special_spans(buf, p):
                return p
            limit = p - 1
        # (b) the end of the last special token whose match is settled (it starts early enough
        # that no longer special token starting at the same place could still complete).
        best = 0
        if self._special_re is not None:
            for m in self._special_re.finditer(buf):
                if m.start() <= n - self._max_special:
                    best = m.end()
        return best

    # ------------------------------------------------------------------ merging

    def _merge_simple(self, word: bytes) -> list[int]:
        """Reference BPE on one byte string: merge the lowest-rank pair (all occurrences) until none."""
        ids = [self._byte_ids[b] for b in word]
        pair = self._pair
        while len(ids) > 1:
            best = None
            for p in zip(ids, ids[1:], strict=False):
                hit = pair.get(p)
                if hit is not None and (best is None or hit[0] < best[0]):
                    best, best_pair = hit, p
            if best is None:
                break
            a, b = best_pair
            merged = best[1]
            out = []
            i, n = 0, len(ids)
            while i < n:
                if i + 1 < n and ids[i] == a and ids[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of ``ids``. Raises ``LMError`` for an id outside the vocabulary."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        elif not isinstance(ids, list | tuple):
            ids = list(ids)
        try:
            return b"".join(map(self.vocab.__getitem__, ids))
        except (KeyError, TypeError):
            pass
        for k, i in enumerate(ids):
            if i not in self.vocab:
                raise LMError(
                    f"cannot decode id {i!r} at position {k}: ids must be integers in the vocabulary "
                    f"(0..{self.vocab_size - 1}, {len(self.vocab)} tokens)"
                ) from None
        raise AssertionError("unreachable")


def _recorded_special_tokens(tokenizer_dir: Path) -> tuple[list[str] | None, bool]:
    """The special tokens ``DIR/stats.json`` (``lm train-bpe``) lists (None when it lists
    none or cannot be read), and whether it is the full record ``lm train-bpe`` writes (with
    ``vocab_size``), whose list then says which vocabulary tokens are special."""
    with contextlib.suppress(ValueError, OSError):
        stats = json.loads((tokenizer_dir / "stats.json").read_text(encoding="utf-8"))
        listed = stats.get("special_tokens") if isinstance(stats, dict) else None
        if isinstance(listed, list) and all(isinstance(t, str) for t in listed):
            return listed, "vocab_size" in stats
    return None, False


__all__ = ["Tokenizer", "GPT2_PATTERN"]
