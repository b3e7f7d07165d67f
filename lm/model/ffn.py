"""Position-wise feed-forward networks: ``SwiGLU``, the plain ``SiLUFFN`` and ``ReLU2FFN``,
and ``silu``."""

from __future__ import annotations

import torch
from torch import nn

from lm.model.linear import Linear


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU (swish): ``x * sigmoid(x)``."""
    return x * torch.sigmoid(x)


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``: a gated FFN with three ``d_model``×``d_ff`` matrices.

    ``w1`` and ``w3`` are ``(d_ff, d_model)``, ``w2`` is ``(d_model, d_ff)``.
    ``zero_out``: ``w2`` (the down-projection) starts at zero.
    """

    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None, *, zero_out=False):
        super().__init__()
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype, zero_init=zero_out)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(silu(self.w1(x)) * self.w3(x))


class SiLUFFN(nn.Module):
    """``w2(silu(w1 x))``: the ungated FFN of the SwiGLU-vs-SiLU ablation.

    ``d_ff`` is this FFN's own hidden width; ``TransformerBlock(ffn="silu")`` passes
    ``silu_ffn_width(d_ff)`` so that the ablation compares models of equal size.
    ``zero_out``: ``w2`` (the down-projection) starts at zero.
    """

    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None, *, zero_out=False):
        super().__init__()
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype, zero_init=zero_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(silu(self.w1(x)))


class ReLU2FFN(SiLUFFN):
    """``w2(relu(w1 x)²)``: the ungated FFN with the squared ReLU (So et al. 2021, "Primer";
    the modded-nanogpt speedrun's), of the width and parameters of :class:`SiLUFFN`. It
    keeps two ``T × d_ff`` activations for the backward (the ReLU's output, squared's
    input; the square) where the SiLU keeps three."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(torch.relu(self.w1(x)).square())
