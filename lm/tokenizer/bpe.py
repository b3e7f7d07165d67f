"""Byte-level BPE training (the semantics of CS336 assignment 1).

    vocab, merges = train_bpe("corpus.txt", vocab_size=10_000, special_tokens=["<|endoftext|>"])

- The initial vocabulary is the 256 single bytes (ids 0-255).
- The text is split on the special tokens, then into pre-tokens with the GPT-2 pattern
  (:mod:`lm.tokenizer.pretokenize`); merges never cross either boundary.
- Each step merges the most frequent adjacent pair of tokens, counted over all
  pre-tokens; ties go to the lexicographically greatest pair ``(bytes, bytes)``.
  The new token gets the next id.
- Training stops at ``vocab_size`` (bytes + merges + special tokens), or earlier,
  without error, when no pair is left. Special tokens get the last ids.

The merge loop is incremental: the pair counts are kept up to date, and merging
``(a, b)`` only touches the pre-tokens that contain it (an index from pair to
pre-tokens) and only the pairs around each occurrence. The most frequent pair is
found with a heap with lazy invalidation (see :func:`merge_loop`).
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Iterable, Mapping

import numpy as np

from lm.errors import LMError
from lm.io import peak_rss_mb
from lm.tokenizer.pretokenize import count_pretokens


def check_arguments(vocab_size: int, special_tokens: Iterable[str]) -> list[str]:
    """Validate ``vocab_size`` and ``special_tokens``; return the special tokens, duplicates dropped."""
    if isinstance(special_tokens, str):
        raise LMError(f"special_tokens must be a list of strings, got the string {special_tokens!r}")
    specials: list[str] = []
    for s in special_tokens or []:
        if not isinstance(s, str):
            raise LMError(f"special token {s!r} is not a string")
        if s == "":
            raise LMError("a special token is the empty string; remove it from the special tokens")
        if len(s.encode("utf-8")) == 1:
            raise LMError(
                f"special token {s!r} is a single byte, which is already token {ord(s)} of the "
                f"byte vocabulary; use a longer special token"
            )
        if s not in specials:
            specials.append(s)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise LMError(f"vocab_size must be an integer, got {vocab_size!r}")
    least = 256 + len(specials)
    if vocab_size < least:
        raise LMError(
            f"vocab_size {vocab_size} is too small: the vocabulary holds the 256 bytes and "
            f"{len(specials)} special token(s), so vocab_size must be at least {least}"
        )
    return specials


def _inverted(token: bytes) -> str:
    """A string whose order is the reverse of the order of byte strings.

    Byte ``x`` becomes ``chr(256 - x)`` and a terminator ``chr(257)``, greater than all of
    those, ends the string; so a proper prefix sorts *after* its extensions. The key of a
    pair is ``_inverted(a) + _inverted(b)``: as the terminator occurs only at the end of each
    part, comparing these keys compares ``a`` first, then ``b``, both reversed. The smallest
    key in a min-heap is then the lexicographically greatest pair.
    """
    return "".join([chr(256 - x) for x in token]) + "\u0101"


def merge_loop(
    word_counts: Mapping[bytes, int],
    num_merges: int,
    on_merge=None,
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Learn up to ``num_merges`` merges from pre-token counts.

    Returns ``(tokens, merges)``: ``tokens[i]`` is the bytes of token ``i`` (256 single
    bytes, then one per merge) and ``merges`` the merged id pairs in order. Stops early if
    no pair is left. ``on_merge(n)`` is called now and then with the number of merges done
    since the last call (for a progress bar).

    Data structures (all keyed by integer ids; nothing is recounted):

    - ``words[w]``: the token ids of distinct pre-token ``w`` (a list, edited in place),
      and ``freqs[w]`` how often it occurs in the corpus.
    - ``count[k]``: occurrences of pair ``k = a << shift | b``, weighted by ``freqs``.
    - ``where[k]``: the words that contained pair ``k`` when it appeared. A pair only ever
      appears in the step that creates the newer of its two tokens (merging never splits
      tokens, so two existing tokens never become newly adjacent), so this list is built
      once and never grows; words that lost the pair since are skipped when it is merged.
    - ``heap``: entries ``(-count, inverted(a), inverted(b), k)``, see :func:`_inverted`.
      Only a new pair pushes an entry; when a count drops, its entry is left as is and
      fixed when it reaches the top (pushed back with the current count). An entry at
      the top whose count is current is then the most frequent pair, ties broken right.

    Merging ``(a, b)`` into ``new`` visits only the words in ``where[(a, b)]``. Each
    occurrence, with ``p`` the token before it and ``q`` the one after, turns the pairs
    ``(p, a)`` and ``(b, q)`` into ``(p, new)`` and ``(new, q)``. The word is appended to
    ``left[p]`` and ``right[q]``; at the end of the step each list gives, through the
    frequencies of its words, both the decrease of the old pair and the count and
    ``where`` list of the new pair. Back-to-back occurrences (``... a b a b ...``) make
    ``(new, new)`` instead of ``(new, a)``.
    """
    tokens: list[bytes] = [bytes([i]) for i in range(256)]
    inverted: list[str] = [_inverted(t) for t in tokens]
    max_id = 256 + max(0, num_merges)
    shift = max(16, max_id.bit_length())
    mask = (1 << shift) - 1

    words, freqs, count, where = _initial_pairs(word_counts, shift)
    heap = [(-c, inverted[k >> shift], inverted[k & mask], k) for k, c in count.items()]
    heapq.heapify(heap)
    heappop, heappush, heapreplace = heapq.heappop, heapq.heappush, heapq.heapreplace
    count_get = count.get
    freq_of = freqs.__getitem__

    merges: list[tuple[int, int]] = []
    pending_progress = 0
    while len(merges) < num_merges:
        # The most frequent pair: drop entries of vanished pairs, push back those whose count dropped.
        best = None
        while heap:
            neg, inv_a, inv_b, k = heap[0]
            c = count_get(k, 0)
            if c == -neg:
                best = k
                break
            if c:
                heapreplace(heap, (-c, inv_a, inv_b, k))
            else:
                heappop(heap)
        if best is None:
            break
        heappop(heap)
        a, b = best >> shift, best & mask
        new = len(tokens)
        tokens.append(tokens[a] + tokens[b])
        inv_new = _inverted(tokens[new])
        inverted.append(inv_new)
        merges.append((a, b))
        del count[best]

        left: dict[int, list[int]] = {}  # p -> words, one entry per occurrence of (p, a, b)
        right: dict[int, list[int]] = {}  # q -> words, one entry per occurrence of (a, b, q)
        both: list[int] = []  # words, one entry per (a, b, a, b) turned into (new, new)
        left_get, right_get = left.get, right.get
        words_with = where.pop(best)
        if type(words_with) is not list:
            words_with = words_with.tolist()
        for w in words_with:
            ids = words[w]
            m = ids.count(a)
            if not m:
                continue
            n = len(ids)
            i = -1
            while m:
                i = ids.index(a, i + 1)
                m -= 1
                if i + 1 < n and ids[i + 1] == b:
                    if i:
                        p = ids[i - 1]
                        if p == new:
                            both.append(w)
                        else:
                            lst = left_get(p)
                            if lst is None:
                                left[p] = [w]
                            else:
                                lst.append(w)
                    if i + 2 < n:
                        q = ids[i + 2]
                        lst = right_get(q)
                        if lst is None:
                            right[q] = [w]
                        else:
                            lst.append(w)
                    ids[i] = new
                    del ids[i + 1]
                    n -= 1
                    if a == b:
                        m -= 1

        b_shift, new_shift = b << shift, new << shift
        for p, lst in left.items():
            c = sum(map(freq_of, lst))
            k = p << shift | a
            rest = count[k] - c
            if rest:
                count[k] = rest
            else:
                del count[k]
            k = p << shift | new
            count[k] = c
            where[k] = lst
            heappush(heap, (-c, inverted[p], inv_new, k))
        # each (new, new) was first counted as (new, a) in right[a]
        fix = sum(map(freq_of, both)) if both else 0
        for q, lst in right.items():
            c = sum(map(freq_of, lst))
            k = b_shift | q
            if k != best:  # (a, a, a): the pair (b, q) is (a, b) itself, already gone
                rest = count[k] - c
                if rest:
                    count[k] = rest
                else:
                    del count[k]
            if q == a:
                c -= fix
                if not c:
                    continue
            k = new_shift | q
            count[k] = c
            where[k] = lst
            heappush(heap, (-c, inv_new, inverted[q], k))
        if both:
            k = new_shift | new
            count[k] = fix
            where[k] = both
            heappush(heap, (-fix, inv_new, inv_new, k))
        if on_merge is not None:
            pending_progress += 1
            if pending_progress >= 256:
                on_merge(pending_progress)
                pending_progress = 0
    if on_merge is not None and pending_progress:
        on_merge(pending_progress)
    return tokens, merges


def _initial_pairs(word_counts: Mapping[bytes, int], shift: int):
    """Words as id lists, their frequencies, and the count and ``where`` of every byte pair.

    Computed with numpy over all words at once. ``where`` values are numpy slices here
    (read-only views of one array); the merge loop turns one into a list when it needs it.
    """
    kept = [(w, c) for w, c in word_counts.items() if len(w) >= 2]
    words = [list(w) for w, _ in kept]
    freqs = [c for _, c in kept]
    if not kept:
        return words, freqs, {}, {}
    lens = np.fromiter((len(w) for w, _ in kept), dtype=np.int64, count=len(kept))
    flat = np.frombuffer(b"".join(w for w, _ in kept), dtype=np.uint8).astype(np.int64)
    ends = np.cumsum(lens)
    is_pair_start = np.ones(len(flat) - 1, dtype=bool)
    is_pair_start[ends[:-1] - 1] = False  # the last byte of a word starts no pair
    pair_key = (flat[:-1] * 256 + flat[1:])[is_pair_start]
    word_of = np.repeat(np.arange(len(kept), dtype=np.int64), lens - 1)
    freq_of = np.repeat(np.asarray(freqs, dtype=np.int64), lens - 1)
    order = np.argsort(pair_key, kind="stable")  # by pair, then by word
    pair_key, word_of, freq_of = pair_key[order], word_of[order], freq_of[order]
    group = np.flatnonzero(np.r_[True, pair_key[1:] != pair_key[:-1]])
    totals = np.add.reduceat(freq_of, group)
    keys = pair_key[group]
    # one entry per (pair, word): drop repeats of a word within its pair's group
    first = np.r_[True, (pair_key[1:] != pair_key[:-1]) | (word_of[1:] != word_of[:-1])]
    pair_key, word_of = pair_key[first], word_of[first]
    bounds = np.searchsorted(pair_key, keys).tolist() + [len(pair_key)]
    word_of = word_of.astype(np.int32)
    count: dict[int, int] = {}
    where: dict = {}
    for j, (key2, total) in enumerate(zip(keys.tolist(), totals.tolist(), strict=True)):
        k = (key2 >> 8) << shift | (key2 & 255)
        count[k] = total
        where[k] = word_of[bounds[j] : bounds[j + 1]]
    return words, freqs, count, where


def train_bpe_with_stats(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: Iterable[str] = ("<|endoftext|>",),
    workers: int = 1,
    chunk_size: int | None = None,
    progress: bool = False,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], dict]:
    """:func:`train_bpe`, also returning a dict of statistics for the report.

    The stats hold the corpus size (bytes, documents, distinct pre-tokens), the time of
    pre-tokenization and of merging, the peak memory of this process and of the workers,
    and whether training stopped early.
    """
    specials = check_arguments(vocab_size, special_tokens)
    t0 = time.perf_counter()
    corpus = count_pretokens(input_path, specials, workers=workers, chunk_size=chunk_size, progress=progress)
    if corpus.n_bytes == 0:
        raise LMError(f"input file {input_path} is empty; BPE needs some text to learn from")
    if not corpus.counts:
        raise LMError(
            f"input file {input_path} holds no text besides special tokens; BPE needs some text to learn from"
        )
    word_counts: dict[bytes, int] = {}
    for pretoken, n in corpus.counts.items():
        word_counts[pretoken.encode("utf-8")] = n
    n_pretokens = sum(corpus.counts.values())
    n_distinct = len(corpus.counts)
    del corpus.counts
    t1 = time.perf_counter()

    num_merges = vocab_size - 256 - len(specials)
    bar = None
    if progress:
        import sys

        from tqdm.auto import tqdm

        bar = tqdm(total=num_merges, unit="merge", desc="merge", file=sys.stderr)
    try:
        tokens, id_merges = merge_loop(word_counts, num_merges, on_merge=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    t2 = time.perf_counter()

    vocab = dict(enumerate(tokens))
    for s in specials:
        vocab[len(vocab)] = s.encode("utf-8")
    merges = [(tokens[a], tokens[b]) for a, b in id_merges]
    stats = {
        "input": str(input_path),
        "corpus_bytes": corpus.n_bytes,
        "documents": corpus.n_documents,
        "pretokens": n_pretokens,
        "distinct_pretokens": n_distinct,
        "chunks": corpus.n_chunks,
        "workers": int(workers),
        "vocab_size_requested": vocab_size,
        "vocab_size": len(vocab),
        "merges": len(merges),
        "special_tokens": specials,
        "stopped_early": len(merges) < num_merges,
        "pretokenize_seconds": round(t1 - t0, 4),
        "merge_seconds": round(t2 - t1, 4),
        "total_seconds": round(t2 - t0, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_workers_mb": round(peak_rss_mb(children=True), 1),
    }
    return vocab, merges, stats


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: Iterable[str] = ("<|endoftext|>",),
    workers: int = 1,
    chunk_size: int | None = None,
    progress: bool = False,
    **_ignored,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a byte-level BPE tokenizer on a UTF-8 text file.

    Args:
        input_path: the corpus (UTF-8). Streamed, never read whole.
        vocab_size: the size of the result: 256 bytes + merges + special tokens.
        special_tokens: strings split out of the text before training and added to the
            vocabulary at the end (duplicates dropped). They never take part in a merge.
        workers: processes that pre-tokenize and count in parallel. The result does not
            depend on it (nor on ``chunk_size``, the bytes per task, default a few MB).
        progress: show tqdm bars for pre-tokenization and merging.

    Returns:
        ``(vocab, merges)``: ``vocab`` maps id to token bytes (0-255 the bytes, then the
        merges in creation order, then the special tokens); ``merges`` lists the merged
        pairs ``(bytes, bytes)`` in creation order.

    Raises:
        LMError: for a ``vocab_size`` below 256 + the number of special tokens, an empty
        special token, a missing or empty file, a file with no text besides special
        tokens, or invalid UTF-8 (with its byte offset and line).
    """
    vocab, merges, _ = train_bpe_with_stats(
        input_path, vocab_size, special_tokens, workers=workers, chunk_size=chunk_size, progress=progress
    )
    return vocab, merges
