"""Sweeps: a base run times a grid of dotted keys (and named variants), expanded into
member runs with short, filesystem-safe names (``lr-sweep-lr3e-3``, ``ablate-no-norm``).

::

    sweeps:  {SWEEP: {base: RUN, grid: {"optimizer.lr": [..], ...},
                      variants: {NAME: {"model.norm": none}}, description: ...}}

Every dotted key and value is checked against the run config's kinds
(:mod:`lm.training.run_config`); :mod:`lm.training.config` resolves each member.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from lm.errors import LMError
from lm.training.run_config import check_keys, coerce, kind_of, suggest

SWEEP_KEYS = ("base", "grid", "variants", "description")

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


def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise LMError(
            f"{where}: name {name!r} is not filesystem-safe; use letters, digits, '.', '_' and '-' (not starting with a symbol)"
        )
    return name


# ---------------------------------------------------------------------------- sweeps


def sweep_entry(cfg: dict, sweep_name: str) -> dict:
    """The ``sweeps:`` entry named ``sweep_name``, or an error listing the sweeps."""
    sweeps = cfg.get("sweeps") or {}
    if sweep_name not in sweeps:
        raise LMError(
            f"no sweep named {sweep_name!r}{suggest(sweep_name, sweeps)} in the config's sweeps; "
            f"defined sweeps: {', '.join(sorted(sweeps)) or '(none)'}"
        )
    return sweeps[sweep_name]


def expand_sweep(cfg: dict, sweep_name: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The members of a sweep as ``(run name, {dotted key: value}, {variant: name or None})``."""
    sweep = sweep_entry(cfg, sweep_name)
    where = f"sweeps.{sweep_name}"
    check_name(sweep_name, where)
    check_keys(sweep, SWEEP_KEYS, where)
    runs = cfg.get("runs") or {}
    base = sweep.get("base")
    if base not in runs:
        raise LMError(
            f"{where}.base: {base!r} is not a run{suggest(base, runs)}; a sweep's base must be one of runs: "
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
        kind = kind_of(dotted, f"{where}.grid")
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
            check_name(vname, f"{where}.variants")
            overrides = overrides or {}
            if not isinstance(overrides, dict):
                raise LMError(
                    f"{where}.variants.{vname} must map dotted keys to values, e.g. {{model.norm: none}}"
                )
            checked = {}
            for dotted, v in overrides.items():
                checked[dotted] = coerce(
                    kind_of(dotted, f"{where}.variants.{vname}"),
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
