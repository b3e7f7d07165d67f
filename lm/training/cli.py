"""CLI: ``lm train``, which trains one resolved run (a ``run.json``).

Resolving runs from the pipeline config (``lm runs``) lives in ``lm.training.runs.cli``,
the reports over finished runs (``lm sweep-report``, ``lm compare-runs``) in
``lm.reports.cli`` and ``lm lr-tuning`` in ``lm.training.lr_tuning.cli``: a rule's code
version is the import graph of its command's module, so a change to the resolution of a
config, to a report or to a resource estimate must not look like a change to training.
"""

from __future__ import annotations

import sys

from lm.progress import add_progress_argument


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one run (resumes from OUT/checkpoints/ when present)",
        description=(
            "Train one run into OUT/: config.json, metrics.jsonl, checkpoints/, curves.png, result.json. "
            "Resumes automatically from OUT/checkpoints/. A diverged run still exits 0 (status in result.json). "
            "SIGTERM or SIGINT (Ctrl-C) while training: the step finishes, a checkpoint is saved, "
            "and lm train exits 75; rerun to resume."
        ),
    )
    p.add_argument(
        "--config",
        required=True,
        help="the resolved run: results/runs/NAME/run.json as the workflow writes it, a run's "
        "config.json, or `lm runs --config config.yaml --run NAME > run.json`",
    )
    p.add_argument("--train-tokens", required=True, help="training split, a 1-D .npy of token ids")
    p.add_argument(
        "--valid-tokens", required=True, help="validation split, a 1-D .npy of token ids"
    )
    p.add_argument("--out", required=True, help="run directory, e.g. results/runs/{run}/")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the run's threads)")
    p.add_argument("--device", help="override training.device (auto, cpu, cuda, cuda:N, mps)")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="discard OUT/checkpoints/ and start over instead of resuming",
    )
    p.add_argument(
        "--on-config-change",
        choices=["error", "restart"],
        default="error",
        help="OUT/checkpoints/ hold a run with a different config: stop with an error (default) or discard them and start over",
    )
    add_progress_argument(p)
    p.set_defaults(func=_train)


def _train(args) -> int:
    from lm.training import distributed
    from lm.training.loop import train
    from lm.training.run_config import coerce, load_run
    from lm.training.stop import EXIT_STOPPED, Stopped

    run = load_run(args.config)
    if args.device:
        run = run.replace(**{"training.device": coerce("device", args.device, "--device")})
    try:
        result = train(
            run,
            args.train_tokens,
            args.valid_tokens,
            args.out,
            progress=args.progress,
            fresh=args.fresh,
            threads=args.threads,
            on_config_change=args.on_config_change,
        )
    except Stopped as stopped:  # saved; a scheduler or Snakemake reruns it to resume
        if distributed.from_env().main:
            print(f"lm train: {stopped}", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    line = f"{result['run']}: {result['status']}"
    if result["status"] == "diverged":
        line += f" at step {result['diverged_step']} ({result['diverged_reason']})"
    else:
        line += f", val loss {result['final_val_loss']:.4f} after {result['steps']} steps"
    if result["max_wallclock_minutes"] is not None:
        line += (
            f" of {result['steps_planned']} planned for the {result['max_wallclock_minutes']:g}-minute"
            f" budget (stopped: {result['stop_reason']})"
        )
    if result["processes"] > 1:
        line += f", {result['processes']} processes"
    if distributed.from_env().main:  # under torchrun, one line for the job
        print(line + f", {result['wallclock_s']:.1f} s -> {args.out}")
    return 0  # a diverged run is a result, not a failure: the sweep goes on
