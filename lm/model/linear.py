"""``Linear``: y = x Wᵀ, a bias-free linear map with its weight stored as (out, in)."""

from __future__ import annotations

import math

import torch
from torch import nn


class Linear(nn.Module):
    """A linear layer without bias, written on ``nn.Parameter`` (no ``nn.Linear``).

    The weight is ``(out_features, in_features)`` like ``nn.Linear``'s, so
    ``forward(x) = x @ weight.T`` maps ``(..., in_features)`` to ``(..., out_features)``.
    It is initialised from a normal distribution with std ``sqrt(2 / (in + out))``
    truncated at ±3 std (the CS336 initialisation). ``zero_init=True`` draws it so and
    then zeroes it (the recipe's zero-initialised output projections): the random stream
    advances as for a plain layer, so the model's other weights are those of the same
    seed without the option.
    """

    def __init__(
        self, in_features: int, out_features: int, device=None, dtype=None, *, zero_init=False
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.zero_init = zero_init
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, device=device, dtype=dtype)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = math.sqrt(2.0 / (self.in_features + self.out_features))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
        if self.zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 3-D x against a transposed 2-D weight folds into one GEMM, as F.linear does.
        return x @ self.weight.T

    def extra_repr(self) -> str:
        zero = ", zero_init=True" if self.zero_init else ""
        return f"in_features={self.in_features}, out_features={self.out_features}{zero}"
