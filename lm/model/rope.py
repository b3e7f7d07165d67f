"""``RotaryPositionalEmbedding``: rotate pairs of features by angles that grow with position."""

from __future__ import annotations

import torch
from torch import nn


class RotaryPositionalEmbedding(nn.Module):
    """RoPE with interleaved pairs: features ``(2i, 2i+1)`` rotate by ``pos · theta^(-2i/d_k)``.

    ``rope(x, token_positions)`` takes ``x`` of shape ``(..., seq, d_k)`` and integer
    positions broadcastable to ``(..., seq)`` (``None`` means ``0 .. seq-1``). The cos and
    sin tables ``(max_seq_len, d_k/2)`` are computed once, in float32, and kept as
    non-persistent buffers: they move with ``.to(device)`` but are not in the state dict.
    It has no parameters, so one instance can serve every layer.
    """

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None):
        super().__init__()
        if d_k % 2:
            raise ValueError(
                f"RoPE needs an even d_k (it rotates pairs of features), got d_k={d_k}"
            )
        self.theta = float(theta)
        self.d_k = d_k
        self.max_seq_len = max_seq_len
        cos, sin = self._tables(device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        # On the CPU in float64 (exact for large angles; MPS has no float64), then moved.
        inv_freq = self.theta ** (-torch.arange(0, self.d_k, 2, dtype=torch.float64) / self.d_k)
        positions = torch.arange(self.max_seq_len, dtype=torch.float64)
        angles = torch.outer(positions, inv_freq)  # (max_seq_len, d_k/2)
        return angles.cos().float().to(device), angles.sin().float().to(device)

    def reset_buffers(self) -> None:
        """Recompute the tables in place (after ``to_empty`` from the meta device)."""
        cos, sin = self._tables(self.cos.device)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def forward(self, x: torch.Tensor, token_positions: torch.Tensor | None = None) -> torch.Tensor:
        if token_positions is None:
            seq_len = x.shape[-2]
            cos, sin = self.cos[:seq_len], self.sin[:seq_len]  # views: no gather
        else:
            cos, sin = self.cos[token_positions], self.sin[token_positions]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        x_even, x_odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
        return rotated.flatten(-2)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, d_k={self.d_k}, max_seq_len={self.max_seq_len}"
