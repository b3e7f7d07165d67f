"""Samples of a trained run: the prompts they start from and the Markdown page they make.

``lm samples`` generates a completion of each prompt of ``generation:`` in config.yaml and
writes ``samples.json`` (the record) and ``samples.md`` (:func:`render_samples_md`).
"""

from __future__ import annotations

import contextlib
import json
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
