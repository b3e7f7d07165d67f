"""The fast merge paths of :class:`lm.tokenizer.Tokenizer`: same ids as its reference merge.

The reference (:meth:`lm.tokenizer.Tokenizer._merge_simple`) merges one byte string by
scanning all its adjacent pairs for the lowest-rank one, merging every occurrence of it, and
repeating: O(n) per merge applied, O(n^2) at worst. Two faster ways give the same ids:

- :func:`merge_long`, for long pre-tokens (a run of thousands of spaces, a CJK paragraph):
  a heap of (rank, position) over a linked list of the tokens, O(n log n).
- :func:`merge_batch`, for many short pre-tokens at once (a cache fill): the reference's
  rounds done with numpy over all words together, the pair ranks found with
  :class:`PairTable`, an open-addressing hash table in numpy arrays.

Merge tables: ``byte_ids[b]`` is the id of byte ``b``; ``pair[(left, right)]`` is
``(rank, merged id)`` of the merge of two ids (the first rank for a repeated pair).
"""

from __future__ import annotations

import heapq

import numpy as np

#: The rank of "no such merge" (larger than any).
NO_RANK = np.iinfo(np.int64).max


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
