"""CLI: ``lm compare-runs`` (evaluated runs side by side: results/comparisons/{name}/).

Its own module, so that the comparison's code version (lm.codeversion: per entry module)
is not part of ``lm evaluate``'s: changing the report reruns no evaluation.
"""

from __future__ import annotations

import os


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare-runs",
        help="evaluated runs of different datasets/tokenizers side by side -> report.md, curves",
        description=(
            "Put evaluated runs side by side: final losses in nats/token and bits/byte, "
            "bytes/token of each tokenizer on its validation split, loss curves against "
            "tokens and wallclock, samples, and a paragraph on why the losses differ. "
            "Writes OUT/report.md, OUT/curves.png and OUT/report.json."
        ),
    )
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="DIR",
        help="run directories (eval.json in each)",
    )
    p.add_argument("--out", required=True, help="output directory, e.g. results/comparisons/NAME")
    p.add_argument("--title", help="report title (default: the run names)")
    p.set_defaults(func=_compare_runs)


def _compare_runs(args) -> int:
    from lm.inference.comparison import comparison_report

    report = comparison_report(args.runs, args.out, args.title)
    for r in report["runs"]:
        print(
            f"{r['run']} ({r['dataset']}): eval loss {r['eval_loss']} nats/token, "
            f"{r['bytes_per_token']} bytes/token, {r['bits_per_byte']} bits/byte"
        )
    print(f"wrote {os.path.join(args.out, 'report.md')}")
    return 0
