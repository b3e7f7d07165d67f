"""Settings read from the environment: one parser, one message for a bad value."""

from __future__ import annotations

import os

from lm.errors import LMError


def seconds(name: str, default: float, *, zero_ok: bool = False) -> float:
    """The environment variable ``name`` as a number of seconds, else ``default``.

    A value that is not a number, is negative, or is 0 where 0 would mean "never wait" makes
    no sense (``zero_ok=False``) raises LMError naming the variable and what to give.
    """
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value >= 0 if zero_ok else value > 0):
        least = "0 or more" if zero_ok else "above 0"
        raise LMError(f"{name}={raw!r}: give a number of seconds {least}, or unset it")
    return value
