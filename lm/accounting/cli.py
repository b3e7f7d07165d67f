"""``lm accounting``: parameter, FLOP, memory and training-time reports of model presets."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "accounting",
        help="parameter/FLOP/memory accounting of model presets (transformer.md, adamw.md)",
        description=(
            "Write transformer.md/.json (parameters, fp32 memory and forward FLOPs of each preset, "
            "and PRESET at a long context) and adamw.md/.json (peak AdamW memory, largest batch in a "
            "budget, FLOPs per step, days to train) for PRESET. Every number is checked against the model."
        ),
    )
    p.add_argument(
        "--out",
        help="write the reports (.md and .json) into this directory; without it, print both "
        "reports as Markdown",
    )
    p.add_argument(
        "--presets",
        metavar="FILE.yaml|JSON",
        help="model presets (name -> keys, at the top level or under models:, so config.yaml works; "
        "or the mapping itself as a JSON object), merged over the built-in ones",
    )
    p.add_argument(
        "--models",
        metavar="NAME",
        nargs="+",
        help="presets to tabulate (default: the GPT-2 family and every preset that has a vocab_size)",
    )
    p.add_argument(
        "--preset",
        default="gpt2-xl",
        help="the model of the AdamW report and the long-context row (default: %(default)s)",
    )
    p.add_argument(
        "--context-length",
        type=int,
        default=16384,
        help="the long context for PRESET; 0 for none (default: %(default)s)",
    )
    p.add_argument(
        "--memory-budget-gb",
        type=float,
        default=80.0,
        help="accelerator memory, GB = 1e9 bytes (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        help="training batch for FLOPs and time (default: %(default)s)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=400_000,
        help="training steps for the time estimate (default: %(default)s)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=19.5,
        help="accelerator peak, TFLOP/s (default: A100 float32, %(default)s)",
    )
    p.add_argument(
        "--mfu", type=float, default=0.5, help="model FLOPs utilisation (default: %(default)s)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lm.accounting import (
        build_reports,
        check_reports,
        render_adamw_md,
        render_transformer_md,
        write_reports,
    )
    from lm.errors import LMError

    for name in ("memory_budget_gb", "batch_size", "steps", "peak_tflops", "mfu"):
        if getattr(args, name) <= 0:
            raise LMError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.context_length < 0:
        raise LMError(
            f"--context-length must be positive (or 0 for none), got {args.context_length}"
        )
    settings = dict(
        presets=args.presets,
        models=args.models,
        preset=args.preset,
        context_length=args.context_length,
        memory_budget_gb=args.memory_budget_gb,
        train_batch=args.batch_size,
        train_steps=args.steps,
        peak_tflops=args.peak_tflops,
        mfu=args.mfu,
    )
    if args.out is None:
        transformer, adamw = build_reports(**settings)
        print(render_transformer_md(transformer))
        print(render_adamw_md(adamw), end="")
        check_reports(transformer, "the transformer report above")
        return 0
    for path in write_reports(args.out, **settings):
        print(path)
    return 0
