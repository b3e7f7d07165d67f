"""The Transformer language model, written from scratch on ``torch.nn.Module``.

One module per concept: ``linear``, ``embedding``, ``norm``, ``ffn``, ``rope``,
``attention`` and ``transformer``; ``config`` holds ``ModelConfig`` and the presets.
Names are resolved lazily so that ``lm --help`` and the config code do not import torch.
"""

from __future__ import annotations

from lm._lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "KVCache": "lm.model.attention",
    "MultiHeadSelfAttention": "lm.model.attention",
    "scaled_dot_product_attention": "lm.model.attention",
    "softmax": "lm.model.attention",
    "DEFAULT_PRESETS": "lm.model.config",
    "ModelConfig": "lm.model.config",
    "load_presets": "lm.model.config",
    "preset_config": "lm.model.config",
    "Embedding": "lm.model.embedding",
    "SiLUFFN": "lm.model.ffn",
    "SwiGLU": "lm.model.ffn",
    "silu": "lm.model.ffn",
    "Linear": "lm.model.linear",
    "RMSNorm": "lm.model.norm",
    "RotaryPositionalEmbedding": "lm.model.rope",
    "VARIANTS": "lm.model.variants",
    "ContextLengthError": "lm.model.transformer",
    "StateDictMismatchError": "lm.model.transformer",
    "TransformerBlock": "lm.model.transformer",
    "TransformerLM": "lm.model.transformer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
