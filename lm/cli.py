"""The ``lm`` command: one subcommand per pipeline stage.

Every command-line module is the ``cli`` module of the package whose library it drives
(``lm/data/cli.py``, ``lm/tokenizer/training/cli.py``, ``lm/devices/cli.py``, ...): it
parses arguments and calls that library, nothing more. Its ``register(subparsers)`` adds
its subcommands with ``set_defaults(func=...)``; ``func(args)`` returns an exit status.
Commands whose code versions must differ (:mod:`lm.codeversion`: one per entry module) get
packages, and so ``cli`` modules, of their own.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from lm.errors import LMError
from lm.io import no_space_error

# Stage modules, in pipeline order. Each defines register(subparsers).
STAGES = [
    "lm.data.cli",
    "lm.tokenizer.training.cli",
    "lm.tokenizer.encoding.cli",
    "lm.accounting.cli",
    "lm.training.cli",
    "lm.training.runs.cli",
    "lm.training.lr_tuning.cli",
    "lm.inference.cli",
    "lm.reports.cli",
    "lm.writeup.cli",
    "lm.export.cli",
    "lm.codeversion.cli",
    "lm.provenance.cli",
    "lm.devices.cli",
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


def _stage(name: str):
    """The stage module ``name``; a stage that does not import (a typo in STAGES, a module
    moved without updating STAGES, a broken import in it) is an error that names it, never a
    command that quietly goes missing."""
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"lm: the stage module {name} of lm.cli.STAGES cannot be imported ({e}); "
            "fix the module or its entry in STAGES"
        ) from e
    if not callable(getattr(module, "register", None)):
        raise ImportError(f"lm: the stage module {name} of lm.cli.STAGES has no register()")
    return module


def build_parser(stages: list[str] = STAGES) -> argparse.ArgumentParser:
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
    for name in stages:
        _stage(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LMError as e:
        print(f"lm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # a write outside lm.io's atomic writers (an appended log, a library's own file)
        print(f"lm {args.command}: error: {no_space_error(e.filename)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
