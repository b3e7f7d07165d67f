"""``ModelConfig``: the numbers that define a ``TransformerLM``, and named presets of them.

Presets live in ``config.yaml`` under ``models:`` (name -> keys below). ``vocab_size`` may
be left out of a preset when the training run takes it from its dataset's tokenizer; a
preset must have it to be built or accounted on its own. The GPT-2 sizes of the CS336
accounting problems and the TinyStories model ship as ``DEFAULT_PRESETS``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm.errors import LMError
from lm.model.variants import DEFAULT_VARIANT, LATER_VARIANTS, OPTION_DEFAULTS, VARIANTS

ARCH_KEYS = ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff")
IGNORED_KEYS = ("preset", "description")  # allowed in a preset or a run's model section
PIPELINE_KEYS = (
    "datasets",
    "targets",
    "training_defaults",
    "runs",
    "sweeps",
)  # config.yaml's sections


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    context_length: int
    d_model: int
    num_layers: int
    num_heads: int
    d_ff: int
    rope_theta: float = 10000.0
    norm: str = "pre"
    position: str = "rope"
    ffn: str = "swiglu"
    attention: str = "reference"
    qk_norm: str = "none"  # rms: RMSNorm of each head's queries and keys (QK-norm)
    # the recipe's options (lm.model.variants.OPTION_DEFAULTS; lm.model.transformer)
    zero_init_proj: bool = False
    value_residual: bool = False
    logit_softcap: float | None = None
    tie_embeddings: bool = False

    def __post_init__(self):
        for key in ARCH_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LMError(f"model {key} must be a positive integer, got {value!r}")
        if (
            isinstance(self.rope_theta, bool)
            or not isinstance(self.rope_theta, (int, float))
            or self.rope_theta <= 0
        ):
            raise LMError(f"model rope_theta must be a positive number, got {self.rope_theta!r}")
        for key in ("zero_init_proj", "value_residual", "tie_embeddings"):
            if not isinstance(getattr(self, key), bool):
                raise LMError(f"model {key} must be true or false, got {getattr(self, key)!r}")
        cap = self.logit_softcap
        if cap is not None:
            if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < math.inf:
                raise LMError(
                    f"model logit_softcap must be a positive number (e.g. 30) or null for none, "
                    f"got {cap!r}"
                )
            object.__setattr__(self, "logit_softcap", float(cap))
        for key, choices in VARIANTS.items():
            if getattr(self, key) not in choices:
                raise LMError(
                    f"model {key}={getattr(self, key)!r} is not one of {', '.join(choices)}"
                )
        if self.d_model % self.num_heads:
            raise LMError(
                f"model d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                "pick num_heads dividing d_model"
            )
        if self.position == "rope" and self.d_head % 2:
            raise LMError(
                f"model d_model/num_heads={self.d_head} must be even for RoPE (it rotates pairs)"
            )

    @property
    def d_head(self) -> int:
        return self.d_model // self.num_heads

    @property
    def variant(self) -> dict[str, str]:
        return {key: getattr(self, key) for key in VARIANTS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "model", **overrides) -> ModelConfig:
        """Build from a mapping (a preset), naming any unknown or missing key with ``where``."""
        if not isinstance(d, Mapping):
            raise LMError(f"{where} must be a mapping of model keys, got {type(d).__name__}")
        merged = {**d, **overrides}
        for key in IGNORED_KEYS:
            merged.pop(key, None)
        fields = [f.name for f in dataclasses.fields(cls)]
        for key in merged:
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise LMError(
                    f"{where}: unknown model key {key!r}{hint}; valid keys: {', '.join(fields)}"
                )
        missing = [k for k in ARCH_KEYS if k not in merged]
        if missing:
            raise LMError(f"{where}: missing model key(s) {', '.join(missing)}")
        try:
            return cls(**merged)
        except LMError as e:
            raise LMError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """The keys of the model; a variant of LATER_VARIANTS, or an option of
        OPTION_DEFAULTS, only when not its default."""
        d = dataclasses.asdict(self)
        later = {**{k: DEFAULT_VARIANT[k] for k in LATER_VARIANTS}, **OPTION_DEFAULTS}
        for key, default in later.items():
            if d[key] == default:
                del d[key]
        return d

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``TransformerLM``."""
        return self.to_dict()

    def build(self, device=None, dtype=None):
        """A freshly initialised ``TransformerLM`` (``device="meta"`` allocates nothing)."""
        from lm.model.transformer import TransformerLM

        return TransformerLM(**self.kwargs(), device=device, dtype=dtype)


def _gpt2(num_layers: int, d_model: int, num_heads: int, d_ff: int | None = None) -> dict[str, Any]:
    return {
        "vocab_size": 50257,
        "context_length": 1024,
        "d_model": d_model,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "d_ff": d_ff or 4 * d_model,
        "rope_theta": 10000.0,
    }


# The CS336 accounting problems' GPT-2 shapes (SwiGLU FFN with d_ff = 4·d_model) and the
# TinyStories model of the assignment.
DEFAULT_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-small": _gpt2(12, 768, 12),
    "gpt2-medium": _gpt2(24, 1024, 16),
    "gpt2-large": _gpt2(36, 1280, 20),
    "gpt2-xl": _gpt2(48, 1600, 25, 6400),
    "tinystories-17m": {
        "vocab_size": 10000,
        "context_length": 256,
        "d_model": 512,
        "num_layers": 4,
        "num_heads": 16,
        "d_ff": 1344,
        "rope_theta": 10000.0,
    },
}


def load_presets(
    source: str | os.PathLike | Mapping | None = None, defaults: bool = True
) -> dict[str, dict]:
    """Model presets by name: ``DEFAULT_PRESETS`` (unless ``defaults=False``) updated by ``source``.

    ``source`` is a mapping ``name -> keys``, a JSON object as a string, or a YAML file holding
    one, either at the top level or under ``models:`` (so ``config.yaml`` itself works). Every key is checked;
    ``vocab_size`` may be missing (see ``preset_config``).
    """
    presets = {name: dict(p) for name, p in DEFAULT_PRESETS.items()} if defaults else {}
    if source is None:
        return presets
    where = "presets"
    if isinstance(source, str) and source.lstrip().startswith("{"):  # inline JSON (a rule's param)
        import json

        try:
            source = json.loads(source)
        except json.JSONDecodeError as e:
            raise LMError(
                f"presets given inline are not valid JSON ({e}): {source[:80]!r}"
            ) from None
        if not isinstance(source, Mapping):
            raise LMError("inline presets must be a JSON object of preset name -> model keys")
    if not isinstance(source, Mapping):
        import yaml

        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise LMError(f"presets file {path} does not exist; give a YAML file of model presets")
        try:
            source = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise LMError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(source, Mapping):
            raise LMError(
                f"{path} must hold a mapping of preset name -> model keys (or a models: section)"
            )
    if "models" in source or any(key in source for key in PIPELINE_KEYS):  # a pipeline config
        source, where = source.get("models") or {}, f"{where}: models"
        if not isinstance(source, Mapping):
            raise LMError(f"{where} must map preset names to model keys")
    fields = {f.name for f in dataclasses.fields(ModelConfig)} | {"description"}
    for name, preset in source.items():
        if not isinstance(preset, Mapping):
            raise LMError(f"{where}.{name} must be a mapping of model keys, got {preset!r}")
        for key in preset:
            if key not in fields:
                close = difflib.get_close_matches(str(key), sorted(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise LMError(
                    f"{where}.{name}: unknown model key {key!r}{hint}; valid keys: {', '.join(sorted(fields))}"
                )
        presets[str(name)] = {**presets.get(str(name), {}), **preset}
    return presets


def preset_config(presets: Mapping[str, Mapping], name: str, **overrides) -> ModelConfig:
    """The ``ModelConfig`` of preset ``name`` with ``overrides`` (e.g. ``context_length=16384``)."""
    if name not in presets:
        close = difflib.get_close_matches(name, list(presets), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise LMError(f"no model preset {name!r}{hint}; known presets: {', '.join(presets)}")
    return ModelConfig.from_dict(presets[name], where=f"preset {name}", **overrides)
