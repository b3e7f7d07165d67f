"""Which tokenization engine runs: the native C extension, or the pure-Python reference.

The C extension ``lm.tokenizer.native._native`` (source ``_native.c``, built at install when a C
compiler is there) does pre-tokenization, pre-token counting and BPE encoding with exactly
the results of the Python code, which stays the readable reference, the fallback, and the
oracle of the tests.

- ``LM_NATIVE=0`` forces the Python engine.
- ``LM_NATIVE=1`` requires the native one (an error if it was not built), e.g. in CI.
- Unset (or anything else): native when built, else Python.

The native pre-token scanner classifies ASCII text 16 or 32 bytes at a time with the vector
instructions the CPU has, chosen at run time; every path gives the same pre-tokens.

- ``LM_NATIVE_SIMD=avx2|sse2|portable`` forces one path (an error if this CPU lacks it);
  unset, the fastest the CPU runs. :func:`scan_path` names the one in use.

The environment is read at each call, so a test can switch engines (and paths) in one process.
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
    if _native is not None:
        _use_scan_path()
    return _native


def _use_scan_path() -> str:
    """Set the native scanner's path from ``LM_NATIVE_SIMD`` (the fastest when unset)."""
    paths = _native.simd_paths()  # what this CPU runs, fastest first
    want = os.environ.get("LM_NATIVE_SIMD", "") or paths[0]
    if want not in paths:
        raise LMError(
            f"LM_NATIVE_SIMD={want} is not a scanner path this CPU runs; it runs "
            f"{', '.join(paths)} (fastest first): set one of those, or unset LM_NATIVE_SIMD"
        )
    if _native.simd() != want:
        _native.set_simd(want)
    return want


def scan_path() -> str | None:
    """The native scanner's path (``"avx2"``, ``"sse2"`` or ``"portable"``) that tokenization
    uses now, or ``None`` when it uses the Python engine."""
    return None if module() is None else _native.simd()


def engine() -> str:
    """``"native"`` or ``"python"``: the engine that tokenization uses now."""
    return "python" if module() is None else "native"


def describe() -> str:
    """One line for ``lm --version``: the engine, and why when it is the Python one."""
    if os.environ.get("LM_NATIVE", "") == "0":
        return "python (LM_NATIVE=0)"
    if _native is None:
        return f"python (native extension not built: {_IMPORT_ERROR})"
    try:
        scanner = f"{_use_scan_path()} scanner"
    except LMError as e:
        scanner = str(e)
    return f"native ({os.path.basename(_native.__file__)}, {scanner})"
