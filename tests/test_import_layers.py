"""No import runs upward: the library never imports a command line module, inference never
imports the training loop, the model imports nothing but itself and the basic helpers, and
the config code stays torch-free (Snakemake imports it at start-up)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lm.codeversion import all_modules, direct_imports
from lm.import_layers import BASICS, is_cli, upward_imports

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
        "lm.codeversion, lm.training.resources, lm.training.run_config, lm.training.grid; "
        "r = lm.training.config.resolve_run('r', {'model': {'preset': 'tinystories-17m'}, "
        "'training': {'steps': 1}}); lm.training.resources.run_runtime(r); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_import_graph_has_no_upward_import_and_lm_import_graph_says_so(capsys):
    from lm.cli import main

    assert upward_imports() == []
    assert main(["import-graph"]) == 0
    out = capsys.readouterr().out
    assert "lm.codeversion.cli [cli] -> " in out and out.rstrip().endswith(", 0 upward")


def test_an_upward_import_is_found(tmp_path):
    pkg = tmp_path / "lm"
    files = {
        "__init__.py": "",
        "cli.py": "from lm.model import x\n",
        "model/__init__.py": "def f():\n    from lm.training import loop\n",
        "training/__init__.py": "",
        "training/loop.py": "",
        "inference/__init__.py": "",
        "inference/run.py": "from lm.training.loop import train\nfrom lm import cli\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    assert upward_imports(pkg) == [
        ("lm.inference.run", "lm.cli", "a library module imports a command-line module"),
        ("lm.inference.run", "lm.training.loop", "inference imports the training loop"),
        ("lm.model", "lm.training", "the model imports outside itself and the basics"),
        ("lm.model", "lm.training.loop", "the model imports outside itself and the basics"),
    ]
