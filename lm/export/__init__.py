"""Export: a trained run in the formats other tools read.

- :mod:`lm.export.hf`: a run as a Hugging Face ``LlamaForCausalLM`` directory
  (``model.safetensors``, ``config.json``, ``generation_config.json``, ``tokenizer.json``).
- :mod:`lm.export.cli`: ``lm export-hf``.

Names resolve lazily, so ``lm --help`` does not import torch.
"""

from __future__ import annotations

from lm._lazy import lazy_exports

_EXPORTS = {
    "UnsupportedVariantError": "lm.export.hf",
    "export_hf": "lm.export.hf",
    "hf_config": "lm.export.hf",
    "hf_state_dict": "lm.export.hf",
    "hf_tokenizer_json": "lm.export.hf",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
