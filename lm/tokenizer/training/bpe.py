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
from heapq import heappop, heappush, heapreplace

import numpy as np

from lm.errors import LMError
from lm.io import peak_rss_mb
from lm.progress import progress_bar
from lm.tokenizer.native import engine as native_engine
from lm.tokenizer.native import module as native_module
from lm.tokenizer.pretokenize import count_pretokens


def check_arguments(vocab_size: int, special_tokens: Iterable[str]) -> list[str]:
    """Validate ``vocab_size`` and ``special_tokens``; return the special tokens, duplicates dropped."""
    if isinstance(special_tokens, str):
        raise LMError(
            f"special_tokens must be a list of strings, got the string {special_tokens!r}"
        )
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

    Byte ``x`` becomes ``chr(256 - x)``, and a terminator ``chr(257)``, greater than all of
    those, ends the string, so that a proper prefix sorts *after* its extensions. In the
    min-heap of :func:`merge_loop`, ties on the count are then broken by
    ``(_inverted(a), _inverted(b))``, whose smallest value is the lexicographically
    greatest pair ``(a, b)``, as the CS336 rule wants.
    """
    return "".join([chr(256 - x) for x in token]) + "\u0101"


#: Token ids are stored as the characters of Python strings, so ids must be code points.
MAX_VOCAB_SIZE = 0x110000


def merge_loop(
    word_counts: Mapping[bytes, int],
    num_merges: int,
    on_merge=None,
    consume: bool = False,
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Learn up to ``num_merges`` merges from pre-token counts.

    ``word_counts`` maps pre-token bytes to counts; with the native engine it may also be
    the engine's ``Counter`` (``count_pretokens(as_bytes="native")``), read in place, and
    with ``consume`` emptied once read (its memory then serves the merges).

    Returns ``(tokens, merges)``: ``tokens[i]`` is the bytes of token ``i`` (256 single
    bytes, then one per merge) and ``merges`` the merged id pairs in order. Stops early if
    no pair is left. ``on_merge(n)`` is called now and then with the number of merges done
    since the last call (for a progress bar).

    Data structures (the Python engine; the C one, ``_native.c``, mirrors them):

    - A token id is a character: token ``i`` is ``chr(i)``. A distinct pre-token ("word")
      is the ``str`` ``words[w]`` of its token ids (at first ``bytes.decode("latin-1")``),
      and ``freqs[w]`` is how often it occurs. A pair is the 2-character string
      ``chr(a) + chr(b)``, so merging it in a word is ``str.replace(pair, chr(new))``, which
      scans left to right without overlaps: exactly the BPE rule, run in C.
    - ``pair_count[pair]``: occurrences of the pair, weighted by ``freqs``.
    - ``pair_words[pair]``: the words that contained the pair when it appeared. A pair only
      ever appears in the step that creates the newer of its two tokens (merging never
      splits tokens, so two existing tokens never become newly adjacent), so this list is
      built once and never grows; words that lost the pair since are skipped when it is
      merged.
    - The queue of pairs by count (:class:`_PairQueue`): a heap with lazy updates, and
      "cold" buckets for the many rare pairs.

    Each step: take the most frequent pair (``_PairQueue.pop_best``), replace it in the
    words that hold it (:func:`_replace_in_words`, which notes the neighbours of each new
    token), and move the counts of the neighbouring pairs to the pairs with the new token
    (:func:`_count_new_pairs`).
    """
    if 256 + num_merges > MAX_VOCAB_SIZE:
        raise LMError(
            f"vocab_size can be at most {MAX_VOCAB_SIZE}, got {256 + num_merges} before special tokens"
        )
    tokens: list[bytes] = [bytes([i]) for i in range(256)]
    native = native_module()
    if native is not None:  # the same loop in C (lm/tokenizer/native/_native.c)
        counts = word_counts
        if type(counts) is not dict and not isinstance(counts, native.Counter):
            counts = dict(counts)
        merges = native.train_merges(counts, num_merges, on_merge, consume)
        for a, b in merges:
            tokens.append(tokens[a] + tokens[b])
        return tokens, merges

    inverted: list[str] = [_inverted(t) for t in tokens]  # tie-break key of each token
    words, freqs, pair_count, pair_words = _initial_pairs(word_counts)
    queue = _PairQueue(pair_count, inverted)
    merges: list[tuple[int, int]] = []
    # A for loop, not ``while len(merges) < num_merges``: CPython 3.11 specializes the
    # bytecode of a frame only once it has run a few JUMP_BACKWARDs, which a while loop's
    # back edge is not; unspecialized, this loop cost 7% more instructions (callgrind).
    for new_id in range(len(tokens), len(tokens) + num_merges):
        best = queue.pop_best()
        if best is None:
            break
        left_id, right_id = ord(best[0]), ord(best[1])
        new_token = chr(new_id)
        tokens.append(tokens[left_id] + tokens[right_id])
        inverted.append(inverted[left_id][:-1] + inverted[right_id])  # = _inverted(a + b)
        merges.append((left_id, right_id))
        left, right = _replace_in_words(words, pair_words.pop(best), best, new_token)
        _count_new_pairs(pair_count, pair_words, freqs, queue, best, new_token, left, right)
        del pair_count[best]  # only now: when a == b, it was also a pair the merge broke
        if on_merge is not None and not len(merges) % _PROGRESS_EVERY:
            on_merge(_PROGRESS_EVERY)
    if on_merge is not None and len(merges) % _PROGRESS_EVERY:
        on_merge(len(merges) % _PROGRESS_EVERY)
    return tokens, merges


#: merge_loop reports progress every this many merges.
_PROGRESS_EVERY = 256


class _PairQueue:
    """The pairs by count, most frequent first, ties to the lexicographically greatest pair.

    - ``heap``: entries ``(-count, inverted(a), inverted(b), pair)`` (see :func:`_inverted`).
      Only a new pair pushes an entry; when a count drops, its entry is left as is and fixed
      when it reaches the top (pushed back with the current count). An entry at the top
      whose count is current is then the most frequent pair, ties broken right.
    - ``cold[j]``: new pairs counted below ``2**level`` wait here (``j`` = bit length - 1 of
      their count) instead of in the heap: a count never grows after the pair appears, so
      such a pair cannot be the best while the heap top is at least ``2**level``. Most pairs
      are rare and stay here, which keeps the heap small.
    """

    def __init__(self, pair_count: dict[str, int], inverted: list[str]):
        self.pair_count = pair_count
        self.count_of = pair_count.get
        self.inverted = inverted
        self.heap = [
            (-c, inverted[ord(k[0])], inverted[ord(k[1])], k) for k, c in pair_count.items()
        ]
        heapq.heapify(self.heap)
        self.level = max(pair_count.values(), default=1).bit_length()
        self.cold: list[list[str]] = [[] for _ in range(64)]

    def pop_best(self) -> str | None:
        """Remove and return the most frequent pair (``None`` when no pair is left)."""
        heap, count_of = self.heap, self.count_of
        while True:
            # drop entries of vanished pairs, push back those whose count dropped
            while heap:
                neg_count, inv_left, inv_right, pair = heap[0]
                count = count_of(pair, 0)
                if count == -neg_count:
                    break
                if count:
                    heapreplace(heap, (-count, inv_left, inv_right, pair))
                else:
                    heappop(heap)
            top = -heap[0][0] if heap else 0
            if top >> self.level or not self.level:
                return heappop(heap)[3] if heap else None
            self._warm_up(top)

    def _warm_up(self, top: int) -> None:
        """The heap top is below ``2**level``: bring in the cold pairs that might beat it."""
        count_of, inverted, cold = self.count_of, self.inverted, self.cold
        new_level = top.bit_length() - 1 if top else 0
        for j in range(new_level, self.level):
            for pair in cold[j]:
                count = count_of(pair)
                if count:
                    heappush(
                        self.heap, (-count, inverted[ord(pair[0])], inverted[ord(pair[1])], pair)
                    )
            cold[j] = []
        self.level = new_level


def _replace_in_words(words: list[str], candidates, pair: str, new_token: str):
    """Replace ``pair`` by ``new_token`` in each word of ``candidates`` that still holds it,
    and note the neighbours of each new token: ``(left, right)`` where ``left[p]`` lists a
    word once per ``(p, new)`` made and ``right[q]`` once per ``(new, q)`` made, ``q`` being
    the new token itself for a ``(new, new)`` (from ``a b a b``)."""
    left: dict[str, list[int]] = {}
    right: dict[str, list[int]] = {}
    both: list[int] = []  # the words of right[new_token], kept apart while scanning
    left_get, right_get = left.get, right.get
    if type(candidates) is not list:  # a numpy slice from _initial_pairs
        candidates = candidates.tolist()
    for w in candidates:
        word = words[w]
        if pair not in word:
            continue
        merged = word.replace(pair, new_token)
        words[w] = merged
        n = len(merged)
        if n == 1:
            continue
        pos = merged.find(new_token)
        while pos >= 0:
            if pos:
                before = merged[pos - 1]
                if before == new_token:
                    both.append(w)
                else:
                    words_of = left_get(before)
                    if words_of is None:
                        left[before] = [w]
                    else:
                        words_of.append(w)
            pos += 1
            if pos == n:
                break
            after = merged[pos]
            if after != new_token:  # else pos is at the next new token already
                words_of = right_get(after)
                if words_of is None:
                    right[after] = [w]
                else:
                    words_of.append(w)
                pos = merged.find(new_token, pos + 1)
    if both:
        right[new_token] = both
    return left, right


def _count_new_pairs(
    pair_count, pair_words, freqs, queue: _PairQueue, merged_pair, new_token, left, right
) -> None:
    """Move counts from the pairs the merge broke to the pairs it made.

    Each ``(p, new)`` made was a ``(p, a)`` before, each ``(new, q)`` a ``(b, q)``, each
    ``(new, new)`` a ``(b, a)``: the old pair loses, and the new pair gets, the
    frequencies of the words listed for it (which also become its ``pair_words``).
    When ``a == b``, the old pair of a ``(new, a)`` or ``(new, new)`` is the merged pair
    itself, which is why ``pair_count`` still holds it here."""
    first, second = merged_pair
    freq_of = freqs.__getitem__
    heap, cold, level, inverted = queue.heap, queue.cold, queue.level, queue.inverted
    # one loop over both sides: cheaper than building a list of (old, new, words) changes
    for neighbours in (left, right):
        on_the_left = neighbours is left
        for neighbour, words_of in neighbours.items():
            if on_the_left:
                old, new = neighbour + first, neighbour + new_token
            elif neighbour == new_token:
                old, new = second + first, new_token + new_token
            else:
                old, new = second + neighbour, new_token + neighbour
            count = freqs[words_of[0]] if len(words_of) == 1 else sum(map(freq_of, words_of))
            rest = pair_count[old] - count
            if rest:
                pair_count[old] = rest
            else:
                del pair_count[old]
            pair_count[new] = count
            pair_words[new] = words_of
            if count >> level:
                heappush(heap, (-count, inverted[ord(new[0])], inverted[ord(new[1])], new))
            else:
                cold[count.bit_length() - 1].append(new)


def _initial_pairs(word_counts: Mapping[bytes, int]):
    """Words as strings of ids, their frequencies, and the count and ``where`` of every byte pair.

    Computed with numpy over all words at once. ``where`` values are numpy slices here
    (views of one array); the merge loop turns one into a list when it merges that pair.
    """
    words = [w.decode("latin-1") for w in word_counts]
    freqs = list(word_counts.values())
    if not words:
        return words, freqs, {}, {}
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    flat = np.frombuffer(b"".join(word_counts), dtype=np.uint8).astype(np.uint16)
    ends = np.cumsum(lens)
    starts_pair = np.ones(len(flat), dtype=bool)
    starts_pair[ends - 1] = False  # the last byte of a word starts no pair
    starts_pair = starts_pair[:-1]
    pair_id = (flat[:-1] << 8 | flat[1:])[starts_pair]
    if not len(pair_id):
        return words, freqs, {}, {}
    word_of = np.repeat(np.arange(len(words), dtype=np.int32), lens - 1)
    order = np.argsort(pair_id, kind="stable")  # by pair, then by word (radix sort on uint16)
    pair_id, word_of = pair_id[order], word_of[order]
    freq_of = np.asarray(freqs, dtype=np.int64)[word_of]
    new_pair = np.r_[True, pair_id[1:] != pair_id[:-1]]
    group = np.flatnonzero(new_pair)
    totals = np.add.reduceat(freq_of, group).tolist()
    ids = pair_id[group].tolist()
    # where: one entry per (pair, word), so drop a word repeated within its pair's group
    keep = new_pair.copy()
    keep[1:] |= word_of[1:] != word_of[:-1]
    word_of = word_of[keep]
    bounds = np.flatnonzero(new_pair[keep]).tolist() + [len(word_of)]
    count: dict[str, int] = {}
    where: dict = {}
    for j, (pid, total) in enumerate(zip(ids, totals, strict=True)):
        k = chr(pid >> 8) + chr(pid & 255)
        count[k] = total
        where[k] = word_of[bounds[j] : bounds[j + 1]]
    return words, freqs, count, where


def _current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux), to tell training apart from imports."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


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
    and whether training stopped early. ``rss_at_start_mb`` is the memory the process held
    before training began (interpreter, imported libraries), part of ``peak_rss_mb``.
    """
    specials = check_arguments(vocab_size, special_tokens)
    rss_start = _current_rss_mb()
    t0 = time.perf_counter()
    corpus = count_pretokens(
        input_path,
        specials,
        workers=workers,
        chunk_size=chunk_size,
        progress=progress,
        as_bytes="native",  # with the native engine, its counter: no Python objects
    )
    if corpus.n_bytes == 0:
        raise LMError(f"input file {input_path} is empty; BPE needs some text to learn from")
    if not corpus.counts:
        raise LMError(
            f"input file {input_path} holds no text besides special tokens; BPE needs some text to learn from"
        )
    word_counts = corpus.counts
    native_counts = not isinstance(word_counts, dict)
    n_pretokens = word_counts.total if native_counts else sum(word_counts.values())
    n_distinct = len(word_counts)
    del corpus.counts
    t1 = time.perf_counter()

    num_merges = vocab_size - 256 - len(specials)
    with progress_bar(num_merges, "merge", "merges", progress) as bar:
        tokens, id_merges = merge_loop(word_counts, num_merges, bar.update, consume=True)
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
        "engine": native_engine(),
        "vocab_size_requested": vocab_size,
        "vocab_size": len(vocab),
        "merges": len(merges),
        "special_tokens": specials,
        "stopped_early": len(merges) < num_merges,
        "pretokenize_seconds": round(t1 - t0, 4),
        "merge_seconds": round(t2 - t1, 4),
        "total_seconds": round(t2 - t0, 4),
        "rss_at_start_mb": rss_start,
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
        input_path,
        vocab_size,
        special_tokens,
        workers=workers,
        chunk_size=chunk_size,
        progress=progress,
    )
    return vocab, merges
