"""Reading an export back with `transformers`, offline: shared by the export tests and the
pipeline test (which exports the demo's best run)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # load only from local directories, never download
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch
from transformers import AutoModelForCausalLM

LOGIT_TOLERANCE = 1e-4  # max |logit difference|, float32


def logit_difference(ours, hf_dir: Path, ids: torch.Tensor) -> float:
    """The largest |difference| between our model's logits and those of the export in
    ``hf_dir`` loaded by `transformers`, on token ids ``ids``."""
    theirs = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        a = ours(ids)
        b = theirs(ids).logits
    assert a.shape == b.shape
    return float((a - b).abs().max())
