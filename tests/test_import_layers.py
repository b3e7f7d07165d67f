"""No import runs upward: the library never imports a command line module, inference never
imports the training loop, the model imports nothing but itself and the basic helpers, and
the config code stays torch-free (Snakemake imports it at start-up)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lm.codeversion import ROOT, direct_imports

BASICS = ("lm.errors", "lm.io", "lm.progress", "lm._lazy")


def all_modules() -> list[str]:
    names = []
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return sorted(names)


def is_cli(name: str) -> bool:
    return name in ("lm.cli", "lm.__main__", "lm.codeversion") or name.endswith(("cli", "_cli"))


LIBRARY = [m for m in all_modules() if not is_cli(m)]


@pytest.mark.parametrize("module", LIBRARY)
def test_library_modules_import_no_command_line_module(module):
    assert not [m for m in direct_imports(module) if is_cli(m)]


@pytest.mark.parametrize("module", [m for m in LIBRARY if m.startswith("lm.inference")])
def test_inference_does_not_import_the_training_loop(module):
    assert "lm.training.loop" not in direct_imports(module)


@pytest.mark.parametrize("module", [m for m in LIBRARY if m.startswith("lm.model")])
def test_the_model_imports_only_itself_and_the_basics(module):
    outside = {m for m in direct_imports(module) if m != "lm" and not m.startswith("lm.model")}
    assert outside <= set(BASICS)


def test_config_code_does_not_import_torch():
    code = (
        "import sys; import lm.training.config, lm.config_layers, lm.accounting.formulas, "
        "lm.codeversion; from lm.training.config import count_params; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
