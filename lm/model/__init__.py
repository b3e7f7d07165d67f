"""The Transformer language model, written from scratch on ``torch.nn.Module``.

One module per concept: ``linear``, ``embedding``, ``norm``, ``ffn``, ``rope``,
``attention`` and ``transformer``; ``config`` holds ``ModelConfig`` and the presets.
"""

from lm.model.attention import (
    KVCache,
    MultiHeadSelfAttention,
    scaled_dot_product_attention,
    softmax,
)
from lm.model.config import DEFAULT_PRESETS, ModelConfig, load_presets, preset_config
from lm.model.embedding import Embedding
from lm.model.ffn import SiLUFFN, SwiGLU, silu
from lm.model.linear import Linear
from lm.model.norm import RMSNorm
from lm.model.rope import RotaryPositionalEmbedding
from lm.model.transformer import (
    VARIANTS,
    ContextLengthError,
    StateDictMismatchError,
    TransformerBlock,
    TransformerLM,
)

__all__ = [
    "DEFAULT_PRESETS",
    "VARIANTS",
    "ContextLengthError",
    "Embedding",
    "KVCache",
    "Linear",
    "ModelConfig",
    "MultiHeadSelfAttention",
    "RMSNorm",
    "RotaryPositionalEmbedding",
    "SiLUFFN",
    "StateDictMismatchError",
    "SwiGLU",
    "TransformerBlock",
    "TransformerLM",
    "load_presets",
    "preset_config",
    "scaled_dot_product_attention",
    "silu",
    "softmax",
]
