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

And the options of the training recipe (the speedrun's family), all off by default:

=================== ==================================================================
``zero_init_proj``  the attention's output projection and the FFN's down-projection
                    (``w2``) start at zero, so every block starts as the identity
``value_residual``  layers after the first mix their values with the first layer's,
                    ``(1 − λ)·v + λ·v_first``, one learned λ per layer (``ValueMix``)
``logit_softcap``   a number ``c``: the logits are ``c · tanh(logits / c)`` (float32)
``tie_embeddings``  the LM head's weight is the token embedding's (one parameter,
                    initialised as the head)
=================== ==================================================================

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
from lm.model.softcap import softcap
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
    ``zero_init_proj`` zeroes the attention's output projection and the FFN's ``w2`` at
    initialisation; ``value_mix`` gives the attention a :class:`ValueMix` (the block then
    needs the first layer's values, ``v_first``).
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
        zero_init_proj: bool = False,
        value_mix: bool = False,
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
            zero_out=zero_init_proj,
            value_mix=value_mix,
            eps=eps,
            device=device,
            dtype=dtype,
        )
        # Registered in the order of the state-dict names: attn, ln1, ffn, ln2.
        if norm != "none":
            self.ln1 = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)
        if ffn == "swiglu":
            self.ffn = SwiGLU(d_model, d_ff, device=device, dtype=dtype, zero_out=zero_init_proj)
        else:
            ffn_class = SiLUFFN if ffn == "silu" else ReLU2FFN
            self.ffn = ffn_class(
                d_model, silu_ffn_width(d_ff), device=device, dtype=dtype, zero_out=zero_init_proj
            )
        if norm != "none":
            self.ln2 = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)

    def forward(
        self,
        x: torch.Tensor,
        token_positions: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        v_first: torch.Tensor | None = None,
        *,
        return_values: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The block's output; with ``return_values`` also its attention's own values
        (see :meth:`MultiHeadSelfAttention.forward`)."""
        attn_in = self.ln1(x) if self.norm == "pre" else x
        a, v = self.attn(attn_in, token_positions, kv_cache, v_first, return_values=True)
        if self.norm == "pre":
            x = x + a
            x = x + self.ffn(self.ln2(x))
        elif self.norm == "post":
            x = self.ln1(x + a)
            x = self.ln2(x + self.ffn(x))
        else:
            x = x + a
            x = x + self.ffn(x)
        return (x, v) if return_values else x


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
        zero_init_proj: bool = False,
        value_residual: bool = False,
        logit_softcap: float | None = None,
        tie_embeddings: bool = False,
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_variant(norm, position, ffn, attention, qk_norm)
        if logit_softcap is not None and not logit_softcap > 0:
            raise LMError(f"logit_softcap must be a positive number or None, got {logit_softcap!r}")
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
        self.value_residual = value_residual
        self.logit_softcap = None if logit_softcap is None else float(logit_softcap)
        self.tie_embeddings = tie_embeddings
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
                zero_init_proj=zero_init_proj,
                value_mix=value_residual and i > 0,
                rope=rope,
                eps=eps,
                device=device,
                dtype=dtype,
            )
            for i in range(num_layers)
        )
        if norm != "none":
            self.ln_final = RMSNorm(d_model, eps=eps, device=device, dtype=dtype)
        self.lm_head = Linear(d_model, vocab_size, device=device, dtype=dtype)
        self._tie()

    def _tie(self) -> None:
        """With ``tie_embeddings``, the embedding's weight is the head's parameter (drawn
        with the head's initialisation: the embedding's std 1 would make logits of
        std √d_model at the start). The state dict keeps both names, one tensor."""
        if self.tie_embeddings and self.token_embeddings.weight is not self.lm_head.weight:
            self.token_embeddings.weight = self.lm_head.weight

    def forward(
        self,
        token_ids: torch.Tensor,
        token_positions: torch.Tensor | None = None,
        kv_cache: Sequence[KVCache] | None = None,
        *,
        head: bool = True,
    ) -> torch.Tensor:
        """The logits of each position; with ``head=False`` the last hidden states (after
        the final norm) instead, for a loss that applies ``lm_head`` (and the soft-cap)
        itself (:func:`lm.training.functional.chunked_cross_entropy`)."""
        seq_len = token_ids.shape[-1]
        past = 0 if kv_cache is None else kv_cache[0].length
        if past + seq_len > self.context_length:
            what = f"{seq_len} tokens" if not past else f"{past} cached + {seq_len} new tokens"
            raise ContextLengthError(
                f"input of {what} is longer than the model's context_length={self.context_length}; "
                f"pass at most {self.context_length} tokens (crop or split the sequence)"
            )
        x = self.token_embeddings(token_ids)
        v_first = None
        for i, layer in enumerate(self.layers):
            cache = None if kv_cache is None else kv_cache[i]
            if self.value_residual and i == 0:
                x, v_first = layer(x, token_positions, cache, return_values=True)
            else:
                x = layer(x, token_positions, cache, v_first)
        if hasattr(self, "ln_final"):
            x = self.ln_final(x)
        if not head:
            return x
        logits = self.lm_head(x)
        return logits if self.logit_softcap is None else softcap(logits, self.logit_softcap)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise every weight afresh and recompute the RoPE tables: for a model built on
        ``device="meta"`` and then materialised with ``to_empty(device=...)``."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_buffers"):
                module.reset_buffers()
        self._tie()  # to_empty makes each module's parameter anew

    def new_kv_cache(self) -> list[KVCache]:
        """An empty cache per layer, for ``forward(..., kv_cache=cache)`` one chunk at a time."""
        return [KVCache() for _ in self.layers]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``, with an ``LMError`` that names every tensor
        whose shape differs (and what model the checkpoint looks like), an untied head
        loaded into a tied model, or, when strict, every missing and unexpected name."""
        own = self.state_dict()
        problems = [
            f"{name}: {tuple(t.shape)} in the state dict, {tuple(own[name].shape)} in the model"
            for name, t in state_dict.items()
            if name in own and tuple(t.shape) != tuple(own[name].shape)
        ]
        emb, head = state_dict.get("token_embeddings.weight"), state_dict.get("lm_head.weight")
        if (
            self.tie_embeddings
            and not problems
            and emb is not None
            and head is not None
            and not (emb.is_meta or head.is_meta)
            and not torch.equal(emb, head.to(emb.device))
        ):
            problems.append(
                "token_embeddings.weight and lm_head.weight differ in the state dict, but this "
                "model ties them (tie_embeddings): it was saved from an untied model"
            )
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
