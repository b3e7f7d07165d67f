"""CLI: ``lm encode`` (a text file -> token ids ``.npy``) and ``lm tokenizer-experiments``."""

from __future__ import annotations

import argparse
import os

from lm.progress import add_progress_argument
from lm.tokenizer.encoding.dataset import DEFAULT_SPECIAL_TOKENS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "encode",
        help="encode a text file into a .npy array of token ids (streaming, parallel)",
        description=(
            "Encode a UTF-8 text file with a trained tokenizer (vocab.json + merges.txt) into one "
            ".npy array of ids (uint16 when the vocabulary fits, else uint32), loadable with "
            "np.load(path, mmap_mode='r'). Writes a stats JSON beside it."
        ),
    )
    p.add_argument("input", help="UTF-8 text file (documents separated by <|endoftext|>)")
    p.add_argument(
        "--tokenizer", required=True, metavar="DIR", help="directory with vocab.json and merges.txt"
    )
    p.add_argument(
        "--special-token",
        action="append",
        dest="special_tokens",
        metavar="TOKEN",
        help="special token kept as one id (repeatable; default: <|endoftext|>)",
    )
    p.add_argument(
        "--out", required=True, metavar="PATH", help="output .npy, e.g. results/x/tokens/train.npy"
    )
    p.add_argument(
        "--stats", metavar="PATH", help="stats JSON (default: OUT without .npy + .stats.json)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="threads of this process (native engine; forked processes with LM_NATIVE=0) "
        "(default: all CPUs)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="bytes per task (default: auto)",
    )
    add_progress_argument(p)
    p.set_defaults(func=_encode)

    q = subparsers.add_parser(
        "tokenizer-experiments",
        help="compression ratios, cross-dataset matrix, throughput and dtype of trained tokenizers",
        description=(
            "The CS336 tokenizer experiments: bytes/token of each tokenizer on 10 documents sampled "
            "(seeded reservoir sampling) from each dataset, throughput and the time to tokenize "
            "the Pile, and the dtype choice. Writes OUT/report.md and OUT/report.json."
        ),
    )
    q.add_argument(
        "--dataset",
        action="append",
        required=True,
        metavar="NAME=RAWTEXT:TOKENIZER_DIR",
        help="a dataset and the tokenizer trained on it (repeatable)",
    )
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument(
        "--documents", type=int, default=10, help="documents sampled per dataset (default 10)"
    )
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--special-token", action="append", dest="special_tokens", metavar="TOKEN")
    q.add_argument(
        "--sample-max-mb",
        type=float,
        default=None,
        help="sample only from the first MB of each text (default: all)",
    )
    q.add_argument(
        "--throughput-mb",
        type=float,
        default=4.0,
        help="MB of each text encoded to measure throughput (default 4)",
    )
    q.set_defaults(func=_experiments)


def _encode(args: argparse.Namespace) -> int:
    from lm.tokenizer.encoding.dataset import encode_file

    stats = encode_file(
        args.input,
        args.tokenizer,
        args.out,
        special_tokens=args.special_tokens or list(DEFAULT_SPECIAL_TOKENS),
        workers=args.workers,
        chunk_size=args.chunk_size,
        stats_path=args.stats,
        progress=args.progress,
    )
    print(
        f"{stats['output']}: {stats['tokens']} tokens ({stats['dtype']}), {stats['bytes_per_token']} bytes/token, "
        f"{stats['mb_per_s']} MB/s with {stats['workers']} {stats['worker_kind']}"
    )
    return 0


def _experiments(args: argparse.Namespace) -> int:
    from lm.tokenizer.encoding.experiments import parse_dataset, run_experiments

    report = run_experiments(
        [parse_dataset(s) for s in args.dataset],
        args.out,
        n_docs=args.documents,
        seed=args.seed,
        special_tokens=args.special_tokens or list(DEFAULT_SPECIAL_TOKENS),
        sample_max_bytes=int(args.sample_max_mb * 1e6) if args.sample_max_mb else None,
        throughput_bytes=int(args.throughput_mb * 1e6),
    )
    for name, d in report["datasets"].items():
        t = report["throughput"][name]
        print(
            f"{name}: {d['own']['bytes_per_token']} bytes/token, {t['bytes_per_s'] / 1e6:.2f} MB/s "
            f"(Pile: {t['pile_time']}), {d['dtype']}"
        )
    print(f"wrote {os.path.join(args.out, 'report.md')}")
    return 0
