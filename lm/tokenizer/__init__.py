"""Byte-level BPE: training (``train_bpe``), encoding/decoding (``Tokenizer``), file format."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "train_bpe": "lm.tokenizer.bpe",
    "Tokenizer": "lm.tokenizer.tokenizer",
    "save_tokenizer": "lm.tokenizer.serialization",
    "load_tokenizer": "lm.tokenizer.serialization",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lm.tokenizer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
