"""Which tokenization engine runs: the native C extension, or the pure-Python reference.

The C extension ``lm.tokenizer.native._native`` (source ``_native.c``, built at install when a C
compiler is there) does pre-tokenization, pre-token counting and BPE encoding with exactly
the results of the Python code, which stays the readable reference, the fallback, and the
oracle of the tests.

- ``LM_NATIVE=0`` forces the Python engine.
- ``LM_NATIVE=1`` requires the native one (an error if it was not built), e.g. in CI.
- Unset (or anything else): native when built, else Python.

The environment is read at each call, so a test can switch engines in one process.
"""

from __future__ import annotations

import os

from lm.errors import LMError

try:
    from lm.tokenizer.native import _native
except ImportError as e:  # not built (no compiler at install), or built for another Python
    _native = None
    _IMPORT_ERROR = str(e)
else:
    _IMPORT_ERROR = ""


def module():
    """The ``_native`` module when the native engine is to be used, else ``None``."""
    flag = os.environ.get("LM_NATIVE", "")
    if flag == "0":
        return None
    if _native is None and flag == "1":
        raise LMError(
            f"LM_NATIVE=1 asks for the native tokenization engine, but lm.tokenizer.native._native "
            f"is not built ({_IMPORT_ERROR}); install a C compiler and the Python headers and "
            f"reinstall (pip install -e .), or unset LM_NATIVE"
        )
    return _native


def engine() -> str:
    """``"native"`` or ``"python"``: the engine that tokenization uses now."""
    return "python" if module() is None else "native"


def describe() -> str:
    """One line for ``lm --version``: the engine, and why when it is the Python one."""
    if os.environ.get("LM_NATIVE", "") == "0":
        return "python (LM_NATIVE=0)"
    if _native is None:
        return f"python (native extension not built: {_IMPORT_ERROR})"
    return f"native ({os.path.basename(_native.__file__)})"
