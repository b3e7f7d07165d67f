"""A trained run on disk: its resolved config, its result, its model and its tokenizer.

A run directory (``results/runs/{run}/``, as ``lm train`` writes it) holds ``config.json``,
``result.json`` and ``checkpoints/final.pt``; the pipeline keeps the tokenizer of the run's
dataset at ``results/{dataset}/tokenizer``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lm.errors import LMError


def read_run(run_dir: str | os.PathLike) -> tuple[dict, dict | None]:
    """``(config, result)`` of a run directory written by ``lm train``; ``result`` is None
    when the run has no result.json yet. Raises an ``LMError`` for a missing directory or
    config.json."""
    run = Path(run_dir)
    if not run.is_dir():
        raise LMError(
            f"run directory {run} does not exist; pass a directory written by `lm train` (e.g. results/runs/NAME)"
        )
    config_path = run / "config.json"
    if not config_path.is_file():
        raise LMError(
            f"{run} has no config.json, so it is not a training run directory; pass the --out of `lm train`"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        result_path = run / "result.json"
        result = (
            json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else None
        )
    except json.JSONDecodeError as e:
        raise LMError(f"{run}: a run file is not valid JSON ({e}); rerun the training") from e
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise LMError(f"{config_path} has no 'model' section; is it a run's resolved config.json?")
    return config, result


def load_run(
    run_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict, int]:
    """The trained model of a run: built from ``RUN/config.json``, weights from
    ``checkpoint`` (default ``RUN/checkpoints/final.pt``), on ``device``, in eval mode.
    Returns ``(model, config, checkpoint_step)``."""
    from lm.model.config import ModelConfig
    from lm.training.checkpoint import read_checkpoint, restore

    config, _ = read_run(run_dir)
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint(run_dir)
    payload = read_checkpoint(path, map_location="cpu")
    model = ModelConfig.from_dict(config["model"], where=f"{run_dir}/config.json model").build()
    step = restore(payload, model, None, name=str(path))
    model.to(device)
    model.eval()
    return model, config, step


def default_checkpoint(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints" / "final.pt"


def tokenizer_dir_for_run(run_dir: str | os.PathLike, config: dict) -> Path:
    """``RUN/../../{dataset}/tokenizer``: where the pipeline keeps the run's tokenizer."""
    dataset = config.get("dataset")
    if not dataset:
        raise LMError(
            f"{run_dir}/config.json names no dataset, so its tokenizer cannot be found; pass --tokenizer DIR"
        )
    return Path(run_dir).parent.parent / dataset / "tokenizer"
