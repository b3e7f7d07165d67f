"""Byte-level BPE: training (``train_bpe``), encoding/decoding (``Tokenizer``), file format.

- :mod:`lm.tokenizer.training`: the BPE merge algorithm, its report, its memory, ``lm train-bpe``.
- :mod:`lm.tokenizer.encoding`: the ``Tokenizer``, dataset encoding, ``lm encode``, the
  tokenizer experiments.
- :mod:`lm.tokenizer.native`: which engine runs, and the C extension that both use.
- Shared by both: :mod:`.pretokenize` (the GPT-2 split), :mod:`.chunks` (a text in pieces,
  in parallel), :mod:`.serialization` (``vocab.json`` + ``merges.txt``).
"""

from __future__ import annotations

from lm._lazy import lazy_exports

_EXPORTS = {
    "train_bpe": "lm.tokenizer.training.bpe",
    "Tokenizer": "lm.tokenizer.encoding.tokenizer",
    "save_tokenizer": "lm.tokenizer.serialization",
    "load_tokenizer": "lm.tokenizer.serialization",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
