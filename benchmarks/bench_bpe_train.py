"""Benchmark: BPE training time and memory, ``lm`` against ``gigatoken``, ``rustbpe`` and HF ``tokenizers``.

Each trainer runs in its own subprocess, on the same corpus, the same number of cores,
one after the other (and round-robin when repeated, so that load from other programs hits
all of them alike). Reported: training wall time (best of ``--repeat``, measured inside
the subprocess around the training call, so interpreter start-up and imports are left
out for everyone), ``lm``'s split into pre-tokenization and merging, and peak resident
memory (``ru_maxrss``) of the process, and for ``lm`` also of its largest worker process.

    python benchmarks/bench_bpe_train.py                      # tinystories 10K + web 32K + doubling
    python benchmarks/bench_bpe_train.py --quick              # 5 MB of web, a minute or less

The peers, configured like ``lm``:

- HF ``tokenizers``: ``BpeTrainer(vocab_size, special_tokens=["<|endoftext|>"],
  initial_alphabet=ByteLevel.alphabet())``, pre-tokenizer ``Split(GPT-2 pattern, isolated)``
  then ``ByteLevel(use_regex=False)``; fed the documents between special tokens (HF would
  otherwise pre-tokenize the special token's text), in batches, from a Python generator.
- ``rustbpe``: ``Tokenizer().train_from_iterator(documents, vocab_size - 1, pattern=GPT-2)``
  (it has no special tokens, so one fewer merge is asked of it is the same vocabulary size).
- ``gigatoken``: ``train_bpe(TextFileSource([path], separator="<|endoftext|>"), vocab_size,
  ["<|endoftext|>"])``: it reads the file itself and splits it on the special token, as ``lm`` does.

The peers use ``RAYON_NUM_THREADS=--workers`` threads; ``lm`` uses ``--workers`` processes.
Prints Markdown tables and writes the numbers to ``benchmarks/out/bench_bpe_train.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPECIAL = "<|endoftext|>"
TRAINERS = ["lm", "gigatoken", "rustbpe", "hf"]
# also accepted in --trainers: "lm-python", lm with its pure-Python engine (LM_NATIVE=0)
HEAPS_EXPONENT = 0.58  # distinct ~ total**0.58 pre-tokens, measured on web/train.txt
# The data folder: --data, else $LM_BENCH_DATA, else shared/data beside the repository.
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"


# ---------------------------------------------------------------- child side


def documents(path: str, block: int = 1 << 20):
    """The text between special tokens, streamed (for the peers, which cannot split on it)."""
    carry = ""
    with open(path, encoding="utf-8", newline="") as f:
        while True:
            text = f.read(block)
            if not text:
                break
            parts = (carry + text).split(SPECIAL)
            carry = parts.pop()
            yield from parts
    if carry:
        yield carry


def batches(it, n: int = 256):
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def child(trainer: str, path: str, vocab_size: int, workers: int) -> dict:
    import resource

    out: dict = {}
    if trainer in ("lm", "lm-python"):
        from lm.tokenizer.training.bpe import train_bpe_with_stats

        t0 = time.perf_counter()
        vocab, merges, stats = train_bpe_with_stats(path, vocab_size, [SPECIAL], workers=workers)
        out["seconds"] = time.perf_counter() - t0
        out["pretokenize_seconds"] = stats["pretokenize_seconds"]
        out["merge_seconds"] = stats["merge_seconds"]
        out["engine"] = stats["engine"]
        out["distinct_pretokens"] = stats["distinct_pretokens"]
        out["pretokens"] = stats["pretokens"]
        out["merges"] = len(merges)
        out["vocab_size"] = len(vocab)
    elif trainer == "hf":
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        t0 = time.perf_counter()
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        trainer_ = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[SPECIAL],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(batches(documents(path)), trainer_)
        out["seconds"] = time.perf_counter() - t0
        out["vocab_size"] = tok.get_vocab_size()
        out["merges"] = out["vocab_size"] - 257
    elif trainer == "gigatoken":
        import gigatoken

        t0 = time.perf_counter()
        source = gigatoken.TextFileSource([path], separator=SPECIAL)
        vocab, merges = gigatoken.train_bpe(source, vocab_size, [SPECIAL])
        out["seconds"] = time.perf_counter() - t0
        out["vocab_size"] = len(vocab)
        out["merges"] = len(merges)
    elif trainer == "rustbpe":
        import rustbpe

        t0 = time.perf_counter()
        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(documents(path), vocab_size - 1, pattern=GPT2_PATTERN)
        out["seconds"] = time.perf_counter() - t0
        out["vocab_size"] = tok.vocab_size + 1
        out["merges"] = tok.vocab_size - 256
    else:
        raise SystemExit(f"unknown trainer {trainer}")
    kib = 1024 if sys.platform != "darwin" else 1024 * 1024
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib
    out["peak_rss_workers_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib
    return out


# ---------------------------------------------------------------- parent side


def run_child(trainer: str, path: Path, vocab_size: int, workers: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(workers), TOKENIZERS_PARALLELISM="true")
    env["LM_NATIVE"] = "0" if trainer == "lm-python" else env.get("LM_NATIVE", "")
    cmd = [sys.executable, __file__, "--child", trainer, str(path), str(vocab_size), str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{trainer} failed on {path}:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_of(trainers, path, vocab_size, workers, repeat) -> dict[str, dict]:
    runs: dict[str, list[dict]] = {t: [] for t in trainers}
    for _ in range(repeat):
        for t in trainers:
            r = run_child(t, path, vocab_size, workers)
            print(
                f"  {t:8s} {path.name:24s} {r['seconds']:7.2f} s  {r['peak_rss_mb']:6.0f} MiB",
                file=sys.stderr,
            )
            runs[t].append(r)
    best = {}
    for t, rs in runs.items():
        b = dict(min(rs, key=lambda r: r["seconds"]))
        b["all_seconds"] = [round(r["seconds"], 3) for r in rs]
        best[t] = b
    return best


def concat(src: Path, times: int, dst: Path) -> Path:
    with open(dst, "wb") as out:
        for _ in range(times):
            with open(src, "rb") as f:
                while block := f.read(1 << 24):
                    out.write(block)
    return dst


def web_like(src: Path, size: int, dst: Path, exponent: float = HEAPS_EXPONENT) -> Path:
    """A ``size``-byte corpus grown from ``src`` whose distinct pre-tokens grow as in real web
    text: distinct ~ D0 * (bytes / bytes0) ** exponent (Heaps' law; ``exponent`` 0.58 was
    measured on web/train.txt), not flat as in plain copies.

    Copy 0 is ``src``; each further copy of ``src`` has just enough word occurrences mutated
    into new words (a unique suffix: a fresh, mostly once-seen pre-token each, like the names,
    typos and identifiers that make real web text's vocabulary grow) to bring the expected
    distinct count up to the law at the end of that copy. Deterministic."""
    import re

    data = src.read_bytes()
    n0 = len(data)
    d0 = _distinct_estimate(data)
    word = re.compile(rb"[a-z]{4,}")
    letters = b"abcdefghijklmnopqrstuvwxyz"
    counter = 0
    written = 0
    with open(dst, "wb") as out:
        copy = 0
        while written < size:
            if copy == 0:
                block = data
            else:
                grow = d0 * (((copy + 1) / copy) ** exponent - 1) * (copy**exponent)
                m = max(1, int(grow))
                stride = n0 // m
                parts, prev = [], 0
                for k in range(m):
                    hit = word.search(data, max(prev, k * stride))
                    if hit is None:
                        break
                    counter += 1
                    c, suffix = counter, bytearray(b"q")
                    while c:
                        c, r = divmod(c, 26)
                        suffix.append(letters[r])
                    parts += [data[prev : hit.end()], bytes(suffix)]
                    prev = hit.end()
                parts.append(data[prev:])
                block = b"".join(parts)
            block = block[: size - written]
            if written + len(block) >= size:  # end at a line end
                cut = block.rfind(b"\n") + 1
                block = block[: cut or len(block)]
                written = size
            else:
                written += len(block)
            out.write(block)
            copy += 1
    return dst


def _distinct_estimate(data: bytes) -> int:
    """Distinct pre-tokens of ``data`` (with lm's counter)."""
    import tempfile as _tf

    from lm.tokenizer.pretokenize import count_pretokens

    with _tf.NamedTemporaryFile(suffix=".txt") as f:
        f.write(data)
        f.flush()
        return len(count_pretokens(f.name, [SPECIAL], workers=os.cpu_count() or 1).counts)


def fmt_mb(r: dict) -> str:
    s = f"{r['peak_rss_mb']:.0f}"
    if r.get("peak_rss_workers_mb"):
        s += f" (+ workers {r['peak_rss_workers_mb']:.0f} each)"
    return s


def add_data_argument(ap: argparse.ArgumentParser) -> None:
    """The ``--data`` option of the benchmarks that read the corpora (see :func:`data_dir`)."""
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"folder with tinystories/ and web/ (default: $LM_BENCH_DATA, else {DEFAULT_DATA})",
    )


def data_dir(arg: Path | None) -> Path:
    """The benchmark data folder (``--data``, else ``$LM_BENCH_DATA``, else the default);
    exits with a clear message if it lacks the corpora."""
    data = arg or Path(os.environ.get("LM_BENCH_DATA") or DEFAULT_DATA)
    needed = [data / "tinystories" / "train.txt", data / "web" / "train.txt"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        sys.exit(
            f"benchmark data not found: {', '.join(missing)}; pass --data DIR or set "
            f"LM_BENCH_DATA to a folder holding tinystories/train.txt and web/train.txt"
        )
    return data


OWT_BYTES = 11.9e9
OWT_DISTINCT = 6.2e6  # 278,605 distinct at 54.8 MB extrapolated with exponent 0.58
OWT_CORES = 8


def extrapolate(results: list[dict], workers: int) -> list[str]:
    """OpenWebText (11.9 GB, ~6.2 M distinct pre-tokens) on 8 cores, from the web-like runs:
    pre-tokenization scales with bytes / cores; merging (one thread) and peak memory are
    fitted as a power of the distinct pre-tokens (log-log least squares over the runs)."""
    import math

    out = [
        f"Extrapolated to OpenWebText ({OWT_BYTES / 1e9:.1f} GB, ~{OWT_DISTINCT / 1e6:.1f} M distinct "
        f"pre-tokens) on {OWT_CORES} cores, from the runs above:",
        "",
        "| trainer | pre-tokenize s | merge s | total s | peak RSS GiB (main + one worker) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]

    def fit(xs, ys, x):
        lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
        mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
        b = sum((a - mx) * (c - my) for a, c in zip(lx, ly, strict=True)) / sum(
            (a - mx) ** 2 for a in lx
        )
        return math.exp(my + b * (math.log(x) - mx)), b

    distinct = [
        next(x["distinct_pretokens"] for x in r["runs"].values() if "distinct_pretokens" in x)
        for r in results
    ]
    for t in results[0]["runs"]:
        runs = [r["runs"][t] for r in results]
        mem, _ = fit(
            distinct,
            [x["peak_rss_mb"] + x.get("peak_rss_workers_mb", 0) for x in runs],
            OWT_DISTINCT,
        )
        if "pretokenize_seconds" in runs[0]:
            per_byte = runs[-1]["pretokenize_seconds"] * workers / results[-1]["bytes"]
            pre = per_byte * OWT_BYTES / OWT_CORES
            merge, b = fit(distinct, [x["merge_seconds"] for x in runs], OWT_DISTINCT)
            out.append(
                f"| {t} | {pre:.0f} | {merge:.0f} (~distinct^{b:.2f}) | {pre + merge:.0f} | {mem / 1024:.1f} |"
            )
        else:  # a peer: its whole time, fitted like merging (it is not split)
            total, b = fit(distinct, [x["seconds"] for x in runs], OWT_DISTINCT)
            out.append(
                f"| {t} | | | {total:.0f} (~distinct^{b:.2f}, at {workers} threads) | {mem / 1024:.1f} |"
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_argument(ap)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per trainer; the fastest is reported"
    )
    ap.add_argument("--trainers", default=",".join(TRAINERS))
    ap.add_argument(
        "--quick", action="store_true", help="5 MB of web/train.txt at 8K instead of the full cases"
    )
    ap.add_argument("--no-double", action="store_true", help="skip the doubled-corpus runs")
    ap.add_argument(
        "--web-like",
        default="",
        metavar="GB,GB,...",
        help="instead of the usual cases: web-like corpora of these sizes (GB) grown from "
        "web/train.txt with Heaps'-law vocabulary growth (see web_like), at 32K, e.g. 0.25,0.5,1",
    )
    ap.add_argument("--out", default=str(HERE / "out" / "bench_bpe_train.json"))
    ap.add_argument(
        "--child", nargs=4, metavar=("TRAINER", "PATH", "VOCAB", "WORKERS"), help=argparse.SUPPRESS
    )
    ap.add_argument(
        "--make-web-like", nargs=3, metavar=("SRC", "GB", "DST"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.make_web_like:
        src, gb, dst = args.make_web_like
        tmp_dst = Path(dst + ".tmp")
        web_like(Path(src), int(float(gb) * 1e9), tmp_dst)
        tmp_dst.rename(dst)
        return
    if args.child:
        t, path, vocab, workers = args.child
        print(json.dumps(child(t, path, int(vocab), int(workers))))
        return

    trainers = args.trainers.split(",")
    data = data_dir(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="bench_bpe_"))
    try:
        if args.web_like:
            # made in a subprocess: on Linux a child's ru_maxrss starts from the RSS of the
            # process that starts it, so this one must stay small; kept for reruns
            store = Path(args.out).parent / "weblike"
            store.mkdir(parents=True, exist_ok=True)
            cases = []
            for gb in [float(x) for x in args.web_like.split(",")]:
                path = store / f"weblike_{gb:g}GB.txt"
                if not path.exists():
                    src = data / "web" / "train.txt"
                    cmd = [
                        sys.executable,
                        __file__,
                        "--make-web-like",
                        str(src),
                        str(gb),
                        str(path),
                    ]
                    subprocess.run(cmd, check=True)
                cases.append((f"web-like {gb:g} GB", path, 32_000))
            args.no_double = True
        elif args.quick:
            quick = tmp / "web5mb.txt"
            with open(data / "web" / "train.txt", "rb") as f:
                block = f.read(5_000_000)
            quick.write_bytes(block[: block.rfind(b"\n") + 1])
            cases = [("web (5 MB)", quick, 8000)]
        else:
            cases = [
                ("tinystories", data / "tinystories" / "train.txt", 10_000),
                ("web", data / "web" / "train.txt", 32_000),
            ]
        results = []
        for name, path, vocab in cases:
            print(f"{name}: {path} at {vocab}", file=sys.stderr)
            best = best_of(trainers, path, vocab, args.workers, args.repeat)
            results.append(
                {
                    "corpus": name,
                    "path": str(path),
                    "bytes": path.stat().st_size,
                    "vocab_size": vocab,
                    "runs": best,
                }
            )

        scaling = []
        if not args.no_double and "lm" in trainers:  # the doubling check times lm's trainer
            for name, path, vocab in cases:
                doubled = concat(path, 2, tmp / f"{path.stem}_x2.txt")
                print(f"{name} x2: {doubled}", file=sys.stderr)
                twice = best_of(["lm"], doubled, vocab, args.workers, args.repeat)["lm"]
                once = next(r for r in results if r["corpus"] == name)["runs"]["lm"]
                scaling.append(
                    {
                        "corpus": name,
                        "vocab_size": vocab,
                        "bytes": path.stat().st_size,
                        "x1": once,
                        "x2": twice,
                    }
                )
                doubled.unlink()
    finally:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()

    lines = [
        f"BPE training, {args.workers} worker(s)/thread(s) each, best of {args.repeat}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "",
        "| corpus | vocab | distinct pre-tokens | trainer | wall s | vs gigatoken | vs rustbpe | vs HF | pre-tokenize s | merge s | peak RSS MiB |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        hf = r["runs"].get("hf")
        rb = r["runs"].get("rustbpe")
        gt = r["runs"].get("gigatoken")
        distinct = next(
            (
                f"{x['distinct_pretokens']:,}"
                for x in r["runs"].values()
                if "distinct_pretokens" in x
            ),
            "",
        )
        for t, run in r["runs"].items():
            ratio = f"{run['seconds'] / hf['seconds']:.2f}" if hf else ""
            ratio_rb = f"{run['seconds'] / rb['seconds']:.2f}" if rb else ""
            ratio_gt = f"{run['seconds'] / gt['seconds']:.2f}" if gt else ""
            pre = f"{run['pretokenize_seconds']:.2f}" if "pretokenize_seconds" in run else ""
            mer = f"{run['merge_seconds']:.2f}" if "merge_seconds" in run else ""
            corpus = f"{r['corpus']} ({r['bytes'] / 1e6:.1f} MB)"
            lines.append(
                f"| {corpus} | {r['vocab_size']} | {distinct} | {t} | {run['seconds']:.2f} | {ratio_gt} | {ratio_rb} | {ratio} | {pre} | {mer} | {fmt_mb(run)} |"
            )
    if scaling:
        lines += [
            "",
            "Doubling the corpus (the file concatenated with itself), `lm` only:",
            "",
            "| corpus | vocab | size | wall s | pre-tokenize s | merge s | peak RSS MiB |",
            "| --- | ---: | --- | ---: | ---: | ---: | --- |",
        ]
        for s in scaling:
            for label, run in (("x1", s["x1"]), ("x2", s["x2"])):
                lines.append(
                    f"| {s['corpus']} | {s['vocab_size']} | {label} | {run['seconds']:.2f} | "
                    f"{run['pretokenize_seconds']:.2f} | {run['merge_seconds']:.2f} | {fmt_mb(run)} |"
                )
            a, b = s["x1"], s["x2"]
            lines.append(
                f"| {s['corpus']} | | x2 / x1 | {b['seconds'] / a['seconds']:.2f} | "
                f"{b['pretokenize_seconds'] / a['pretokenize_seconds']:.2f} | "
                f"{b['merge_seconds'] / a['merge_seconds']:.2f} | {b['peak_rss_mb'] / a['peak_rss_mb']:.2f} |"
            )
    if args.web_like and len(results) >= 2:
        lines += ["", *extrapolate(results, args.workers)]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "workers": args.workers,
                "repeat": args.repeat,
                "results": results,
                "scaling": scaling,
                "markdown": table,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
