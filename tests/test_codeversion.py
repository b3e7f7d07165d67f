"""Code versions from the import graph, blind to comments and docstrings (lm.codeversion)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lm.codeversion import (
    code_fingerprint,
    code_version,
    command_modules,
    commands,
    direct_imports,
    module_closure,
)


def make_package(root: Path, files: dict[str, str]) -> Path:
    """A fake `lm` package under ``root`` from {relative path: source}."""
    pkg = root / "lm"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


FILES = {
    "__init__.py": '_EXPORTS = {"Thing": "lm.things"}\n',
    "cli.py": "import argparse\n",
    "things.py": '"""Things."""\nfrom lm.util import helper\n\nThing = helper\n',
    "util.py": "def helper():\n    from .deep import value  # lazy, inside a function\n    return value\n",
    "deep.py": "value = 1\n",
    "unrelated.py": "x = 2\n",
    "stage/__init__.py": '_EXPORTS = {"run": "lm.stage.runner"}\n',
    "stage/runner.py": "from lm import Thing\n\ndef run():\n    return Thing\n",
    "stage/cli.py": "def main():\n    from lm.stage import run\n    return run()\n",
}


def test_closure_follows_lazy_exports_relative_and_function_level_imports(tmp_path):
    pkg = make_package(tmp_path, FILES)
    assert module_closure(["lm.stage.cli"], pkg) == [
        "lm", "lm.deep", "lm.stage", "lm.stage.cli", "lm.stage.runner", "lm.things", "lm.util",
    ]  # fmt: skip
    assert direct_imports("lm.util", pkg) == {"lm", "lm.deep"}
    with pytest.raises(ValueError, match="no module lm.nope"):
        module_closure(["lm.nope"], pkg)
    # sources are read once per text, not per path: an edit is seen within the same process
    (pkg / "deep.py").write_text("from lm.unrelated import x\nvalue = x\n")
    assert "lm.unrelated" in module_closure(["lm.stage.cli"], pkg)


def test_version_ignores_docs_and_comments_but_not_code(tmp_path):
    pkg = make_package(tmp_path, FILES)
    before = code_version(["lm.stage.cli"], pkg)
    deep = pkg / "deep.py"
    deep.write_text('"""The deep value."""\n# a comment\nvalue = (\n    1\n)\n')
    assert code_version(["lm.stage.cli"], pkg) == before
    (pkg / "unrelated.py").write_text("x = 3\n")
    assert code_version(["lm.stage.cli"], pkg) == before
    deep.write_text("value = 2\n")
    assert code_version(["lm.stage.cli"], pkg) != before


def test_fingerprint_strips_docstrings_of_functions_and_classes_only(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('def f():\n    """Doc."""\n    return "text"\n\nclass K:\n    """Doc."""\n')
    b.write_text('def f():\n    return "text"  # same code\n\nclass K:\n    pass\n')
    c.write_text('def f():\n    return "other"\n\nclass K:\n    pass\n')
    assert code_fingerprint(a) == code_fingerprint(b) != code_fingerprint(c)


def test_real_commands_cover_the_modules_they_run():
    train = module_closure(command_modules("train"))
    assert {"lm.training.loop", "lm.training.checkpoint", "lm.model.transformer"} <= set(train)
    assert not any(m.startswith("lm.tokenizer") for m in train)
    bpe = module_closure(command_modules("train-bpe"))
    assert {
        "lm.tokenizer.training.bpe",
        "lm.tokenizer.pretokenize",
        "lm.tokenizer.serialization",
    } <= set(bpe)
    assert not any(m.startswith(("lm.model", "lm.training")) for m in bpe)
    evaluate = module_closure(command_modules("evaluate"))
    assert {"lm.inference.evaluate", "lm.training.checkpoint", "lm.training.data"} <= set(evaluate)
    with pytest.raises(ValueError, match="no lm command 'nope'"):
        command_modules("nope")


def test_commands_are_found_in_the_sources_as_the_parser_finds_them():
    from lm.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert commands() == {c: p.get_default("func").__module__ for c, p in sub.choices.items()}


def test_a_stage_without_a_module_is_an_error_not_a_missing_command(tmp_path):
    stage = "def register(sub):\n    sub.add_parser('run-stage')\n"
    files = {**FILES, "stage/cli.py": stage, "cli.py": 'STAGES = ["lm.stage.cli"]\n'}
    assert commands(make_package(tmp_path / "ok", files)) == {"run-stage": "lm.stage.cli"}
    files["cli.py"] = 'STAGES = ["lm.stage.cli", "lm.gone.cli"]\n'
    with pytest.raises(ValueError, match=r"STAGES names lm\.gone\.cli, which has no source"):
        commands(make_package(tmp_path / "gone", files))


def test_no_report_is_in_the_code_of_training_or_evaluation():
    """A report edit must not rerun the runs: no report module in train's, evaluate's or
    samples' code, and the run's own curves not in the reports'."""
    for command in ("train", "evaluate", "samples"):
        closure = module_closure(command_modules(command))
        assert not [m for m in closure if m.startswith("lm.reports")], command
    for command in ("sweep-report", "compare-runs", "results-index"):
        closure = module_closure(command_modules(command))
        assert {"lm.reports.sweep", "lm.reports.comparison", "lm.reports.index"} <= set(closure)
        assert "lm.training.plots" not in closure and "lm.training.loop" not in closure


def test_a_c_extension_counts_by_its_source_and_headers(tmp_path):
    files = {
        "__init__.py": "",
        "engine.py": "try:\n    from lm import _fast\nexcept ImportError:\n    _fast = None\n",
        "_fast.c": "int f(void) { return 1; }\n",
        "_tables.h": "static const int T[] = {1};\n",
    }
    pkg = make_package(tmp_path, files)
    assert module_closure(["lm.engine"], pkg) == ["lm", "lm._fast", "lm.engine"]
    before = code_version(["lm.engine"], pkg)
    (pkg / "_tables.h").write_text("static const int T[] = {2};\n")
    assert code_version(["lm.engine"], pkg) != before


def test_train_runs_a_resolved_run_and_imports_no_resolution():
    """Editing how runs are resolved, swept, sized for a scheduler or accounted for reruns
    no training: none of it is in train's code."""
    train = set(module_closure(command_modules("train")))
    assert {"lm.training.run_config", "lm.training.rundir", "lm.training.metrics"} <= train
    for module in ("lm.training.config", "lm.training.grid", "lm.training.resources"):
        assert module not in train
    assert not [m for m in train if m.startswith("lm.accounting")]
    assert "lm.training.config" in module_closure(command_modules("runs"))
