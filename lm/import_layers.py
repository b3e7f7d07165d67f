"""The layers of the ``lm`` package and the rule between them: no import runs upward.

- A command-line module (``lm.cli``, ``lm.__main__``, a package's ``cli`` module) may import
  anything; a library module never imports one.
- Inference (``lm.inference``) reads what training wrote (a run directory) but never
  imports the training loop.
- The model (``lm.model``) imports only itself and the basic helpers (:data:`BASICS`).

The imports are those of :mod:`lm.codeversion`'s static graph (imports inside functions
included). ``lm import-graph`` prints the graph and every import that breaks a rule;
``tests/test_import_layers.py`` holds the package to them.
"""

from __future__ import annotations

from pathlib import Path

from lm.codeversion import ROOT, all_modules, direct_imports

#: Helpers every layer may use.
BASICS = ("lm.errors", "lm.io", "lm.progress", "lm._lazy")


def is_cli(name: str) -> bool:
    """A command-line module: the dispatcher, ``python -m lm``, or a package's ``cli`` module."""
    return name in ("lm.cli", "lm.__main__") or name.endswith(".cli")


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def upward(importer: str, imported: str) -> str | None:
    """Why ``importer`` must not import ``imported`` (None when it may)."""
    if is_cli(importer):
        return None
    if is_cli(imported):
        return "a library module imports a command-line module"
    if _within(importer, "lm.inference") and imported == "lm.training.loop":
        return "inference imports the training loop"
    if (
        _within(importer, "lm.model")
        and imported != "lm"
        and not _within(imported, "lm.model")
        and imported not in BASICS
    ):
        return "the model imports outside itself and the basics"
    return None


def import_graph(root: Path = ROOT) -> dict[str, list[str]]:
    """Each module of the package and the ``lm`` modules it imports directly, sorted."""
    return {name: sorted(direct_imports(name, root)) for name in all_modules(root)}


def upward_imports(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """Every ``(importer, imported, why)`` that breaks a rule; none in a sound package."""
    return [
        (name, dep, why)
        for name, deps in import_graph(root).items()
        for dep in deps
        if (why := upward(name, dep))
    ]
