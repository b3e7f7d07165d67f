"""The version of the code a pipeline step runs: derived, never listed by hand.

A Snakemake rule reruns when one of its params changes; each rule passes the code version
of the ``lm`` command it runs, so editing the code reruns exactly the steps that run it:

1. **Which modules.** The command's entry module (the one that defines the subcommand's
   function) and every ``lm`` module it imports, transitively: the static
   import graph of the sources, imports inside functions included (the CLIs import the
   library lazily), and names taken from a package's lazy export table (``_EXPORTS`` in
   its ``__init__``) followed to the module that defines them. The dispatcher ``lm.cli``,
   which only finds the command, is left out (adding a stage reruns nothing).
2. **What of them.** The syntax tree of each module without its docstrings, so that a
   comment, a docstring or a reformatting reruns nothing (a C extension imported by them
   counts by its source and the headers beside it) (a rerun of a GPU-hour job must
   be earned by a real change), while any change of code reruns every step that runs it.

The hash depends on the Python version's ``ast`` (a Python upgrade may rerun steps once).
The command's entry module is found statically too (:func:`command_modules`: the stage modules
``lm.cli`` lists, and the subcommands each adds), so this module imports no command-line module.
``lm code-version COMMAND`` (:mod:`lm.codeversion.cli`) prints the version and the modules
behind it; ``lm import-graph`` the graph of the whole package.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import NamedTuple

PACKAGE = "lm"
ROOT = Path(__file__).resolve().parent.parent  # the lm folder
#: The dispatcher of the ``lm`` command; its ``STAGES`` list names the modules that add subcommands.
DISPATCHER = "lm.cli"


def module_path(name: str, root: Path = ROOT) -> Path | None:
    """The source file of module ``name`` (``lm.x.y``) under ``root`` (the ``lm`` folder)."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    package = root.joinpath(*parts, "__init__.py")
    if package.is_file():
        return package
    if not parts:
        return None
    for suffix in (".py", ".c"):  # a C extension counts by its source
        module = root.joinpath(*parts[:-1], parts[-1] + suffix)
        if module.is_file():
            return module
    return None


def _is_package(name: str, root: Path) -> bool:
    path = module_path(name, root)
    return path is not None and path.name == "__init__.py"


class _Source(NamedTuple):
    """What the versioning reads of one Python source."""

    tree: ast.Module  # without its docstrings; shared by every reader: never mutated
    imports: tuple  # (level, module, names) of each import anywhere in it; see _read
    fingerprint: str  # the dump of the tree: blind to comments, docstrings and layout
    parsers: tuple  # the first argument of each ``add_parser`` call: the subcommands it adds


_DOC_HOLDERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


# A snakemake start versions every command, and the commands share most of their modules, so
# a source is parsed and walked once: cached by its text (never by its path alone, so that an
# edit is seen, also within one process).
@cache
def _read(source: bytes, filename: str) -> _Source:
    tree = ast.parse(source, filename=filename)
    imports, parsers = [], []
    for node in ast.walk(tree):  # a node's children are listed before it is handed out
        if isinstance(node, _DOC_HOLDERS):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
        elif isinstance(node, ast.Import):  # import a.b: names (None,)
            imports.extend((0, alias.name, (None,)) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):  # from m import x, *: names ("x", None)
            names = tuple(None if a.name == "*" else a.name for a in node.names)
            imports.append((node.level, node.module or "", names))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_parser"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            parsers.append(node.args[0].value)
    dump = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return _Source(tree, tuple(imports), dump, tuple(parsers))


def _source(path: Path) -> _Source:
    return _read(path.read_bytes(), str(path))


def _parse(path: Path) -> ast.Module:
    return _source(path).tree


def lazy_exports(name: str, root: Path = ROOT) -> dict[str, str]:
    """A package's ``_EXPORTS`` table (public name -> defining module), if it has one."""
    path = module_path(name, root)
    if path is None or path.name != "__init__.py":
        return {}
    for node in _parse(path).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return {
                k.value: v.value
                for k, v in zip(node.value.keys, node.value.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
            }
    return {}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def direct_imports(name: str, root: Path = ROOT) -> set[str]:
    """The ``lm`` modules that importing (and running) module ``name`` can load."""
    path = module_path(name, root)
    if path is None or path.suffix != ".py":
        return set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(module: str, attr: str | None = None) -> None:
        if module_path(module, root) is None:
            return
        found.add(module)
        if attr is None:
            return
        sub = f"{module}.{attr}"
        if module_path(sub, root) is not None:
            found.add(sub)
        elif _is_package(module, root) and attr in lazy_exports(module, root):
            target = lazy_exports(module, root)[attr]
            found.add(target)
            if _is_package(target, root):
                add(target, attr)

    for level, module, names in _source(path).imports:
        if level:
            base = package.split(".")
            base = base[: len(base) - level + 1]
            module = ".".join(base + ([module] if module else []))
        for attr in names:
            add(module, attr)
    for module in list(found):
        found.update(_parents(module))
    found.discard(name)
    return found


def module_closure(entries: Iterable[str], root: Path = ROOT) -> list[str]:
    """``entries`` and every ``lm`` module they import, transitively, sorted."""
    todo = [e for e in entries if module_path(e, root) is not None]
    missing = [e for e in entries if module_path(e, root) is None]
    if missing:
        raise ValueError(f"no module {', '.join(missing)} under {root}")
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for parent in _parents(name):
            todo.append(parent)
        todo.extend(direct_imports(name, root) - seen)
    return sorted(seen)


def code_fingerprint(path: Path) -> str:
    """The code of a source file without comments, docstrings and layout (its AST); for
    the C source of an extension, its text and that of the headers beside it."""
    path = Path(path)
    if path.suffix == ".c":
        h = hashlib.sha256(path.read_bytes())
        for header in sorted(path.parent.glob("*.h")):
            h.update(header.name.encode() + b"\0" + header.read_bytes())
        return h.hexdigest()
    return _source(path).fingerprint


def code_version(entries: Iterable[str], root: Path = ROOT) -> str:
    """A short hash of the code of ``entries`` and all they import (see the module doc)."""
    h = hashlib.sha256()
    for name in module_closure(entries, root):
        h.update(name.encode() + b"\0")
        h.update(code_fingerprint(module_path(name, root)).encode() + b"\0")
    return h.hexdigest()[:16]


def all_modules(root: Path = ROOT) -> list[str]:
    """Every module of the package under ``root`` (``lm``, ``lm.x``, ``lm.x.y``), sorted."""
    names = []
    for path in root.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return sorted(names)


def _list_assigned(path: Path, variable: str) -> list[str] | None:
    """The string items of a top-level ``variable = [...]`` in a source file, if there is one."""
    for node in _parse(path).body:
        target = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == variable for t in target) and isinstance(
            node.value, ast.List | ast.Tuple
        ):
            return [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
    return None


def _subcommands(name: str, root: Path) -> list[str]:
    """The subcommands module ``name`` adds: the first argument of each ``add_parser`` call."""
    return list(_source(module_path(name, root)).parsers)


def commands(root: Path = ROOT) -> dict[str, str]:
    """Each ``lm`` subcommand and the module that adds it (and defines its function), read from
    the sources under ``root``: the stage modules of ``lm.cli``'s ``STAGES``, in order."""
    path = module_path(DISPATCHER, root)
    stages = _list_assigned(path, "STAGES") if path is not None else None
    if stages is None:
        raise ValueError(f"no STAGES list in {DISPATCHER} under {root}")
    found: dict[str, str] = {}
    missing = [stage for stage in stages if module_path(stage, root) is None]
    if missing:  # lm.cli fails on them too
        raise ValueError(
            f"{DISPATCHER}'s STAGES names {', '.join(missing)}, which has no source under {root}; "
            "fix the entry in STAGES"
        )
    for stage in stages:
        for command in _subcommands(stage, root):
            found.setdefault(command, stage)
    return found


def command_modules(command: str, root: Path = ROOT) -> list[str]:
    """The entry module of ``lm COMMAND``: the module that adds it and defines its function."""
    found = commands(root)
    if command not in found:
        raise ValueError(f"no lm command {command!r}; the commands: {', '.join(found)}")
    return [found[command]]


def command_version(command: str, root: Path = ROOT) -> str:
    """:func:`code_version` of ``lm COMMAND``: its module and what it imports."""
    return code_version(command_modules(command, root), root)
