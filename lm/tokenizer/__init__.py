"""Byte-level BPE: training (``train_bpe``), encoding/decoding (``Tokenizer``), file format."""

from __future__ import annotations

from lm._lazy import lazy_exports

_EXPORTS = {
    "train_bpe": "lm.tokenizer.bpe",
    "Tokenizer": "lm.tokenizer.tokenizer",
    "save_tokenizer": "lm.tokenizer.serialization",
    "load_tokenizer": "lm.tokenizer.serialization",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
