"""CLI: ``lm runs``, the resolved training runs of a pipeline config (JSON).

Its own module, so that ``lm train`` (:mod:`lm.training.cli`), which trains one resolved
run, does not import the resolution: its code version (:mod:`lm.codeversion`) leaves out
the presets, the sweep grid and the resource estimates.
"""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list the resolved training runs of a config (JSON)")
    p.add_argument("--config", required=True, help="pipeline config.yaml")
    p.add_argument("--sweep", help="only this sweep's members")
    p.add_argument(
        "--run",
        help="print this run alone, as the run.json that lm train takes (a base run or a sweep member)",
    )
    p.add_argument("--names", action="store_true", help="print run names only, one a line")
    p.set_defaults(func=_runs)


def _runs(args) -> int:
    from lm.errors import LMError
    from lm.training.config import load_config_file, resolve_runs, sweep_members
    from lm.training.run_config import suggest

    cfg = load_config_file(args.config)
    runs = resolve_runs(cfg)
    if args.sweep:
        runs = {name: runs[name] for name in sweep_members(cfg, args.sweep)}
    if args.run is not None:
        if args.run not in runs:
            raise LMError(
                f"{args.config} has no run {args.run!r}{suggest(args.run, runs)}; runs: {', '.join(runs)}"
            )
        print(json.dumps(runs[args.run].to_dict(), indent=2))
    elif args.names:
        print("\n".join(runs))
    else:
        print(json.dumps({name: run.to_dict() for name, run in runs.items()}, indent=2))
    return 0
