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
``lm code-version COMMAND`` prints the version and the modules behind it.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "lm"
ROOT = Path(__file__).resolve().parent


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


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_bytes(), filename=str(path))


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

    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                add(module, None if alias.name == "*" else alias.name)
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


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node):
        self.generic_visit(node)
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _strip


def code_fingerprint(path: Path) -> str:
    """The code of a source file without comments, docstrings and layout (its AST); for
    the C source of an extension, its text and that of the headers beside it."""
    path = Path(path)
    if path.suffix == ".c":
        h = hashlib.sha256(path.read_bytes())
        for header in sorted(path.parent.glob("*.h")):
            h.update(header.name.encode() + b"\0" + header.read_bytes())
        return h.hexdigest()
    tree = _StripDocstrings().visit(ast.parse(Path(path).read_bytes()))
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def code_version(entries: Iterable[str], root: Path = ROOT) -> str:
    """A short hash of the code of ``entries`` and all they import (see the module doc)."""
    h = hashlib.sha256()
    for name in module_closure(entries, root):
        h.update(name.encode() + b"\0")
        h.update(code_fingerprint(module_path(name, root)).encode() + b"\0")
    return h.hexdigest()[:16]


def command_modules(command: str) -> list[str]:
    """The entry module of ``lm COMMAND``: the module that defines its function."""
    from lm.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if command not in sub.choices:
        raise ValueError(f"no lm command {command!r}; the commands: {', '.join(sub.choices)}")
    func = sub.choices[command].get_default("func")
    return [func.__module__]


def command_version(command: str, root: Path = ROOT) -> str:
    """:func:`code_version` of ``lm COMMAND``: its module and what it imports."""
    return code_version(command_modules(command), root)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "code-version",
        help="the code version of an lm command (what makes a pipeline step rerun)",
        description="Print the code version that the pipeline passes to the rule running "
        "`lm COMMAND`, and with --modules the lm modules it covers (with --graph, each one's "
        "direct lm imports).",
    )
    p.add_argument("commands", nargs="+", metavar="COMMAND", help="lm subcommands, e.g. train")
    p.add_argument("--modules", action="store_true", help="list the modules behind each version")
    p.add_argument("--graph", action="store_true", help="each module's direct lm imports")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from lm.errors import LMError

    for command in args.commands:
        try:
            entries = command_modules(command)
        except ValueError as e:
            raise LMError(str(e)) from None
        print(f"{command} {command_version(command)}")
        if args.modules or args.graph:
            for name in module_closure(entries):
                deps = sorted(direct_imports(name)) if args.graph else []
                print(f"  {name}" + (f" -> {', '.join(deps)}" if deps else ""))
    return 0
