"""Which model variants a Llama checkpoint can express, torch-free (the workflow reads it
at start-up to leave runs it cannot export out of its targets)."""

from __future__ import annotations

from collections.abc import Mapping

#: The variant choices and options ``LlamaForCausalLM`` computes. ``attention`` (reference
#: or sdpa) is how attention is computed, not what, and ``zero_init_proj`` how the weights
#: start, not what they compute, so any choice of them exports; ``tie_embeddings`` exports
#: as Llama's ``tie_word_embeddings``.
LLAMA_VARIANT = {
    "norm": "pre",
    "position": "rope",
    "ffn": "swiglu",
    "qk_norm": "none",
    "value_residual": False,
    "logit_softcap": None,
}

#: Why each other choice cannot be a Llama checkpoint.
WHY_NOT = {
    ("norm", "post"): "post-norm blocks (norm(x + f(x))); Llama normalises before each "
    "sub-layer (x + f(norm(x)))",
    ("norm", "none"): "no RMSNorm at all; Llama has one before each sub-layer and at the end",
    ("position", "nope"): "no position embedding (NoPE); Llama always applies RoPE to "
    "queries and keys",
    ("ffn", "silu"): "the ungated SiLU FFN (w2(silu(w1 x))); Llama's MLP is the gated "
    "SwiGLU (down(silu(gate x) * up x))",
    ("qk_norm", "rms"): "an RMSNorm of each head's queries and keys (QK-norm); Llama's "
    "attention has none",
    ("ffn", "relu2"): "the ungated squared-ReLU FFN (w2(relu(w1 x)²)); Llama's MLP is the "
    "gated SwiGLU (down(silu(gate x) * up x))",
    ("value_residual", True): "value residuals (later layers mix in the first layer's "
    "values by a learned λ); Llama's attention uses each layer's own values",
}
#: Why an option's other values (any number) cannot be a Llama checkpoint.
WHY_NOT_OPTION = {
    "logit_softcap": "a soft-capped head (c·tanh(logits/c)); Llama's logits are the head's "
    "output as it is",
}


def unsupported_variants(model: Mapping) -> list[str]:
    """``"key='value': why"`` for each variant of ``model`` (a model config mapping, or
    anything with those attributes) that Llama cannot express; empty when it can.
    A key left out means its default, which Llama expresses."""
    found = []
    for key, llama in LLAMA_VARIANT.items():
        value = model.get(key, llama) if isinstance(model, Mapping) else getattr(model, key)
        if value != llama:
            why = WHY_NOT.get((key, value)) or WHY_NOT_OPTION.get(
                key, f"not Llama's {key}={llama!r}"
            )
            found.append(f"{key}={value!r}: {why}")
    return found


def llama_can_express(model: Mapping) -> bool:
    return not unsupported_variants(model)
