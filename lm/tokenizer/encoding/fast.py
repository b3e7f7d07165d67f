"""The fast paths of the Python engine's encoding: caches, and merges that equal the reference.

:class:`lm.tokenizer.Tokenizer` (in :mod:`lm.tokenizer.encoding.tokenizer`) holds the public API
and the readable reference merge, :meth:`~lm.tokenizer.Tokenizer._merge_simple`: scan all
adjacent pairs of one byte string for the lowest-rank one, merge every occurrence of it,
repeat (O(n) per merge applied, O(n^2) at worst). What makes encoding fast, with the same
ids, is here:

- :class:`CachedEncoding`, the Tokenizer's encoding of text by words (a space + what
  follows up to the next such space) with bounded caches of their ids, filled in bulk: new
  words are pre-tokenized in one regex pass and their pre-tokens merged all at once
  (``_merge_many``, which picks one of the paths below for each).
- :func:`merge_long`, for long pre-tokens (a run of thousands of spaces, a CJK paragraph):
  a heap of (rank, position) over a linked list of the tokens, O(n log n).
- :func:`merge_batch`, for many short pre-tokens at once: the reference's rounds done
  with numpy over all words together, the pair ranks found with :class:`PairTable`, an
  open-addressing hash table in numpy arrays.

Merge tables: ``byte_ids[b]`` is the id of byte ``b``; ``pair[(left, right)]`` is
``(rank, merged id)`` of the merge of two ids (the first rank for a repeated pair).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import operator
import re

import numpy as np

from lm.tokenizer.pretokenize import PRETOKEN_RE, find_pretokens

#: The rank of "no such merge" (larger than any).
NO_RANK = np.iinfo(np.int64).max

# A space followed by a character that is not whitespace is always where a GPT-2
# pre-token starts: no alternative of the pattern has a space anywhere but at its very
# start, except the whitespace-only ones, and `\s+(?!\S)` / `\s+` stop before such a space
# (a run "<ws>* X" is matched as "<ws>*" then " X..."). Cutting a text before each such
# space therefore leaves its pre-tokens unchanged. Python's `\S` (not str.isspace) is a
# subset of the `regex` module's / Unicode's non-White_Space characters (tested), so this
# never cuts where the pattern would not.
_WORD_SPLIT = re.compile(r" (?=\S)")
# A space followed by white space or by the end: where _WORD_SPLIT does not cut. A text
# without one is cut by _WORD_SPLIT at every space, so ``text.split(" ")`` (faster) is the same.
_SPACE_NOT_BEFORE_WORD = re.compile(r" (?!\S)")

# Cache sizes (entries, beyond the entries seeded from the vocabulary). When full, a
# cache is emptied back to its seed (cheap, and bounds memory).
WORD_CACHE_SIZE = 1 << 18

PRETOKEN_CACHE_SIZE = 1 << 17
# Longest text handed to the word path at once (characters); longer texts are cut.
_BLOCK_CHARS = 1 << 20
# Characters of text whose new words are cached at once, when a word is missing.
_FILL_CHARS = 1 << 18
# Pre-tokens longer than this (bytes) are merged with the O(n log n) heap algorithm.
_LONG_PRETOKEN = 48
# Fewer pre-tokens than this are merged one by one (numpy set-up costs more).
_MIN_BATCH = 24


def merge_long(word: bytes, byte_ids: list[int], pair: dict) -> list[int]:
    """BPE on a long byte string in O(n log n): a heap of (rank, position) over a linked list.

    Equals the reference merge when every merge only uses tokens made by earlier merges
    (``Tokenizer._well_ordered``: true of any trained BPE, GPT-2's included)."""
    ids = [byte_ids[b] for b in word]
    n = len(ids)
    nxt = list(range(1, n + 1))  # the next live position after each (n: none)
    prv = list(range(-1, n - 1))  # the live position before each (-1: none)
    alive = [True] * n
    heap = []  # (rank, position of the pair's left token); stale entries skipped
    for i in range(n - 1):
        hit = pair.get((ids[i], ids[i + 1]))
        if hit is not None:
            heap.append((hit[0], i))
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = nxt[i]
        if not alive[i] or j >= n:
            continue
        hit = pair.get((ids[i], ids[j]))
        if hit is None or hit[0] != rank:
            continue  # stale entry
        ids[i] = hit[1]
        alive[j] = False
        k = nxt[j]
        nxt[i] = k
        if k < n:
            prv[k] = i
            hit = pair.get((ids[i], ids[k]))
            if hit is not None:
                heapq.heappush(heap, (hit[0], i))
        p = prv[i]
        if p >= 0:
            hit = pair.get((ids[p], ids[i]))
            if hit is not None:
                heapq.heappush(heap, (hit[0], p))
    return [t for t, a in zip(ids, alive, strict=True) if a]


class PairTable:
    """The merge pairs in an open-addressing hash table (linear probing, load <= 1/4) of
    numpy arrays, so that :meth:`lookup` finds many pairs at once. A pair ``(left, right)``
    is the key ``left * width + right``. The extra last slot stands for "no such merge"
    (rank :data:`NO_RANK`)."""

    def __init__(self, pair: dict, width: int):
        n = len(pair)
        self.width = width
        keys = np.fromiter((a * width + b for a, b in pair), dtype=np.int64, count=n)
        ranks = np.fromiter((r for r, _ in pair.values()), dtype=np.int64, count=n)
        merged = np.fromiter((m for _, m in pair.values()), dtype=np.int64, count=n)
        bits = max(4, int(n).bit_length() + 2)
        size = 1 << bits
        self.shift = np.uint64(64 - bits)
        self.mask = size - 1
        self.keys = np.full(size + 1, -1, dtype=np.int64)
        self.keys[size] = -2
        self.ranks = np.full(size + 1, NO_RANK, dtype=np.int64)
        self.merged = np.full(size + 1, -1, dtype=np.int64)
        slot = self._home_slot(keys)
        left = np.arange(n)  # keys not placed yet, each trying its slot
        while len(left):
            s = slot[left]
            free = self.keys[s] == -1
            _, first = np.unique(s[free], return_index=True)
            win = left[free][first]  # one key per free slot takes it
            self.keys[slot[win]] = keys[win]
            self.ranks[slot[win]] = ranks[win]
            self.merged[slot[win]] = merged[win]
            placed = np.zeros(n, dtype=bool)
            placed[win] = True
            left = left[~placed[left]]
            slot[left] = (slot[left] + 1) & self.mask

    def _home_slot(self, keys: np.ndarray) -> np.ndarray:
        # Fibonacci hashing: the top bits of key * 2^64/phi (wrapping uint64 arithmetic)
        return ((keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> self.shift).astype(
            np.int64
        )

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Table slot of each pair key; the "no merge" slot if absent."""
        tab = self.keys
        slot = self._home_slot(keys)
        found = tab[slot]
        out = np.where(found == keys, slot, len(tab) - 1)
        todo = np.flatnonzero((found != keys) & (found != -1))
        while len(todo):
            s = (slot[todo] + 1) & self.mask
            slot[todo] = s
            found = tab[s]
            hit = found == keys[todo]
            out[todo[hit]] = s[hit]
            todo = todo[~hit & (found != -1)]
        return out


def merge_batch(words: list[bytes], byte_ids: np.ndarray, table: PairTable) -> list[list[int]]:
    """The reference BPE of many byte strings at once, with numpy (``byte_ids`` as an array).

    Each round, every word finds its lowest-rank pair and merges all its occurrences
    (left to right: in a run x x x of pair (x, x) the 1st and 3rd pair merge). Words
    with nothing left to merge leave the working set.
    """
    n = len(words)
    lens = np.fromiter(map(len, words), dtype=np.int64, count=n)
    toks = byte_ids[np.frombuffer(b"".join(words), dtype=np.uint8)]  # all words' ids
    wid = np.repeat(np.arange(n, dtype=np.int64), lens)  # the word of each id
    ranks, merged, width = table.ranks, table.merged, table.width
    no_merge = len(ranks) - 1
    done_t, done_w = [], []
    while len(toks):
        pos = table.lookup(toks[:-1] * width + toks[1:])
        pos[wid[:-1] != wid[1:]] = no_merge
        pos = np.append(pos, no_merge)
        rank = ranks[pos]
        starts = np.flatnonzero(np.diff(wid, prepend=-1))
        wmin = np.minimum.reduceat(rank, starts)
        finished = wmin == NO_RANK
        if finished.any():
            seglen = np.diff(np.append(starts, len(toks)))
            gone = np.repeat(finished, seglen)
            done_t.append(toks[gone])
            done_w.append(wid[gone])
            stay = ~gone
            toks, wid, rank, pos = toks[stay], wid[stay], rank[stay], pos[stay]
            if not len(toks):
                break
            wmin = wmin[~finished]
            starts = np.flatnonzero(np.diff(wid, prepend=-1))
        seglen = np.diff(np.append(starts, len(toks)))
        at = np.flatnonzero(rank == np.repeat(wmin, seglen))
        if len(at) > 1:
            run_start = np.empty(len(at), dtype=bool)
            run_start[0] = True
            np.not_equal(at[1:], at[:-1] + 1, out=run_start[1:])
            if not run_start.all():  # overlapping (x, x) pairs: keep every other one
                first = np.flatnonzero(run_start)
                offset = np.arange(len(at)) - first[np.cumsum(run_start) - 1]
                at = at[offset % 2 == 0]
        toks = toks.copy()
        toks[at] = merged[pos[at]]
        keep = np.ones(len(toks), dtype=bool)
        keep[at + 1] = False
        toks, wid = toks[keep], wid[keep]
    t = np.concatenate(done_t)
    w = np.concatenate(done_w)
    order = np.argsort(w, kind="stable")
    flat = t[order].tolist()
    ends = np.cumsum(np.bincount(w, minlength=n)).tolist()
    return list(map(flat.__getitem__, map(slice, [0, *ends[:-1]], ends)))


class CachedEncoding:
    """The Python engine's encoding of text, made fast with caches: a mixin of
    :class:`lm.tokenizer.Tokenizer`, whose construction sets what it uses: ``_byte_ids``
    (and ``_byte_ids_np``), ``_pair``, ``_pair_table``, ``_well_ordered``, ``_whole`` (the
    whole-token shortcut), the three caches ``_word_cache``, ``_head_cache`` and
    ``_pretoken_cache`` with their seeds ``_seed_*``, and the reference ``_merge_simple``
    and ``safe_cut`` (see the module docstring of :mod:`lm.tokenizer.encoding.tokenizer` for how the
    parts fit together)."""

    def _build_seed_caches(self) -> None:
        """Cache entries known from the vocabulary alone: every whole token is its own id list.

        A text piece that is exactly one vocabulary token (" the", "ing", ",") then needs no
        work even the first time it is seen. A word (" " + w) or a head enters the cache
        only if the pattern makes it a single pre-token, since its ids are the ids of its
        pre-tokens.
        """
        self._seed_pretokens: dict[str, tuple[int, ...]] = {}
        self._seed_words: dict[str, tuple[int, ...]] = {}
        self._seed_heads: dict[str, tuple[int, ...]] = {}
        findall = PRETOKEN_RE.findall
        for token, token_id in self._whole.items():
            try:
                text = token.decode("utf-8")
            except UnicodeDecodeError:
                continue
            ids = (token_id,)
            self._seed_pretokens[text] = ids
            if findall(text) != [text]:
                continue
            if len(text) > 1 and text[0] == " " and not text[1].isspace():
                self._seed_words[text[1:]] = ids
            self._seed_heads[text] = ids

    def _units(self, texts: list[str], ids_after: list[int]) -> list[tuple[str, int | None]]:
        """(text, id of the special token that follows it or None), texts cut to at most
        about ``_BLOCK_CHARS`` characters at safe points."""
        units: list[tuple[str, int | None]] = []
        for k, text in enumerate(texts):
            after = ids_after[k] if k < len(ids_after) else None
            if len(text) <= _BLOCK_CHARS:
                units.append((text, after))
                continue
            start = 0
            while start < len(text):
                end = self.safe_cut(text, start + _BLOCK_CHARS)
                units.append((text[start:end], after if end >= len(text) else None))
                start = end
        return units

    def _encode_units(self, units: list[tuple[str, int | None]]) -> list[int]:
        out: list[int] = []
        group: list[tuple[str, int | None]] = []
        size = 0
        for unit in units:
            group.append(unit)
            size += len(unit[0])
            if size >= _BLOCK_CHARS:
                self._encode_group(group, out)
                group, size = [], 0
        if group:
            self._encode_group(group, out)
        return out

    def _encode_group(self, units: list[tuple[str, int | None]], out: list[int]) -> None:
        """Append to ``out`` the ids of each (text, special id after it) in ``units``."""
        split = _WORD_SPLIT.split
        other_space = _SPACE_NOT_BEFORE_WORD.search
        word_lists = [
            (text.split(" ") if other_space(text) is None else split(text)) if text else None
            for text, _ in units
        ]
        # Optimistic: emit the cached ids of unit after unit (the steady state of a long
        # input). At a unit with a word not cached yet, fill the caches for the words of the
        # next _FILL_CHARS characters of units, and go on from that unit.
        k = self._emit(word_lists, units, out, 0)
        while k < len(units):
            end, size = k, 0
            while end < len(units) and size < _FILL_CHARS:
                size += len(units[end][0])
                end += 1
            self._fill_caches(word_lists[k:end])
            k = self._emit(word_lists, units, out, k)

    def _fill_caches(self, word_lists) -> None:
        """Compute and cache the ids of the words and heads of ``word_lists`` not cached yet."""
        islice = itertools.islice
        words = self._word_cache
        heads = self._head_cache
        new_words: set[str] = set()
        new_heads: set[str] = set()
        for ws in word_lists:
            if ws:
                new_heads.add(ws[0])
                if len(ws) > 1:
                    new_words.update(islice(ws, 1, None))
        # (set.difference with a dict walks the set; difference_update would walk the dict)
        new_words = new_words.difference(words)
        new_heads = new_heads.difference(heads)
        if new_words:
            if len(words) + len(new_words) > WORD_CACHE_SIZE + len(self._seed_words):
                words.clear()
                words.update(self._seed_words)
                new_words = set().union(*(islice(ws, 1, None) for ws in word_lists if ws))
                new_words = new_words.difference(words)
            self._add_words(new_words)
        if new_heads:
            if len(heads) + len(new_heads) > WORD_CACHE_SIZE + len(self._seed_heads):
                heads.clear()
                heads.update(self._seed_heads)
                new_heads = {ws[0] for ws in word_lists if ws}.difference(heads)
            self._add_heads(new_heads)

    def _emit(self, word_lists, units, out: list[int], start: int) -> int:
        """Append the cached ids of the units from ``start`` on, up to the first unit with a
        word not in the cache; return that unit's index (``len(units)`` if none)."""
        get = self._word_cache.__getitem__
        heads = self._head_cache
        extend_all = functools.partial(functools.reduce, operator.iadd)  # out += ids, each word
        islice = itertools.islice
        k = start
        n = len(out)
        try:
            for k in range(start, len(units)):
                n = len(out)
                ws = word_lists[k]
                if ws:
                    out += heads[ws[0]]
                    if len(ws) > 1:
                        extend_all(map(get, islice(ws, 1, None)), out)
                after = units[k][1]
                if after is not None:
                    out.append(after)
        except KeyError:
            del out[n:]
            return k
        return len(units)

    def _add_heads(self, new: set[str]) -> None:
        """Cache the ids of texts that open a piece (no implied leading space)."""
        heads = list(new)
        per_head = [find_pretokens(h) for h in heads]
        ids = iter(self._pretoken_ids(list(itertools.chain.from_iterable(per_head))))
        chain, islice = itertools.chain.from_iterable, itertools.islice
        self._head_cache.update(
            (h, tuple(chain(islice(ids, len(t))))) for h, t in zip(heads, per_head, strict=True)
        )

    def _add_words(self, new: set[str]) -> None:
        """Compute and cache the ids of each word in ``new`` (each meaning " " + word)."""
        # ASCII words are pre-tokenized apart, with the faster ASCII pattern
        ascii_words = list(filter(str.isascii, new))
        if len(ascii_words) < len(new):
            self._add_words_of(list(new.difference(ascii_words)))
        if ascii_words:
            self._add_words_of(ascii_words)

    def _add_words_of(self, words: list[str]) -> None:
        joined = " " + " ".join(words)
        pretokens = find_pretokens(joined)
        ids = self._pretoken_ids(pretokens)
        if len(pretokens) == len(words):  # common case: one pre-token per word
            self._word_cache.update(zip(words, ids, strict=True))
            return
        # Group the pre-tokens by word, by character offsets (no pre-token crosses a word).
        tok_len = np.fromiter(map(len, pretokens), dtype=np.int64, count=len(pretokens))
        tok_start = np.cumsum(tok_len) - tok_len
        word_len = np.fromiter(map(len, words), dtype=np.int64, count=len(words)) + 1
        word_start = np.cumsum(word_len) - word_len
        first_tok = np.searchsorted(tok_start, word_start)
        flat = tuple(itertools.chain.from_iterable(ids))  # (slices of a tuple are tuples)
        if len(flat) == len(ids):  # one id per pre-token (the usual case)
            ends = np.append(first_tok[1:], len(ids)).tolist()
        else:
            n_ids = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            ends = np.cumsum(np.add.reduceat(n_ids, first_tok)).tolist()
        self._word_cache.update(
            zip(words, map(flat.__getitem__, map(slice, [0, *ends[:-1]], ends)), strict=True)
        )

    def _pretoken_ids(self, pretokens: list[str]) -> list[tuple[int, ...]]:
        """The ids of each pre-token (cached)."""
        cache = self._pretoken_cache
        new = set(pretokens).difference(cache)
        if new:
            if len(cache) + len(new) > PRETOKEN_CACHE_SIZE + len(self._seed_pretokens):
                cache.clear()
                cache.update(self._seed_pretokens)
                new = set(pretokens).difference(cache)
            new = list(new)
            merged = self._merge_many([t.encode("utf-8") for t in new])
            cache.update(zip(new, map(tuple, merged), strict=True))
        return list(map(cache.__getitem__, pretokens))

    # ------------------------------------------------------------------ merging

    def _merge_many(self, words: list[bytes], use_whole: bool = True) -> list[list[int]]:
        """BPE-merge each byte string; returns the id list of each."""
        out: list[list[int] | None] = [None] * len(words)
        short: list[int] = []
        whole = self._whole if use_whole else {}
        for i, w in enumerate(words):
            token = whole.get(w)
            if token is not None:
                out[i] = [token]
            elif len(w) > _LONG_PRETOKEN:
                out[i] = self._merge_long(w)
            else:
                short.append(i)
        if len(short) >= _MIN_BATCH:
            for i, ids in zip(short, self._merge_batch([words[i] for i in short]), strict=True):
                out[i] = ids
        else:
            for i in short:
                out[i] = self._merge_simple(words[i])
        return out  # type: ignore[return-value]

    def _merge_long(self, word: bytes) -> list[int]:
        """:meth:`_merge_simple` in O(n log n) (:func:`lm.tokenizer.encoding.fast.merge_long`), for
        long byte strings; the same ids when the merges are well ordered (else it is used)."""
        if not self._well_ordered:
            return self._merge_simple(word)
        return merge_long(word, self._byte_ids, self._pair)

    def _merge_batch(self, words: list[bytes]) -> list[list[int]]:
        """:meth:`_merge_simple` of many byte strings at once, with numpy
        (:func:`lm.tokenizer.encoding.fast.merge_batch`)."""
        return merge_batch(words, self._byte_ids_np, self._pair_table)
