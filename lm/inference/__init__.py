"""Inference: a trained run's evaluation over a whole split, generation, and samples.

Public names resolve lazily (``import lm.inference`` does not import torch). This package
reads what training wrote (a run directory) but never imports the training loop.
"""

from __future__ import annotations

from lm._lazy import lazy_exports

_EXPORTS = {
    "evaluate": "lm.inference.evaluate",
    "perplexity": "lm.inference.evaluate",
    "evaluate_run": "lm.inference.evaluate",
    "generate": "lm.inference.generate",
    "iter_generate": "lm.inference.generate",
    "stream_text": "lm.inference.generate",
    "sample_next": "lm.inference.generate",
    "read_run": "lm.inference.run",
    "load_run": "lm.inference.run",
    "parse_prompts": "lm.inference.samples",
    "render_samples_md": "lm.inference.samples",
    "sample_run": "lm.inference.samples",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
