"""Lazy public names for packages (PEP 562): ``import lm`` must not import torch.

A package lists ``{public name: defining module}`` and installs the pair of hooks::

    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

The first access imports the defining module and caches the value in the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(
    package: str, exports: dict[str, str], namespace: dict
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
