"""Samples of a trained run: the prompts they start from and the Markdown page they make.

``lm samples`` generates a completion of each prompt of ``generation:`` in config.yaml and
writes ``samples.json`` (the record) and ``samples.md`` (:func:`render_samples_md`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from lm.errors import LMError


def parse_prompts(value: str) -> list[str]:
    """``--prompts``: a JSON list of strings, or the path of a file holding one."""
    path = Path(value)
    source = "--prompts"
    text = value
    with contextlib.suppress(OSError, ValueError):
        if path.is_file():
            text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        prompts = json.loads(text)
    except json.JSONDecodeError as e:
        raise LMError(
            f"{source} is neither a JSON list of strings nor a file holding one ({e}); "
            "pass e.g. --prompts '[\"Once upon a time\"]'"
        ) from None
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise LMError(
            f"{source} must be a JSON list of strings, got {type(prompts).__name__}"
            + (" holding non-strings" if isinstance(prompts, list) else "")
            + '; pass e.g. --prompts \'["Once upon a time", "The dog"]\''
        )
    if not prompts:
        raise LMError(f"{source} is an empty list; give at least one prompt")
    if any(not p for p in prompts):
        raise LMError(f"{source} holds an empty prompt; every prompt needs some text to continue")
    return prompts


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return longest


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``."""
    return "`" * max(3, _longest_backtick_run(text) + 1)


def _code_span(text: str) -> str:
    """``text`` as one line of inline code, whatever backticks it holds."""
    text = " ".join(text.splitlines())
    ticks = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def render_samples_md(record: dict) -> str:
    """The Markdown page of a samples record (as ``lm samples`` writes to samples.json)."""
    s = record["settings"]
    lines = [
        f"# Samples: {record['run']}",
        "",
        f"- run: `{record['run_dir']}` (status: {record['status']})",
    ]
    if record.get("checkpoint_step") is not None:
        lines.append(f"- checkpoint: `{record['checkpoint']}` (step {record['checkpoint_step']})")
    else:
        lines.append(f"- checkpoint: `{record['checkpoint']}`")
    if record.get("tokenizer"):
        lines.append(f"- tokenizer: `{record['tokenizer']}`")
    decoding = (
        "greedy (temperature 0)"
        if s["temperature"] == 0
        else f"temperature {s['temperature']:g}, top-p {s['top_p']:g}"
    )
    lines.append(
        f"- settings: {decoding}, at most {s['max_new_tokens']} new tokens, seed {s['seed']} "
        f"(each prompt starts from this seed), stop at {', '.join(s['stop_tokens']) or 'nothing'}"
    )
    if record.get("note"):
        lines += ["", f"**{record['note']}**"]
    for k, sample in enumerate(record["samples"], 1):
        text = sample["prompt"] + sample["completion"]
        fence = _fence(text)
        ended = (
            "stopped at a special token"
            if sample["stopped"] == "special_token"
            else "reached max new tokens"
        )
        lines += [
            "",
            f"## Sample {k}",
            "",
            f"Prompt: {_code_span(sample['prompt'])} ({sample['prompt_tokens']} tokens)",
            "",
            f"{fence}text",
            text,
            fence,
            "",
            f"*{sample['new_tokens']} new tokens, {ended}.*",
        ]
    if not record["samples"] and not record.get("note"):
        lines += ["", "No samples."]
    return "\n".join(lines) + "\n"


def sample_run(
    run_dir: str | os.PathLike,
    prompts: list[str],
    out: str | os.PathLike,
    *,
    json_path: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    temperature: float = 0.8,
    top_p: float = 0.9,
    max_new_tokens: int = 256,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
) -> dict:
    """Complete each prompt with a run's model and write the page (``out``, Markdown) and,
    with ``json_path``, the record as JSON; returns the record (what ``lm samples`` does).

    Every prompt starts from the same ``seed``, so a sample equals :func:`generate` of that
    prompt with these settings. A diverged run is a result, not an error: without a
    checkpoint, or with a model whose logits are NaN/inf, its page says so and has no
    samples. ``checkpoint`` defaults to the run's ``checkpoints/final.pt``, ``tokenizer_dir``
    to the pipeline's tokenizer of the run's dataset."""
    import time

    from lm.inference.generate import NonFiniteLogitsError, generate
    from lm.inference.run import (
        load_model_and_tokenizer,
        read_run,
        run_checkpoint,
        run_name,
        torch_threads,
    )
    from lm.io import write_json, write_text
    from lm.provenance import with_provenance

    config, result = read_run(run_dir)
    status = (result or {}).get("status", "unfinished")
    ckpt, present = run_checkpoint(run_dir, checkpoint, status)
    record = {
        "run": run_name(config, run_dir),
        "run_dir": str(run_dir),
        "status": status,
        "checkpoint": str(ckpt),
        "checkpoint_step": None,
        "tokenizer": None,
        "settings": {
            "temperature": temperature,
            "top_p": top_p,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "stop_tokens": [],
        },
        "note": None,
        "samples": [],
    }

    def write() -> dict:
        write_text(out, render_samples_md(record))
        if json_path:
            write_json(json_path, with_provenance(record, "samples"))
        return record

    if not present:
        record["note"] = "The run diverged and left no checkpoint: there is no model to sample."
        return write()
    with torch_threads(threads):
        model, tokenizer, stop_ids, step, tok_dir = load_model_and_tokenizer(
            run_dir, config, ckpt, tokenizer_dir, device
        )
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
                    max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    eot_id=stop_ids,
                    seed=seed,
                    vocab_limit=len(tokenizer.vocab),
                )
                record["samples"].append(
                    {
                        "prompt": prompt,
                        "completion": tokenizer.decode(new),
                        "prompt_tokens": len(prompt_ids),
                        "new_tokens": len(new),
                        "stopped": "max_new_tokens"
                        if len(new) == max_new_tokens
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
        record["seconds"] = round(time.perf_counter() - t0, 3)
    return write()
