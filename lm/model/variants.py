"""The architecture variants of the Transformer LM (the CS336 ablations), torch-free.

One definition, read by the model (:mod:`lm.model.transformer`), the model config
(:mod:`lm.model.config`) and the run config (:mod:`lm.training.config`), so importing a
config (as Snakemake does at start-up) does not import torch. The first choice of each
variant is the default.
"""

from __future__ import annotations

ATTENTION_KINDS = ("reference", "sdpa")

VARIANTS: dict[str, tuple[str, ...]] = {
    "norm": ("pre", "post", "none"),
    "position": ("rope", "nope"),
    "ffn": ("swiglu", "silu"),
    "attention": ATTENTION_KINDS,
}
DEFAULT_VARIANT = {name: choices[0] for name, choices in VARIANTS.items()}
