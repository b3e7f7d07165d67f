"""CLI: ``lm sweep-report``, ``lm lr-tuning``: reports over finished runs (see
``lm.training.cli`` for why they are a module of their own)."""

from __future__ import annotations


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
        "lr-tuning",
        help="the CS336 learning-rate toy: SGD on mean(w^2) at several lrs",
        description="SGD with lr/sqrt(t+1) on a 10x10 weight (5*randn) minimising mean(w^2): report.md, report.json, curves.png.",
    )
    p.add_argument("--out", required=True, help="output directory, e.g. results/lr_tuning/")
    p.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=[1e1, 1e2, 1e3],
        help="learning rates (default 1e1 1e2 1e3)",
    )
    p.add_argument("--iterations", type=int, default=10, help="SGD iterations (default 10)")
    p.add_argument(
        "--seed", type=int, default=0, help="torch seed of the initial weight (default 0)"
    )
    p.set_defaults(func=_lr_tuning)


def _sweep_report(args) -> int:
    from lm.training.sweep import sweep_report

    summary = sweep_report(args.runs, args.out, title=args.title)
    best = summary.get("best")
    print(
        f"{len(summary['runs'])} runs -> {args.out}"
        + (f"; best: {best['run']} (val {best['best_val_loss']:.4f})" if best else "")
    )
    return 0


def _lr_tuning(args) -> int:
    from lm.training.lr_tuning import lr_tuning

    report = lr_tuning(args.out, lrs=args.lrs, iterations=args.iterations, seed=args.seed)
    for row in report["runs"]:
        print(f"lr={row['lr']:g}: {row['outcome']}")
    return 0
