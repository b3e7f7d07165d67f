"""Sweeps: a base run times a grid of dotted keys (and named variants), expanded into
member runs with short, filesystem-safe names (``lr-sweep-lr3e-3``, ``ablate-no-norm``).

::

    sweeps:  {SWEEP: {base: RUN, grid: {"optimizer.lr": [..], ...},
                      variants: {NAME: {"model.norm": none}}, description: ...}}

A sweep with ``recipe:`` is a race at equal wall-clock (see :func:`expand_race`)::

    sweeps:  {RACE: {base: RUN, grid: {"optimizer.lr": [..]},
                     recipe: {grid: {"optimizer.muon_lr": [..]},
                              parts: {PART: {"optimizer.name": muon}, ...}}}}

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
#: A race (a sweep with ``recipe:``): ``grid`` is the baseline's learning-rate sweep.
RACE_KEYS = ("base", "grid", "recipe", "description")
RECIPE_KEYS = ("grid", "parts")

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


def grid_axes(grid: Any, where: str) -> list[list[tuple[str, Any]]]:
    """The axes of a grid (``{dotted key: [values]}``), each a list of checked ``(key, value)``."""
    if not isinstance(grid, dict):
        raise LMError(
            f"{where} must map dotted keys to lists of values, e.g. {{optimizer.lr: [1e-3, 3e-3]}}"
        )
    axes = []
    for dotted, values in grid.items():
        kind = kind_of(dotted, where)
        if not isinstance(values, list) or not values:
            raise LMError(f"{where}.{dotted} must be a non-empty list of values, got {values!r}")
        axes.append([(dotted, coerce(kind, v, f"{where}.{dotted}")) for v in values])
    return axes


def grid_points(axes: list[list[tuple[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Every point of a grid's axes as ``(name part, {key: value})``: ``lr1e-3-bs64``."""
    return [
        ("-".join(member_part(k, v) for k, v in combo), dict(combo))
        for combo in itertools.product(*axes)
    ]


def checked_overrides(overrides: Any, where: str) -> dict[str, Any]:
    """``{dotted key: value}`` with each key known and each value of its key's kind."""
    if not isinstance(overrides, dict):
        raise LMError(f"{where} must map dotted keys to values, e.g. {{model.norm: none}}")
    return {
        dotted: coerce(kind_of(dotted, where), v, f"{where}.{dotted}")
        for dotted, v in overrides.items()
    }


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
    check_keys(sweep, RACE_KEYS if is_race(sweep) else SWEEP_KEYS, where)
    runs = cfg.get("runs") or {}
    base = sweep.get("base")
    if base not in runs:
        raise LMError(
            f"{where}.base: {base!r} is not a run{suggest(base, runs)}; a sweep's base must be one of runs: "
            f"{', '.join(sorted(runs)) or '(none defined)'}"
        )
    if is_race(sweep):
        return expand_race(sweep_name, sweep, where)
    grid = sweep.get("grid") or {}
    variants = sweep.get("variants") or {}
    if not grid and not variants:
        raise LMError(
            f"{where} has neither 'grid' nor 'variants'; give at least one, e.g. grid: {{optimizer.lr: [1e-3, 3e-3]}}"
        )
    axes = grid_axes(grid, f"{where}.grid")
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
            variant_items.append((vname, checked_overrides(overrides, f"{where}.variants.{vname}")))

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


# ---------------------------------------------------------------------------- races


def is_race(sweep: Any) -> bool:
    """Whether a ``sweeps:`` entry is a race (it has a ``recipe:``)."""
    return isinstance(sweep, dict) and "recipe" in sweep


def _member_name(*parts: str) -> str:
    return "-".join(p for p in parts if p)


def race_parts(sweep: dict, where: str) -> dict[str, dict[str, Any]]:
    """The recipe's parts, ``{part: {dotted key: value}}``, checked: each part sets keys of
    its own (no two parts, and not the recipe's grid, set the same key), so taking a part
    out of the recipe gives its keys back to the base run."""
    recipe = sweep.get("recipe")
    check_keys(recipe, RECIPE_KEYS, f"{where}.recipe")
    parts = recipe.get("parts")
    if not isinstance(parts, dict) or not parts:
        raise LMError(
            f"{where}.recipe.parts must name at least one part and its overrides, "
            f"e.g. {{muon: {{optimizer.name: muon}}, wsd: {{schedule.name: wsd}}}}"
        )
    checked: dict[str, dict[str, Any]] = {}
    owner: dict[str, str] = {}
    for part, overrides in parts.items():
        check_name(part, f"{where}.recipe.parts")
        checked[part] = checked_overrides(overrides or {}, f"{where}.recipe.parts.{part}")
        if not checked[part]:
            raise LMError(
                f"{where}.recipe.parts.{part} changes nothing; give the keys the part sets, "
                f"e.g. {{model.ffn: relu2}}"
            )
        for key in checked[part]:
            if key in owner:
                raise LMError(
                    f"{where}.recipe.parts: {owner[key]!r} and {part!r} both set {key!r}; each key "
                    f"belongs to one part, so that the recipe minus a part is the recipe with "
                    f"exactly that part's keys back at the base run's values"
                )
            owner[key] = part
    for key in recipe.get("grid") or {}:
        if key in owner:
            raise LMError(
                f"{where}.recipe.grid sweeps {key!r}, which part {owner[key]!r} sets; "
                f"sweep it or set it in the part, not both"
            )
    return checked


def expand_race(sweep_name: str, sweep: dict, where: str) -> list[tuple[str, dict, str]]:
    """The members of a race, ``(run name, {dotted key: value}, variant)``, all sharing the
    base run's wall-clock budget:

    - ``RACE-baseline-<point>``: the base run at each point of ``grid`` (its LR sweep);
    - ``RACE-recipe-<point>``: the base run with every part, at each point of
      ``recipe.grid`` (the recipe's LR sweep);
    - ``RACE-minus-PART-<point>``: the recipe without PART, at each point of ``recipe.grid``.
      The pipeline trains those at the recipe's best point only (:func:`race_ablations`).
    """
    parts = race_parts(sweep, where)
    baseline = grid_points(grid_axes(sweep.get("grid") or {}, f"{where}.grid"))
    recipe = grid_points(grid_axes(sweep["recipe"].get("grid") or {}, f"{where}.recipe.grid"))
    members = [(_member_name(sweep_name, "baseline", s), p, "baseline") for s, p in baseline]
    everything = {k: v for overrides in parts.values() for k, v in overrides.items()}
    members += [
        (_member_name(sweep_name, "recipe", s), {**everything, **p}, "recipe") for s, p in recipe
    ]
    for part in parts:
        rest = {k: v for other, ov in parts.items() if other != part for k, v in ov.items()}
        members += [
            (_member_name(sweep_name, f"minus-{part}", s), {**rest, **p}, f"minus-{part}")
            for s, p in recipe
        ]
    return members


def race_role(cfg: dict, sweep_name: str, variant: str) -> dict[str, Any]:
    """What a race member is, as its config.json records it: ``{"role": "baseline" |
    "recipe" | "ablation", "without": PART or None, "parts": [every part], "grid": [the keys of
    its LR sweep]}``."""
    sweep = sweep_entry(cfg, sweep_name)
    parts = list(race_parts(sweep, f"sweeps.{sweep_name}"))
    grid = sweep.get("grid") if variant == "baseline" else sweep["recipe"].get("grid")
    role = {"role": variant, "without": None, "parts": parts, "grid": list(grid or {})}
    if variant not in ("baseline", "recipe"):
        role.update(role="ablation", without=variant.removeprefix("minus-"))
    return role


def race_lr_members(cfg: dict, sweep_name: str) -> list[str]:
    """The members of a race's two LR sweeps (baseline and recipe): what is trained before
    the best of each is known."""
    return [
        name
        for name, _, variant in expand_sweep(cfg, sweep_name)
        if variant in ("baseline", "recipe")
    ]


def race_ablations(cfg: dict, sweep_name: str, recipe_run: str) -> list[str]:
    """The recipe minus each part, at the point of ``recipe.grid`` of ``recipe_run`` (the
    recipe's best)."""
    members = {name: variant for name, _, variant in expand_sweep(cfg, sweep_name)}
    head = _member_name(sweep_name, "recipe")
    if members.get(recipe_run) != "recipe":
        raise LMError(
            f"{recipe_run!r} is not a recipe member of race {sweep_name!r}; its recipe members: "
            f"{', '.join(n for n, v in members.items() if v == 'recipe')}"
        )
    point = recipe_run[len(head) :]
    parts = race_parts(sweep_entry(cfg, sweep_name), f"sweeps.{sweep_name}")
    return [_member_name(sweep_name, f"minus-{part}") + point for part in parts]
