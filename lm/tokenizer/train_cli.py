"""CLI: ``lm train-bpe`` (a text file -> vocab.json, merges.txt, stats.json, report.md)."""

from __future__ import annotations

import argparse
import os

from lm.errors import LMError
from lm.io import atomic_directory, write_json, write_text
from lm.progress import add_progress_argument
from lm.provenance import with_provenance
from lm.tokenizer.pretokenize import DEFAULT_SPECIAL_TOKENS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-bpe",
        help="train a byte-level BPE tokenizer on a text file",
        description=(
            "Train a byte-level BPE tokenizer (CS336 semantics: GPT-2 pre-tokenization, most "
            "frequent pair first, ties to the greatest pair) on a UTF-8 text file. Writes "
            "OUT/vocab.json and OUT/merges.txt (GPT-2 format), OUT/stats.json and OUT/report.md; "
            "OUT is built beside itself and renamed into place when complete."
        ),
    )
    p.add_argument("input", help="UTF-8 text file (documents separated by <|endoftext|>)")
    p.add_argument("--vocab-size", type=int, required=True, metavar="N",
                   help="bytes (256) + merges + special tokens")  # fmt: skip
    p.add_argument(
        "--special-token",
        action="append",
        dest="special_tokens",
        metavar="TOKEN",
        help="special token: split out of the text, never merged, given the last ids "
        "(repeatable; default: <|endoftext|>)",
    )
    p.add_argument(
        "--no-special-tokens", action="store_true", help="train without any special token"
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory, e.g. results/tinystories/tokenizer",
    )
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="pre-tokenization processes (default: all CPUs); the result does not depend on it",
    )  # fmt: skip
    p.add_argument("--chunk-size", type=int, default=None, metavar="BYTES",
                   help="bytes per pre-tokenization task (default: auto, at most 4 MiB)")  # fmt: skip
    add_progress_argument(p)
    p.set_defaults(func=_train)


def _special_tokens(args) -> list[str]:
    if args.no_special_tokens:
        if args.special_tokens:
            raise LMError("--no-special-tokens and --special-token contradict each other; give one")
        return []
    return args.special_tokens if args.special_tokens is not None else list(DEFAULT_SPECIAL_TOKENS)


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
    from lm.tokenizer.bpe import train_bpe_with_stats
    from lm.tokenizer.report import build_stats, render_markdown
    from lm.tokenizer.serialization import save_tokenizer

    if workers < 1:
        raise LMError(f"--workers must be at least 1, got {workers}")
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


def _train(args: argparse.Namespace) -> int:
    stats = train_to_dir(
        args.input,
        args.out,
        args.vocab_size,
        _special_tokens(args),
        workers=args.workers,
        chunk_size=args.chunk_size,
        progress=args.progress,
    )
    early = " (stopped early: no pair left)" if stats["stopped_early"] else ""
    print(
        f"{args.out}: {stats['vocab_size']} tokens{early}, {stats['merges']} merges, "
        f"{stats['total_seconds']:.1f} s (pre-tokenize {stats['pretokenize_seconds']:.1f} s, "
        f"merge {stats['merge_seconds']:.1f} s), peak {stats['peak_rss_mb']:.0f} MiB"
    )
    return 0
