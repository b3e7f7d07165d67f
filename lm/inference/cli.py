"""CLI: ``lm evaluate``, ``lm generate``, ``lm samples``.

They take a run directory written by ``lm train`` (``config.json``, ``result.json``,
``checkpoints/final.pt``). A diverged run is a result, not an error: ``evaluate`` and
``samples`` still write their files for it (with null numbers and a note) and exit 0.
"""

from __future__ import annotations

import math
import os
import sys
import time

from lm.errors import LMError
from lm.progress import add_progress_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="validation loss and perplexity of a run over a whole token split -> eval.json",
        description=(
            "Predict every token of the split after the first exactly once (windows of "
            "context_length+1 tokens sharing their boundary tokens) and write the mean loss "
            "(nats/token), perplexity and bits per byte (from the split's bytes/token) to OUT. "
            "A diverged run still gets an eval.json (exit 0)."
        ),
    )
    p.add_argument("--run", required=True, help="run directory written by lm train")
    p.add_argument("--valid-tokens", required=True, help="the split, a 1-D .npy of token ids")
    p.add_argument(
        "--valid-stats",
        help="the split's stats JSON from lm encode (bytes and tokens, for bits per byte; "
        "default: VALID_TOKENS without .npy + .stats.json, skipped with a note when absent)",
    )
    p.add_argument("--out", required=True, help="output JSON, e.g. results/runs/NAME/eval.json")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward (default 16)")
    _add_common(p)
    add_progress_argument(p)
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser(
        "generate",
        help="continue a prompt with a trained run's model, streaming text to stdout",
        description=(
            "Print the prompt and its continuation as the tokens come. Generation ends at a "
            "special token (<|endoftext|>) or after --max-new-tokens."
        ),
    )
    p.add_argument("--run", required=True, help="run directory written by lm train")
    p.add_argument("--prompt", required=True, help="the text to continue")
    _add_sampling(p)
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute the whole window for every token instead of using the KV cache",
    )
    _add_common(p)
    p.set_defaults(func=_generate)

    p = subparsers.add_parser(
        "samples",
        help="completions of a list of prompts -> samples.md (and samples.json)",
        description=(
            "Continue each prompt (each with the same --seed, so a sample equals `lm generate` "
            "with that prompt and settings) and write a Markdown page. A diverged run without a "
            "usable model gets a page saying so (exit 0)."
        ),
    )
    p.add_argument("--run", required=True, help="run directory written by lm train")
    p.add_argument(
        "--prompts",
        required=True,
        help="a JSON list of strings ('[\"Once upon a time\"]') or a file holding one",
    )
    p.add_argument(
        "--out", required=True, help="output Markdown, e.g. results/runs/NAME/samples.md"
    )
    p.add_argument("--json", help="also write the samples as JSON here")
    _add_sampling(p)
    _add_common(p)
    p.set_defaults(func=_samples)


def _add_common(p) -> None:
    p.add_argument("--checkpoint", help="checkpoint file (default RUN/checkpoints/final.pt)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def _add_sampling(p) -> None:
    p.add_argument(
        "--tokenizer",
        help="tokenizer directory (vocab.json, merges.txt; default RUN/../../{dataset}/tokenizer)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="softmax temperature, 0 = greedy (default 0.8)",
    )
    p.add_argument(
        "--top-p", type=float, default=0.9, help="nucleus sampling mass, 1 = off (default 0.9)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=256, help="most tokens to generate (default 256)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


# ---------------------------------------------------------------------------- shared pieces


def _check_sampling(args) -> None:
    if args.max_new_tokens < 0:
        raise LMError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise LMError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise LMError(f"--top-p must be in (0, 1], got {args.top_p}")


# ---------------------------------------------------------------------------- lm evaluate


def _evaluate(args) -> int:
    from lm.inference.evaluate import evaluate_run

    record = evaluate_run(
        args.run,
        args.valid_tokens,
        args.out,
        valid_stats=args.valid_stats,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads,
        progress=args.progress,
    )
    if record["tokens_predicted"] is None:
        print(f"{record['run']}: diverged, no checkpoint -> {args.out} (loss null)")
        return 0
    shown = (
        f"loss {record['loss']:.4f}, perplexity {record['perplexity']:.3f}"
        if record["perplexity"]
        else "loss null"
    )
    if record["bits_per_byte"] is not None:
        shown += f", {record['bits_per_byte']:.4f} bits/byte"
    print(
        f"{record['run']} ({record['status']}, step {record['checkpoint_step']}): {shown} over "
        f"{record['tokens_predicted']} tokens in {record['seconds']:.1f} s -> {args.out}"
    )
    return 0


# ---------------------------------------------------------------------------- lm generate


def _generate(args) -> int:
    from lm.inference.generate import iter_generate, stream_text
    from lm.inference.run import load_model_and_tokenizer, read_run, torch_threads

    _check_sampling(args)
    config, _ = read_run(args.run)
    with torch_threads(args.threads):
        model, tokenizer, stop_ids, _, _ = load_model_and_tokenizer(
            args.run, config, args.checkpoint, args.tokenizer, args.device
        )
        prompt_ids = tokenizer.encode(args.prompt)
        ids = iter_generate(
            model,
            prompt_ids,
            args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            eot_id=stop_ids,
            seed=args.seed,
            use_cache=not args.no_cache,
            vocab_limit=len(tokenizer.vocab),
        )
        count = 0

        def token_bytes():
            nonlocal count
            for i in ids:
                count += 1
                yield tokenizer.vocab[i]

        out = sys.stdout
        t0 = time.perf_counter()
        try:
            out.write(args.prompt)
            out.flush()
            for piece in stream_text(token_bytes()):
                out.write(piece)
                out.flush()
            out.write("\n")
            out.flush()
        except BrokenPipeError:  # `lm generate ... | head`: the reader has gone; so do we
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        seconds = time.perf_counter() - t0
    why = "max-new-tokens" if count == args.max_new_tokens else "a special token"
    rate = f", {count / seconds:.1f} tokens/s" if seconds > 0 and count else ""
    print(f"[{count} new tokens{rate}; stopped at {why}]", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- lm samples


def _samples(args) -> int:
    from lm.inference.samples import parse_prompts, sample_run

    prompts = parse_prompts(args.prompts)
    _check_sampling(args)
    record = sample_run(
        args.run,
        prompts,
        args.out,
        json_path=args.json,
        checkpoint=args.checkpoint,
        tokenizer_dir=args.tokenizer,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
    )
    if record["checkpoint_step"] is None:
        print(f"{record['run']}: diverged, no checkpoint -> {args.out}")
        return 0
    n_new = sum(s["new_tokens"] for s in record["samples"])
    print(
        f"{record['run']}: {len(record['samples'])} samples, {n_new} new tokens in "
        f"{record['seconds']:.1f} s -> {args.out}"
    )
    return 0
