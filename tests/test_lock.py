"""The lock files: pyproject.toml's every dependency is pinned in them at a version its
specifier allows, with the whole tree below it; the environment the tests run in holds
exactly the locked versions (`python3 dev.py test` installs them); the conda environment
of `snakemake --sdm conda` pins the same ones."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def _dev():
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dev = _dev()


def _pins(variant: str) -> dict[str, str]:
    blocks = dev.lock_blocks(dev.lock_file(variant).read_text())
    return {name: version for name, (version, _) in blocks.items()}


def _pyproject_requirements() -> list[Requirement]:
    """The project's dependencies and those of every extra, its own extras (lm[slurm])
    replaced by what they list."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        out += [Requirement(r) for r in extra if canonicalize_name(Requirement(r).name) != "lm"]
    return out


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": e}) for e in extras | {""})


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_every_pyproject_dependency_is_locked_at_an_allowed_version(variant):
    pins = _pins(variant)
    wrong = []
    for req in _pyproject_requirements():
        version = pins.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            wrong.append(f"{req} (locked: {version})")
    assert not wrong, (
        f"pyproject.toml and {dev.lock_file(variant).name} disagree on {wrong}: "
        "refresh the lock with `python3 dev.py lock`"
    )


def test_the_cpu_lock_holds_the_cpu_build_and_the_cuda_lock_the_cuda_build():
    cpu, cuda = _pins("cpu"), _pins("cuda")
    assert cpu["torch"].endswith("+cpu") and not any(n.startswith("nvidia-") for n in cpu)
    assert "+" not in cuda["torch"] and any(n.startswith("nvidia-") for n in cuda)
    # apart from torch and the CUDA libraries it brings, the two locks are one set
    shared = {n: v for n, v in cuda.items() if n in cpu and n != "torch"}
    assert shared == {n: v for n, v in cpu.items() if n != "torch"}


def test_the_lock_holds_the_whole_tree_below_pyproject():
    """Walk the installed packages' own requirements (with the extras asked of them) from
    pyproject.toml down: each one is pinned in the lock at a version it allows, so
    `pip install --require-hashes` needs nothing the lock does not name."""
    pins = _pins("cpu")
    todo = [(req, set(req.extras)) for req in _pyproject_requirements()]
    seen: set[tuple[str, frozenset[str]]] = set()
    wrong = []
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        if name not in pins or not req.specifier.contains(pins[name], prereleases=True):
            wrong.append(f"{req} (locked: {pins.get(name)})")
            continue
        for line in importlib.metadata.requires(req.name) or []:
            sub = Requirement(line)
            if _applies(sub, extras):
                todo.append((sub, set(sub.extras)))
    assert not wrong, f"missing or wrong in lock-cpu.txt: {wrong}; run `python3 dev.py lock`"
    assert len(seen) > 50  # the walk went down the tree (snakemake alone brings dozens)


@pytest.mark.skipif(
    not dev.lock_fits(),
    reason="the lock is for CPython 3.11 on Linux x86_64 (dev.py installs ranges)",
)
def test_the_environment_holds_exactly_the_locked_versions():
    variant = os.environ.get("LM_TORCH", "cpu")
    pins = _pins(variant)
    if variant == "own":
        pins.pop("torch")
    installed = {}
    for name in pins:
        try:
            installed[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed[name] = None
    differ = {n: (pins[n], installed[n]) for n in pins if installed[n] != pins[n]}
    assert not differ, (
        f"installed versions differ from {dev.lock_file(variant).name} (locked, installed): "
        f"{differ}; `python3 dev.py test` installs the lock"
    )


def test_the_conda_environment_pins_the_locked_versions():
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "lm.yaml").read_text())
    deps = env["dependencies"]
    assert f"python={dev.LOCK_PYTHON}" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    pinned = dict(
        (canonicalize_name(name), version)
        for name, version in (line.split("==") for line in pip if "==" in line)
    )
    assert pinned == _pins("cpu")
    assert "-e ../.." in pip


def test_the_lock_is_header_comments_then_hashed_pins():
    """What dev.py's lock_blocks reads is the whole file (LM_TORCH=own rewrites it without
    torch from these blocks), and every pin carries its hashes."""
    text = dev.lock_file("cpu").read_text()
    blocks = dev.lock_blocks(text)
    body = "".join(lines for _, lines in blocks.values())
    header = text[: len(text) - len(body)]
    assert text.endswith(body)
    assert header and all(line.startswith("#") for line in header.splitlines())
    assert all("--hash=sha256:" in lines for _, lines in blocks.values())
