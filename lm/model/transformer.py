"""``TransformerBlock`` and ``TransformerLM``: the decoder-only language model.

Variant keywords select the CS336 ablations; the defaults are the assignment's model:

==============  =======================================================================
``norm``        ``pre`` (x + f(norm(x))), ``post`` (norm(x + f(x))), ``none`` (no RMSNorm)
``position``    ``rope`` (rotary embeddings in attention), ``nope`` (none: causality only)
``ffn``         ``swiglu`` (w2(silu(w1 x) * w3 x)), ``silu`` (w2(silu(w1 x)) with hidden
                width 3/2·d_ff, so both have 3·d_model·d_ff parameters), ``relu2``
                (w2(relu(w1 x)²), the squared ReLU, of the SiLU FFN's width)
``attention``   ``reference`` (written out), ``sdpa`` (torch's fused kernel; same numbers)
``qk_norm``     ``none``, ``rms`` (an RMSNorm with its own gain on each head's queries and
                keys before RoPE: the attention logits stay bounded)
==============  =======================================================================

With ``norm="none"`` the blocks and the model have no ``ln1``/``ln2``/``ln_final``; the
other variants keep the state-dict names of the default model (``silu`` and ``relu2``
have no ``w3``).
``post`` keeps ``ln_final`` (it is then a second norm of an already-normalised vector,
harmless, and keeps checkpoints of pre- and post-norm models alike).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lm.errors import LMError
from lm.model.attention import KVCache, MultiHeadSelfAttention
from lm.model.embedding import Embedding
from lm.model.ffn import ReLU2FFN, SiLUFFN, SwiGLU
from lm.model.linear import Linear
from lm.model.norm import RMSNorm
from lm.model.rope import RotaryPositionalEmbedding
from lm.model.variants import VARIANTS, silu_ffn_width


class ContextLengthError(LMError, ValueError):
    """A sequence longer than the model's context length (an ``LMError`` and a ``ValueError``)."""


class StateDictMismatchError(LMError, RuntimeError):
    """A state dict whose tensors do not fit the model (an ``LMError`` and a ``RuntimeError``)."""


def check_variant(
    norm: str, position: str, ffn: str, attention: str, qk_norm: str = "none"
) -> None:
    for name, value in (
        ("norm", norm),
        ("position", position),
        ("ffn", ffn),
        ("attention", attention),
        ("qk_norm", qk_norm),
    ):
        if value not in VARIANTS[name]:
            raise LMError(
                f"{name}={value!r} is not a model variant; choose one of {', '.join(VARIANTS[name])}"
            )


class TransformerBlock(nn.Module):
    """One decoder block: causal self-attention then a position-wise FFN, each residual.

    ``max_seq_len`` and ``theta`` size the RoPE tables (unused with ``position="nope"``);
    pass ``rope=`` to share one ``RotaryPositionalEmbedding`` between blocks.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        max_seq_len: int,
        theta: float,
        *,
        norm: str = "pre",
        position: str = "rope",
        ffn: str = "swiglu",
        attention: str = "reference",
        qk_norm: str = "none",
        rope: RotaryPositionalEmbedding | None = None,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_variant(norm, position, ffn, attention, qk_norm)
        self.norm = norm
        if position == "rope" and rope is None:
            if d_model % num_heads:
                raise LMError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
            rope = RotaryPositionalEmbedding(
                theta, d_model // num_heads, max_seq_len, device=device
            )
        self.attn = MultiHeadSelfAttention(
            d_model,
            num_heads,
            rope if position == "rope" else None,
            attention=attention,
            qk_norm=qk_norm == "rms",
            eps=eps,
            device=device,
            dtype=dtype,
        )
        # Registered in the order of the state-dict names: attn, ln1, ffn, ln2.
        if norm != "none":
            self.ln1 = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)
        if ffn == "swiglu":
            self.ffn = SwiGLU(d_model, d_ff, device=device, dtype=dtype)
        else:
            ffn_class = SiLUFFN if ffn == "silu" else ReLU2FFN
            self.ffn = ffn_class(d_model, silu_ffn_width(d_ff), device=device, dtype=dtype)
        if norm != "none":
            self.ln2 = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        token_positions: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> torch.Tensor:
        if self.norm == "pre":
            x = x + self.attn(self.ln1(x), token_positions, kv_cache)
            return x + self.ffn(self.ln2(x))
        if self.norm == "post":
            x = self.ln1(x + self.attn(x, token_positions, kv_cache))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(x, token_positions, kv_cache)
        return x + self.ffn(x)


class TransformerLM(nn.Module):
    """Token ids ``(..., seq)`` to next-token logits ``(..., seq, vocab_size)`` (unnormalised).

    ``seq`` may be anything up to ``context_length``; longer raises ``ContextLengthError``
    naming both lengths. One RoPE table, sized ``context_length``, is shared by all layers.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        d_ff: int,
        rope_theta: float,
        *,
        norm: str = "pre",
        position: str = "rope",
        ffn: str = "swiglu",
        attention: str = "reference",
        qk_norm: str = "none",
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_variant(norm, position, ffn, attention, qk_norm)
        if d_model % num_heads:
            raise LMError(
                f"d_model={d_model} is not divisible by num_heads={num_heads}; "
                "choose num_heads that divides d_model"
            )
        if position == "rope" and (d_model // num_heads) % 2:
            raise LMError(
                f"RoPE rotates pairs of features: d_model/num_heads={d_model // num_heads} must be even"
            )
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.variant = {
            "norm": norm, "position": position, "ffn": ffn, "attention": attention,
            "qk_norm": qk_norm,
        }  # fmt: skip
        rope = (
            RotaryPositionalEmbedding(
                rope_theta, d_model // num_heads, context_length, device=device
            )
            if position == "rope"
            else None
        )
        self.token_embeddings = Embedding(vocab_size, d_model, device=device, dtype=dtype)
        self.layers = nn.ModuleList(
            TransformerBlock(
                d_model,
                num_heads,
                d_ff,
                context_length,
                rope_theta,
                norm=norm,
                position=position,
                ffn=ffn,
                attention=attention,
                qk_norm=qk_norm,
                rope=rope,
                eps=eps,
                device=device,
                dtype=dtype,
            )
            for _ in range(num_layers)
        )
        if norm != "none":
            self.ln_final = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)
        self.lm_head = Linear(d_model, vocab_size, device=device, dtype=dtype)

    def forward(
        self,
        token_ids: torch.Tensor,
        token_positions: torch.Tensor | None = None,
        kv_cache: Sequence[KVCache] | None = None,
        *,
        head: bool = True,
    ) -> torch.Tensor:
        """The logits of each position; with ``head=False`` the last hidden states (after
        the final norm) instead, for a loss that applies ``lm_head`` itself
        (:func:`lm.training.functional.chunked_cross_entropy`)."""
        seq_len = token_ids.shape[-1]
        past = 0 if kv_cache is None else kv_cache[0].length
        if past + seq_len > self.context_length:
            what = f"{seq_len} tokens" if not past else f"{past} cached + {seq_len} new tokens"
            raise ContextLengthError(
                f"input of {what} is longer than the model's context_length={self.context_length}; "
                f"pass at most {self.context_length} tokens (crop or split the sequence)"
            )
        x = self.token_embeddings(token_ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, token_positions, None if kv_cache is None else kv_cache[i])
        if hasattr(self, "ln_final"):
            x = self.ln_final(x)
        return self.lm_head(x) if head else x

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise every weight afresh and recompute the RoPE tables: for a model built on
        ``device="meta"`` and then materialised with ``to_empty(device=...)``."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_buffers"):
                module.reset_buffers()

    def new_kv_cache(self) -> list[KVCache]:
        """An empty cache per layer, for ``forward(..., kv_cache=cache)`` one chunk at a time."""
        return [KVCache() for _ in self.layers]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``, with an ``LMError`` that names every tensor
        whose shape differs (and what model the checkpoint looks like) or, when strict,
        every missing and unexpected name."""
        own = self.state_dict()
        problems = [
            f"{name}: {tuple(t.shape)} in the state dict, {tuple(own[name].shape)} in the model"
            for name, t in state_dict.items()
            if name in own and tuple(t.shape) != tuple(own[name].shape)
        ]
        if strict:
            missing = [n for n in own if n not in state_dict]
            unexpected = [n for n in state_dict if n not in own]
            if missing:
                problems.append(
                    "missing: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
                )
            if unexpected:
                problems.append(
                    "unexpected: "
                    + ", ".join(unexpected[:8])
                    + (" ..." if len(unexpected) > 8 else "")
                )
                if all(n.startswith("_orig_mod.") for n in unexpected):
                    problems.append(
                        "(the names start with '_orig_mod.': it was saved from a torch.compile'd model; strip that prefix)"
                    )
        if problems:
            raise StateDictMismatchError(
                "the state dict does not fit this model:\n  "
                + "\n  ".join(problems)
                + f"\n{describe_state_dict(state_dict)}"
                + "\nBuild the model with the configuration the state dict was saved with."
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def describe_state_dict(state_dict) -> str:
    """What architecture a TransformerLM state dict's shapes imply, as far as they tell."""
    facts = []
    emb = state_dict.get("token_embeddings.weight")
    if emb is not None and emb.dim() == 2:
        facts += [f"vocab_size={emb.shape[0]}", f"d_model={emb.shape[1]}"]
    layers = {
        int(n.split(".")[1])
        for n in state_dict
        if n.startswith("layers.") and n.split(".")[1].isdigit()
    }
    if layers:
        facts.append(f"num_layers={max(layers) + 1}")
    w1 = state_dict.get("layers.0.ffn.w1.weight")
    if w1 is not None and w1.dim() == 2:
        facts.append(f"ffn hidden width={w1.shape[0]}")
    return (
        "The state dict looks like: "
        + (", ".join(facts) if facts else "(no TransformerLM names found)")
        + "."
    )
