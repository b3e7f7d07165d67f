"""Sweep report: finished runs side by side (report.md, report.json, curves.png, summary.csv)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from lm.errors import LMError
from lm.io import write_json, write_text
from lm.provenance import flatten, with_provenance

# Keys that differ between runs without being what the sweep varies.
NOT_SWEPT = (
    "name",
    "description",
    "sweep",
    "resources",
    "wandb",
    "tensorboard",
    "threads",
    "training.device",
    "model.preset",
)


def load_run(run_dir: str | os.PathLike) -> dict:
    """config.json, result.json and metrics.jsonl of a run directory written by ``lm train``."""
    run_dir = Path(run_dir)
    files = {name: run_dir / name for name in ("config.json", "result.json", "metrics.jsonl")}
    for name, path in files.items():
        if not path.is_file():
            raise LMError(
                f"run directory {run_dir} has no {name}; train it first (lm train --out {run_dir} ...) or drop it from --runs"
            )
    try:
        config = json.loads(files["config.json"].read_text())
        result = json.loads(files["result.json"].read_text())
        records = [
            json.loads(line)
            for line in files["metrics.jsonl"].read_text().splitlines()
            if line.strip()
        ]
    except json.JSONDecodeError as e:
        raise LMError(
            f"run directory {run_dir}: a file is not valid JSON ({e}); re-run lm train on it"
        ) from e
    return {"dir": str(run_dir), "config": config, "result": result, "records": records}


def run_eval(run_dir: str | os.PathLike) -> dict:
    """The run's ``eval.json`` (``lm evaluate``: the whole-split loss in nats/token and bits
    per byte), or {} when it has none."""
    path = Path(run_dir) / "eval.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LMError(f"{path} is not valid JSON ({e}); re-run lm evaluate on the run") from e


def swept_keys(configs: list[dict]) -> list[str]:
    """The dotted keys the runs were swept over: their sweep's grid, else whatever differs."""
    keys: list[str] = []
    if configs and all((c.get("sweep") or {}).get("values") is not None for c in configs):
        for c in configs:
            for k in c["sweep"]["values"]:
                if k not in keys:
                    keys.append(k)
        if any(c["sweep"].get("variant") for c in configs):
            keys.insert(0, "variant")
        return keys
    flats = [flatten(c) for c in configs]
    for k in flats[0] if flats else []:
        if any(k == n or k.startswith(n + ".") for n in NOT_SWEPT):
            continue
        if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1:
            keys.append(k)
    return keys


def _value(config: dict, key: str):
    if key == "variant":
        return (config.get("sweep") or {}).get("variant")
    node = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def sweep_report(
    run_dirs: list[str | os.PathLike], out: str | os.PathLike, title: str | None = None
) -> dict:
    """Compare runs: one row each in summary.csv, all curves on one plot, a markdown report.
    A race's members get the race's report (:func:`lm.reports.race.race_report`)."""
    from lm.reports.plots import plot_sweep
    from lm.reports.race import race_of, race_report

    if not run_dirs:
        raise LMError("sweep-report needs at least one run directory (--runs DIR ...)")
    runs = [load_run(d) for d in run_dirs]
    if all(race_of(r["config"]) for r in runs):
        return race_report(run_dirs, out, title=title)
    configs = [r["config"] for r in runs]
    keys = swept_keys(configs)
    sweep_names = sorted({(c.get("sweep") or {}).get("name") for c in configs} - {None})
    title = title or (", ".join(sweep_names) if sweep_names else "runs")

    rows = []
    for run in runs:
        c, res, ev = run["config"], run["result"], run_eval(run["dir"])
        row = {"run": c.get("name") or res.get("run")}
        for k in keys:
            row[k] = _value(c, k)
        row.update(
            status=res.get("status"),
            diverged_step=res.get("diverged_step"),
            final_val_loss=res.get("final_val_loss"),
            best_val_loss=res.get("best_val_loss"),
            best_val_step=res.get("best_val_step"),
            final_train_loss=res.get("final_train_loss"),
            eval_loss=ev.get("loss"),
            bits_per_byte=ev.get("bits_per_byte"),
            steps=res.get("steps"),
            tokens=res.get("tokens"),
            wallclock_s=res.get("wallclock_s"),
            params=res.get("params"),
        )
        rows.append(row)
    numeric = bool(keys) and all(
        isinstance(r[k], (int, float)) and not isinstance(r[k], bool) for r in rows for k in keys
    )
    if numeric:  # grid order, whatever order the directories came in
        order = sorted(range(len(rows)), key=lambda i: tuple(rows[i][k] for k in keys))
        rows, runs = [rows[i] for i in order], [runs[i] for i in order]
    ok = [r for r in rows if r["status"] == "ok" and r["best_val_loss"] is not None]
    best = min(ok, key=lambda r: r["best_val_loss"]) if ok else None
    diverged = [r for r in rows if r["status"] == "diverged"]

    out = Path(out)
    columns = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    write_text(out / "summary.csv", buf.getvalue())

    def label(run_row: dict) -> str:
        parts = [f"{k.split('.')[-1]}={_fmt(run_row[k])}" for k in keys]
        return ", ".join(parts) if parts else run_row["run"]

    plot_sweep(
        [
            {
                "label": label(row),
                "records": run["records"],
                "status": row["status"],
                "diverged_step": row["diverged_step"],
                "best_val_loss": row["best_val_loss"],
                "value": row[keys[0]] if numeric and len(keys) == 1 else None,
            }
            for row, run in zip(rows, runs, strict=True)
        ],
        out / "curves.png",
        title=title,
        swept=keys[0] if numeric and len(keys) == 1 else None,
    )

    shown = [
        "run",
        *keys,
        "status",
        "final_val_loss",
        "best_val_loss",
        "final_train_loss",
        "eval_loss",
        "bits_per_byte",
        "steps",
        "tokens",
        "wallclock_s",
    ]
    lines = [f"# Sweep: {title}", ""]
    if keys:
        lines += [f"Swept: {', '.join(f'`{k}`' for k in keys)}. {len(rows)} runs.", ""]
    lines += ["| " + " | ".join(shown) + " |", "| " + " | ".join("---" for _ in shown) + " |"]
    for r in rows:
        cells = []
        for k in shown:
            v = r[k]
            text = _fmt(v)
            if k == "status" and v == "diverged":
                text = f"diverged at step {r['diverged_step']}"
            if r is best and k in ("run", "best_val_loss"):
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if best:
        lines.append(
            f"Best: **{best['run']}** ({label(best)}), validation loss {best['best_val_loss']:.4f} at step {best['best_val_step']}."
        )
    else:
        lines.append("No run finished without diverging.")
    if diverged:
        lines += ["", "Diverged (ended early, marked x on the plot):", ""]
        for r in diverged:
            reason = next(
                run["result"].get("diverged_reason")
                for run in runs
                if (run["config"].get("name") or run["result"].get("run")) == r["run"]
            )
            lines.append(f"- {r['run']} ({label(r)}): step {r['diverged_step']} — {reason}")
    lines += [
        "",
        "![loss curves, log scale](curves.png)",
        "",
        "eval_loss: the whole validation split (`eval.json`, nats/token); bits_per_byte: the "
        "same loss per byte of text, eval_loss / ln 2 / (bytes/token of the split), comparable "
        "across tokenizers. Per-run numbers: `summary.csv`.",
        "",
    ]
    write_text(out / "report.md", "\n".join(lines))

    report = {
        "title": title,
        "swept": keys,
        "runs": rows,
        "best": best,
        "diverged": [r["run"] for r in diverged],
    }
    report = with_provenance(report, "sweep-report")
    write_json(out / "report.json", report)
    return report
