"""The memory BPE training needs, for a scheduler: it follows the number of distinct
pre-tokens of the corpus (the counts table, kept in the main process and in each
pre-tokenization worker), not the corpus size.

The distinct pre-tokens of a large corpus are estimated from a prefix: counted in its first
half and in the whole prefix, Heaps' law (distinct = K * size^beta) fitted through the two
points and extrapolated to the file's size. Vocabulary growth slows with size, so the
extrapolation errs high, the side to err on for a scheduler that kills jobs over their limit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from lm.tokenizer.chunks import chunk_size_for
from lm.tokenizer.pretokenize import pretokenize

#: The prefix read to estimate the distinct pre-tokens (the whole file when it is smaller).
SAMPLE_BYTES = 8 << 20
#: Bytes per distinct pre-token: in the main process (its counts and the merge loop's word
#: and pair tables) and in each worker (its counts). Measured: about 300 and 75 bytes (train-bpe,
#: 358k distinct pre-tokens, 2 workers: peak RSS 153 MB, workers 82 MB); doubled and more.
MAIN_BYTES_PER_PRETOKEN = 600
WORKER_BYTES_PER_PRETOKEN = 400
#: Python, the engine and the merge loop's small tables.
BASE_MB = 300


def distinct_pretokens_estimate(
    path: str | os.PathLike, special_tokens: list[str] = (), sample_bytes: int = SAMPLE_BYTES
) -> dict:
    """``{"distinct_pretokens", "exact", "sampled_bytes", "heaps_beta"}`` of a UTF-8 file:
    counted when the file fits in ``sample_bytes``, else extrapolated from its prefix."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        data = f.read(sample_bytes)
    text = data.decode("utf-8", errors="ignore")  # a character cut at the end is dropped
    if len(data) >= size:
        distinct = len(set(pretokenize(text, special_tokens)))
        return {
            "distinct_pretokens": distinct,
            "exact": True,
            "sampled_bytes": size,
            "heaps_beta": None,
        }
    half = len(text) // 2
    first = set(pretokenize(text[:half], special_tokens))
    whole = len(first | set(pretokenize(text[half:], special_tokens)))
    # the halves split one pre-token at most; vocabulary never shrinks: beta in [0.3, 1]
    beta = min(1.0, max(0.3, math.log(whole / max(1, len(first))) / math.log(2)))
    estimate = whole * (size / len(data)) ** beta
    return {
        "distinct_pretokens": math.ceil(estimate),
        "exact": False,
        "sampled_bytes": len(data),
        "heaps_beta": round(beta, 4),
    }


def bpe_training_mem_mb(distinct_pretokens: int, workers: int, corpus_bytes: int) -> int:
    """Host memory (MB, rounded up to 100) of `lm train-bpe` with ``workers`` processes:
    the main process's tables, and per worker its counts plus a few copies of its chunk."""
    chunk = chunk_size_for(corpus_bytes, workers)
    per_worker = WORKER_BYTES_PER_PRETOKEN * distinct_pretokens + 4 * chunk
    total = BASE_MB * 2**20 + MAIN_BYTES_PER_PRETOKEN * distinct_pretokens + workers * per_worker
    return int(math.ceil(total / 2**20 / 100) * 100)


def tokenizer_mem_mb(path: str | os.PathLike, special_tokens: list[str], workers: int) -> int:
    """What the BPE training of ``path`` with ``workers`` processes asks a scheduler for."""
    estimate = distinct_pretokens_estimate(path, special_tokens)
    return bpe_training_mem_mb(estimate["distinct_pretokens"], workers, Path(path).stat().st_size)
