"""CLI: ``lm provenance FILE [OTHER]``: which code, software and hardware made an artifact
(the library code is :mod:`lm.provenance`)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "provenance",
        help="which code, software and hardware made an artifact (its provenance block)",
        description="Print the provenance block of a JSON artifact of the pipeline (stats.json, "
        "result.json, eval.json, a report's JSON, writeup.json): lm version, command and code "
        "version, git commit and dirty flag, Python, torch, numpy and Snakemake versions, "
        "tokenization engine, device, processes. Given a second artifact, print only the "
        "entries in which the two differ (exit status 1 when they differ).",
    )
    p.add_argument(
        "file", metavar="RESULTS_FILE", help="a JSON artifact, e.g. results/runs/NAME/result.json"
    )
    p.add_argument("other", nargs="?", metavar="OTHER", help="a second artifact to compare with")
    p.set_defaults(func=_provenance)


def _provenance(args) -> int:
    from lm.provenance import differences, read_provenance, render_lines

    block = read_provenance(args.file)
    if args.other is None:
        print("\n".join(render_lines(block)))
        return 0
    diff = differences(block, read_provenance(args.other))
    for key, (a, b) in diff.items():
        print(f"{key}: {'-' if a is None else a} | {'-' if b is None else b}")
    if not diff:
        print("the same provenance")
    return 1 if diff else 0
