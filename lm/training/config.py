"""Run resolution: presets, defaults and sweeps in, one typed :class:`RunConfig` per run out.

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

A resolved run (:class:`lm.training.run_config.RunConfig`) has every key filled in
(``steps`` from a token budget, ``min_lr`` from a ratio, ``cosine_cycle_iters`` = ``steps``,
``vocab_size`` from the dataset's tokenizer, resources estimated); its ``to_dict()`` is what
``lm train`` records as ``config.json``. The keys, their kinds and defaults are the typed
config's (:mod:`lm.training.run_config`); sweeps expand in :mod:`lm.training.grid`.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

from lm.errors import LMError
from lm.model.config import ARCH_KEYS, ModelConfig
from lm.training import batch_schedule
from lm.training.grid import (
    check_name,
    expand_sweep,
    is_race,
    race_role,
    sweep_entry,
    sweep_members,
)
from lm.training.resources import run_resources
from lm.training.run_config import (
    BUILTIN_DEFAULTS,
    COMPUTED,
    SECTIONS,
    SPEC,
    TOP_KEYS,
    OptimizerConfig,
    ResourcesConfig,
    RunConfig,
    ScheduleConfig,
    TensorboardConfig,
    TrainingConfig,
    WandbConfig,
    check_keys,
    coerce,
    suggest,
)

__all__ = [
    "SECTIONS",
    "ALTERNATIVES",
    "RunConfig",
    "resolve_run",
    "resolve_runs",
    "sweep_members",
    "run_from_file",
    "load_config_file",
]

# Alternatives: setting one in a layer removes the other from the layers below.
ALTERNATIVES = {
    ("training", "steps"): "total_tokens",
    ("training", "total_tokens"): "steps",
    ("optimizer", "min_lr"): "min_lr_ratio",
    ("optimizer", "min_lr_ratio"): "min_lr",
    ("schedule", "warmup_iters"): "warmup_ratio",
    ("schedule", "warmup_ratio"): "warmup_iters",
}


def _check_layer(layer: Any, where: str) -> dict:
    """Check one layer (a run, or training_defaults): known keys and well-typed values."""
    check_keys(layer, TOP_KEYS, where)
    out: dict[str, Any] = {}
    for key, value in layer.items():
        if TOP_KEYS[key] == "section":
            check_keys(value, SPEC[key], f"{where}.{key}")
            section = {}
            for k, v in value.items():
                section[k] = coerce(SPEC[key][k], v, f"{where}.{key}.{k}")
            for (sec, a), b in ALTERNATIVES.items():
                if sec == key and a in section and b in section:
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
                    f"{where}.model.preset: no model preset {preset!r}{suggest(preset, presets)}; "
                    f"presets in the config's models: {', '.join(sorted(presets)) or '(none defined)'}"
                )
            body = presets[preset]
            spec = {k: v for k, v in SPEC["model"].items() if k != "preset"}
            check_keys(body, [*spec, "description"], f"models.{preset}")
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
) -> RunConfig:
    """Resolve one run: ``run`` (a ``runs:`` entry) under ``cfg``'s defaults and presets."""
    cfg = cfg or {}
    where = f"runs.{name}"
    check_name(name, where)
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


def _dataset_and_model(
    r: dict, cfg: dict, where: str, preset_vocab: int | None
) -> tuple[str | None, str | None, ModelConfig]:
    """The run's dataset, its model preset's name and its model, the vocabulary size taken
    from the dataset's tokenizer (else the preset's) when the model does not set it."""
    model = r["model"]
    datasets = cfg.get("datasets") or {}
    dataset = r.get("dataset")
    if dataset is not None and datasets and dataset not in datasets:
        raise LMError(
            f"{where}.dataset: no dataset {dataset!r}{suggest(dataset, datasets)}; datasets in the config: {', '.join(sorted(datasets))}"
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
    preset = model.pop("preset")
    return dataset, preset, ModelConfig.from_dict(model, where=f"{where}.model")


def _finish(
    name: str, r: dict, cfg: dict, where: str, sweep: dict | None, preset_vocab: int | None = None
) -> RunConfig:
    opt, sched, train = r["optimizer"], r["schedule"], r["training"]
    dataset, preset, model_cfg = _dataset_and_model(r, cfg, where, preset_vocab)

    # steps from a token budget; under a wall-clock budget they are an upper bound (or
    # none): the loop plans the steps that fit the budget (lm.training.budget)
    budgeted = train.get("max_wallclock_minutes") is not None
    if "steps" not in train and "total_tokens" not in train and not budgeted:
        raise LMError(
            f"{where}.training: set steps or total_tokens (the run's length), or max_wallclock_minutes "
            f"(a time budget the loop plans the steps for)"
        )
    batch_schedule.check_batch_warmup(
        train["batch_size"], train.get("batch_warmup_steps", 0),
        train.get("batch_warmup_start"), train.get("processes", 1), f"{where}.training",
    )  # fmt: skip
    if "steps" not in train:  # the fewest whose batches (a warmup's smaller) reach the tokens
        total = train.get("total_tokens")
        start = batch_schedule.warmup_start(train["batch_size"], train.get("batch_warmup_start"))
        train["steps"] = batch_schedule.steps_for_tokens(
            math.ceil(total), train["batch_size"], train.get("batch_warmup_steps", 0), start,
            model_cfg.context_length,
        ) if total else None  # fmt: skip

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

    train.pop("total_tokens", None)
    run = RunConfig(
        name=name,
        description=r.get("description"),
        dataset=dataset,
        preset=preset,
        model=model_cfg,
        optimizer=OptimizerConfig(**opt),
        schedule=ScheduleConfig(**sched),
        training=TrainingConfig(**train),
        threads=r["threads"],
        resources=ResourcesConfig(**(r.get("resources") or {})),
        wandb=WandbConfig(**_wandb_group(r["wandb"], sweep)),
        tensorboard=TensorboardConfig(**r["tensorboard"]),
        sweep=sweep,
    )
    return run.replace(resources=run_resources(run))


def _wandb_group(wandb: dict, sweep: dict | None) -> dict:
    """A sweep member's W&B group is its sweep's name unless a layer sets one: the members
    of a sweep show together in W&B."""
    if sweep and wandb.get("group") is None:
        return {**wandb, "group": sweep["name"]}
    return wandb


def resolve_runs(cfg: dict) -> dict[str, RunConfig]:
    """Every run of the config, base runs and sweep members, fully resolved, by name."""
    if not isinstance(cfg, dict):
        raise LMError("the config must be a mapping with runs:, models:, sweeps: ... sections")
    runs = cfg.get("runs") or {}
    check_keys(runs, runs.keys(), "runs")
    resolved = {name: resolve_run(name, run or {}, cfg) for name, run in runs.items()}
    for sweep_name in cfg.get("sweeps") or {}:
        entry = sweep_entry(cfg, sweep_name)
        base = entry.get("base")
        for name, values, variant in expand_sweep(cfg, sweep_name):
            if name in resolved:
                raise LMError(
                    f"sweeps.{sweep_name}: member {name!r} has the name of another run; rename the sweep or that run"
                )
            meta = {"name": sweep_name, "base": base, "variant": variant, "values": values}
            if is_race(entry):
                meta["race"] = race_role(cfg, sweep_name, variant)
            resolved[name] = resolve_run(name, runs[base] or {}, cfg, values, meta)
            if is_race(entry):
                _check_race_budget(resolved[name], resolved[base], sweep_name)
    return resolved


def _check_race_budget(member: RunConfig, base: RunConfig, race: str) -> None:
    """A race's members share their base run's wall-clock budget, on the same data."""
    budget = base.training.max_wallclock_minutes
    if budget is None:
        raise LMError(
            f"sweeps.{race}: a race compares recipes at equal wall-clock; set "
            f"training.max_wallclock_minutes in its base run {base.name!r}"
        )
    if member.training.max_wallclock_minutes != budget or member.dataset != base.dataset:
        raise LMError(
            f"sweeps.{race}: member {member.name!r} changes the budget or the dataset; a race's "
            f"members share the base run's (take training.max_wallclock_minutes and dataset "
            f"out of its grids and parts)"
        )


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


def run_from_file(path: str | os.PathLike, run: str | None = None) -> RunConfig:
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
                f"{path} has no run {run!r}{suggest(run, resolved)}; runs: {', '.join(resolved)}"
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
    for section, key in COMPUTED:  # null in a config.json: not known when it was written
        if isinstance(data.get(section), dict) and data[section].get(key, 0) is None:
            del data[section][key]
    resolved = resolve_run(name, data, context)
    changes = {"preset": label} if label is not None else {}
    if sweep is not None:
        changes["sweep"] = sweep
    return resolved.replace(**changes)
