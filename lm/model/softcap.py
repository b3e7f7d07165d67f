"""The logit soft-cap: ``cap · tanh(logits / cap)``, computed in float32."""

from __future__ import annotations

import torch


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """``cap · tanh(logits / cap)`` in float32: every logit smoothly bounded to
    ``(-cap, cap)``, nearly unchanged where ``|logit| << cap`` (Gemma 2's final-logit
    soft-capping; the modded-nanogpt speedrun's). Float32 because the loss that follows
    is float32 and a bfloat16 tanh near ±1 keeps 2-3 significant digits."""
    return cap * torch.tanh(logits.float() / cap)
