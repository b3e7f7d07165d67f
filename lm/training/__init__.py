"""Training: AdamW, the cosine schedule, loss and clipping, batches, checkpoints, the loop.

Public names follow the CS336 assignment-1 interface; they are resolved lazily so that
``import lm.training`` does not import torch until one is used.
"""

from __future__ import annotations

from lm._lazy import lazy_exports

_EXPORTS = {
    "AdamW": "lm.training.optim",
    "get_lr_cosine_schedule": "lm.training.schedule",
    "cross_entropy": "lm.training.functional",
    "gradient_clipping": "lm.training.functional",
    "get_batch": "lm.training.data",
    "open_tokens": "lm.training.data",
    "check_tokens": "lm.training.data",
    "save_checkpoint": "lm.training.checkpoint",
    "load_checkpoint": "lm.training.checkpoint",
    "resolve_runs": "lm.training.config",
    "sweep_members": "lm.training.config",
    "run_resources": "lm.training.resources",
    "run_runtime": "lm.training.resources",
    "RunConfig": "lm.training.run_config",
    "run_from_file": "lm.training.config",
    "train": "lm.training.loop",
    "lr_tuning": "lm.training.lr_tuning",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
