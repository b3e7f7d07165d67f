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
        # index_select, not weight[token_ids]: the backward of advanced indexing accumulates
        # with index_put_, which on CPU adds repeated ids' gradients in a thread-dependent
        # order (runs on 2 threads differed from one process to the next); index_select's
        # backward (index_add_) is deterministic on CPU, and several times faster.
        rows = torch.index_select(self.weight, 0, token_ids.reshape(-1))
        return rows.view(*token_ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}"
