"""A trained run on disk: its resolved config, its result, its model and its tokenizer.

A run directory (``results/runs/{run}/``, as ``lm train`` writes it) holds ``config.json``,
``result.json`` and ``checkpoints/final.pt``; the pipeline keeps the tokenizer of the run's
dataset at ``results/{dataset}/tokenizer``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
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


def run_checkpoint(
    run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None, status: str
) -> tuple[Path, bool]:
    """``(path, present)``: the checkpoint to evaluate or sample a run from (``checkpoint``,
    default the run's ``checkpoints/final.pt``) and whether it is there. A run that diverged
    may have left none (a result, not an error); any other run without it is an ``LMError``."""
    path = Path(checkpoint) if checkpoint else default_checkpoint(run_dir)
    if path.is_file():
        return path, True
    if status != "diverged":
        raise LMError(
            f"checkpoint {path} does not exist; train the run first (lm train --out {run_dir}) "
            "or pass --checkpoint PATH"
        )
    return path, False


def run_name(config: dict, run_dir: str | os.PathLike) -> str:
    """The run's name: ``name`` of its config, else the directory's name."""
    return config.get("name") or Path(run_dir).resolve().name


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: torch's choice), then restore them."""
    if n is not None and n < 1:
        raise LMError(f"threads (--threads) must be at least 1, got {n}")
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_model_and_tokenizer(
    run_dir: str | os.PathLike,
    config: dict,
    checkpoint: str | os.PathLike | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    device: str = "auto",
):
    """The run's model (:func:`load_run`) and its tokenizer, checked to fit the model.

    ``tokenizer_dir`` defaults to :func:`tokenizer_dir_for_run`; ``device`` is a name for
    :func:`lm.runtime.pick_device`. Returns ``(model, tokenizer, stop_ids, checkpoint_step,
    tokenizer_dir)``, ``stop_ids`` being the ids of the tokenizer's special tokens."""
    from lm.runtime import pick_device
    from lm.tokenizer import Tokenizer

    tok_dir = Path(tokenizer_dir) if tokenizer_dir else tokenizer_dir_for_run(run_dir, config)
    tokenizer = Tokenizer.from_dir(tok_dir)  # with the special tokens it was trained with
    vocab = config["model"]["vocab_size"]
    if tokenizer.vocab_size > vocab:
        raise LMError(
            f"the tokenizer at {tok_dir} has {tokenizer.vocab_size} ids but the model's vocab_size is "
            f"{vocab}: it is not the tokenizer the run was trained with; pass the run's --tokenizer"
        )
    model, _, step = load_run(run_dir, checkpoint, pick_device(device))
    stop_ids = sorted(tokenizer.special_ids.values())
    return model, tokenizer, stop_ids, step, tok_dir
