"""``Embedding``: a lookup table from token ids to vectors."""

from __future__ import annotations

import torch
from torch import nn


class Embedding(nn.Module):
    """Maps integer ids ``(...)`` to rows of ``weight`` ``(num_embeddings, embedding_dim)``.

    Written on ``nn.Parameter`` (no ``nn.Embedding``); initialised from a normal
    distribution with std 1 truncated at ±3.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(
            torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, mean=0.0, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.weight[token_ids]

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}"
