"""CLI: ``lm sweep-report`` (a race's report too), ``lm race-choice``, ``lm compare-runs``,
``lm results-index``: the reports over finished runs.

They have a module of their own because a rule's code version is the import graph of its
command's module (:mod:`lm.codeversion`): a report change reruns no training or evaluation.
They share one version, so a change to any report reruns them all (seconds each).
"""

from __future__ import annotations

import os


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep-report",
        help="compare finished runs: report.md, curves.png, summary.csv",
        description="Gather runs (directories written by lm train) into one report with one plot and a CSV.",
    )
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        help="run directories (each with config.json, metrics.jsonl, result.json)",
    )
    p.add_argument("--out", required=True, help="output directory, e.g. results/sweeps/{sweep}/")
    p.add_argument("--title", help="report title (default: the runs' sweep name)")
    p.set_defaults(func=_sweep_report)

    p = subparsers.add_parser(
        "race-choice",
        help="the best baseline and recipe of a race's learning-rate sweeps -> JSON",
        description=(
            "Pick the race's tuned baseline and recipe: of each one's members, the lowest "
            "whole-split validation loss (eval.json). Writes {race, baseline, recipe, losses}."
        ),
    )
    p.add_argument(
        "--runs", nargs="+", required=True, metavar="DIR", help="run directories of the race"
    )
    p.add_argument("--out", required=True, help="output JSON, e.g. results/sweeps/RACE/choice.json")
    p.set_defaults(func=_race_choice)

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

    p = subparsers.add_parser(
        "results-index",
        help="write an index (Markdown) of the artifacts under results/",
        description=(
            "Scan RESULTS for the reports, runs, sweeps and stats the pipeline wrote and list "
            "each with a relative link and a one-line summary."
        ),
    )
    p.add_argument("--results", default="results", help="results directory (default results)")
    p.add_argument("--out", required=True, help="output Markdown, e.g. results/README.md")
    p.set_defaults(func=_results_index)


def _sweep_report(args) -> int:
    from lm.reports.sweep import sweep_report

    summary = sweep_report(args.runs, args.out, title=args.title)
    best = summary.get("best")
    print(
        f"{len(summary['runs'])} runs -> {args.out}"
        + (f"; best: {best['run']} (val {best['best_val_loss']:.4f})" if best else "")
    )
    return 0


def _race_choice(args) -> int:
    from lm.io import write_json
    from lm.provenance import with_provenance
    from lm.reports.race import race_choice

    choice = race_choice(args.runs)
    write_json(args.out, with_provenance(choice, "sweep-report"))
    print(
        f"{choice['race']}: baseline {choice['baseline']}, recipe {choice['recipe']} -> {args.out}"
    )
    return 0


def _compare_runs(args) -> int:
    from lm.reports.comparison import comparison_report

    report = comparison_report(args.runs, args.out, args.title)
    for r in report["runs"]:
        print(
            f"{r['run']} ({r['dataset']}): eval loss {r['eval_loss']} nats/token, "
            f"{r['bytes_per_token']} bytes/token, {r['bits_per_byte']} bits/byte"
        )
    print(f"wrote {os.path.join(args.out, 'report.md')}")
    return 0


def _results_index(args) -> int:
    from lm.reports.index import write_index

    entries = write_index(args.results, args.out)
    print(f"{len(entries)} artifacts indexed -> {args.out}")
    return 0
