"""``lm export-hf``: a trained run as a Hugging Face ``LlamaForCausalLM`` directory."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-hf",
        help="export a trained run for transformers: model.safetensors, config.json, tokenizer.json",
        description=(
            "Write OUT: model.safetensors (the weights under the Llama names), config.json "
            "(LlamaForCausalLM), generation_config.json, tokenizer.json and "
            "tokenizer_config.json (the run's byte-level BPE) and a README.md. "
            "AutoModelForCausalLM.from_pretrained(OUT) then computes the run's logits. "
            "With several --run directories, the finished run with the lowest final "
            "validation loss is exported. A diverged run, weights with NaN, and a variant "
            "Llama cannot express (post-norm, no norm, NoPE, the SiLU FFN) are refused."
        ),
    )
    p.add_argument(
        "--run",
        required=True,
        nargs="+",
        metavar="DIR",
        help="run directory written by lm train; several: export the best of them",
    )
    p.add_argument("--out", required=True, help="output directory, e.g. results/runs/NAME/hf")
    p.add_argument(
        "--tokenizer",
        help="tokenizer directory (vocab.json, merges.txt; default RUN/../../{dataset}/tokenizer)",
    )
    p.add_argument(
        "--checkpoint",
        help="checkpoint file (default RUN/checkpoints/final.pt; one --run only)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="dtype of the exported weights (default: %(default)s, the training weights as they are)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="generation_config.json's sampling temperature, 0 = greedy (default 0.8, as lm generate)",
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=0.9,
        help="generation_config.json's nucleus mass (default 0.9, as lm generate)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math

    from lm.errors import LMError
    from lm.export.hf import best_run, export_hf

    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise LMError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise LMError(f"--top-p must be in (0, 1], got {args.top_p}")
    if len(args.run) > 1 and args.checkpoint:
        raise LMError("--checkpoint names one run's checkpoint; pass a single --run with it")
    run_dir = best_run(args.run) if len(args.run) > 1 else args.run[0]
    summary = export_hf(
        run_dir,
        args.out,
        tokenizer_dir=args.tokenizer,
        checkpoint=args.checkpoint,
        dtype=args.dtype,
        temperature=args.temperature,
        top_p=args.top_p,
    )
    loss = summary["final_val_loss"]
    chosen = f"best of {len(args.run)} runs: " if len(args.run) > 1 else ""
    print(
        f"{chosen}{summary['run']} (step {summary['checkpoint_step']}"
        + (f", final val loss {loss:.4f}" if loss is not None else "")
        + f") -> {summary['out']} (LlamaForCausalLM, {summary['dtype']})"
    )
    return 0
