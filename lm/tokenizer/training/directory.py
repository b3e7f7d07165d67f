"""A trained tokenizer's directory: train BPE on a text file and write ``vocab.json``,
``merges.txt``, ``stats.json`` and ``report.md`` together (what ``lm train-bpe`` does)."""

from __future__ import annotations

from lm.errors import LMError
from lm.io import atomic_directory, write_json, write_text
from lm.provenance import with_provenance
from lm.tokenizer.serialization import save_tokenizer
from lm.tokenizer.training.bpe import train_bpe_with_stats
from lm.tokenizer.training.report import build_stats, render_markdown


def train_to_dir(
    input_path,
    out_dir,
    vocab_size: int,
    special_tokens: list[str],
    workers: int = 1,
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict:
    """Train and write ``out_dir`` (vocab.json, merges.txt, stats.json, report.md) atomically.

    The directory is built under a temporary name beside ``out_dir`` and renamed onto it
    at the end (replacing an older one), so ``out_dir`` is either the old or the complete
    new result. Returns the stats.
    """
    if workers < 1:
        raise LMError(f"workers (--workers) must be at least 1, got {workers}")
    vocab, merges, stats = train_bpe_with_stats(
        input_path,
        vocab_size,
        special_tokens,
        workers=workers,
        chunk_size=chunk_size,
        progress=progress,
    )
    stats = build_stats(vocab, merges, stats)
    with atomic_directory(out_dir) as tmp:
        save_tokenizer(vocab, merges, tmp)
        stats = with_provenance(stats, "train-bpe")
        write_json(tmp / "stats.json", stats)
        write_text(tmp / "report.md", render_markdown(stats))
    return stats
