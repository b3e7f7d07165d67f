"""lm: raw text to a trained, evaluated Transformer language model.

The public names follow the CS336 assignment-1 interface (see DESIGN.md). They are
resolved lazily, so ``import lm`` stays cheap (no torch import) and
``from lm import Tokenizer, TransformerLM`` works.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # tokenizer
    "train_bpe": "lm.tokenizer",
    "Tokenizer": "lm.tokenizer",
    # model
    "Linear": "lm.model",
    "Embedding": "lm.model",
    "RMSNorm": "lm.model",
    "SwiGLU": "lm.model",
    "RotaryPositionalEmbedding": "lm.model",
    "MultiHeadSelfAttention": "lm.model",
    "TransformerBlock": "lm.model",
    "TransformerLM": "lm.model",
    "silu": "lm.model",
    "softmax": "lm.model",
    "scaled_dot_product_attention": "lm.model",
    # training
    "cross_entropy": "lm.training",
    "gradient_clipping": "lm.training",
    "get_lr_cosine_schedule": "lm.training",
    "get_batch": "lm.training",
    "save_checkpoint": "lm.training",
    "load_checkpoint": "lm.training",
    "AdamW": "lm.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
