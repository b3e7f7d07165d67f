"""The ``lm`` command: one subcommand per pipeline stage.

Each stage package has a ``cli`` module with ``register(subparsers)``; it adds its
subcommands with ``set_defaults(func=...)``. ``func(args)`` returns an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lm.errors import LMError

# Stage modules, in pipeline order. Each defines register(subparsers).
STAGES = [
    "lm.data.cli",
    "lm.tokenizer.train_cli",
    "lm.tokenizer.encode_cli",
    "lm.accounting.cli",
    "lm.training.cli",
    "lm.training.lr_tuning_cli",
    "lm.inference.cli",
    "lm.reports.cli",
    "lm.writeup.cli",
    "lm.export.cli",
    "lm.codeversion_cli",
    "lm.provenance_cli",
    "lm.devices_cli",
]


def version_text() -> str:
    """``lm --version``: the package version, and which tokenization engine runs."""
    from importlib.metadata import PackageNotFoundError, version

    from lm.tokenizer.native import describe

    try:
        v = version("lm")
    except PackageNotFoundError:
        v = "(not installed)"
    return f"lm {v}; tokenization engine: {describe()}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm",
        description="Raw text to a trained, evaluated Transformer LM. One subcommand per stage.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=version_text(),
        help="the version and tokenization engine",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in STAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if name == e.name or name.startswith(f"{e.name}."):  # stage not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LMError as e:
        print(f"lm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
