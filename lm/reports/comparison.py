"""Comparison report: evaluated runs of different datasets or tokenizers side by side.

``comparison_report(run_dirs, out, title)`` reads each run directory (``config.json``,
``result.json``, ``metrics.jsonl`` from ``lm train``; ``eval.json`` from ``lm evaluate``;
``samples.json`` from ``lm samples``) and writes into ``out``:

- ``report.md``: a table of final losses (the training loop's last sampled validation loss,
  and the whole-split evaluation in nats/token, perplexity, bytes/token and bits/byte), a
  paragraph generated from those numbers on why the losses per token differ and what the
  losses per byte say, the curves, and each run's samples;
- ``curves.png``: validation loss against training tokens and against wallclock, and bits
  per byte against tokens (:func:`lm.reports.plots.plot_comparison`);
- ``report.json``: the same numbers, as read (not rounded), and the paragraph.

A loss per token is a loss per unit of a tokenizer: a tokenizer that puts more text into a
token has fewer tokens to predict, each harder. Bits per byte (``lm.inference.evaluate``)
divide that out, so they are the figure that compares across tokenizers and datasets.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lm.errors import LMError
from lm.io import write_json, write_text
from lm.provenance import with_provenance
from lm.reports.plots import plot_comparison


def _read_json(path: Path, made_by: str):
    if not path.is_file():
        raise LMError(f"{path} does not exist; make it first ({made_by}) or drop the run")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise LMError(f"{path} is not valid JSON ({e}); make it again ({made_by})") from e


def load_evaluated_run(run_dir: str | os.PathLike) -> dict:
    """A trained run (:func:`lm.reports.sweep.load_run`) with its ``eval`` and ``samples``
    (None when the run has no samples.json)."""
    from lm.reports.sweep import load_run

    run = load_run(run_dir)
    d = Path(run_dir)
    run["eval"] = _read_json(d / "eval.json", f"lm evaluate --run {d} --out {d}/eval.json")
    samples = d / "samples.json"
    run["samples"] = _read_json(samples, "lm samples") if samples.is_file() else None
    return run


def _row(run: dict) -> dict:
    c, res, ev = run["config"], run["result"], run["eval"]
    return {
        "run": c.get("name") or res.get("run"),
        "dataset": c.get("dataset"),
        "vocab_size": (c.get("model") or {}).get("vocab_size"),
        "status": res.get("status"),
        "steps": res.get("steps"),
        "tokens": res.get("tokens"),
        "wallclock_s": res.get("wallclock_s"),
        "final_val_loss": res.get("final_val_loss"),
        "eval_loss": ev.get("loss"),
        "perplexity": ev.get("perplexity"),
        "bytes_per_token": ev.get("bytes_per_token"),
        "bits_per_byte": ev.get("bits_per_byte"),
        "eval_tokens": ev.get("tokens_predicted"),
        "dir": run["dir"],
    }


def _names(rows: list[dict]) -> str:
    names = [f"{r['run']}" for r in rows]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def explain(rows: list[dict]) -> str:
    """A paragraph, from the numbers of ``rows``, on why the losses per token differ and how
    the runs compare per byte."""
    scored = [r for r in rows if r["eval_loss"] is not None and r["bits_per_byte"] is not None]
    missing = [r for r in rows if r not in scored]
    note = ""
    if missing:
        note = (
            f" {_names(missing)} {'has' if len(missing) == 1 else 'have'} no evaluation in "
            "bits per byte (a diverged run, or a split without its stats from `lm encode`), "
            "so the comparison leaves them out."
        )
    if len(scored) < 2:
        return "Fewer than two runs have both a loss and bits per byte to compare." + note
    by_token = sorted(scored, key=lambda r: r["eval_loss"])
    by_byte = sorted(scored, key=lambda r: r["bits_per_byte"])
    lo, hi = by_token[0], by_token[-1]

    def who(r: dict) -> str:
        return f"{r['run']} ({r['dataset']}, {r['vocab_size']:,}-token vocabulary)"

    parts = [
        "Per token, the validation losses are "
        + ", ".join(f"{r['eval_loss']:.4f} nats for {who(r)}" for r in by_token)
        + "."
    ]
    bpts = {r["run"]: r["bytes_per_token"] for r in scored}
    if max(bpts.values()) / min(bpts.values()) - 1 < 0.005:
        parts.append(
            f"The tokenizers put the same amount of text into a token here "
            f"({lo['bytes_per_token']:.3f} bytes/token on the validation splits), so the losses "
            "per token compare directly, and bits per byte keep their order."
        )
    else:
        most = max(scored, key=lambda r: r["bytes_per_token"])
        least = min(scored, key=lambda r: r["bytes_per_token"])
        parts.append(
            "A token is not the same unit in each run: on its own validation text, "
            + ", ".join(
                f"{r['run']}'s tokenizer puts {r['bytes_per_token']:.3f} bytes into a token"
                for r in scored
            )
            + f", so a token of {most['run']} carries "
            f"{most['bytes_per_token'] / least['bytes_per_token']:.2f}x the text of one of "
            f"{least['run']} and is correspondingly harder to predict."
        )
    parts.append(
        "Divided by ln 2 and by bytes per token, the losses per byte of text are "
        + ", ".join(f"{r['bits_per_byte']:.4f} bits/byte for {r['run']}" for r in by_byte)
        + "."
    )
    token_ratio = hi["eval_loss"] / lo["eval_loss"] if lo["eval_loss"] > 0 else math.inf
    if [r["run"] for r in by_byte] == [r["run"] for r in by_token]:
        byte_ratio = (
            hi["bits_per_byte"] / lo["bits_per_byte"] if lo["bits_per_byte"] > 0 else math.inf
        )
        if abs(byte_ratio - token_ratio) < 0.005:
            trend = f"stays at {byte_ratio:.2f}x"
        else:
            how = "narrows" if byte_ratio < token_ratio else "widens"
            trend = f"{how} from {token_ratio:.2f}x per token to {byte_ratio:.2f}x per byte"
        parts.append(
            f"The order holds per byte: {lo['run']} is the better predicted, and the gap "
            f"{trend}"
            + (
                f", which is the difference in the data ({_datasets(scored)}) and the model's "
                "fit to it, not in the units."
                if len({r["dataset"] for r in scored}) > 1
                else "."
            )
        )
    else:
        parts.append(
            f"The order changes per byte: {by_byte[0]['run']} predicts its text best, "
            f"although {lo['run']} has the lowest loss per token; the per-token order reflects "
            "how much text each tokenizer puts into a token."
        )
    return " ".join(parts) + note


def _datasets(rows: list[dict]) -> str:
    return " vs ".join(dict.fromkeys(str(r["dataset"]) for r in rows))


def format_value(v, fmt: str = ".4f") -> str:
    """A table cell: thousands separators for ints, ``fmt`` for floats, a dash for None."""
    if v is None:
        return "—"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return format(v, fmt) if math.isfinite(v) else str(v)


COLUMNS = (
    ("run", "run", None),
    ("dataset", "dataset", None),
    ("vocab_size", "vocab", None),
    ("status", "status", None),
    ("steps", "steps", None),
    ("tokens", "training tokens", None),
    ("wallclock_s", "wallclock s", ".1f"),
    ("final_val_loss", "last val loss (training)", ".4f"),
    ("eval_loss", "eval loss (nats/token)", ".4f"),
    ("perplexity", "perplexity", ".3f"),
    ("bytes_per_token", "bytes/token", ".4f"),
    ("bits_per_byte", "bits/byte", ".4f"),
)


def _samples_md(run: dict) -> list[str]:
    lines = [f"### {_row(run)['run']}", ""]
    s = run["samples"]
    if not s or not s.get("samples"):
        note = (s or {}).get("note") or "no samples.json in the run directory"
        return lines + [note, ""]
    st = s.get("settings") or {}
    lines += [
        f"Temperature {st.get('temperature')}, top-p {st.get('top_p')}, at most "
        f"{st.get('max_new_tokens')} new tokens, seed {st.get('seed')} "
        f"([samples.md]({os.path.relpath(Path(run['dir']) / 'samples.md', run['out'])})).",
        "",
    ]
    for sample in s["samples"]:
        text = sample["prompt"] + sample["completion"]
        fence = "````" if "```" in text else "```"
        lines += [fence, text, fence, ""]
    return lines


def comparison_report(
    run_dirs: list[str | os.PathLike], out: str | os.PathLike, title: str | None = None
) -> dict:
    """Write ``out/report.md``, ``out/curves.png`` and ``out/report.json`` comparing the
    evaluated runs ``run_dirs``; return the report's dictionary."""
    if len(run_dirs) < 2:
        raise LMError(f"a comparison needs at least two runs, got {len(run_dirs)} (--runs DIR DIR)")
    out = Path(out)
    runs = [load_evaluated_run(d) for d in run_dirs]
    for run in runs:
        run["out"] = out
    rows = [_row(r) for r in runs]
    names = [r["run"] for r in rows]
    if len(set(names)) != len(names):
        raise LMError(f"a run is named twice in the comparison: {names}")
    title = title or " vs ".join(names)
    paragraph = explain(rows)

    plot_comparison(
        [
            {
                "label": f"{row['run']} ({row['dataset']})",
                "records": run["records"],
                "bytes_per_token": row["bytes_per_token"],
            }
            for row, run in zip(rows, runs, strict=True)
        ],
        out / "curves.png",
        title=title,
    )
    lines = [
        f"# Comparison: {title}",
        "",
        f"{len(rows)} runs, each evaluated over its whole validation split (`eval.json`). "
        "Bits per byte = (nats/token) / ln 2 / (bytes/token), with bytes/token the split's "
        "UTF-8 bytes (separators included) over its tokens, as `lm encode` counted them.",
        "",
        "| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for r in rows:
        lines.append(
            "| " + " | ".join(format_value(r[k], f or ".4f") for k, _, f in COLUMNS) + " |"
        )
    lines += [
        "",
        "## Why the losses differ",
        "",
        paragraph,
        "",
        "![validation loss against tokens and wallclock, and bits per byte](curves.png)",
        "",
        "## Samples",
        "",
    ]
    for run in runs:
        lines += _samples_md(run)
    write_text(out / "report.md", "\n".join(lines))
    report = {"title": title, "runs": rows, "explanation": paragraph, "curves": "curves.png"}
    report = with_provenance(report, "compare-runs")
    write_json(out / "report.json", report)
    return report
