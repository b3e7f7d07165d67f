"""The architecture variants of the Transformer LM (the CS336 ablations), torch-free.

One definition, read by the model (:mod:`lm.model.transformer`), the model config
(:mod:`lm.model.config`) and the run config (:mod:`lm.training.run_config`), so importing a
config (as Snakemake does at start-up) does not import torch. The first choice of each
variant is the default.
"""

from __future__ import annotations

ATTENTION_KINDS = ("reference", "sdpa")

VARIANTS: dict[str, tuple[str, ...]] = {
    "norm": ("pre", "post", "none"),
    "position": ("rope", "nope"),
    "ffn": ("swiglu", "silu", "relu2"),
    "attention": ATTENTION_KINDS,
    "qk_norm": ("none", "rms"),
}
DEFAULT_VARIANT = {name: choices[0] for name, choices in VARIANTS.items()}
#: Variants added after runs existed: a model's dict (a run's config.json) leaves them out
#: at their default, so those runs keep their config and resume.
LATER_VARIANTS = ("qk_norm",)

#: The training recipe's model options that are not a choice of names, each at the value
#: that is the assignment's model: a model's dict leaves an option out at it, so the runs
#: made before the options existed keep their config and resume.
#: ``zero_init_proj``: the output projections start at zero; ``value_residual``: later
#: layers mix in the first layer's values; ``logit_softcap``: ``c·tanh(logits/c)`` for a
#: number c; ``tie_embeddings``: the head's weight is the token embedding's.
OPTION_DEFAULTS: dict[str, bool | None] = {
    "zero_init_proj": False,
    "value_residual": False,
    "logit_softcap": None,
    "tie_embeddings": False,
}


def silu_ffn_width(swiglu_d_ff: int) -> int:
    """The hidden width of a SiLU FFN with as many parameters as a SwiGLU of ``swiglu_d_ff``.

    Two matrices of width 3/2·d_ff hold what three of width d_ff do (exactly, for even d_ff).
    """
    return (3 * swiglu_d_ff) // 2
