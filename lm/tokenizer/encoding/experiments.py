"""The CS336 ``tokenizer_experiments`` problem, as a report: ``report.md`` + ``report.json``.

For each dataset (a raw text file and the tokenizer trained on it):

(a) the compression ratio (bytes per token) of the dataset's own tokenizer on 10
    documents sampled from its text;
(b) the full matrix: every tokenizer on every dataset's sample (how much worse a
    tokenizer does on text it was not trained on);
(c) the measured throughput (bytes/s) of each tokenizer on its own text, and what that
    means for tokenizing the Pile (825 GB);
(d) the dtype used to store the ids (``uint16`` when the vocabulary fits, and why).

Documents are the pieces between ``<|endoftext|>`` separators. The sample is drawn by
reservoir sampling (seeded) over every document of the file, read in blocks, so a huge
file is never held in memory; ``max_bytes`` limits the scan to the file's first bytes.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from lm.errors import LMError
from lm.io import write_json, write_text
from lm.provenance import with_provenance
from lm.tokenizer.chunks import first_bad_utf8, utf8_error
from lm.tokenizer.encoding.dataset import choose_dtype
from lm.tokenizer.encoding.tokenizer import Tokenizer

PILE_BYTES = 825 * 10**9
EOT = "<|endoftext|>"


@dataclass
class Dataset:
    name: str
    text: Path
    tokenizer_dir: Path


def parse_dataset(spec: str) -> Dataset:
    """``NAME=RAWTEXT:TOKENIZER_DIR`` -> Dataset (the last ':' separates the two paths)."""
    name, eq, rest = spec.partition("=")
    text, colon, tok = rest.rpartition(":")
    if not eq or not colon or not name or not text or not tok:
        raise LMError(
            f"--dataset {spec!r}: expected NAME=RAWTEXT:TOKENIZER_DIR, "
            f"e.g. tinystories=data/ts/train.txt:results/ts/tokenizer"
        )
    return Dataset(name, Path(text), Path(tok))


def iter_documents(
    path: str | os.PathLike,
    delimiter: str = EOT,
    max_bytes: int | None = None,
    block: int = 1 << 20,
):
    """Yield the non-blank documents of a UTF-8 file, reading it in blocks."""
    p = Path(path)
    if not p.is_file():
        raise LMError(f"text file {p} does not exist")
    read = 0
    tail = ""
    with open(p, encoding="utf-8", newline="") as f:
        while max_bytes is None or read < max_bytes:
            try:
                chunk = f.read(block if max_bytes is None else min(block, max_bytes - read))
            except UnicodeDecodeError:  # the file's first bad byte, with its offset and line
                bad = first_bad_utf8(p)
                raise utf8_error(p, bad.offset, bad.reason) from None
            if not chunk:
                break
            read += len(chunk)
            parts = (tail + chunk).split(delimiter)
            tail = parts.pop()
            for doc in parts:
                if doc.strip():
                    yield doc
    if tail.strip() and (max_bytes is None or read < max_bytes):
        yield tail


def sample_documents(
    path, n: int = 10, seed: int = 0, max_bytes: int | None = None, delimiter: str = EOT
):
    """``n`` documents drawn uniformly (reservoir sampling, seeded) in file order, and the count seen."""
    rng = random.Random(seed)
    reservoir: list[tuple[int, str]] = []
    seen = 0
    for i, doc in enumerate(iter_documents(path, delimiter, max_bytes)):
        seen += 1
        if len(reservoir) < n:
            reservoir.append((i, doc))
        else:
            j = rng.randrange(i + 1)
            if j < n:
                reservoir[j] = (i, doc)
    reservoir.sort()
    return [d for _, d in reservoir], seen


def bytes_per_token(tokenizer, docs: list[str]) -> dict:
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    n_tokens = sum(len(tokenizer.encode(d)) for d in docs)
    return {
        "bytes": n_bytes,
        "tokens": n_tokens,
        "bytes_per_token": round(n_bytes / n_tokens, 4) if n_tokens else None,
    }


def measure_throughput(tokenizer_factory, path, max_bytes: int) -> dict:
    """Encode the first ``max_bytes`` of the file (cut at a line end) with a fresh tokenizer."""
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read(max_bytes)
        text += f.readline()
    tok = tokenizer_factory()
    n_bytes = len(text.encode("utf-8"))
    t0 = time.perf_counter()
    ids = tok.encode(text)
    seconds = max(time.perf_counter() - t0, 1e-9)
    rate = n_bytes / seconds
    pile_s = PILE_BYTES / rate if rate else None
    return {
        "bytes": n_bytes,
        "tokens": len(ids),
        "seconds": round(seconds, 4),
        "bytes_per_s": round(rate, 1),
        "pile_seconds": round(pile_s, 1) if pile_s else None,
        "pile_time": _human(pile_s) if pile_s else None,
    }


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def run_experiments(
    datasets: list[Dataset],
    out_dir: str | os.PathLike,
    n_docs: int = 10,
    seed: int = 0,
    special_tokens=(EOT,),
    sample_max_bytes: int | None = None,
    throughput_bytes: int = 4 << 20,
) -> dict:
    """Run (a)-(d) for ``datasets``; write ``out_dir/report.json`` and ``out_dir/report.md``."""
    if not datasets:
        raise LMError("give at least one --dataset NAME=RAWTEXT:TOKENIZER_DIR")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise LMError(f"dataset names must be unique, got {names}")
    special_tokens = list(special_tokens)
    tokenizers = {d.name: Tokenizer.from_dir(d.tokenizer_dir, special_tokens) for d in datasets}
    samples = {}
    for d in datasets:
        docs, seen = sample_documents(d.text, n_docs, seed, sample_max_bytes)
        if not docs:
            raise LMError(f"{d.text}: no documents to sample (the file is empty or blank)")
        samples[d.name] = (docs, seen)

    matrix = {t: {s: bytes_per_token(tokenizers[t], samples[s][0]) for s in names} for t in names}
    report: dict = {
        "sampling": {
            "method": "reservoir sampling (Algorithm R) over all non-blank documents"
            + (
                f" in the first {sample_max_bytes} characters"
                if sample_max_bytes
                else " of the file"
            ),
            "documents_per_dataset": n_docs,
            "seed": seed,
            "delimiter": EOT,
        },
        "datasets": {},
        "matrix_bytes_per_token": {
            t: {s: matrix[t][s]["bytes_per_token"] for s in names} for t in names
        },
        "throughput": {},
        "pile_bytes": PILE_BYTES,
    }
    for d in datasets:
        tok = tokenizers[d.name]
        dtype, why = choose_dtype(tok.vocab_size)
        report["datasets"][d.name] = {
            "text": str(d.text),
            "tokenizer": str(d.tokenizer_dir),
            "vocab_size": tok.vocab_size,
            "documents_seen": samples[d.name][1],
            "sample_documents": len(samples[d.name][0]),
            "own": matrix[d.name][d.name],
            "dtype": dtype.name,
            "dtype_reason": why,
        }
        report["throughput"][d.name] = measure_throughput(
            lambda d=d: Tokenizer.from_dir(d.tokenizer_dir, special_tokens),
            d.text,
            throughput_bytes,
        )
    out = Path(out_dir)
    report = with_provenance(report, "tokenizer-experiments")
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    return report


def render_markdown(r: dict) -> str:
    names = list(r["datasets"])
    lines = ["# Tokenizer experiments", ""]
    s = r["sampling"]
    lines += [
        f"Sample: {s['documents_per_dataset']} documents per dataset, {s['method']} "
        f"(seed {s['seed']}, documents separated by `{s['delimiter']}`).",
        "",
        "## (a) Compression ratio of each dataset's own tokenizer",
        "",
        "| dataset | vocab | sample bytes | tokens | bytes/token |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for n in names:
        d = r["datasets"][n]
        o = d["own"]
        lines.append(
            f"| {n} | {d['vocab_size']} | {o['bytes']} | {o['tokens']} | {o['bytes_per_token']} |"
        )
    lines += [
        "",
        "## (b) Every tokenizer on every dataset (bytes/token; rows: tokenizer, columns: text)",
        "",
        "| tokenizer \\ text | " + " | ".join(names) + " |",
        "| --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for t in names:
        row = r["matrix_bytes_per_token"][t]
        lines.append(f"| {t} | " + " | ".join(str(row[s]) for s in names) + " |")
    if len(names) > 1:
        lines += [
            "",
            "A tokenizer compresses text unlike its training text less well (fewer bytes per token off the diagonal).",
        ]
    lines += [
        "",
        "## (c) Throughput (one process, fresh tokenizer, first bytes of the text)",
        "",
        "| tokenizer | bytes | seconds | MB/s | time for the Pile (825 GB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for n in names:
        t = r["throughput"][n]
        lines.append(
            f"| {n} | {t['bytes']} | {t['seconds']} | {t['bytes_per_s'] / 1e6:.2f} | {t['pile_time']} |"
        )
    lines += [
        "",
        "With `lm encode --workers K` the time divides by about K (chunks are encoded in parallel processes).",
        "",
        "## (d) Token id dtype",
        "",
    ]
    for n in names:
        lines.append(f"- {n}: {r['datasets'][n]['dtype_reason']}.")
    lines.append("")
    return "\n".join(lines)
