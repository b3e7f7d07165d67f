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


def silu_ffn_width(swiglu_d_ff: int) -> int:
    """The hidden width of a SiLU FFN with as many parameters as a SwiGLU of ``swiglu_d_ff``.

    Two matrices of width 3/2·d_ff hold what three of width d_ff do (exactly, for even d_ff).
    """
    return (3 * swiglu_d_ff) // 2
