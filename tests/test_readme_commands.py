"""The commands of README.md and docs/*.md work exactly as typed: no `--cores`, no `--configfile`.

Every `snakemake ...` command of the README and of every page of docs/ (code blocks and
inline code) is planned with `-n` in a copy of the checkout, from its root, and must pick up
the default profile (profiles/default: all cores, rerun incomplete jobs). Every `lm ...`
line of a code block must parse. A few cheap ones also run for real, with no flags, on a
tiny config.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml
from conftest import (
    DOC_PAGES,
    REPO,
    copy_checkout,
    snakemake,
    tiny_config,
    write_readme_local_yaml,
)

PROFILE_NOTICE = "workflow specific profile"

# What a {placeholder} of a documented command stands for in the shipped config.yaml.
PLACEHOLDERS = {"{dataset}": "demo", "{split}": "valid", "{run}": "demo", "{sweep}": "demo-lr"}


def readme_commands(program: str, inline: bool, pages: tuple[Path, ...] = DOC_PAGES) -> list[str]:
    """``program ...`` commands of ``pages`` (README.md and docs/*.md): lines of fenced code
    blocks (with their backslash continuations, without comments), and with ``inline`` the
    inline code spans; quoted messages (``lm encode: error: ...``) are not commands."""
    found = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                line = re.sub(r"^(\.venv/bin/)", "", line)
                # `lm encode: error: ...` is a message the pages quote, not a command
                if line.startswith(f"{program} ") and not re.match(r"\S+ [\w-]+: ", line):
                    found.append(line)
        if inline:
            for span in re.findall(r"`([^`\n]+)`", text):
                if span.startswith(f"{program} ") and not re.match(r"\S+ [\w-]+: ", span):
                    found.append(span)
    out = []
    for cmd in found:
        for key, value in PLACEHOLDERS.items():
            cmd = cmd.replace(key, value)
        cmd = re.sub(r"\s+", " ", cmd)
        if cmd not in out:
            out.append(cmd)
    return out


def illustrative(cmd: str) -> str | None:
    """Why a documented command cannot be planned as it stands, or None when it can."""
    if "..." in cmd:
        return "an elided example"
    if "profiles/slurm" in cmd and not find_spec("snakemake_executor_plugin_slurm"):
        return "needs the SLURM executor plugin (pip install -e '.[slurm]')"
    if "--report" in cmd:
        return "a report of built results (run by tests/test_workflow_pipeline.py)"
    return None


SNAKEMAKE = readme_commands("snakemake", inline=True)
LM = readme_commands("lm", inline=False)


def test_the_readme_has_the_commands_users_type():
    for cmd in (
        "snakemake demo",
        "snakemake train_all",
        "snakemake --cores 8 results/owt/tokenizer",
        "snakemake accounting",
        "snakemake --unlock",
    ):
        assert cmd in SNAKEMAKE, cmd
    plannable = [c for c in SNAKEMAKE if illustrative(c) is None]
    assert len(plannable) >= 12, plannable
    assert any(c.startswith("lm generate") for c in LM)
    assert any(c.startswith("lm accounting") for c in LM)


def test_the_commands_come_from_the_readme_and_every_docs_page():
    """The front door keeps the commands a newcomer types first; the pages of docs/ are read
    too (their commands are planned and parsed like the README's)."""
    front = readme_commands("snakemake", inline=True, pages=(REPO / "README.md",))
    for cmd in ("snakemake demo", "snakemake train_all", "snakemake --unlock"):
        assert cmd in front, cmd
    docs = DOC_PAGES[1:]
    assert REPO / "docs" / "design.md" in docs
    for page in docs:
        for program, inline in (("snakemake", True), ("lm", False)):
            for cmd in readme_commands(program, inline, pages=(page,)):
                assert cmd in (SNAKEMAKE if program == "snakemake" else LM), (page, cmd)
    cluster = readme_commands("snakemake", inline=True, pages=(REPO / "docs" / "cluster.md",))
    assert "snakemake train_all --resources gpu=2" in cluster
    assert "snakemake train_all --resources gpu=2" not in front


@pytest.mark.slow
@pytest.mark.parametrize("cmd", SNAKEMAKE)
def test_readme_snakemake_command_plans_as_typed(cmd, tmp_path):
    why = illustrative(cmd)
    if why:
        pytest.skip(why)
    root = copy_checkout(tmp_path / "repo")
    if "local.yaml" in cmd:  # the docs' example file, its /data/ files made real
        write_readme_local_yaml(root, tmp_path / "data")
    args = shlex.split(cmd)[1:]
    proc = snakemake(root, *args, "-n", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{cmd} -n` failed:\n{out}"
    # the default profile, or the workflow profile the command names (the SLURM one)
    profile = args[args.index("--workflow-profile") + 1] if "--workflow-profile" in args else None
    assert PROFILE_NOTICE in out and (profile or "profiles/default") in out, out


@pytest.mark.parametrize("cmd", LM)
def test_readme_lm_command_parses(cmd):
    from lm.cli import build_parser

    args = build_parser().parse_args(shlex.split(cmd)[1:])
    assert callable(args.func)


def tiny_checkout(root: Path) -> Path:
    """A copy of the checkout whose config.yaml is a tiny demo config (so real runs take seconds)."""
    copy_checkout(root)
    (root / "config.yaml").write_text(yaml.safe_dump(tiny_config(demo=20), sort_keys=False))
    return root


@pytest.mark.slow
def test_a_plain_snakemake_runs_without_cores(tmp_path):
    """`snakemake TARGET` with no flag: the default profile supplies the cores."""
    root = tiny_checkout(tmp_path / "repo")
    proc = snakemake(root, "results/demo/raw/valid.stats.json", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "cores have to be specified" not in out
    assert PROFILE_NOTICE in out
    assert (root / "results/demo/raw/valid.stats.json").is_file()


@pytest.mark.slow
def test_snakefile_given_with_s_from_another_directory(tmp_path):
    """`snakemake -s path/to/Snakefile TARGET` from elsewhere: same profile, results in the cwd."""
    root = tiny_checkout(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    snakefile = str(root / "Snakefile")
    planned = snakemake(elsewhere, "-s", snakefile, "-n", "train_all", timeout=300)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    proc = snakemake(elsewhere, "-s", snakefile, "results/demo/raw/train.stats.json", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert PROFILE_NOTICE in out
    assert (elsewhere / "results/demo/raw/train.stats.json").is_file()
    assert not (root / "results").exists()


@pytest.mark.slow
def test_the_workflow_lints_clean(tmp_path):
    """docs/development.md: `snakemake --lint` and `snakefmt --check` pass (a
    function left among the rules of comparison.smk made --lint exit 1 unnoticed)."""
    root = copy_checkout(tmp_path / "repo")
    lint = snakemake(root, "--lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    snakefmt = Path(sys.executable).with_name("snakefmt")
    fmt = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "workflow/rules"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
