"""Checkpoints: model, optimizer, iteration, RNG states and the run config, in one file.

``save_checkpoint``/``load_checkpoint`` keep the CS336 signatures; the training loop
adds its extra state through keyword arguments. A checkpoint written to a path is
written under a temporary name and renamed, so a run killed mid-write leaves the
previous checkpoint intact and never a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from lm.errors import LMError
from lm.io import atomic_path, write_json

FORMAT = "lm-checkpoint-1"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module itself, under a ``torch.compile`` wrapper (whose keys gain ``_orig_mod.``)."""
    return getattr(model, "_orig_mod", model)


def rng_state(batch_rng: np.random.Generator | None = None) -> dict:
    """Every random state a training run draws from: torch (CPU, CUDA), numpy, python."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_global_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if batch_rng is not None:
        state["batch"] = batch_rng.bit_generator.state
    return state


def _numpy_global_state() -> dict:
    # legacy MT19937 state; its key array becomes a list so torch.load(weights_only=True) accepts it
    state = np.random.get_state(legacy=False)
    state["state"] = {**state["state"], "key": state["state"]["key"].tolist()}
    return state


def set_rng_state(state: dict, batch_rng: np.random.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {
        **numpy_state["state"],
        "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32),
    }
    np.random.set_state(numpy_state)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if batch_rng is not None and "batch" in state:
        batch_rng.bit_generator.state = state["batch"]


def save_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    out: str | os.PathLike | IO[bytes],
    *,
    config: dict | None = None,
    batch_rng: np.random.Generator | None = None,
    extra: dict | None = None,
) -> None:
    """Write model and optimizer state, ``iteration``, RNG states, ``config`` and ``extra``."""
    payload = {
        "format": FORMAT,
        "iteration": int(iteration),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(batch_rng),
        "config": config,
        "extra": extra or {},
    }
    if isinstance(out, (str, os.PathLike)):
        with atomic_path(out) as tmp:
            torch.save(payload, tmp)
            # written before the rename: every complete checkpoint has its check beside it
            write_json(check_path(out), file_check(tmp))
    else:
        torch.save(payload, out)


def check_path(checkpoint: str | os.PathLike) -> Path:
    """The file beside ``checkpoint`` holding its size and sha256: ``NAME.check.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".check.json")


def file_check(path: str | os.PathLike) -> dict:
    """``{"bytes": size, "sha256": hex digest}`` of the file ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def verify_checkpoint(path: str | os.PathLike) -> str | None:
    """What is wrong with the checkpoint file ``path`` against the size and sha256 written
    beside it when it was saved (None when they match, or when it has none: a checkpoint of
    an older version, which loading still checks)."""
    try:
        with open(check_path(path), encoding="utf-8") as f:
            expected = json.load(f)
    except (OSError, ValueError):
        return None
    size = Path(path).stat().st_size
    if size != expected.get("bytes"):
        return f"it has {size} bytes, {expected.get('bytes')} when saved (truncated or overwritten)"
    if file_check(path)["sha256"] != expected.get("sha256"):
        return "its sha256 differs from the one written when it was saved (damaged on disk)"
    return None


def read_checkpoint(src: str | os.PathLike | IO[bytes], map_location="cpu") -> dict:
    """The raw checkpoint dict (tensors on ``map_location``)."""
    name = str(src) if isinstance(src, (str, os.PathLike)) else getattr(src, "name", "checkpoint")
    if isinstance(src, (str, os.PathLike)) and not Path(src).is_file():
        raise LMError(
            f"checkpoint {name} does not exist; check the path (a run keeps them in OUT/checkpoints/)"
        )
    try:
        payload = torch.load(src, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt or foreign file
        raise LMError(
            f"checkpoint {name} cannot be read ({type(e).__name__}: {e}); delete it and resume from an earlier one or retrain"
        ) from e
    if not isinstance(payload, dict) or "model" not in payload or "iteration" not in payload:
        raise LMError(
            f"checkpoint {name} is not an lm checkpoint (no 'model'/'iteration'); pass a file written by save_checkpoint"
        )
    if payload.get("rng"):  # RNG states are CPU byte tensors whatever the map_location
        payload["rng"] = _rng_to_cpu(payload["rng"])
    return payload


def check_model_state(state: dict, model: torch.nn.Module, name: str = "checkpoint") -> None:
    """Raise an LMError naming the first tensor whose name or shape differs from ``model``'s."""
    expected = unwrap(model).state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise LMError(
                f"{name} has no tensor {key!r} that the model needs: it was saved from a different "
                f"model architecture; load it into a model built with the checkpoint's own config"
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise LMError(
                f"{name} does not fit the model: tensor {key!r} has shape {tuple(state[key].shape)} in "
                f"the checkpoint but {tuple(tensor.shape)} in the model. The checkpoint comes from a "
                f"different model shape; build the model with the checkpoint's config (its 'config' "
                f"entry) or start a fresh run in a new output directory"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise LMError(
            f"{name} has tensors the model lacks (first: {extra[0]!r}): it was saved from a different "
            f"model architecture; build the model with the checkpoint's config"
        )


def restore(
    payload: dict,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    name: str = "checkpoint",
    batch_rng: np.random.Generator | None = None,
    restore_rng: bool = False,
) -> int:
    """Load a checkpoint dict into ``model``/``optimizer`` (and RNGs); return its iteration."""
    check_model_state(payload["model"], model, name)
    unwrap(model).load_state_dict(payload["model"])
    if optimizer is not None and payload.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError) as e:
            raise LMError(
                f"{name}: the optimizer state does not fit this optimizer ({e}); resume with the run's original optimizer settings"
            ) from e
    if restore_rng and payload.get("rng"):
        set_rng_state(payload["rng"], batch_rng)
    return int(payload["iteration"])


def load_checkpoint(
    src: str | os.PathLike | IO[bytes],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    batch_rng: np.random.Generator | None = None,
    restore_rng: bool = False,
) -> int:
    """Restore ``model`` and ``optimizer`` (optional) and return the iteration.

    ``restore_rng=True`` also restores the torch, numpy and python RNG states (and
    ``batch_rng``'s), for continuing a training run exactly; off by default so that
    loading a model to evaluate or sample does not reset the caller's random streams.
    Tensors are loaded onto the device of the model's parameters. A checkpoint from a
    different model shape raises an LMError naming the mismatched tensor. The run's
    resolved config is in ``read_checkpoint(src)["config"]``.
    """
    first = next(unwrap(model).parameters(), None)
    map_location = first.device if first is not None else "cpu"
    payload = read_checkpoint(src, map_location=map_location)
    name = str(src) if isinstance(src, (str, os.PathLike)) else "checkpoint"
    return restore(
        payload, model, optimizer, name=name, batch_rng=batch_rng, restore_rng=restore_rng
    )


def _rng_to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _rng_to_cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_rng_to_cpu(v) for v in state]
    return state
