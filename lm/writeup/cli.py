"""CLI: ``lm writeup``, the CS336 writeup from the artifacts a plan names."""

from __future__ import annotations

import json
from pathlib import Path

from lm.errors import LMError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "writeup",
        help="the CS336 assignment-1 writeup from the pipeline's artifacts -> writeup.md",
        description=(
            "Answer each problem of CS336 assignment 1, in the handout's order, from the "
            "artifacts the plan names (those that exist; a missing one gives the command that "
            "makes it). Every number is read from a file; --json lists them with their sources."
        ),
    )
    p.add_argument(
        "--plan",
        required=True,
        help="the plan: which artifact answers which problem (JSON, or a file holding it)",
    )
    p.add_argument("--out", required=True, help="output Markdown, e.g. results/writeup.md")
    p.add_argument("--json", help="also write every number with its source here")
    p.set_defaults(func=_writeup)


def parse_plan(value: str) -> dict:
    text = value
    path = Path(value)
    try:
        if not value.lstrip().startswith("{") and path.is_file():
            text = path.read_text(encoding="utf-8")
        plan = json.loads(text)
    except (OSError, ValueError) as e:
        raise LMError(f"--plan is neither JSON nor a file holding it ({e})") from None
    if (
        not isinstance(plan, dict)
        or "edition" not in plan
        or not isinstance(plan.get("roles"), dict)
    ):
        raise LMError('--plan must be a JSON object with "edition" and "roles" (see lm.writeup)')
    return plan


def _writeup(args) -> int:
    from lm.writeup import write_writeup

    record = write_writeup(parse_plan(args.plan), args.out, args.json)
    counts: dict[str, int] = {}
    for p in record["problems"]:
        counts[p["status"]] = counts.get(p["status"], 0) + 1
    facts = sum(len(p["facts"]) for p in record["problems"])
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    print(f"{len(record['problems'])} problems ({summary}), {facts} numbers -> {args.out}")
    return 0
