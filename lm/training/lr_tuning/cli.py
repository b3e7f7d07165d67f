"""CLI: ``lm lr-tuning`` (the CS336 learning-rate toy, :mod:`lm.training.lr_tuning.toy`)."""

from __future__ import annotations


def register(subparsers) -> None:
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


def _lr_tuning(args) -> int:
    from lm.training.lr_tuning.toy import lr_tuning

    report = lr_tuning(args.out, lrs=args.lrs, iterations=args.iterations, seed=args.seed)
    for row in report["runs"]:
        print(f"lr={row['lr']:g}: {row['outcome']}")
    return 0
