"""The accounting formulas: parameters, forward matmul FLOPs, activations and AdamW
memory, FLOPs and training time of a ``TransformerLM``, from its :class:`ModelConfig` alone.

Conventions: a matmul of an ``m×n`` by an ``n×p`` matrix costs ``2mnp`` FLOPs; only matmuls
are counted (norms, softmax, RoPE and the like are O(tokens·d) or O(tokens·T) elementwise
work, a few percent at most); memory is float32 (4 bytes); GB is 10⁹ bytes. torch-free:
the pipeline's run config counts parameters with :func:`parameter_counts` at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lm.model.config import ModelConfig
from lm.model.variants import silu_ffn_width

#: How the numbers count (quoted in the reports).
CONVENTIONS = "a matmul of an ``m×n`` by an ``n×p`` matrix costs ``2mnp`` FLOPs; only matmuls are counted (norms, softmax, RoPE and the like are O(tokens·d) or O(tokens·T) elementwise work, a few percent at most); memory is float32 (4 bytes); GB is 10⁹ bytes."

BYTES_FP32 = 4


GB = 1e9


ADAMW_FLOPS_PER_PARAMETER = 14  # see adamw_step_flops


GROUPS = ("attention projections", "attention scores", "FFN", "LM head")


def ffn_width(cfg: ModelConfig) -> int:
    """The FFN's hidden width as built (SiLU uses 3/2·d_ff to match SwiGLU's size)."""
    return cfg.d_ff if cfg.ffn == "swiglu" else silu_ffn_width(cfg.d_ff)


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Trainable parameters by component (per layer and in total). ``value_residual``: the
    λ of each layer after the first (counted in ``attention``); a tied head shares the
    embedding's matrix, so ``lm_head`` is 0."""
    d, f, V, L = cfg.d_model, ffn_width(cfg), cfg.vocab_size, cfg.num_layers
    attention = 4 * d * d  # q, k, v, output projections
    if cfg.qk_norm == "rms":
        attention += 2 * cfg.d_head  # the gains of the query and key norms
    ffn = (3 if cfg.ffn == "swiglu" else 2) * d * f
    norms = 2 * d if cfg.norm != "none" else 0
    value_residual = L - 1 if cfg.value_residual else 0
    counts = {
        "token_embeddings": V * d,
        "attention_per_layer": attention,
        "ffn_per_layer": ffn,
        "norms_per_layer": norms,
        "value_residual": value_residual,
        "attention": L * attention + value_residual,
        "ffn": L * ffn,
        "norms": L * norms,
        "final_norm": d if cfg.norm != "none" else 0,
        "lm_head": 0 if cfg.tie_embeddings else V * d,
    }
    counts["total"] = sum(
        counts[k]
        for k in ("token_embeddings", "attention", "ffn", "norms", "final_norm", "lm_head")
    )
    return counts


def forward_matmuls(
    cfg: ModelConfig, batch: int = 1, seq_len: int | None = None
) -> list[dict[str, Any]]:
    """Every matrix multiply of one forward pass: ``(m×n)·(n×p)`` done ``instances`` times
    per layer (or once), FLOPs ``2·m·n·p·instances·count``."""
    T = seq_len or cfg.context_length
    B, d, h, dk, f, V, L = (
        batch,
        cfg.d_model,
        cfg.num_heads,
        cfg.d_head,
        ffn_width(cfg),
        cfg.vocab_size,
        cfg.num_layers,
    )
    BT = B * T

    def mm(name, group, m, n, p, instances=1, per="layer", what=""):
        count = L if per == "layer" else 1
        return {
            "name": name,
            "group": group,
            "per": per,
            "m": m,
            "n": n,
            "p": p,
            "instances": instances,
            "count": count,
            "shape": f"({m}×{n})·({n}×{p})" + (f" ×{instances}" if instances > 1 else ""),
            "what": what,
            "flops": 2 * m * n * p * instances * count,
        }

    rows = [
        mm("Q projection", "attention projections", BT, d, d, what="x W_Qᵀ"),
        mm("K projection", "attention projections", BT, d, d, what="x W_Kᵀ"),
        mm("V projection", "attention projections", BT, d, d, what="x W_Vᵀ"),
        mm("QKᵀ scores", "attention scores", T, dk, T, B * h, what="per head, Q Kᵀ"),
        mm("weighted sum of V", "attention scores", T, T, dk, B * h, what="per head, softmax(·) V"),
        mm("output projection", "attention projections", BT, d, d, what="heads W_Oᵀ"),
        mm("FFN W1", "FFN", BT, d, f, what="x W1ᵀ"),
    ]
    if cfg.ffn == "swiglu":
        rows.append(mm("FFN W3", "FFN", BT, d, f, what="x W3ᵀ"))
    rows.append(mm("FFN W2", "FFN", BT, f, d, what="(·) W2ᵀ"))
    rows.append(mm("LM head", "LM head", BT, d, V, per="model", what="x W_headᵀ"))
    return rows


def flop_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    total = sum(r["flops"] for r in rows)
    groups = {g: sum(r["flops"] for r in rows if r["group"] == g) for g in GROUPS}
    return {
        "total": total,
        "by_group": groups,
        "share_by_group": {g: v / total for g, v in groups.items()},
        "share_by_matmul": {r["name"]: r["flops"] / total for r in rows},
    }


def activation_terms(
    cfg: ModelConfig, batch: int = 1, seq_len: int | None = None
) -> list[dict[str, Any]]:
    """The CS336 handout's activation list: each op keeps its output (floats), for ``batch``
    sequences of ``seq_len`` tokens. ``per`` is ``layer`` (times num_layers) or ``model``."""
    T = seq_len or cfg.context_length
    B, d, h, f, V = batch, cfg.d_model, cfg.num_heads, ffn_width(cfg), cfg.vocab_size
    norms = cfg.norm != "none"
    terms = []

    def term(item, symbol, floats, per="layer"):
        terms.append({"item": item, "symbol": symbol, "floats": floats, "per": per})

    if norms:
        term("RMSNorms (2)", "2·B·T·d", 2 * B * T * d)
    term("Q, K, V projections", "3·B·T·d", 3 * B * T * d)
    term("QKᵀ scores", "B·h·T²", B * h * T * T)
    term("softmax", "B·h·T²", B * h * T * T)
    term("weighted sum of values", "B·T·d", B * T * d)
    term("output projection", "B·T·d", B * T * d)
    if cfg.ffn == "swiglu":
        term("W1 and W3 matmuls", "2·B·T·d_ff", 2 * B * T * f)
        term("SiLU", "B·T·d_ff", B * T * f)
        term("elementwise product", "B·T·d_ff", B * T * f)
    else:
        term("W1 matmul", "B·T·d_ff'", B * T * f)
        term("SiLU" if cfg.ffn == "silu" else "ReLU²", "B·T·d_ff'", B * T * f)
    term("W2 matmul", "B·T·d", B * T * d)
    if norms:
        term("final RMSNorm", "B·T·d", B * T * d, "model")
    term("output embedding (logits)", "B·T·V", B * T * V, "model")
    term("cross-entropy (softmax of logits)", "B·T·V", B * T * V, "model")
    return terms


def activation_floats(cfg: ModelConfig, batch: int = 1, seq_len: int | None = None) -> int:
    """Handout convention, whole model: Σ per-layer terms · num_layers + model terms."""
    terms = activation_terms(cfg, batch, seq_len)
    return sum(t["floats"] * (cfg.num_layers if t["per"] == "layer" else 1) for t in terms)


def activation_formula(cfg: ModelConfig) -> str:
    """The handout activation count as a symbolic formula (floats) for this variant."""
    c_d = (2 if cfg.norm != "none" else 0) + 3 + 1 + 1 + 1
    c_f = 4 if cfg.ffn == "swiglu" else 2
    f = "d_ff" if cfg.ffn == "swiglu" else "d_ff'"
    final = "T·d + " if cfg.norm != "none" else ""
    return f"B · [ L · ({c_d}·T·d + {c_f}·T·{f} + 2·h·T²) + {final}2·T·V ]"


def implementation_saved_floats(
    cfg: ModelConfig, batch: int, seq_len: int | None = None
) -> dict[str, int] | None:
    """Floats this implementation keeps for backward (forward + F.cross_entropy), derived by
    hand from the code for pre-norm models; ``None`` for other norms, QK-norm, value
    residuals and the logit soft-cap (measure those).

    Per layer: each RMSNorm keeps its input, 1/rms, x/rms and (via the next matmul) its
    output: 3·T·d + T. Attention keeps Q and K (after RoPE) and V; the reference path
    also keeps exp(scores − max) (h·T²), its row sums (h·T) and the probabilities (h·T²);
    the sdpa path keeps its output and a log-sum-exp (h·T) instead. The re-joined heads
    (T·d) feed the output projection. SwiGLU keeps W1's output, its sigmoid, the SiLU,
    W3's output and the product (5·T·d_ff); the SiLU FFN keeps W1's output, its sigmoid
    and the SiLU (3·T·d_ff'); the ReLU² FFN the ReLU's output and its square (2·T·d_ff'). Outside the layers: the final norm (3·T·d + T) and the
    log-softmax of the logits (T·V) plus a scalar.
    """
    if cfg.norm != "pre" or cfg.qk_norm != "none" or cfg.value_residual or cfg.logit_softcap:
        return None
    T = seq_len or cfg.context_length
    B, d, h, f, V = batch, cfg.d_model, cfg.num_heads, ffn_width(cfg), cfg.vocab_size
    norms = 2 * (3 * T * d + T)
    ffn = {"swiglu": 5, "silu": 3, "relu2": 2}[cfg.ffn] * T * f
    qkv_heads = 3 * T * d + T * d
    if cfg.attention == "reference":
        attention = qkv_heads + 2 * h * T * T + h * T
    else:
        attention = qkv_heads + T * d + h * T  # + output of sdpa, log-sum-exp
    per_layer = B * (norms + attention + ffn)
    rest = B * (3 * T * d + T + T * V) + 1
    return {"per_layer": per_layer, "rest": rest, "total": cfg.num_layers * per_layer + rest}


def adamw_step_flops(cfg: ModelConfig, batch: int, seq_len: int | None = None) -> dict[str, int]:
    """FLOPs of one training step: forward (matmuls), backward = 2x forward, and the AdamW
    update at 14 FLOPs per parameter: m ← β1·m + (1−β1)·g (3), v ← β2·v + (1−β2)·g² (4),
    p ← p − α·m/(√v + ε) (5: sqrt, add, div, mul, sub), p ← p − α·λ·p (2)."""
    forward = flop_totals(forward_matmuls(cfg, batch, seq_len))["total"]
    optimizer = ADAMW_FLOPS_PER_PARAMETER * parameter_counts(cfg)["total"]
    return {
        "forward": forward,
        "backward": 2 * forward,
        "optimizer": optimizer,
        "total": 3 * forward + optimizer,
    }


def adamw_memory(cfg: ModelConfig, batch: int) -> dict[str, float]:
    """Peak float32 bytes of AdamW training: parameters, gradients, optimizer state (m, v),
    activations (handout convention)."""
    P = parameter_counts(cfg)["total"]
    acts = activation_floats(cfg, batch)
    parts = {
        "parameters": BYTES_FP32 * P,
        "gradients": BYTES_FP32 * P,
        "optimizer_state": 2 * BYTES_FP32 * P,
        "activations": BYTES_FP32 * acts,
    }
    parts["total"] = sum(parts.values())
    return parts


def largest_batch(static_bytes: float, per_example_bytes: float, budget_bytes: float) -> int:
    return max(0, math.floor((budget_bytes - static_bytes) / per_example_bytes))


def training_days(total_flops: float, peak_flops_per_s: float, mfu: float) -> float:
    return total_flops / (peak_flops_per_s * mfu) / 86400
