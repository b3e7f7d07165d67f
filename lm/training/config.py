"""Run configuration: presets, defaults and sweeps in, one fully resolved dict per run out.

The pipeline config (``config.yaml``) holds, among other stages' sections::

    datasets:           {NAME: {tokenizer: {vocab_size: V, ...}, ...}}   # vocab_size comes from here
    models:             {PRESET: {d_model, num_layers, num_heads, d_ff, context_length, rope_theta, norm, ...}}
    training_defaults:  {optimizer: {...}, schedule: {...}, training: {...}, model: {...}, threads: N}
    runs:               {RUN: {dataset, model: {preset: PRESET, <overrides>}, optimizer, schedule, training, ...}}
    sweeps:             {SWEEP: {base: RUN, grid: {"optimizer.lr": [..], ...}, variants: {NAME: {"model.norm": none}}}}

Layers apply in this order, later winning: built-in defaults, ``training_defaults``, the
base run, a sweep member's overrides. The model is built from the preset, then the run's
model keys. ``steps``/``total_tokens``, ``min_lr``/``min_lr_ratio`` and
``warmup_iters``/``warmup_ratio`` are alternatives: a layer that sets one drops the other
from the layers below, so a sweep over ``training.steps`` works on a base run that gives a
token budget.

A resolved run has every key filled in (``steps`` from a token budget, ``min_lr`` from a
ratio, ``cosine_cycle_iters`` = ``steps``, ``vocab_size`` from the dataset's tokenizer)
and is what ``lm train`` records as ``config.json``.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from lm.errors import LMError
from lm.model.variants import VARIANTS

# ---------------------------------------------------------------------------- the schema

ARCH_KEYS = (
    "vocab_size",
    "context_length",
    "d_model",
    "num_layers",
    "num_heads",
    "d_ff",
    "rope_theta",
)

# key -> kind; a tuple is a set of choices
SPEC: dict[str, dict[str, Any]] = {
    "model": {
        "preset": "str?",
        "vocab_size": "int+",
        "context_length": "int+",
        "d_model": "int+",
        "num_layers": "int+",
        "num_heads": "int+",
        "d_ff": "int+",
        "rope_theta": "num+",
        **VARIANTS,
    },
    "optimizer": {
        "lr": "num+",
        "min_lr": "num0",
        "min_lr_ratio": "unit",
        "betas": "betas",
        "eps": "num0",
        "weight_decay": "num0",
        "grad_clip": "num0",
    },
    "schedule": {"warmup_iters": "int0", "warmup_ratio": "unit", "cosine_cycle_iters": "int+"},
    "training": {
        "batch_size": "int+",
        "steps": "int+",
        "total_tokens": "int+",
        "eval_every": "int+",
        "eval_batches": "int+",
        "log_every": "int+",
        "checkpoint_every": "int+",
        "keep_checkpoints": "int+",
        "seed": "int0",
        "device": "device",
        "compile": "bool",
        "dtype": ("auto", "float32", "bfloat16"),
        "divergence_factor": "num+?",
        "processes": "int+",
        "max_wallclock_minutes": "num+?",
    },
    "resources": {"mem_mb": "int+", "gpu": "int0", "runtime": "int+"},
    "wandb": {
        "enabled": "bool",
        "project": "str",
        "entity": "str?",
        "group": "str?",
        "mode": ("online", "offline"),
    },
}
SECTIONS = tuple(SPEC)
TOP_KEYS = {
    "dataset": "str?",
    "threads": "int+",
    "description": "str?",
    **{s: "section" for s in SECTIONS},
}
SWEEP_KEYS = ("base", "grid", "variants", "description")

# Alternatives: setting one in a layer removes the other from the layers below.
ALTERNATIVES = {
    ("training", "steps"): "total_tokens",
    ("training", "total_tokens"): "steps",
    ("optimizer", "min_lr"): "min_lr_ratio",
    ("optimizer", "min_lr_ratio"): "min_lr",
    ("schedule", "warmup_iters"): "warmup_ratio",
    ("schedule", "warmup_ratio"): "warmup_iters",
}

BUILTIN_DEFAULTS: dict[str, Any] = {
    "threads": 4,
    "model": {
        "rope_theta": 10000.0,
        "norm": "pre",
        "position": "rope",
        "ffn": "swiglu",
        "attention": "sdpa",
    },
    "optimizer": {
        "lr": 1e-3,
        "min_lr_ratio": 0.1,
        "betas": [0.9, 0.95],
        "eps": 1e-8,
        "weight_decay": 0.1,
        "grad_clip": 1.0,
    },
    "schedule": {"warmup_ratio": 0.05},
    "training": {
        "batch_size": 32,
        "eval_every": 100,
        "eval_batches": 10,
        "log_every": 10,
        "checkpoint_every": 500,
        "keep_checkpoints": 1,
        "seed": 0,
        "device": "auto",
        "compile": False,
        "dtype": "auto",
        "divergence_factor": 2.0,
        "processes": 1,
        "max_wallclock_minutes": None,
    },
    "resources": {},
    "wandb": {"enabled": False, "project": "lm", "entity": None, "group": None, "mode": "online"},
}

# Keys whose change does not change what a run computes: a resumed run may differ in these.
RESUME_FREE_KEYS = (
    "name",
    "description",
    "sweep",
    "threads",
    "resources",
    "wandb",
    "training.device",
    "training.compile",
    "training.processes",
    "training.log_every",
    "training.eval_every",
    "training.checkpoint_every",
    "training.keep_checkpoints",
    "model.preset",
)

# Short names for sweep-member names: {sweep}-{short}{value}
SHORT_NAMES = {
    "optimizer.lr": "lr",
    "optimizer.min_lr": "minlr",
    "optimizer.min_lr_ratio": "minlr",
    "optimizer.weight_decay": "wd",
    "optimizer.grad_clip": "clip",
    "optimizer.betas": "betas",
    "training.batch_size": "bs",
    "training.steps": "steps",
    "training.total_tokens": "tokens",
    "training.seed": "seed",
    "schedule.warmup_iters": "warmup",
    "schedule.warmup_ratio": "warmup",
    "model.num_layers": "layers",
    "model.d_model": "d",
    "model.num_heads": "heads",
    "model.context_length": "ctx",
    "model.rope_theta": "theta",
}


# ---------------------------------------------------------------------------- small helpers


def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(d: Any, allowed, where: str) -> None:
    if not isinstance(d, dict):
        raise LMError(f"{where} must be a mapping, got {type(d).__name__} {d!r}")
    for key in d:
        if key not in allowed:
            raise LMError(
                f"{where}: unknown key {key!r}{_suggest(key, allowed)}; valid keys: {', '.join(sorted(allowed))}"
            )


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
    """Check ``value`` against ``kind`` (see SPEC) and return it in canonical form."""
    if isinstance(kind, tuple):
        if value is None and kind == ("auto", "float32", "bfloat16"):
            return "auto"
        if value not in kind:
            # YAML reads a bare `none` as a string but `null`/`~` as None: accept None for 'none'.
            if value is None and "none" in kind:
                return "none"
            raise LMError(
                f"{where} must be one of {', '.join(kind)}, got {value!r}{_suggest(value, kind)}"
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


def _kind(dotted: str, where: str):
    parts = dotted.split(".")
    if parts[0] not in TOP_KEYS:
        raise LMError(
            f"{where}: unknown key {dotted!r}{_suggest(parts[0], TOP_KEYS)}; a dotted key starts with one of {', '.join(sorted(TOP_KEYS))}"
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
            f"{where}: unknown key {dotted!r}{_suggest(parts[1], spec)}; valid keys of {parts[0]}: {', '.join(sorted(spec))}"
        )
    return spec[parts[1]]


def _check_layer(layer: Any, where: str) -> dict:
    """Check one layer (a run, or training_defaults): known keys and well-typed values."""
    _check_keys(layer, TOP_KEYS, where)
    out: dict[str, Any] = {}
    for key, value in layer.items():
        if TOP_KEYS[key] == "section":
            _check_keys(value, SPEC[key], f"{where}.{key}")
            section = {}
            for k, v in value.items():
                section[k] = coerce(SPEC[key][k], v, f"{where}.{key}.{k}")
            for a, b in (
                ("steps", "total_tokens"),
                ("min_lr", "min_lr_ratio"),
                ("warmup_iters", "warmup_ratio"),
            ):
                if a in section and b in section:
                    raise LMError(
                        f"{where}.{key} sets both {a!r} and {b!r}; they are alternatives — keep one"
                    )
            out[key] = section
        else:
            out[key] = coerce(TOP_KEYS[key], value, f"{where}.{key}")
    return out


def _merge(layers: list[dict]) -> dict:
    """Merge run layers, later winning, honouring ALTERNATIVES."""
    acc: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if TOP_KEYS.get(key) == "section":
                section = acc.setdefault(key, {})
                for k, v in value.items():
                    other = ALTERNATIVES.get((key, k))
                    if other is not None:
                        section.pop(other, None)
                    section[k] = copy.deepcopy(v)
            else:
                acc[key] = copy.deepcopy(value)
    return acc


def _nest(overrides: dict[str, Any]) -> dict:
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if len(parts) == 1:
            nested[parts[0]] = value
        else:
            nested.setdefault(parts[0], {})[parts[1]] = value
    return nested


# ---------------------------------------------------------------------------- names


def format_value(value: Any) -> str:
    """A short, filesystem-safe spelling of a swept value: 0.001 -> 1e-3, 32 -> 32, none -> none."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if value.is_integer() and abs(value) < 1e6:
            text = str(int(value))
        elif value != 0 and (abs(value) < 0.1 or abs(value) >= 1e6):
            mantissa, exponent = f"{value:.6e}".split("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            text = f"{mantissa}e{int(exponent)}"
        else:
            text = f"{value:.6g}"
    elif isinstance(value, (list, tuple)):
        text = "_".join(format_value(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def member_part(dotted: str, value: Any) -> str:
    short = SHORT_NAMES.get(dotted, dotted.split(".")[-1].replace("_", ""))
    text = format_value(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{short}{text}"  # lr1e-3, bs64
    return f"{short}-{text}"  # norm-none, ffn-silu


NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise LMError(
            f"{where}: name {name!r} is not filesystem-safe; use letters, digits, '.', '_' and '-' (not starting with a symbol)"
        )
    return name


# ---------------------------------------------------------------------------- sweeps


def _sweep(cfg: dict, sweep_name: str) -> dict:
    sweeps = cfg.get("sweeps") or {}
    if sweep_name not in sweeps:
        raise LMError(
            f"no sweep named {sweep_name!r}{_suggest(sweep_name, sweeps)} in the config's sweeps; "
            f"defined sweeps: {', '.join(sorted(sweeps)) or '(none)'}"
        )
    return sweeps[sweep_name]


def expand_sweep(cfg: dict, sweep_name: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The members of a sweep as ``(run name, {dotted key: value}, {variant: name or None})``."""
    sweep = _sweep(cfg, sweep_name)
    where = f"sweeps.{sweep_name}"
    _check_name(sweep_name, where)
    _check_keys(sweep, SWEEP_KEYS, where)
    runs = cfg.get("runs") or {}
    base = sweep.get("base")
    if base not in runs:
        raise LMError(
            f"{where}.base: {base!r} is not a run{_suggest(base, runs)}; a sweep's base must be one of runs: "
            f"{', '.join(sorted(runs)) or '(none defined)'}"
        )
    grid = sweep.get("grid") or {}
    variants = sweep.get("variants") or {}
    if not grid and not variants:
        raise LMError(
            f"{where} has neither 'grid' nor 'variants'; give at least one, e.g. grid: {{optimizer.lr: [1e-3, 3e-3]}}"
        )
    if not isinstance(grid, dict):
        raise LMError(
            f"{where}.grid must map dotted keys to lists of values, e.g. {{optimizer.lr: [1e-3, 3e-3]}}"
        )
    axes = []
    for dotted, values in grid.items():
        kind = _kind(dotted, f"{where}.grid")
        if not isinstance(values, list) or not values:
            raise LMError(
                f"{where}.grid.{dotted} must be a non-empty list of values, got {values!r}"
            )
        axes.append([(dotted, coerce(kind, v, f"{where}.grid.{dotted}")) for v in values])
    variant_items: list[tuple[str | None, dict]] = [(None, {})]
    if variants:
        if not isinstance(variants, dict):
            raise LMError(
                f"{where}.variants must map variant names to overrides, e.g. {{post-norm: {{model.norm: post}}}}"
            )
        variant_items = []
        for vname, overrides in variants.items():
            _check_name(vname, f"{where}.variants")
            overrides = overrides or {}
            if not isinstance(overrides, dict):
                raise LMError(
                    f"{where}.variants.{vname} must map dotted keys to values, e.g. {{model.norm: none}}"
                )
            checked = {}
            for dotted, v in overrides.items():
                checked[dotted] = coerce(
                    _kind(dotted, f"{where}.variants.{vname}"),
                    v,
                    f"{where}.variants.{vname}.{dotted}",
                )
            variant_items.append((vname, checked))

    members = []
    for vname, voverrides in variant_items:
        for combo in itertools.product(*axes) if axes else [()]:
            values = dict(voverrides)
            values.update(dict(combo))
            parts = (
                [sweep_name] + ([vname] if vname else []) + [member_part(k, v) for k, v in combo]
            )
            members.append(("-".join(parts), values, vname))
    names = [m[0] for m in members]
    for name in names:
        if names.count(name) > 1:
            raise LMError(
                f"{where} gives two members the same name {name!r}; remove the duplicate value from its grid"
            )
    return members


def sweep_members(cfg: dict, sweep_name: str) -> list[str]:
    """The run names a sweep expands to, in grid order (these are keys of ``resolve_runs(cfg)``)."""
    return [name for name, _, _ in expand_sweep(cfg, sweep_name)]


# ---------------------------------------------------------------------------- resolution


def _presets(cfg: dict) -> dict:
    """The config's ``models:`` over the model package's built-in presets (tinystories-17m, gpt2-*)."""
    presets = cfg.get("models") or {}
    if not isinstance(presets, dict):
        raise LMError("models must map preset names to architectures")
    try:
        from lm.model.config import DEFAULT_PRESETS
    except ImportError:  # the model package is optional for resolving configs
        DEFAULT_PRESETS = {}
    return {**DEFAULT_PRESETS, **presets}


def _resolve_model(cfg: dict, merged_layers: list[dict], where: str) -> tuple[dict, int | None]:
    presets = _presets(cfg)
    preset = None
    for layer in merged_layers:
        preset = (layer.get("model") or {}).get("preset", preset)
    model: dict[str, Any] = {}
    preset_vocab = None
    layers = [BUILTIN_DEFAULTS["model"]]
    for i, layer in enumerate(merged_layers):
        if i == 2 and preset is not None:  # the preset sits between training_defaults and the run
            if preset not in presets:
                raise LMError(
                    f"{where}.model.preset: no model preset {preset!r}{_suggest(preset, presets)}; "
                    f"presets in the config's models: {', '.join(sorted(presets)) or '(none defined)'}"
                )
            body = presets[preset]
            spec = {k: v for k, v in SPEC["model"].items() if k != "preset"}
            _check_keys(body, [*spec, "description"], f"models.{preset}")
            values = {
                k: coerce(spec[k], v, f"models.{preset}.{k}")
                for k, v in body.items()
                if k != "description"
            }
            # a preset's vocab_size is a fallback: the dataset's tokenizer decides the vocab
            preset_vocab = values.pop("vocab_size", None)
            layers.append(values)
        layers.append({k: v for k, v in (layer.get("model") or {}).items() if k != "preset"})
    for layer in layers:
        model.update(copy.deepcopy(layer))
    model["preset"] = preset
    return model, preset_vocab


def resolve_run(
    name: str,
    run: dict,
    cfg: dict | None = None,
    overrides: dict | None = None,
    sweep: dict | None = None,
) -> dict:
    """Resolve one run: ``run`` (a ``runs:`` entry) under ``cfg``'s defaults and presets."""
    cfg = cfg or {}
    where = f"runs.{name}"
    _check_name(name, where)
    defaults = _check_layer(cfg.get("training_defaults") or {}, "training_defaults")
    base = _check_layer(run, where)
    layers = [defaults, base]
    if overrides:
        sweep_where = f"sweeps.{sweep['name']}" if sweep else where
        layers.append(_check_layer(_nest(overrides), sweep_where))
    all_layers = [BUILTIN_DEFAULTS, *layers]
    merged = _merge(all_layers)
    merged["model"], preset_vocab = _resolve_model(cfg, all_layers, where)
    return _finish(name, merged, cfg, where, sweep, preset_vocab)


def _finish(
    name: str, r: dict, cfg: dict, where: str, sweep: dict | None, preset_vocab: int | None = None
) -> dict:
    model, opt, sched, train = r["model"], r["optimizer"], r["schedule"], r["training"]

    # dataset and vocab size
    datasets = cfg.get("datasets") or {}
    dataset = r.get("dataset")
    if dataset is not None and datasets and dataset not in datasets:
        raise LMError(
            f"{where}.dataset: no dataset {dataset!r}{_suggest(dataset, datasets)}; datasets in the config: {', '.join(sorted(datasets))}"
        )
    if "vocab_size" not in model:
        vocab = (((datasets.get(dataset) or {}) if dataset else {}).get("tokenizer") or {}).get(
            "vocab_size"
        )
        if vocab is None:
            vocab = preset_vocab
        if vocab is None:
            raise LMError(
                f"{where}: the model's vocab_size is unknown — set model.vocab_size, or name a dataset "
                f"whose tokenizer.vocab_size is set (datasets.NAME.tokenizer.vocab_size)"
            )
        model["vocab_size"] = coerce("int+", vocab, f"datasets.{dataset}.tokenizer.vocab_size")
    missing = [k for k in ARCH_KEYS if k not in model]
    if missing:
        raise LMError(
            f"{where}.model lacks {', '.join(missing)}; name a preset (model.preset: NAME from models:) or set them in the run's model"
        )
    if model["d_model"] % model["num_heads"]:
        raise LMError(
            f"{where}.model: d_model {model['d_model']} is not divisible by num_heads {model['num_heads']}; pick num_heads dividing d_model"
        )
    if model["position"] == "rope" and (model["d_model"] // model["num_heads"]) % 2:
        raise LMError(
            f"{where}.model: RoPE needs an even head size, got d_model/num_heads = {model['d_model'] // model['num_heads']}"
        )

    # steps from a token budget; under a wall-clock budget they are an upper bound (or
    # none): the loop plans the steps that fit the budget (lm.training.budget)
    tokens_per_step = train["batch_size"] * model["context_length"]
    budgeted = train.get("max_wallclock_minutes") is not None
    if "steps" not in train and "total_tokens" not in train and not budgeted:
        raise LMError(
            f"{where}.training: set steps or total_tokens (the run's length), or max_wallclock_minutes "
            f"(a time budget the loop plans the steps for)"
        )
    if "steps" not in train:
        total = train.get("total_tokens")
        train["steps"] = max(1, math.ceil(total / tokens_per_step)) if total else None

    # learning-rate floor and schedule
    if "min_lr" not in opt:
        opt["min_lr"] = opt["lr"] * opt.get("min_lr_ratio", 0.0)
    opt.pop("min_lr_ratio", None)
    if opt["min_lr"] > opt["lr"]:
        raise LMError(
            f"{where}.optimizer: min_lr {opt['min_lr']} is above lr {opt['lr']}; lower min_lr (or use min_lr_ratio <= 1)"
        )
    if budgeted:
        # the planned steps are known only once the loop has measured its speed: keep
        # the schedule's ratio form and let lm.training.budget.plan_schedule finish it
        if "warmup_iters" not in sched:
            sched.setdefault("warmup_ratio", 0.0)
        sched.setdefault("cosine_cycle_iters", None)
    else:
        if "warmup_iters" not in sched:
            sched["warmup_iters"] = round(sched.get("warmup_ratio", 0.0) * train["steps"])
        sched.pop("warmup_ratio", None)
        sched.setdefault("cosine_cycle_iters", train["steps"])
    if (
        sched.get("warmup_iters") is not None
        and sched["cosine_cycle_iters"] is not None
        and sched["warmup_iters"] > sched["cosine_cycle_iters"]
    ):
        raise LMError(
            f"{where}.schedule: warmup_iters {sched['warmup_iters']} exceeds cosine_cycle_iters {sched['cosine_cycle_iters']}; shorten the warmup"
        )
    if train["divergence_factor"] is not None and train["divergence_factor"] <= 1:
        raise LMError(
            f"{where}.training.divergence_factor must be > 1 (or null to disable), got {train['divergence_factor']}"
        )

    out = {
        "name": name,
        "description": r.get("description"),
        "dataset": dataset,
        "model": {k: model[k] for k in ("preset", *ARCH_KEYS, *VARIANTS)},
        "optimizer": {
            k: opt[k] for k in ("lr", "min_lr", "betas", "eps", "weight_decay", "grad_clip")
        },
        "schedule": {
            k: sched[k]
            for k in ("warmup_iters", "warmup_ratio", "cosine_cycle_iters")
            if k in sched
        },
        "training": {k: train[k] for k in SPEC["training"] if k != "total_tokens"},
        "threads": r["threads"],
        "resources": r.get("resources") or {},
        "wandb": r["wandb"],
        "sweep": sweep,
    }
    out["resources"] = run_resources(out)
    return out


def resolve_runs(cfg: dict) -> dict[str, dict]:
    """Every run of the config, base runs and sweep members, fully resolved, by name."""
    if not isinstance(cfg, dict):
        raise LMError("the config must be a mapping with runs:, models:, sweeps: ... sections")
    runs = cfg.get("runs") or {}
    _check_keys(runs, runs.keys(), "runs")
    resolved = {name: resolve_run(name, run or {}, cfg) for name, run in runs.items()}
    for sweep_name in cfg.get("sweeps") or {}:
        base = _sweep(cfg, sweep_name).get("base")
        for name, values, variant in expand_sweep(cfg, sweep_name):
            if name in resolved:
                raise LMError(
                    f"sweeps.{sweep_name}: member {name!r} has the name of another run; rename the sweep or that run"
                )
            meta = {"name": sweep_name, "base": base, "variant": variant, "values": values}
            resolved[name] = resolve_run(name, runs[base] or {}, cfg, values, meta)
    return resolved


# ---------------------------------------------------------------------------- resources


def count_params(model: dict) -> int:
    """Parameter count of the TransformerLM a resolved ``model`` section describes: the
    accounting's count (checked there against the built model), not a second formula."""
    from lm.accounting.formulas import parameter_counts
    from lm.model.config import ModelConfig

    return parameter_counts(ModelConfig.from_dict(model, where="the run's model"))["total"]


def run_resources(run_cfg: dict) -> dict:
    """``{"mem_mb", "gpu"}`` for a resolved run: declared values win, the rest estimated.

    Host memory on CPU: parameters, gradients and the two AdamW moments (16 bytes a
    parameter in float32), activations of one batch kept for backward (a rough count per
    layer, plus attention scores and the logits), a copy of the state while a checkpoint
    is written, and the Python/torch baseline (500 MB); times 1.25 for allocator slack.
    Against measured peaks at the 17M shape on CPU (1.5 GB at batch 8, 4.4 GB at batch 32)
    this is high by 1.3-1.5x, which is the side to err on for a scheduler that kills jobs
    over their limit. On CUDA the activations live on the GPU and the host needs the CUDA
    runtime plus staging copies of the state.
    """
    declared = dict(run_cfg.get("resources") or {})
    model, train = run_cfg["model"], run_cfg["training"]
    device = train.get("device", "auto")
    params = count_params(model)
    b, t, d = train["batch_size"], model["context_length"], model["d_model"]
    state_bytes = 16 * params
    per_layer = b * t * (16 * d + 3 * model["d_ff"]) * 4 + 3 * b * model["num_heads"] * t * t * 4
    logits = 3 * b * t * model["vocab_size"] * 4
    activations = model["num_layers"] * per_layer + logits
    # each process of a torchrun job holds the whole state; the batch is split among them
    procs = train.get("processes", 1)
    if device.startswith("cuda"):
        mem = procs * (3000 + 2 * state_bytes / 2**20)
    else:
        mem = procs * (500 + 1.25 * (state_bytes + 4 * params) / 2**20) + 1.25 * activations / 2**20
    gpu = procs if device.startswith("cuda") else 0  # one per process
    out = {"mem_mb": int(math.ceil(mem / 100) * 100), "gpu": gpu}
    out.update(declared)
    return out


#: What `scheduler:` in config.yaml may leave out (see run_runtime).
SCHEDULER_DEFAULTS: dict[str, Any] = {
    # training tokens/s of one device of each kind on REFERENCE_MODEL. cpu: the README's
    # 1-thread forward+backward speed at that shape (1,280 tokens/s), rounded down for the
    # optimizer step and evaluations. cuda: an H200 trains it at 312,700 tokens/s (lm train,
    # bf16 autocast, eager, 800 steps with an evaluation and a checkpoint); a third of that
    # leaves room for older GPUs. mps: not measured, a guess between the two.
    "throughput": {"cpu": 1000, "mps": 5000, "cuda": 100000},
    "safety_factor": 2.0,
    "startup_minutes": 10,
}

#: The model the `scheduler.throughput` figures are measured on: CS336's 17M TinyStories
#: model (the `tinystories-17m` preset, 10,000-token vocabulary) at batch 32.
REFERENCE_MODEL = {
    "vocab_size": 10000, "context_length": 256, "d_model": 512, "num_layers": 4,
    "num_heads": 16, "d_ff": 1344, "rope_theta": 10000.0,
}  # fmt: skip
REFERENCE_BATCH = 32


def training_flops_per_token(model: dict, batch_size: int) -> float:
    """FLOPs of one training step per token it trains on: forward, backward and the AdamW
    update, from the accounting formulas (lm.accounting.formulas.adamw_step_flops)."""
    from lm.accounting.formulas import adamw_step_flops
    from lm.model.config import ModelConfig

    cfg = ModelConfig.from_dict(model, where="the run's model")
    return adamw_step_flops(cfg, batch_size)["total"] / (batch_size * cfg.context_length)


def device_kind(device: str) -> str:
    """cpu, cuda or mps: the `scheduler.throughput` entry a run's `training.device` uses
    (auto on a node the scheduler gave no GPU runs on its CPUs)."""
    return next((k for k in ("cuda", "mps") if device.startswith(k)), "cpu")


def run_runtime(run_cfg: dict, scheduler: dict | None = None) -> int:
    """Minutes of wall time to ask a scheduler for, for a resolved run (`resources.runtime`
    when the run declares one).

    The run's tokens (steps x batch x context) at the configured throughput of its device
    kind (``scheduler.throughput``, tokens/s on REFERENCE_MODEL), scaled by the ratio of
    training FLOPs per token of the reference to the run's model, times the processes on
    CUDA (one GPU each); times ``safety_factor``, capped by the run's wall-clock budget
    (``training.max_wallclock_minutes``), plus ``startup_minutes`` (start-up, the final
    evaluation and checkpoint).
    """
    declared = (run_cfg.get("resources") or {}).get("runtime")
    if declared:
        return int(declared)
    sched = {**SCHEDULER_DEFAULTS, **(scheduler or {})}
    throughput = {**SCHEDULER_DEFAULTS["throughput"], **(sched.get("throughput") or {})}
    model, train = run_cfg["model"], run_cfg["training"]
    kind = device_kind(train.get("device", "auto"))
    # one GPU a process (resources.gpu: N alone also makes N processes: lm.training.launch)
    gpus = (run_cfg.get("resources") or {}).get("gpu", 0)
    devices = max(train.get("processes", 1), gpus) if kind == "cuda" else 1
    reference = training_flops_per_token(REFERENCE_MODEL, REFERENCE_BATCH)
    own = training_flops_per_token(model, train["batch_size"])
    tokens_per_s = throughput[kind] * devices * reference / own
    minutes = None
    if train.get("steps"):
        tokens = train["steps"] * train["batch_size"] * model["context_length"]
        minutes = sched["safety_factor"] * tokens / tokens_per_s / 60
    budget = train.get("max_wallclock_minutes")
    if budget is not None:
        minutes = budget if minutes is None else min(minutes, budget)
    return math.ceil(minutes + sched["startup_minutes"])


# ---------------------------------------------------------------------------- files


def load_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML or JSON config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise LMError(
            f"config file {path} does not exist; pass the pipeline's config.yaml or a run's config (.yaml/.json)"
        )
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:
        raise LMError(f"config file {path} cannot be parsed: {e}") from e
    if not isinstance(data, dict):
        raise LMError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def run_from_file(path: str | os.PathLike, run: str | None = None) -> dict:
    """The resolved config of one run from a file.

    The file is either a pipeline config (with ``runs:``/``sweeps:``; ``run`` names the
    run, a base run or a sweep member), a single run (``model:``, ``optimizer:`` ... at the
    top, with ``models:``/``datasets:`` beside them if it names a preset or a dataset), or
    a resolved ``config.json`` written by ``lm train``.
    """
    data = load_config_file(path)
    if "runs" in data or "sweeps" in data:
        resolved = resolve_runs(data)
        if run is None:
            if len(resolved) == 1:
                return next(iter(resolved.values()))
            raise LMError(
                f"{path} defines several runs; pick one with --run NAME: {', '.join(resolved)}"
            )
        if run not in resolved:
            raise LMError(
                f"{path} has no run {run!r}{_suggest(run, resolved)}; runs: {', '.join(resolved)}"
            )
        return resolved[run]
    context = {k: data.pop(k) for k in ("models", "datasets", "training_defaults") if k in data}
    sweep = data.pop("sweep", None)
    name = data.pop("name", None) or run or Path(path).stem
    if sweep is not None:  # a resolved config.json keeps its sweep label
        if not isinstance(sweep, dict):
            raise LMError(f"{path}: 'sweep' must be a mapping (as written in a run's config.json)")
    # A resolved config.json names its preset for the record but carries the whole
    # architecture; without the presets beside it, keep the name only as a label.
    model = data.get("model")
    label = None
    if (
        isinstance(model, dict)
        and all(k in model for k in ARCH_KEYS)
        and model.get("preset") not in _presets(context)
    ):
        label = model.pop("preset", None)
    resolved = resolve_run(name, data, context)
    if label is not None:
        resolved["model"]["preset"] = label
    if sweep is not None:
        resolved["sweep"] = sweep
    return resolved


def resume_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two resolved runs, ignoring RESUME_FREE_KEYS."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and k not in ("sweep",):
                out.update(flat(v, key + "."))
            else:
                out[key] = v
        return out

    a, b = flat(old), flat(new)
    free = lambda k: any(k == f or k.startswith(f + ".") for f in RESUME_FREE_KEYS)  # noqa: E731
    return sorted(k for k in set(a) | set(b) if not free(k) and a.get(k) != b.get(k))
