"""The CS336 learning-rate toy (:mod:`.toy`) and ``lm lr-tuning`` (:mod:`.cli`).

A package of its own so that its command's code version (:mod:`lm.codeversion`: per entry
module) is not ``lm train``'s: changing the toy or its plot retrains nothing. Public names
resolve lazily (importing the command does not import torch).
"""

from __future__ import annotations

from lm._lazy import lazy_exports

_EXPORTS = {
    "lr_tuning": "lm.training.lr_tuning.toy",
    "run_toy": "lm.training.lr_tuning.toy",
    "classify": "lm.training.lr_tuning.toy",
    "plot_lr_tuning": "lm.training.lr_tuning.toy",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
