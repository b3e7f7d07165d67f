"""The ``lm`` dispatcher (lm.cli): every stage module of STAGES is imported and registers its
commands; a stage that cannot be imported stops ``lm`` with its name, never a command that
quietly goes missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lm.cli import STAGES, build_parser
from lm.import_layers import is_cli


def _commands(parser) -> dict:
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


def test_every_stage_is_a_cli_module_and_adds_commands():
    assert all(is_cli(name) and name.endswith(".cli") for name in STAGES)
    modules = {p.get_default("func").__module__ for p in _commands(build_parser()).values()}
    assert modules == set(STAGES)  # each stage adds at least one command


def test_a_stage_that_is_not_there_is_an_error_naming_it():
    with pytest.raises(ImportError, match=r"stage module lm\.gone\.cli of lm\.cli\.STAGES"):
        build_parser([*STAGES, "lm.gone.cli"])


def test_a_stage_whose_own_import_fails_is_an_error_naming_both(tmp_path, monkeypatch):
    (tmp_path / "broken_stage.py").write_text(
        "import lm.not_a_module\n\n\ndef register(sub):\n    sub.add_parser('broken')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=r"broken_stage .*lm\.not_a_module"):
        build_parser(["lm.data.cli", "broken_stage"])


def test_a_stage_without_register_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "no_register_stage.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="no_register_stage .*has no register"):
        build_parser(["no_register_stage"])


def test_the_lm_command_lists_every_stage_command():
    out = subprocess.run(
        [sys.executable, "-m", "lm", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("train-bpe", "encode", "lr-tuning", "evaluate", "code-version", "with-gpus"):
        assert command in out
