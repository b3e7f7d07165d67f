"""Where a run computes: the device (CUDA, MPS or CPU) and the autocast dtype.

Shared by training, evaluation and generation, so none of them imports another for it.
"""

from __future__ import annotations

import torch

from lm.errors import LMError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else is checked for availability."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LMError(
            f"training.device is {name!r} but CUDA is not available here; set training.device: auto or cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LMError(
            f"training.device is {name!r} but MPS is not available here; set training.device: auto or cpu"
        )
    return device


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a run: ``auto`` is bf16 on CUDA and full float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"float32": None, "bfloat16": torch.bfloat16}[dtype]
