"""An index of what the pipeline produced: ``results/README.md``.

``write_index(results_dir, out)`` scans ``results_dir`` and lists every artifact people
look at, with a link relative to ``out`` and a one-line summary read from the artifact's
own JSON. Nothing is hard-coded about dataset, run or sweep names: directories are
recognised by what they hold.

==============================  ==========================================================
a directory holding             is indexed as
==============================  ==========================================================
``config.json`` + ``result.json``  a training run: result, eval, samples, curves
``summary.csv`` + ``report.md``    a sweep: report, curves, summary
``tokenizer/vocab.json``           a dataset's tokenizer (report.md, stats.json)
``tokens/*.stats.json``            a dataset's encoded splits
``raw/*.stats.json``               a dataset's raw text splits
``report.json`` with lr ``runs``   the learning-rate toy
``report.json`` with throughput    the tokenizer experiments
``report.json`` with explanation   a comparison of runs (lm compare-runs)
``transformer.md``/``adamw.md``    the accounting reports
==============================  ==========================================================

plus ``writeup.md`` (the CS336 writeup), ``report.html`` (Snakemake's report) and any
other Markdown or HTML file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

from lm.errors import LMError
from lm.io import write_text

SECTIONS = (
    "Report",
    "Datasets",
    "Tokenizer experiments",
    "Accounting",
    "Runs",
    "Sweeps",
    "Comparisons",
    "Learning-rate toy",
    "Other",
)
SKIP_DIRS = {"checkpoints", "logs", "__pycache__"}


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _num(x, fmt: str = ".4f") -> str:
    return format(x, fmt) if isinstance(x, int | float) else "n/a"


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "n/a"


def _describe_result(r: dict | None) -> str:
    if r is None:
        return "unreadable"
    if r.get("status") == "diverged":
        reason = f" ({r['diverged_reason']})" if r.get("diverged_reason") else ""
        return f"diverged at step {r.get('diverged_step')}{reason}"
    return (
        f"{r.get('status', '?')}, {_count(r.get('steps'))} steps, "
        f"final val loss {_num(r.get('final_val_loss'))}, best {_num(r.get('best_val_loss'))}"
    )


def _describe_eval(e: dict | None) -> str:
    if e is None:
        return "unreadable"
    if e.get("perplexity") is None:
        return f"no perplexity: {e.get('note') or 'loss is null'}"
    bits = e.get("bits_per_byte")
    return (
        f"perplexity {_num(e['perplexity'], '.3f')} (loss {_num(e.get('loss'))} nats/token"
        + (f", {_num(bits)} bits/byte" if bits is not None else "")
        + f" over {_count(e.get('tokens_predicted'))} tokens)"
    )


def _describe_samples(run: Path) -> str:
    s = _json(run / "samples.json")
    if s is None:
        return "generated samples"
    if s.get("note") and not s.get("samples"):
        return s["note"]
    st = s.get("settings") or {}
    return f"{len(s.get('samples') or [])} samples (temperature {st.get('temperature')}, top-p {st.get('top_p')})"


def _run_entries(d: Path) -> list[tuple[Path, str]]:
    out = [(d / "result.json", _describe_result(_json(d / "result.json")))]
    if (d / "eval.json").is_file():
        out.append((d / "eval.json", _describe_eval(_json(d / "eval.json"))))
    if (d / "samples.md").is_file():
        out.append((d / "samples.md", _describe_samples(d)))
    if (d / "curves.png").is_file():
        out.append((d / "curves.png", "train/val loss curves"))
    return out + _hf_entries(d)


def _hf_entries(d: Path) -> list[tuple[Path, str]]:
    """The Hugging Face export under ``d/hf/`` (lm export-hf), linked by its model card."""
    card = d / "hf" / "README.md"
    if not card.is_file():
        return []
    title = card.read_text(encoding="utf-8").partition("\n")[0].lstrip("# ").strip()
    dtype = (_json(d / "hf" / "config.json") or {}).get("dtype")
    return [(card, f"{title} for transformers (LlamaForCausalLM, {dtype})")]


def _sweep_entries(d: Path) -> list[tuple[Path, str]]:
    rep = _json(d / "report.json") or {}
    runs = rep.get("runs")
    desc = f"{len(runs)} runs" if isinstance(runs, list) else "sweep report"
    best = rep.get("best")
    if isinstance(best, dict) and best.get("run"):
        desc += f", best {best['run']} (val loss {_num(best.get('best_val_loss'))})"
    diverged = rep.get("diverged")
    if isinstance(diverged, list) and diverged:
        desc += f", {len(diverged)} diverged"
    out = [(d / "report.md", desc)]
    if (d / "curves.png").is_file():
        out.append((d / "curves.png", "loss curves of every run"))
    out.append((d / "summary.csv", "one row per run"))
    return out + _hf_entries(d)


def _comparison_entry(d: Path, runs: list) -> tuple[Path, str]:
    """A comparison report (lm compare-runs): each run's loss per token and per byte."""
    desc = "; ".join(
        f"{r.get('run')} ({r.get('dataset')}): {_num(r.get('eval_loss'))} nats/token, "
        f"{_num(r.get('bits_per_byte'))} bits/byte"
        for r in runs
        if isinstance(r, dict)
    )
    return d / "report.md", desc


def _tokenizer_entry(d: Path) -> tuple[Path, str]:
    stats = _json(d / "stats.json") or {}
    desc = f"vocab {_count(stats.get('vocab_size'))} ids, {_count(stats.get('merges'))} merges"
    if stats.get("special_tokens"):
        desc += ", special tokens " + " ".join(f"`{s}`" for s in stats["special_tokens"])
    target = d / "report.md" if (d / "report.md").is_file() else d / "vocab.json"
    return target, "tokenizer: " + desc


def _split_entries(d: Path, kind: str) -> list[tuple[Path, str]]:
    out = []
    for f in sorted(d.glob("*.stats.json")):
        split = f.name.removesuffix(".stats.json")
        s = _json(f) or {}
        if kind == "tokens":
            desc = (
                f"{split} tokens: {_count(s.get('tokens'))} tokens, {s.get('dtype', '?')}, "
                f"{_num(s.get('bytes_per_token'), '.2f')} bytes/token"
            )
        else:
            mb = s.get("bytes")
            desc = (
                f"{split} text: {_num(mb / 1e6 if isinstance(mb, int) else None, '.1f')} MB, "
                f"{_count(s.get('documents'))} documents"
            )
        out.append((f, desc))
    return out


def collect(results_dir: str | os.PathLike) -> list[dict]:
    """Every indexed artifact under ``results_dir``: dicts with ``section``, ``group``
    (a dataset, run or sweep name, or None), ``path`` and ``description``."""
    root = Path(results_dir)
    if not root.is_dir():
        raise LMError(f"results directory {root} does not exist; run the pipeline first")
    entries: list[dict] = []
    seen: set[Path] = set()

    def add(section: str, group: str | None, path: Path, desc: str) -> None:
        seen.add(path)
        entries.append({"section": section, "group": group, "path": path, "description": desc})

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and n not in SKIP_DIRS)
        d = Path(dirpath)
        files = set(filenames)
        if {"config.json", "result.json"} <= files:
            for path, desc in _run_entries(d):
                add("Runs", d.name, path, desc)
            dirnames[:] = []
        elif {"summary.csv", "report.md"} <= files:
            for path, desc in _sweep_entries(d):
                add("Sweeps", d.name, path, desc)
        elif d.name == "tokenizer" and "vocab.json" in files:
            add("Datasets", d.parent.name, *_tokenizer_entry(d))
        elif d.name in ("tokens", "raw") and d != root:
            for path, desc in _split_entries(d, d.name):
                add("Datasets", d.parent.name, path, desc)
        elif "report.json" in files and "report.md" in files:
            rep = _json(d / "report.json") or {}
            runs = rep.get("runs")
            if (
                isinstance(runs, list)
                and runs
                and all(isinstance(r, dict) and "lr" in r for r in runs)
            ):
                outcomes = ", ".join(f"lr {r['lr']:g}: {r.get('outcome', '?')}" for r in runs)
                add("Learning-rate toy", None, d / "report.md", outcomes)
                if (d / "curves.png").is_file():
                    add("Learning-rate toy", None, d / "curves.png", "loss per iteration")
            elif "explanation" in rep and isinstance(runs, list):
                add("Comparisons", d.name, *_comparison_entry(d, runs))
                if (d / "curves.png").is_file():
                    add("Comparisons", d.name, d / "curves.png", "loss vs tokens, wallclock, bytes")
            elif "throughput" in rep or "tokenizer_experiments" in d.parts:
                names = ", ".join(rep.get("datasets") or {}) or d.name
                add(
                    "Tokenizer experiments",
                    d.name,
                    d / "report.md",
                    f"compression, throughput: {names}",
                )
        for name in ("transformer.md", "adamw.md"):
            if name in files and d / name not in seen:
                what = {
                    "transformer.md": "parameters, memory and forward FLOPs of the model presets",
                    "adamw.md": "AdamW training memory, FLOPs and time budget",
                }[name]
                add("Accounting", None, d / name, what)
        for name in sorted(files):
            path = d / name
            if path in seen or name.startswith("."):
                continue
            if name == "writeup.md" and d == root:
                add(
                    "Report",
                    None,
                    path,
                    "the CS336 writeup: every problem answered from these files",
                )
            elif name == "report.html" and d == root:
                add("Report", None, path, "Snakemake's HTML report: every table, curve and sample")
            elif name.endswith((".md", ".html")) and not (d == root and name == "README.md"):
                add("Other", None, path, "")
    return entries


def render(entries: list[dict], out: str | os.PathLike) -> str:
    """The Markdown index of ``entries``, links relative to ``out``'s directory."""
    base = Path(out).parent

    def link(path: Path) -> str:
        rel = os.path.relpath(path, base).replace(os.sep, "/")
        return f"[{rel}]({quote(rel)})"

    lines = [
        "# Results",
        "",
        "What the pipeline has produced so far, generated by `lm results-index` from the files "
        "present (links are relative to this file).",
    ]
    for section in SECTIONS:
        items = [e for e in entries if e["section"] == section]
        items.sort(key=lambda e: e["path"].name != "writeup.md")  # the writeup first
        if not items:
            continue
        lines += ["", f"## {section}", ""]
        group = None
        for e in items:
            if e["group"] is not None and e["group"] != group:
                group = e["group"]
                lines.append(f"- **{group}**")
            indent = "  " if e["group"] is not None else ""
            desc = f": {e['description']}" if e["description"] else ""
            lines.append(f"{indent}- {link(e['path'])}{desc}")
    if not entries:
        lines += ["", "Nothing yet."]
    return "\n".join(lines) + "\n"


def write_index(results_dir: str | os.PathLike, out: str | os.PathLike) -> list[dict]:
    """Scan ``results_dir`` and write the index to ``out`` (atomically); return the entries."""
    entries = collect(results_dir)
    out_path = Path(out)
    entries = [e for e in entries if e["path"].resolve() != out_path.resolve()]
    write_text(out_path, render(entries, out_path))
    return entries
