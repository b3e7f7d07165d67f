"""The typed run config: what one resolved training run is, torch-free.

A resolved run is a :class:`RunConfig`: its model (:class:`lm.model.config.ModelConfig`,
the one way a model is built), :class:`OptimizerConfig`, :class:`ScheduleConfig`,
:class:`TrainingConfig`, :class:`ResourcesConfig` and the metric trackers'
:class:`WandbConfig` and :class:`TensorboardConfig` (:mod:`lm.training.trackers`). Every field
declares its *kind* once (in the field's metadata; the model's come from its field types
and :data:`lm.model.variants.VARIANTS`), and that one declaration serves three readers:
the checks of each config layer (:func:`coerce`), the layers' schema (:data:`SPEC`, which
``tests/test_training_config.py`` holds the JSON schema of ``config.yaml`` against), and
the built-in defaults (:data:`BUILTIN_DEFAULTS`, the fields' defaults).

``RunConfig.to_dict()`` is the run's ``config.json``/``run.json``; ``RunConfig.from_dict``
reads one back, checking every value.

Kinds: ``int+`` (>= 1), ``int0`` (>= 0), ``num+`` (> 0), ``num0`` (>= 0), ``unit`` (in
[0, 1]), ``str``, ``bool``, ``betas`` (a pair in [0, 1)), ``device`` (auto, cpu, cuda,
cuda:N, mps), a tuple (one of its choices); a trailing ``?`` allows null.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm.errors import LMError
from lm.model.config import ModelConfig
from lm.model.variants import VARIANTS
from lm.training import batch_schedule

DTYPES = ("auto", "float32", "bfloat16")
DEFAULT_THREADS = 4  # torch's CPU threads of a run
WANDB_MODES = ("online", "offline")
OPTIMIZERS = ("adamw", "muon")
MUON_ADJUST_LR = ("original", "match_rms_adamw")  # lm.training.muon.ADJUST_LR
SCHEDULES = ("cosine", "wsd")  # lm.training.schedule.SCHEDULES
DECAY_SHAPES = ("linear", "1-sqrt")  # lm.training.schedule.DECAY_SHAPES

# ---------------------------------------------------------------------------- kinds


def suggest(key: Any, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _number(value: Any, where: str) -> float:
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; accept numeric strings everywhere a number goes.
    if isinstance(value, bool):
        raise LMError(f"{where} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            pass
    raise LMError(f"{where} must be a number, got {value!r}")


def coerce(kind: Any, value: Any, where: str) -> Any:
    """Check ``value`` against ``kind`` (see the module's doc) and return it in canonical form."""
    if isinstance(kind, tuple):
        if value is None and kind == DTYPES:
            return "auto"
        if value not in kind:
            # YAML reads a bare `none` as a string but `null`/`~` as None: accept None for 'none'.
            if value is None and "none" in kind:
                return "none"
            raise LMError(
                f"{where} must be one of {', '.join(kind)}, got {value!r}{suggest(value, kind)}"
            )
        return value
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    if value is None:
        if optional:
            return None
        raise LMError(f"{where} must be set (got null)")
    if base == "str":
        if not isinstance(value, str) or not value:
            raise LMError(f"{where} must be a non-empty string, got {value!r}")
        return value
    if base == "bool":
        if not isinstance(value, bool):
            raise LMError(f"{where} must be true or false, got {value!r}")
        return value
    if base in ("int+", "int0"):
        x = _number(value, where)
        if not float(x).is_integer():
            raise LMError(f"{where} must be a whole number, got {value!r}")
        x = int(x)
        if x < (1 if base == "int+" else 0):
            raise LMError(f"{where} must be {'>= 1' if base == 'int+' else '>= 0'}, got {value!r}")
        return x
    if base in ("num+", "num0", "unit"):
        x = float(_number(value, where))
        if not math.isfinite(x):
            raise LMError(f"{where} must be finite, got {value!r}")
        if base == "num+" and x <= 0:
            raise LMError(f"{where} must be > 0, got {value!r}")
        if base in ("num0", "unit") and x < 0:
            raise LMError(f"{where} must be >= 0, got {value!r}")
        if base == "unit" and x > 1:
            raise LMError(f"{where} must be between 0 and 1, got {value!r}")
        return x
    if base == "betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise LMError(f"{where} must be a pair [beta1, beta2], got {value!r}")
        betas = [float(_number(b, where)) for b in value]
        if not all(0 <= b < 1 for b in betas):
            raise LMError(f"{where} values must lie in [0, 1), got {value!r}")
        return betas
    if base == "device":
        if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise LMError(f"{where} must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
        return value
    raise AssertionError(f"unknown kind {kind}")


_REQUIRED = dataclasses.MISSING


def _field(
    kind: Any,
    default: Any = _REQUIRED,
    *,
    omit_none: bool = False,
    omit_default: bool = False,
    computed: bool = False,
) -> Any:
    """A dataclass field of ``kind`` (see the module's doc). ``computed``: None means "not
    known yet" (resolution or the loop fills it in), so a config layer may not set it to
    null. ``omit_none``: ``to_dict`` leaves the key out while it is None. ``omit_default``:
    ``to_dict`` leaves the key out while it has its default (a setting added later, so that
    the runs made before it keep their ``config.json``, and resume, unchanged)."""
    meta = {
        "kind": kind,
        "omit_none": omit_none,
        "omit_default": omit_default,
        "computed": computed,
    }
    if default is _REQUIRED:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """A section of a run: each field checked and canonicalised against its kind."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = coerce(f.metadata["kind"], getattr(self, f.name), f"{self.SECTION}.{f.name}")
            object.__setattr__(self, f.name, tuple(value) if isinstance(value, list) else value)

    @classmethod
    def from_dict(cls, d: Any, where: str | None = None):
        """The section of the mapping ``d`` (a ``config.json``'s), every key checked."""
        where = where or cls.SECTION
        if not isinstance(d, Mapping):
            raise LMError(f"{where} must be a mapping, got {type(d).__name__} {d!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                raise LMError(
                    f"{where}: unknown key {key!r}{suggest(key, names)}; valid keys: {', '.join(names)}"
                )
        try:
            return cls(**d)
        except TypeError as e:  # a required field missing
            raise LMError(f"{where}: {e}") from None
        except LMError as e:
            raise LMError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            if f.metadata.get("omit_default") and value == f.default:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class OptimizerConfig(_Section):
    SECTION = "optimizer"
    lr: float = _field("num+", 1e-3)  # the peak learning rate
    min_lr: float = _field("num0", 0.0)  # the cosine schedule's floor
    betas: tuple[float, float] = _field("betas", (0.9, 0.95))
    eps: float = _field("num0", 1e-8)
    weight_decay: float = _field("num0", 0.1)
    grad_clip: float = _field("num0", 1.0)  # max global L2 norm; 0 = off
    # adamw: AdamW for every parameter; muon: Muon (lm.training.muon) for the blocks'
    # matrices at muon_lr (scheduled like lr), AdamW at lr for the rest
    name: str = _field(OPTIMIZERS, "adamw", omit_default=True)
    muon_lr: float = _field("num+", 0.02, omit_default=True)
    muon_momentum: float = _field("unit", 0.95, omit_default=True)
    muon_nesterov: bool = _field("bool", True, omit_default=True)
    muon_ns_steps: int = _field("int+", 5, omit_default=True)
    muon_weight_decay: float = _field("num0", 0.0, omit_default=True)
    muon_adjust_lr: str = _field(MUON_ADJUST_LR, "original", omit_default=True)
    # the Newton-Schulz iteration's dtype; auto: bfloat16 on CUDA (torch.optim.Muon's),
    # float32 elsewhere (a CPU multiplies bfloat16 matrices many times slower)
    muon_ns_dtype: str = _field(DTYPES, "auto", omit_default=True)


@dataclass(frozen=True)
class ScheduleConfig(_Section):
    """Linear warmup, then cosine decay to ``min_lr`` at ``cosine_cycle_iters`` (or, with
    ``name: wsd``, a constant lr and a decay to ``min_lr`` there). A run with
    a wall-clock budget keeps ``warmup_ratio`` and no cycle length until the loop has
    planned its steps (:func:`lm.training.budget.plan_schedule`)."""

    SECTION = "schedule"
    warmup_iters: int | None = _field("int0?", None, omit_none=True, computed=True)
    warmup_ratio: float | None = _field("unit?", None, omit_none=True, computed=True)
    cosine_cycle_iters: int | None = _field("int+?", None, computed=True)  # default: steps
    # cosine; or wsd: warmup, constant lr, then decay over the last decay_fraction of the
    # cycle (which ends at cosine_cycle_iters) to min_lr, linear or 1-sqrt (lm.training.schedule)
    name: str = _field(SCHEDULES, "cosine", omit_default=True)
    decay_fraction: float = _field("unit", 0.2, omit_default=True)
    decay_shape: str = _field(DECAY_SHAPES, "linear", omit_default=True)


@dataclass(frozen=True)
class TrainingConfig(_Section):
    SECTION = "training"
    batch_size: int = _field("int+", 32)  # the global batch, split over the processes
    steps: int | None = _field("int+?", None, computed=True)  # None: planned under a budget
    eval_every: int = _field("int+", 100)
    eval_batches: int = _field("int+", 10)
    log_every: int = _field("int+", 10)
    checkpoint_every: int = _field("int+", 500)
    keep_checkpoints: int = _field("int+", 1)
    seed: int = _field("int0", 0)
    device: str = _field("device", "auto")
    compile: bool = _field("bool", False)
    dtype: str = _field(DTYPES, "auto")
    divergence_factor: float | None = _field("num+?", 2.0)
    processes: int = _field("int+", 1)
    max_wallclock_minutes: float | None = _field("num+?", None)
    # tokens per chunk of the head and loss (lm.training.functional.chunked_cross_entropy);
    # 0: the whole batch's logits at once
    loss_chunk: int = _field("int0", 0, omit_default=True)
    # batch-size warmup (lm.training.batch_schedule): the global batch grows from
    # batch_warmup_start (default: a quarter of batch_size) to batch_size over the first
    # batch_warmup_steps steps, in multiples of the start; 0: batch_size from the first step
    batch_warmup_steps: int = _field("int0", 0, omit_default=True)
    batch_warmup_start: int | None = _field("int+?", None, omit_default=True)

    @property
    def budget_seconds(self) -> float | None:
        """The wall-clock budget in seconds, or None."""
        m = self.max_wallclock_minutes
        return None if m is None else 60.0 * m


@dataclass(frozen=True)
class ResourcesConfig(_Section):
    """What a scheduler is asked for: declared in the config, or (None) estimated by
    :func:`lm.training.resources.run_resources`, which resolution calls."""

    SECTION = "resources"
    mem_mb: int | None = _field("int+?", None, computed=True)
    gpu: int | None = _field("int0?", None, computed=True)
    # minutes; default from the token budget (lm.training.resources.run_runtime)
    runtime: int | None = _field("int+?", None, omit_none=True, computed=True)


@dataclass(frozen=True)
class WandbConfig(_Section):
    """Weights & Biases: the run's metrics also go to W&B (the ``wandb`` package, the
    ``trackers`` extra). ``group`` defaults to the sweep's name for a sweep member."""

    SECTION = "wandb"
    enabled: bool = _field("bool", False)
    project: str = _field("str", "lm")
    entity: str | None = _field("str?", None)
    group: str | None = _field("str?", None)
    mode: str = _field(WANDB_MODES, "online")


@dataclass(frozen=True)
class TensorboardConfig(_Section):
    """TensorBoard: the run's metrics also go to event files in ``OUT/tensorboard/`` (the
    ``tensorboard`` package, the ``trackers`` extra)."""

    SECTION = "tensorboard"
    enabled: bool = _field("bool", False)


SECTION_TYPES: dict[str, type] = {
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "training": TrainingConfig,
    "resources": ResourcesConfig,
    "wandb": WandbConfig,
    "tensorboard": TensorboardConfig,
}


def model_kinds() -> dict[str, Any]:
    """The kind of each ModelConfig field, from its type (and the variants' choices)."""
    kinds = {}
    for f in dataclasses.fields(ModelConfig):
        if f.name in VARIANTS:
            kinds[f.name] = VARIANTS[f.name]
        else:
            kinds[f.name] = {
                "int": "int+",
                "float": "num+",
                "bool": "bool",
                "float | None": "num+?",
            }[str(f.type)]
    return kinds


# ------------------------------------------------------------------- the layers' schema


def _layer_kind(f: dataclasses.Field) -> Any:
    kind = f.metadata["kind"]
    return kind.rstrip("?") if f.metadata["computed"] else kind


#: Keys a config layer may set that a resolved run does not keep: each is an alternative
#: spelling of a field (a token budget for steps, ratios for the floor and the warmup),
#: resolved away (``lm.training.config``).
LAYER_ONLY: dict[str, dict[str, Any]] = {
    "optimizer": {"min_lr_ratio": "unit"},
    "training": {"total_tokens": "int+"},
}

#: section -> key -> kind, for the layers of config.yaml (``runs:``, ``training_defaults``,
#: sweep grids): the dataclasses' fields plus LAYER_ONLY; ``model`` adds ``preset``.
SPEC: dict[str, dict[str, Any]] = {
    "model": {"preset": "str?", **model_kinds()},
    **{
        name: {
            **{f.name: _layer_kind(f) for f in dataclasses.fields(cls)},
            **LAYER_ONLY.get(name, {}),
        }
        for name, cls in SECTION_TYPES.items()
    },
}
SECTIONS = tuple(SPEC)
#: (section, key) of the fields whose None means "computed later", not a setting.
COMPUTED = tuple(
    (name, f.name)
    for name, cls in SECTION_TYPES.items()
    for f in dataclasses.fields(cls)
    if f.metadata["computed"]
)
#: The top level of a layer: single values and the sections.
TOP_KEYS: dict[str, Any] = {
    "dataset": "str?",
    "threads": "int+",
    "description": "str?",
    **{s: "section" for s in SECTIONS},
}


def check_keys(d: Any, allowed, where: str) -> None:
    """``d`` is a mapping whose keys are all in ``allowed``; else an error naming the key."""
    if not isinstance(d, dict):
        raise LMError(f"{where} must be a mapping, got {type(d).__name__} {d!r}")
    for key in d:
        if key not in allowed:
            raise LMError(
                f"{where}: unknown key {key!r}{suggest(key, allowed)}; valid keys: {', '.join(sorted(allowed))}"
            )


def kind_of(dotted: str, where: str) -> Any:
    """The kind of a dotted layer key (``optimizer.lr``, ``threads``), or an error naming it."""
    parts = dotted.split(".")
    if parts[0] not in TOP_KEYS:
        raise LMError(
            f"{where}: unknown key {dotted!r}{suggest(parts[0], TOP_KEYS)}; a dotted key starts with one of {', '.join(sorted(TOP_KEYS))}"
        )
    if TOP_KEYS[parts[0]] != "section":
        if len(parts) != 1:
            raise LMError(
                f"{where}: {parts[0]!r} is a single value, so {dotted!r} names nothing; use {parts[0]!r}"
            )
        return TOP_KEYS[parts[0]]
    if len(parts) != 2:
        raise LMError(
            f"{where}: {dotted!r} must name one key of a section, like '{parts[0]}.{next(iter(SPEC[parts[0]]))}'"
        )
    spec = SPEC[parts[0]]
    if parts[1] not in spec:
        raise LMError(
            f"{where}: unknown key {dotted!r}{suggest(parts[1], spec)}; valid keys of {parts[0]}: {', '.join(sorted(spec))}"
        )
    return spec[parts[1]]


def _defaults(cls) -> dict[str, Any]:
    """The defaults of ``cls``'s fields that are settings (not ``computed``)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not _REQUIRED and not f.metadata.get("computed"):
            out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
    return out


#: The bottom layer of every run: the dataclasses' defaults of the settings; what is
#: computed (the steps, the warmup) is not, and the floor is set by its ratio here.
BUILTIN_DEFAULTS: dict[str, Any] = {
    "threads": DEFAULT_THREADS,
    "model": {
        **_defaults(ModelConfig),
        "attention": "sdpa",  # the fast path; "reference" is the readable one
    },
    "optimizer": {
        **{k: v for k, v in _defaults(OptimizerConfig).items() if k != "min_lr"},
        "min_lr_ratio": 0.1,
    },
    "schedule": {"warmup_ratio": 0.05},
    "training": _defaults(TrainingConfig),
    "resources": {},
    "wandb": _defaults(WandbConfig),
    "tensorboard": _defaults(TensorboardConfig),
}


# ---------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunConfig:
    """One resolved training run (``resolve_runs`` makes them; ``lm train`` trains one)."""

    name: str
    model: ModelConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    training: TrainingConfig
    description: str | None = None
    dataset: str | None = None
    preset: str | None = None  # the model preset's name, a label (the model has every key)
    threads: int = DEFAULT_THREADS
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: TensorboardConfig = field(default_factory=TensorboardConfig)
    sweep: Mapping[str, Any] | None = None  # {name, base, variant, values} of a sweep member

    @property
    def tokens_per_step(self) -> int:
        """The tokens of a step at the full batch (every step after a batch warmup)."""
        return self.training.batch_size * self.model.context_length

    def batch_size_at(self, step: int) -> int:
        """The global batch of step ``step`` (1-based), through any batch-size warmup."""
        t = self.training
        start = batch_schedule.warmup_start(t.batch_size, t.batch_warmup_start)
        return batch_schedule.batch_size_at(step, t.batch_size, t.batch_warmup_steps, start)

    def tokens_through(self, steps: int) -> int:
        """The tokens trained on by the end of step ``steps``."""
        t = self.training
        start = batch_schedule.warmup_start(t.batch_size, t.batch_warmup_start)
        return batch_schedule.tokens_through(
            steps, t.batch_size, t.batch_warmup_steps, start, self.model.context_length
        )

    def replace(self, **changes) -> RunConfig:
        """A copy with top-level fields and dotted section keys changed:
        ``run.replace(**{"training.device": "cpu"})``, ``run.replace(threads=2)``."""
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if "." in key:
                section, name = key.split(".", 1)
                sections.setdefault(section, {})[name] = value
            else:
                top[key] = value
        for section, values in sections.items():
            current = top.get(section, getattr(self, section))
            top[section] = dataclasses.replace(current, **values)
        return dataclasses.replace(self, **top)

    def to_dict(self) -> dict[str, Any]:
        """The run as ``config.json`` holds it."""
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset,
            "model": {"preset": self.preset, **self.model.to_dict()},
            "optimizer": self.optimizer.to_dict(),
            "schedule": self.schedule.to_dict(),
            "training": self.training.to_dict(),
            "threads": self.threads,
            "resources": self.resources.to_dict(),
            "wandb": self.wandb.to_dict(),
            "tensorboard": self.tensorboard.to_dict(),
            "sweep": dict(self.sweep) if self.sweep is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "run") -> RunConfig:
        """A resolved run from its ``to_dict()`` form, every value checked."""
        if not isinstance(d, Mapping):
            raise LMError(f"{where} must be a mapping, got {type(d).__name__}")
        top = ("name", "description", "dataset", "threads", "sweep", "model", *SECTION_TYPES)
        for key in d:
            if key not in top:
                raise LMError(f"{where}: unknown key {key!r}{suggest(key, top)}")
        model = dict(d.get("model") or {})
        preset = model.pop("preset", None)
        return cls(
            name=coerce("str", d.get("name"), f"{where}.name"),
            description=coerce("str?", d.get("description"), f"{where}.description"),
            dataset=coerce("str?", d.get("dataset"), f"{where}.dataset"),
            preset=coerce("str?", preset, f"{where}.model.preset"),
            model=ModelConfig.from_dict(model, where=f"{where}.model"),
            threads=coerce("int+", d.get("threads", DEFAULT_THREADS), f"{where}.threads"),
            sweep=d.get("sweep"),
            **{
                name: section.from_dict(d.get(name) or {}, f"{where}.{name}")
                for name, section in SECTION_TYPES.items()
            },
        )


def load_run(path: str | os.PathLike) -> RunConfig:
    """The resolved run in the JSON file ``path``: a ``run.json`` as the workflow writes it
    (``results/runs/NAME/run.json``) or a run's ``config.json``, every key present (a file
    that leaves keys to defaults is a run still to resolve) and every value checked."""
    path = Path(path)
    fix = (
        "pass a resolved run: the workflow's results/runs/NAME/run.json, or one made from the "
        "pipeline config with `lm runs --config config.yaml --run NAME > run.json`"
    )
    if not path.is_file():
        raise LMError(f"run file {path} does not exist; {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise LMError(f"run file {path} is not JSON ({e}); {fix}") from None
    run = RunConfig.from_dict(data, where=str(path))
    given = set(_flatten(data))
    missing = set(_flatten(run.to_dict())) - given
    if not given & {"schedule.warmup_iters", "schedule.warmup_ratio"}:  # one is always resolved
        missing.add("schedule.warmup_iters")
    missing = sorted(missing)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise LMError(f"run file {path} is not a resolved run (it lacks {shown}); {fix}")
    return run


# ---------------------------------------------------------------------------- resuming

# Keys whose change does not change what a run computes: a resumed run may differ in these.
RESUME_FREE_KEYS = (
    "name",
    "description",
    "sweep",
    "threads",
    "resources",
    "wandb",
    "tensorboard",
    "training.device",
    "training.compile",
    "training.processes",
    "training.log_every",
    "training.eval_every",
    "training.checkpoint_every",
    "training.keep_checkpoints",
    "model.preset",
)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A run's dict with its sections flattened to dotted keys (a sweep label stays whole)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "sweep":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _resume_free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in RESUME_FREE_KEYS)


def resume_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved runs, ignoring RESUME_FREE_KEYS."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if not _resume_free(k) and a.get(k) != b.get(k))
