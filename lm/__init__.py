"""lm: raw text to a trained, evaluated Transformer language model.

The public names follow the CS336 assignment-1 interface (see docs/design.md). They are
resolved lazily, so ``import lm`` stays cheap (no torch import) and
``from lm import Tokenizer, TransformerLM`` works.
"""

from __future__ import annotations

from lm._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
