"""CLI: ``lm code-version`` (what makes a pipeline step rerun) and ``lm import-graph`` (the
package's imports, and none upward). The library code is :mod:`lm.codeversion` and
:mod:`lm.import_layers`."""

from __future__ import annotations

from lm.errors import LMError


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
    p.set_defaults(func=_code_version)

    p = subparsers.add_parser(
        "import-graph",
        help="every lm module and the lm modules it imports; fails on an upward import",
        description="Print each module of the package (marked [cli] for a command-line "
        "module) with the lm modules it imports directly, imports inside functions included, "
        "then every import that runs upward (lm.import_layers: a library module importing a "
        "command-line module, inference importing the training loop, the model importing "
        "outside itself and the basics). Exit status 1 when there is one.",
    )
    p.set_defaults(func=_import_graph)


def _code_version(args) -> int:
    from lm.codeversion import command_modules, command_version, direct_imports, module_closure

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


def _import_graph(args) -> int:
    from lm.import_layers import import_graph, is_cli, upward_imports

    graph = import_graph()
    for name, deps in graph.items():
        mark = " [cli]" if is_cli(name) else ""
        print(f"{name}{mark}" + (f" -> {', '.join(deps)}" if deps else ""))
    bad = upward_imports()
    n_imports = sum(len(deps) for deps in graph.values())
    print(f"\n{len(graph)} modules, {n_imports} imports, {len(bad)} upward")
    for name, dep, why in bad:
        print(f"upward: {name} -> {dep} ({why})")
    return 1 if bad else 0
