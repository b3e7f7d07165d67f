#!/usr/bin/env python3
"""Set everything up and run the pipeline or the tests: the README's two commands.

    python3 dev.py demo   # venv + install, the whole pipeline on the built-in demo corpus,
                          # then its HTML report (results/report.html)
    python3 dev.py test   # venv + install with the dev extra, then the test suite

Extra arguments go to snakemake or pytest. The virtual environment is .venv/ in the
repository; the install is redone only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_env(extra: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 -- dev.py runs under any python3 on PATH
        sys.exit(f"dev.py: Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")
    if not (BIN / "python").exists():
        print(f"dev.py: creating {VENV.relative_to(ROOT)}/", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = f".[{extra}]" if extra else "."
    stamp = VENV / f".installed{('-' + extra) if extra else ''}"
    # reinstall (and so recompile the native extension) when the build inputs change
    build_inputs = [
        "pyproject.toml",
        "setup.py",
        "lm/tokenizer/_native.c",
        "lm/tokenizer/_unicode_tables.h",
    ]
    digest = hashlib.sha256(spec.encode())
    for name in build_inputs:
        path = ROOT / name
        digest.update(path.read_bytes() if path.exists() else b"")
    want = digest.hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    print(f"dev.py: pip install -e '{spec}'", flush=True)
    subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-e",
            spec,
        ],
        cwd=ROOT,
        check=True,
    )
    stamp.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__.strip())
        return 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        ensure_env("")
        cmd = [str(BIN / "snakemake"), "--cores", "all", "demo", *rest]
        print("dev.py: " + " ".join(cmd), flush=True)
        code = subprocess.run(cmd, cwd=ROOT).returncode
        if code != 0 or {"-n", "--dry-run", "--dryrun"} & set(rest):
            return code
        cmd = [str(BIN / "snakemake"), "demo", "--report", "results/report.html"]
    else:
        ensure_env("dev")
        # pytest-xdist: one worker per core; loadscope keeps the tests of a module on one worker,
        # so a module-scoped fixture (a whole pipeline run) is built once, not once per worker
        cmd = [str(BIN / "pytest"), "-n", "auto", "--dist", "loadscope", *rest]
    print("dev.py: " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
