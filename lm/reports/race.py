"""Race report: recipes trained under one wall-clock budget, side by side.

A race (a sweep with ``recipe:``, :func:`lm.training.grid.expand_race`) trains the baseline
at each learning rate of its grid and the full recipe at each point of its own grid; the
best of each (lowest whole-split validation loss in ``eval.json``, :func:`race_choice`) are
the race's baseline and recipe; the recipe minus each part is then trained at the recipe's
best point. :func:`race_report` writes into ``out``:

- ``report.md``: the headline (the recipe's bits/byte against the tuned baseline's), the
  table of the chosen members (validation loss and bits/byte at the budget, steps, tokens,
  wall-clock), each part's contribution (the recipe without it minus the full recipe: a
  positive number is what the part is worth), both LR sweeps, and the curves;
- ``curves.png``: validation loss against wall-clock for every member, and the
  contributions as bars (:func:`lm.reports.plots.plot_race`);
- ``summary.csv`` (one row per member) and ``report.json`` (the same numbers, unrounded).

Every member's losses come from its ``eval.json`` (``lm evaluate``: the whole validation
split, and bits per byte from its bytes per token), so they are the numbers at the budget.
The best point of each LR sweep is chosen on that same split.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from lm.errors import LMError
from lm.io import write_json, write_text
from lm.provenance import with_provenance
from lm.reports.comparison import format_value as _fmt

ROLES = ("baseline", "recipe", "ablation")


def race_of(config: dict) -> dict | None:
    """A run's race record (``config.json``'s ``sweep.race``), or None when it is not a
    race member."""
    return (config.get("sweep") or {}).get("race")


def _rows(run_dirs: list[str | os.PathLike]) -> tuple[list[dict], list[dict]]:
    """The members (:func:`lm.reports.sweep.load_run` with their ``eval.json``) and a row
    of numbers for each."""
    from lm.reports.sweep import load_run, run_eval

    runs = [load_run(d) for d in run_dirs]
    rows = []
    for run in runs:
        c, res, ev = run["config"], run["result"], run_eval(run["dir"])
        race = race_of(c)
        if race is None:
            raise LMError(
                f"{run['dir']} is not a member of a race (its config.json has no sweep.race); "
                f"give the race's run directories only"
            )
        wall = res.get("wallclock_s")
        rows.append(
            {
                "run": c.get("name") or res.get("run"),
                "race": (c.get("sweep") or {}).get("name"),
                "role": race["role"],
                "without": race.get("without"),
                "values": (c.get("sweep") or {}).get("values") or {},
                "grid": race.get("grid") or [],
                "status": res.get("status"),
                "budget_minutes": (c.get("training") or {}).get("max_wallclock_minutes"),
                "eval_loss": ev.get("loss"),
                "bits_per_byte": ev.get("bits_per_byte"),
                "bytes_per_token": ev.get("bytes_per_token"),
                "final_val_loss": res.get("final_val_loss"),
                "steps": res.get("steps"),
                "tokens": res.get("tokens"),
                "wallclock_s": wall,
                "tokens_per_s": res.get("tokens") / wall if wall and res.get("tokens") else None,
                "params": res.get("params"),
            }
        )
    names = {r["race"] for r in rows}
    if len(names) != 1:
        raise LMError(
            f"the runs belong to different races ({sorted(map(str, names))}); give one race's"
        )
    return runs, rows


def _finished(row: dict) -> bool:
    loss = row["eval_loss"]
    return row["status"] == "ok" and loss is not None and math.isfinite(loss)


def best_of(rows: list[dict], role: str) -> dict | None:
    """The member of ``role`` with the lowest whole-split validation loss (None when none
    finished)."""
    done = [r for r in rows if r["role"] == role and _finished(r)]
    return min(done, key=lambda r: r["eval_loss"]) if done else None


def race_choice(run_dirs: list[str | os.PathLike]) -> dict:
    """The best baseline and the best recipe of a race's LR sweeps: ``{"race", "baseline",
    "recipe", "losses": {run: eval loss}}``; an error when a role has no finished member."""
    _, rows = _rows(run_dirs)
    chosen = {}
    for role in ("baseline", "recipe"):
        best = best_of(rows, role)
        if best is None:
            tried = [r["run"] for r in rows if r["role"] == role]
            raise LMError(
                f"race {rows[0]['race']}: no {role} member finished with a validation loss "
                f"({', '.join(tried) or 'none given'}); widen its learning-rate grid towards "
                f"smaller rates, or look at their train.log"
            )
        chosen[role] = best["run"]
    losses = {r["run"]: r["eval_loss"] for r in rows}
    return {"race": rows[0]["race"], **chosen, "losses": losses}


def _point(row: dict, keys: list[str]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={_fmt(row['values'].get(k), '.4g')}" for k in keys)


def _contributions(recipe: dict, ablations: list[dict]) -> list[dict]:
    out = []
    for a in ablations:
        ok = _finished(a) and _finished(recipe)
        out.append(
            {
                "part": a["without"],
                "run": a["run"],
                "eval_loss": a["eval_loss"],
                "bits_per_byte": a["bits_per_byte"],
                "loss_contribution": a["eval_loss"] - recipe["eval_loss"] if ok else None,
                "bpb_contribution": (
                    a["bits_per_byte"] - recipe["bits_per_byte"]
                    if ok and a["bits_per_byte"] is not None and recipe["bits_per_byte"] is not None
                    else None
                ),
            }
        )
    return out


def race_report(
    run_dirs: list[str | os.PathLike], out: str | os.PathLike, title: str | None = None
) -> dict:
    """Write ``out/report.md``, ``curves.png``, ``summary.csv`` and ``report.json`` for a
    race's members; return the report's dictionary."""
    from lm.reports.plots import plot_race

    if not run_dirs:
        raise LMError("a race report needs its members' run directories (--runs DIR ...)")
    runs, rows = _rows(run_dirs)
    race = rows[0]["race"]
    title = title or race
    baseline, recipe = best_of(rows, "baseline"), best_of(rows, "recipe")
    if baseline is None or recipe is None:
        race_choice(run_dirs)  # raises, naming the role that has no finished member
    parts = list(race_of(runs[0]["config"])["parts"])
    ablations = sorted(
        (r for r in rows if r["role"] == "ablation"), key=lambda r: parts.index(r["without"])
    )
    missing = [p for p in parts if p not in {a["without"] for a in ablations}]
    contributions = _contributions(recipe, ablations)
    grids = {r["role"]: r["grid"] for r in rows}
    baseline_grid, recipe_grid = grids.get("baseline", []), grids.get("recipe", [])
    gain = None
    if baseline["bits_per_byte"] and recipe["bits_per_byte"] is not None:
        gain = 1 - recipe["bits_per_byte"] / baseline["bits_per_byte"]

    out = Path(out)
    columns = [
        "run",
        "role",
        "without",
        "status",
        "eval_loss",
        "bits_per_byte",
        "final_val_loss",
        "steps",
        "tokens",
        "wallclock_s",
        "tokens_per_s",
        "params",
        "budget_minutes",
    ]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    write_text(out / "summary.csv", buf.getvalue())

    chosen = {baseline["run"], recipe["run"]} | {a["run"] for a in ablations}
    plot_race(
        [
            {
                "label": (
                    "baseline (tuned)"
                    if r is baseline
                    else "recipe"
                    if r is recipe
                    else f"recipe − {r['without']}"
                    if r["role"] == "ablation"
                    else f"{r['role']} {_point(r, r['grid'])}"
                ),
                "records": run["records"],
                "chosen": r["run"] in chosen,
            }
            for r, run in zip(rows, runs, strict=True)
        ],
        contributions,
        out / "curves.png",
        title=f"{title}: {_fmt(rows[0]['budget_minutes'], 'g')} minutes each",
    )

    budget = rows[0]["budget_minutes"]
    lines = [f"# Race: {title}", ""]
    lines += [
        f"Every member trains for the same wall-clock budget, **{_fmt(budget, 'g')} minutes** "
        "(`training.max_wallclock_minutes`: the loop plans its steps from its measured speed "
        "and stops at the budget); the losses are its `eval.json` (the whole validation "
        "split) at the end. The tuned baseline is the best of the baseline's learning-rate "
        "sweep, the recipe the best of its own; the recipe minus each part ran at the "
        "recipe's best point.",
        "",
    ]
    if gain is not None:
        lines += [
            f"**The recipe reaches {recipe['bits_per_byte']:.4f} bits/byte against the tuned "
            f"baseline's {baseline['bits_per_byte']:.4f}: {100 * gain:.1f}% "
            f"{'lower' if gain >= 0 else 'higher'}** (validation loss "
            f"{recipe['eval_loss']:.4f} against {baseline['eval_loss']:.4f} nats/token).",
            "",
        ]
    shown = (
        ("member", None),
        ("eval_loss", "val loss (nats/token)"),
        ("bits_per_byte", "bits/byte"),
        ("steps", "steps"),
        ("tokens", "tokens"),
        ("tokens_per_s", "tokens/s"),
        ("wallclock_s", "wall-clock s"),
        ("status", "status"),
    )

    def table(members: list[tuple[str, dict]]) -> list[str]:
        head = ["member", *(h for k, h in shown[1:]), "run"]
        t = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
        for label, r in members:
            cells = [label]
            for k, _ in shown[1:]:
                fmt = ".1f" if k in ("wallclock_s",) else ",.0f" if k == "tokens_per_s" else ".4f"
                cells.append(_fmt(r[k], fmt))
            t.append("| " + " | ".join([*cells, f"`{r['run']}`"]) + " |")
        return t

    lines += ["## At the budget", ""]
    lines += table(
        [
            (f"baseline (tuned: {_point(baseline, baseline_grid)})", baseline),
            (f"recipe ({_point(recipe, recipe_grid)})", recipe),
            *((f"recipe − {a['without']}", a) for a in ablations),
        ]
    )
    lines += ["", "## What each part is worth", ""]
    lines += [
        "Contribution = the recipe without the part minus the full recipe, at the recipe's "
        "best point: positive is what the part gains (a lower loss with it), negative "
        "means the recipe did better without it within this budget.",
        "",
        "| part | recipe without it: bits/byte | contribution (bits/byte) | contribution (nats/token) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c in contributions:
        lines.append(
            f"| {c['part']} | {_fmt(c['bits_per_byte'])} | {_fmt(c['bpb_contribution'], '+.4f')} "
            f"| {_fmt(c['loss_contribution'], '+.4f')} |"
        )
    if missing:
        lines += ["", f"Not trained yet: the recipe without {', '.join(missing)}."]
    for role, keys in (("baseline", baseline_grid), ("recipe", recipe_grid)):
        members = [r for r in rows if r["role"] == role]
        best = baseline if role == "baseline" else recipe
        lines += ["", f"## The {role}'s learning-rate sweep", ""]
        lines += table(
            [
                ((f"**{_point(r, keys)}**" if r is best else _point(r, keys)) or r["run"], r)
                for r in members
            ]
        )
    lines += [
        "",
        "![validation loss against wall-clock; each part's contribution](curves.png)",
        "",
        "Per-member numbers: `summary.csv`; unrounded: `report.json`.",
        "",
    ]
    write_text(out / "report.md", "\n".join(lines))

    report = {
        "title": title,
        "race": race,
        "budget_minutes": budget,
        "baseline": baseline,
        "recipe": recipe,
        "bits_per_byte_gain": gain,
        "parts": parts,
        "contributions": contributions,
        "not_trained": missing,
        "runs": rows,
    }
    report = with_provenance(report, "sweep-report")
    write_json(out / "report.json", report)
    return report
