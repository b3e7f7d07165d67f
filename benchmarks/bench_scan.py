"""Benchmark: the native pre-token scanner alone, and pre-token counting, per scanner path.

For each path this CPU runs (``avx2``, ``sse2``, ``portable``; see ``LM_NATIVE_SIMD`` in
``lm.tokenizer.native``), on the same text, round-robin:

- scan: ``_native.scan(data)``, the UTF-8 check and the GPT-2 pre-token boundaries, nothing
  stored (what the encoder and the counter build on);
- count: ``Counter().add(data, ["<|endoftext|>"])``, the pre-token counts (what BPE training's
  workers do with each chunk).

MB/s of the best of ``--repeat`` runs, and each path against ``portable``. Time is the CPU
time of the one thread doing the work (``time.thread_time``): on cores shared with other
programs, wall time mostly measures how long the others held the core.

    python benchmarks/bench_scan.py                       # web/valid.txt and 20 MB of web/train.txt
    python benchmarks/bench_scan.py --file corpus.txt --mb 50
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from bench_bpe_train import add_data_argument, data_dir  # beside this file

SPECIAL = b"<|endoftext|>"


def best_seconds(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def measure(native, data: bytes, repeat: int) -> dict[str, dict[str, float]]:
    """{path: {"scan": MB/s, "count": MB/s}}, the paths interleaved (one round per repeat)."""
    paths = native.simd_paths()
    best: dict[str, dict[str, float]] = {p: {"scan": 1e9, "count": 1e9} for p in paths}
    before = native.simd()
    try:
        for _ in range(repeat):
            for p in paths:
                native.set_simd(p)
                best[p]["scan"] = min(best[p]["scan"], best_seconds(lambda: native.scan(data), 1))
                best[p]["count"] = min(
                    best[p]["count"],
                    best_seconds(lambda: native.Counter().add(data, [SPECIAL]), 1),
                )
    finally:
        native.set_simd(before)
    mb = len(data) / 1e6
    return {p: {k: mb / s for k, s in v.items()} for p, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_data_argument(ap)
    ap.add_argument("--file", type=Path, help="one text file instead of the web corpus")
    ap.add_argument("--mb", type=float, default=20, help="MB of the larger file to use")
    ap.add_argument("--repeat", type=int, default=5, help="runs per path; the best counts")
    args = ap.parse_args()

    from lm.tokenizer.native import _native

    if _native is None:
        sys.exit("the native extension is not built (pip install -e . with a C compiler)")
    if args.file:
        if not args.file.is_file():
            sys.exit(f"--file {args.file}: not found")
        files = [args.file]
    else:
        data = data_dir(args.data)
        files = [data / "web" / "valid.txt", data / "web" / "train.txt"]

    lines = [
        f"Native scanner, one thread, CPU time, best of {args.repeat}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "",
        "| text | path | scan MB/s | vs portable | count MB/s | vs portable |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read(int(args.mb * 1e6))
        data = data[: data.rfind(b"\n") + 1] or data  # whole lines: no cut character
        rates = measure(_native, data, args.repeat)
        base = rates["portable"]
        for p, r in rates.items():
            lines.append(
                f"| {f.parent.name}/{f.name} ({len(data) / 1e6:.1f} MB) | {p} | {r['scan']:.0f} | "
                f"{r['scan'] / base['scan']:.2f} | {r['count']:.0f} | {r['count'] / base['count']:.2f} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
