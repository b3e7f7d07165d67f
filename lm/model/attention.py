"""Attention: ``softmax``, ``scaled_dot_product_attention`` and causal ``MultiHeadSelfAttention``.

Two interchangeable paths compute the same function:

- ``attention="reference"``: written out here (QKᵀ/√d_k, boolean mask, our softmax, ·V).
  It keeps the (seq × seq) weights for backward: readable, checkable, memory-hungry.
- ``attention="sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, which
  dispatches to fused kernels (flash / memory-efficient on CUDA, flash on CPU, Metal on
  MPS) that never store the (seq × seq) weights.

``MultiHeadSelfAttention.forward`` takes an optional ``KVCache`` so that generation can
feed one token at a time without recomputing the keys and values of the prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lm.errors import LMError
from lm.model.linear import Linear
from lm.model.norm import RMSNorm
from lm.model.rope import RotaryPositionalEmbedding
from lm.model.variants import ATTENTION_KINDS


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``exp(x) / sum(exp(x))`` along ``dim``, with the maximum subtracted first.

    Subtracting the max keeps ``exp`` from overflowing and changes neither the value nor
    the gradient (softmax is shift-invariant), so the max is taken of ``x.detach()``:
    autograd neither tracks it nor keeps a copy of ``x`` for it. A slice that is all
    ``-inf`` gives NaN, as ``torch.softmax`` does.
    """
    shifted = x - x.detach().amax(dim=dim, keepdim=True)
    exp = torch.exp(shifted)
    return exp / exp.sum(dim=dim, keepdim=True)


def scaled_dot_product_attention(
    Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(Q Kᵀ / √d_k) V`` for ``Q (..., n, d_k)``, ``K (..., m, d_k)``, ``V (..., m, d_v)``.

    ``mask`` is boolean, broadcastable to ``(..., n, m)``; ``True`` means "may attend".
    Any leading batch dimensions work. Low-precision scores (bf16/fp16 under autocast)
    go through the softmax in float32.
    """
    d_k = Q.shape[-1]
    scores = (Q * (1.0 / math.sqrt(d_k))) @ K.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if scores.dtype in (torch.float16, torch.bfloat16):
        weights = softmax(scores.float(), dim=-1).to(V.dtype)
    else:
        weights = softmax(scores, dim=-1)
    return weights @ V


def causal_mask(n_queries: int, n_keys: int, device=None) -> torch.Tensor:
    """Boolean ``(n_queries, n_keys)``: query ``i`` (the last ``n_queries`` of ``n_keys``
    positions) may attend key ``j`` when ``j <= i + n_keys - n_queries``."""
    offset = n_keys - n_queries
    q = torch.arange(n_queries, device=device).unsqueeze(-1)
    k = torch.arange(n_keys, device=device)
    return k <= q + offset


class KVCache:
    """The keys and values one attention layer has seen, for incremental decoding.

    Start empty; each ``forward`` with the cache appends the new tokens' keys and values
    (after RoPE) and attends over everything stored. ``length`` is the number of tokens
    stored, which is also the position of the next token when positions are not given.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None  # (batch, heads, length, d_k)
        self.values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = torch.cat((self.keys, keys), dim=-2)
            self.values = torch.cat((self.values, values), dim=-2)
        return self.keys, self.values

    def reset(self) -> None:
        self.keys = self.values = None


class ValueMix(nn.Module):
    """Value residual learning (Zhou et al. 2024, "Value Residual Learning For Alleviating
    Attention Concentration In Transformers"; the form of the modded-nanogpt speedrun):
    a layer's values become ``(1 - λ)·v + λ·v_first``, a mix of its own and the first
    layer's values (per token, before attention), with one learned scalar ``λ`` per layer,
    initialised to 1/2."""

    INIT = 0.5

    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.lam = nn.Parameter(torch.empty((), device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.lam, self.INIT)

    def forward(self, v: torch.Tensor, v_first: torch.Tensor) -> torch.Tensor:
        return (1 - self.lam) * v + self.lam * v_first


class MultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention with separate Q, K, V and output projections.

    ``attn(x, token_positions=None, kv_cache=None)`` maps ``(..., seq, d_model)`` to the
    same shape. Each head has ``d_k = d_model / num_heads`` features. ``rope`` (a
    ``RotaryPositionalEmbedding`` of ``d_k``) rotates queries and keys; ``None`` means no
    position information in attention (NoPE: causality alone carries order).
    ``token_positions`` ``(..., seq)`` default to ``0 .. seq-1``, or to the positions
    after the cached ones when ``kv_cache`` is given. ``zero_out``: the output projection
    starts at zero; ``value_mix``: the values are mixed with ``v_first`` (a
    :class:`ValueMix`), which ``forward`` then needs.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope: RotaryPositionalEmbedding | None = None,
        *,
        attention: str = "reference",
        qk_norm: bool = False,
        zero_out: bool = False,
        value_mix: bool = False,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if d_model % num_heads:
            raise LMError(
                f"d_model={d_model} is not divisible by num_heads={num_heads}; "
                "choose num_heads that divides d_model (each head gets d_model/num_heads features)"
            )
        if attention not in ATTENTION_KINDS:
            raise LMError(f"attention={attention!r} is not one of {', '.join(ATTENTION_KINDS)}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.attention = attention
        if rope is not None and rope.d_k != self.d_k:
            raise LMError(
                f"rope.d_k={rope.d_k} but the heads have d_k={self.d_k} (d_model/num_heads)"
            )
        self.rope = rope
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype, zero_init=zero_out)
        if qk_norm:  # one gain of d_k features each, shared by the heads
            self.q_norm = RMSNorm(self.d_k, eps=eps, device=device, dtype=dtype)
            self.k_norm = RMSNorm(self.d_k, eps=eps, device=device, dtype=dtype)
        if value_mix:
            self.value_mix = ValueMix(device=device, dtype=dtype)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        # (b, seq, d_model) -> (b, heads, seq, d_k)
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.d_k).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        token_positions: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        v_first: torch.Tensor | None = None,
        *,
        return_values: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The attention's output; with ``return_values`` also this layer's own values
        ``(batch, heads, seq, d_k)`` (before any mix), which the first layer of a
        value-residual model hands to the others as their ``v_first``."""
        *lead, seq_len, d_model = x.shape
        x = x.reshape(-1, seq_len, d_model)  # any leading dims -> one batch dim
        q = self._split_heads(self.q_proj(x))
        k = self._split_heads(self.k_proj(x))
        v = own_v = self._split_heads(self.v_proj(x))
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if hasattr(self, "value_mix"):
            if v_first is None:
                raise LMError("a value-residual layer needs the first layer's values (v_first)")
            v = self.value_mix(v, v_first)

        past = 0 if kv_cache is None else kv_cache.length
        if self.rope is not None:
            if token_positions is None and past:
                token_positions = torch.arange(past, past + seq_len, device=x.device)
            if token_positions is not None and token_positions.dim() > 1:
                # (..., seq) -> (batch, 1, seq): one row of positions per sequence, shared by its heads
                token_positions = token_positions.expand(*lead, seq_len).reshape(-1, 1, seq_len)
            q = self.rope(q, token_positions)
            k = self.rope(k, token_positions)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)

        n_keys = k.shape[-2]
        if self.attention == "sdpa":
            if n_keys == seq_len:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            elif seq_len == 1:  # one new token sees every cached one
                out = F.scaled_dot_product_attention(q, k, v)
            else:  # is_causal aligns the mask top-left; a prefix needs it bottom-right
                mask = causal_mask(seq_len, n_keys, device=x.device)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            out = scaled_dot_product_attention(
                q, k, v, causal_mask(seq_len, n_keys, device=x.device)
            )

        out = self.output_proj(out.transpose(1, 2).reshape(*lead, seq_len, d_model))
        return (out, own_v) if return_values else out

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, attention={self.attention!r}"
