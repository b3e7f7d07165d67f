"""Provenance: which code, on which software and hardware, made an artifact.

Every JSON artifact the pipeline writes (a tokenizer's ``stats.json``, a run's
``result.json``, ``eval.json``, the reports' JSON and the writeup's) records under the key
``"provenance"`` the block :func:`provenance` returns:

- ``lm``: the package version; ``command`` and ``code_version``: the ``lm`` subcommand that
  wrote the artifact and its code version (:mod:`lm.codeversion`: what makes the pipeline
  rerun the step);
- ``git``: the commit of the checkout the ``lm`` code was loaded from and whether its tree
  was dirty (left out when the code is not in a git checkout, or git is not installed);
- ``python``, and ``packages``: the versions of torch, numpy and Snakemake (as installed:
  read from their metadata, so none is imported for it);
- ``tokenization_engine``: ``native`` (the C extension) or ``python``;
- ``device``: the CPU model, and when CUDA is in use the GPU name, CUDA and driver versions;
- ``processes``: how many processes took part (``WORLD_SIZE`` under torchrun, else 1).

Two artifacts made with different torch versions, engines or commits differ in it:
:func:`differences` names the keys, and ``lm provenance FILE [OTHER]`` prints the block
(or what differs). Quick and torch-free: nothing here imports torch, and the parts that
cost a subprocess or a file read are computed once per process.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from lm.errors import LMError

#: The key of the block in every artifact.
KEY = "provenance"
#: The packages whose versions are recorded.
PACKAGES = ("torch", "numpy", "snakemake")
#: The checkout the lm code lies in, when it is one: the folder above the lm package.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@cache
def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout at ``root``; None when ``root`` is
    not the top of a git checkout (an installed package, a copy) or git is missing."""
    git = shutil.which("git")
    if git is None:
        return None

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(
                [git, "-C", str(root), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    top = run("rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != root.resolve():
        return None  # lm lies inside some other repository, or in none
    commit, status = run("rev-parse", "HEAD"), run("status", "--porcelain")
    if commit is None or status is None:
        return None  # a repository without a commit yet
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


@cache
def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@cache
def _nvidia_driver() -> str | None:
    # by name, like the engine and the code version below: the GPU pool is no part of the
    # version of every command that records provenance
    versions = importlib.import_module("lm.devices").nvidia_smi("driver_version")
    return versions[0] if versions else None


def device_info() -> dict[str, Any]:
    """The CPU model; with torch already imported and CUDA available, the GPU of the current
    device, the CUDA version torch was built with and the NVIDIA driver's version."""
    info: dict[str, Any] = {"cpu": cpu_model(), "gpu": None, "cuda": None, "driver": None}
    torch = sys.modules.get("torch")  # a command that never loaded torch used no GPU
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
        info["cuda"] = torch.version.cuda
        info["driver"] = _nvidia_driver()
    return info


def _tokenization_engine() -> str:
    # imported by name, so the engine's sources (and the C extension) are no part of the
    # code version of every command that records provenance: what engine ran is metadata
    # here; the commands that tokenize import it themselves
    return importlib.import_module("lm.tokenizer.native").engine()


def _code_version(command: str) -> str:
    # by name too: a change to how versions are computed must not rerun every step
    return importlib.import_module("lm.codeversion").command_version(command)


def provenance(command: str | None = None) -> dict[str, Any]:
    """The provenance block of an artifact written now by ``lm COMMAND`` (``command``
    None: of the environment alone, without ``command`` and ``code_version``)."""
    block: dict[str, Any] = {"lm": _installed("lm")}
    if command is not None:
        block["command"] = command
        block["code_version"] = _code_version(command)
    git = git_state()
    if git is not None:
        block["git"] = git
    block["python"] = platform.python_version()
    block["packages"] = {name: _installed(name) for name in PACKAGES}
    block["tokenization_engine"] = _tokenization_engine()
    block["device"] = device_info()
    block["processes"] = int(os.environ.get("WORLD_SIZE", "1"))
    return block


def flatten(block: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as one level, its keys joined with dots: ``{"a": {"b": 1}}`` ->
    ``{"a.b": 1}`` (also how a sweep report names the config keys its runs differ in)."""
    out: dict[str, Any] = {}
    for key, value in block.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (in a, in b)}`` for each entry (``packages.torch``, ``git.commit``, ...) in
    which two provenance blocks differ; empty when they are the same."""
    fa, fb = flatten(a), flatten(b)
    return {
        k: (fa.get(k), fb.get(k)) for k in sorted(fa.keys() | fb.keys()) if fa.get(k) != fb.get(k)
    }


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance block of the JSON artifact at ``path``; an ``LMError`` naming the file
    when it is not JSON or records none (an artifact made before provenance was recorded:
    rebuild it)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LMError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LMError(f"{path} is not a JSON artifact ({e})") from None
    block = record.get(KEY) if isinstance(record, dict) else None
    if not isinstance(block, dict):
        raise LMError(
            f"{path} records no provenance: it was made before artifacts recorded one, or is "
            "not an artifact of the pipeline; rebuild it (snakemake reruns the step)"
        )
    return block


def render_lines(block: dict[str, Any]) -> list[str]:
    """``key: value`` lines, one per entry, nested keys joined with dots."""
    return [f"{k}: {'-' if v is None else v}" for k, v in flatten(block).items()]


def render_markdown(block: dict[str, Any]) -> str:
    """A ``## Provenance`` section of a Markdown page: the block as a table."""
    rows = [
        "## Provenance",
        "",
        "What made this page (`lm provenance` prints the same for any JSON artifact):",
        "",
        "| | |",
        "| --- | --- |",
    ]
    rows += [f"| {k} | {'-' if v is None else f'`{v}`'} |" for k, v in flatten(block).items()]
    return "\n".join(rows) + "\n"


def with_provenance(record: dict[str, Any], command: str) -> dict[str, Any]:
    """``record`` with the provenance block of ``lm COMMAND`` added under :data:`KEY`."""
    return {**record, KEY: provenance(command)}
