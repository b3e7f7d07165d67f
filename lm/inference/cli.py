"""CLI: ``lm evaluate``, ``lm generate``, ``lm samples``.

They take a run directory written by ``lm train`` (``config.json``, ``result.json``,
``checkpoints/final.pt``). A diverged run is a result, not an error: ``evaluate`` and
``samples`` still write their files for it (with null numbers and a note) and exit 0.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path

from lm.errors import LMError
from lm.progress import add_progress_argument
from lm.provenance import with_provenance


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


@contextlib.contextmanager
def _threads(n: int | None):
    import torch

    if n is not None and n < 1:
        raise LMError(f"--threads must be at least 1, got {n}")
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _checkpoint(args) -> Path:
    from lm.inference.run import default_checkpoint

    return Path(args.checkpoint) if args.checkpoint else default_checkpoint(args.run)


def _run_name(config: dict, run_dir: str) -> str:
    return config.get("name") or Path(run_dir).resolve().name


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def _model_and_tokenizer(args, config):
    from lm.inference.run import load_run, tokenizer_dir_for_run
    from lm.runtime import pick_device
    from lm.tokenizer import Tokenizer

    tok_dir = Path(args.tokenizer) if args.tokenizer else tokenizer_dir_for_run(args.run, config)
    tokenizer = Tokenizer.from_dir(tok_dir)  # with the special tokens it was trained with
    vocab = config["model"]["vocab_size"]
    if tokenizer.vocab_size > vocab:
        raise LMError(
            f"the tokenizer at {tok_dir} has {tokenizer.vocab_size} ids but the model's vocab_size is "
            f"{vocab}: it is not the tokenizer the run was trained with; pass the run's --tokenizer"
        )
    model, _, step = load_run(args.run, _checkpoint(args), pick_device(args.device))
    stop_ids = sorted(tokenizer.special_ids.values())
    return model, tokenizer, stop_ids, step, tok_dir


def _check_sampling(args) -> None:
    if args.max_new_tokens < 0:
        raise LMError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise LMError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise LMError(f"--top-p must be in (0, 1], got {args.top_p}")


# ---------------------------------------------------------------------------- lm evaluate


def _evaluate(args) -> int:
    from lm.inference.evaluate import (
        bits_per_byte,
        evaluate,
        split_bytes_per_token,
        split_stats_path,
    )
    from lm.inference.run import load_run, read_run
    from lm.io import write_json
    from lm.runtime import pick_device
    from lm.training.data import open_tokens

    config, result = read_run(args.run)
    status = (result or {}).get("status", "unfinished")
    ckpt = _checkpoint(args)
    record = {
        "run": _run_name(config, args.run),
        "run_dir": str(args.run),
        "status": status,
        "diverged_step": (result or {}).get("diverged_step"),
        "checkpoint": str(ckpt),
        "checkpoint_step": None,
        "split": str(args.valid_tokens),
        "tokens_predicted": None,
        "windows": None,
        "context_length": config["model"]["context_length"],
        "batch_size": args.batch_size,
        "loss": None,
        "perplexity": None,
        "bits_per_byte": None,
        "bytes_per_token": None,
        "split_bytes": None,
        "split_tokens": None,
        "training_final_val_loss": (result or {}).get("final_val_loss"),
        "seconds": None,
        "tokens_per_s": None,
        "device": None,
        "note": None,
    }
    if not ckpt.is_file():
        if status != "diverged":
            raise LMError(
                f"checkpoint {ckpt} does not exist; train the run first (lm train --out {args.run}) "
                "or pass --checkpoint PATH"
            )
        record["note"] = "the run diverged and left no checkpoint: nothing to evaluate"
        write_json(args.out, with_provenance(record, "evaluate"))
        print(f"{record['run']}: diverged, no checkpoint -> {args.out} (loss null)")
        return 0
    if args.batch_size < 1:
        raise LMError(f"--batch-size must be at least 1, got {args.batch_size}")
    tokens = open_tokens(args.valid_tokens)
    stats_path = Path(args.valid_stats or split_stats_path(args.valid_tokens))
    split = None
    if args.valid_stats or stats_path.is_file():
        split = split_bytes_per_token(stats_path, len(tokens))
        record.update(
            bytes_per_token=split["bytes_per_token"],
            split_bytes=split["bytes"],
            split_tokens=split["tokens"],
        )
    _advise_sequential(tokens)  # read front to back (open_tokens advises random access)
    device = pick_device(args.device)
    with _threads(args.threads):
        model, _, step = load_run(args.run, ckpt, device)
        metrics = evaluate(model, tokens, args.batch_size, device=device, progress=args.progress)
    loss, ppl = metrics["loss"], metrics["perplexity"]
    record.update(
        checkpoint_step=step,
        tokens_predicted=metrics["tokens_predicted"],
        windows=metrics["windows"],
        context_length=metrics["context_length"],
        loss=_finite(loss),
        perplexity=_finite(ppl),
        bits_per_byte=bits_per_byte(_finite(loss), split and split["bytes_per_token"]),
        seconds=round(metrics["seconds"], 3),
        tokens_per_s=round(metrics["tokens_per_s"], 1) if metrics["tokens_per_s"] else None,
        device=str(device),
    )
    if not math.isfinite(loss):
        record["note"] = (
            "the loss is not finite (the model's outputs are NaN/inf"
            + (", the run diverged" if status == "diverged" else "")
            + "): loss and perplexity are null"
        )
    elif not math.isfinite(ppl):
        record["note"] = f"perplexity exp({loss:.1f}) overflows a float: null"
    elif split is None:
        record["note"] = (
            f"no stats of the split at {stats_path} (written by lm encode): bits per byte unknown"
        )
    write_json(args.out, with_provenance(record, "evaluate"))
    shown = f"loss {loss:.4f}, perplexity {ppl:.3f}" if record["perplexity"] else "loss null"
    if record["bits_per_byte"] is not None:
        shown += f", {record['bits_per_byte']:.4f} bits/byte"
    print(
        f"{record['run']} ({status}, step {step}): {shown} over "
        f"{metrics['tokens_predicted']} tokens in {metrics['seconds']:.1f} s -> {args.out}"
    )
    return 0


def _advise_sequential(tokens) -> None:
    import mmap

    if isinstance(getattr(tokens, "base", None), mmap.mmap) and hasattr(mmap, "MADV_SEQUENTIAL"):
        with contextlib.suppress(OSError):
            tokens.base.madvise(mmap.MADV_SEQUENTIAL)


# ---------------------------------------------------------------------------- lm generate


def _generate(args) -> int:
    from lm.inference.generate import iter_generate, stream_text
    from lm.inference.run import read_run

    _check_sampling(args)
    config, _ = read_run(args.run)
    with _threads(args.threads):
        model, tokenizer, stop_ids, _, _ = _model_and_tokenizer(args, config)
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
    from lm.inference.generate import NonFiniteLogitsError, generate
    from lm.inference.run import read_run
    from lm.inference.samples import parse_prompts, render_samples_md
    from lm.io import write_json, write_text

    prompts = parse_prompts(args.prompts)
    _check_sampling(args)
    config, result = read_run(args.run)
    status = (result or {}).get("status", "unfinished")
    ckpt = _checkpoint(args)
    record = {
        "run": _run_name(config, args.run),
        "run_dir": str(args.run),
        "status": status,
        "checkpoint": str(ckpt),
        "checkpoint_step": None,
        "tokenizer": None,
        "settings": {
            "temperature": args.temperature,
            "top_p": args.top_p,
            "max_new_tokens": args.max_new_tokens,
            "seed": args.seed,
            "stop_tokens": [],
        },
        "note": None,
        "samples": [],
    }

    def write() -> None:
        write_text(args.out, render_samples_md(record))
        if args.json:
            write_json(args.json, with_provenance(record, "samples"))

    if not ckpt.is_file():
        if status != "diverged":
            raise LMError(
                f"checkpoint {ckpt} does not exist; train the run first (lm train --out {args.run}) "
                "or pass --checkpoint PATH"
            )
        record["note"] = "The run diverged and left no checkpoint: there is no model to sample."
        write()
        print(f"{record['run']}: diverged, no checkpoint -> {args.out}")
        return 0
    with _threads(args.threads):
        model, tokenizer, stop_ids, step, tok_dir = _model_and_tokenizer(args, config)
        record["checkpoint_step"] = step
        record["tokenizer"] = str(tok_dir)
        record["settings"]["stop_tokens"] = list(tokenizer.special_tokens)
        t0 = time.perf_counter()
        try:
            for prompt in prompts:
                prompt_ids = tokenizer.encode(prompt)
                new = generate(
                    model,
                    prompt_ids,
                    args.max_new_tokens,
                    temperature=args.temperature,
                    top_p=args.top_p,
                    eot_id=stop_ids,
                    seed=args.seed,
                    vocab_limit=len(tokenizer.vocab),
                )
                record["samples"].append(
                    {
                        "prompt": prompt,
                        "completion": tokenizer.decode(new),
                        "prompt_tokens": len(prompt_ids),
                        "new_tokens": len(new),
                        "stopped": "max_new_tokens"
                        if len(new) == args.max_new_tokens
                        else "special_token",
                        "ids": new,
                    }
                )
        except NonFiniteLogitsError:
            if status != "diverged":
                raise
            record["samples"] = []
            record["note"] = (
                f"The run diverged (step {(result or {}).get('diverged_step')}): its model outputs "
                "NaN/inf logits, so there is nothing to sample."
            )
        seconds = time.perf_counter() - t0
    record["seconds"] = round(seconds, 3)
    write()
    n_new = sum(s["new_tokens"] for s in record["samples"])
    print(
        f"{record['run']}: {len(record['samples'])} samples, {n_new} new tokens in {seconds:.1f} s -> {args.out}"
    )
    return 0
