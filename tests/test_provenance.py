"""Provenance: every entry of the block against an independent source (package metadata,
git itself, the environment), artifacts made under two torch versions told apart, and
`lm provenance` printing and comparing the blocks of real artifacts."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from lm.codeversion import command_version
from lm.provenance import differences, git_state, provenance, read_provenance

LM = [sys.executable, "-m", "lm"]
REPO = Path(__file__).resolve().parents[1]


def test_the_block_holds_each_entry_from_its_source(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LM_NATIVE", "0")
    block = provenance("train")
    assert block["lm"] == version("lm")
    assert block["command"] == "train" and block["code_version"] == command_version("train")
    assert block["python"] == platform.python_version()
    assert block["packages"] == {n: version(n) for n in ("torch", "numpy", "snakemake")}
    assert block["tokenization_engine"] == "python"
    assert block["processes"] == 1
    assert block["device"]["cpu"]
    json.dumps(block)  # it goes into JSON artifacts as it is
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert provenance()["processes"] == 4
    assert "command" not in provenance() and "code_version" not in provenance()


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_commit_and_dirty_flag_of_a_checkout(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    git_state.cache_clear()
    assert git_state(repo) == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False}
    (repo / "a.py").write_text("x = 2\n")
    git_state.cache_clear()
    assert git_state(repo)["dirty"] is True
    # a folder inside a checkout is not one (lm installed in some other repository's tree)
    (repo / "sub").mkdir()
    assert git_state(repo / "sub") is None
    assert git_state(tmp_path / "nowhere") is None
    # no git at all: left out, no error
    git_state.cache_clear()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert git_state(repo) is None
    git_state.cache_clear()


def _train_bpe(text: Path, out: Path, env: dict[str, str]) -> Path:
    subprocess.run(
        [*LM, "train-bpe", str(text), "--vocab-size", "270", "--out", str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, **env},
    )
    return out / "stats.json"


def test_two_runs_on_different_torch_versions_are_told_apart(tmp_path):
    """The same command on the same data, once where the installed torch says it is 9.9.9
    (a distribution's metadata first on the path, as another install would be): the two
    stats.json differ in their provenance, and only in the torch version."""
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat. " * 50 + "<|endoftext|>" + "a dog ran. " * 30)
    other = tmp_path / "other-torch"
    meta = other / "torch-9.9.9.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 9.9.9\n")
    a = _train_bpe(text, tmp_path / "a", {})
    b = _train_bpe(text, tmp_path / "b", {"PYTHONPATH": str(other)})
    pa, pb = read_provenance(a), read_provenance(b)
    assert pa["command"] == "train-bpe" and pa["code_version"] == command_version("train-bpe")
    assert differences(pa, pb) == {"packages.torch": (version("torch"), "9.9.9")}
    # lm provenance prints the block, and what differs between two
    shown = subprocess.run([*LM, "provenance", str(a)], capture_output=True, text=True)
    assert shown.returncode == 0
    assert f"packages.torch: {version('torch')}" in shown.stdout.splitlines()
    assert f"code_version: {pa['code_version']}" in shown.stdout.splitlines()
    compared = subprocess.run([*LM, "provenance", str(a), str(b)], capture_output=True, text=True)
    assert compared.returncode == 1
    assert compared.stdout.splitlines() == [f"packages.torch: {version('torch')} | 9.9.9"]
    same = subprocess.run([*LM, "provenance", str(a), str(a)], capture_output=True, text=True)
    assert same.returncode == 0 and "the same provenance" in same.stdout


@pytest.mark.parametrize(
    ("content", "said"),
    [("{not json", "is not a JSON artifact"), ('{"loss": 1.0}', "records no provenance")],
)
def test_lm_provenance_names_a_file_without_a_block(tmp_path, content, said):
    path = tmp_path / "x.json"
    path.write_text(content)
    proc = subprocess.run([*LM, "provenance", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and said in proc.stderr and str(path) in proc.stderr
    missing = subprocess.run(
        [*LM, "provenance", str(tmp_path / "no.json")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_the_checkout_records_its_commit():
    """Run from this repository (a git checkout, when the tests run in one): its HEAD."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    git_state.cache_clear()
    assert provenance()["git"]["commit"] == _git(REPO, "rev-parse", "HEAD")
