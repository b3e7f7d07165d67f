"""Benchmark: the Python ``merge_loop`` of ``lm/tokenizer/training/bpe.py`` against an older version of it.

Pre-token counts of a corpus sample are made once (cached under ``benchmarks/out/``), so
only ``merge_loop`` is measured; both versions run with the pure-Python engine
(``LM_NATIVE=0``) on the same counts. Three measures, for each corpus:

- ``check``: the merges of both versions are identical.
- ``callgrind``: instructions of one ``merge_loop`` call, counted by valgrind's callgrind
  with collection switched on and off around the call (``CALLGRIND_TOGGLE_COLLECT`` from a
  small C helper built with ``gcc``), ``PYTHONHASHSEED=0``: start-up, imports and loading
  the counts are left out. The same count on every run, so it is the measure to trust on a
  loaded machine.
- ``time``: CPU seconds of ``merge_loop``, old and new alternated in one process
  (``--repeat`` rounds, the order flipped every round), as medians and their ratio.

    python benchmarks/bench_merge_loop.py                         # all three, both corpora
    python benchmarks/bench_merge_loop.py --measures callgrind --corpora web
    python benchmarks/bench_merge_loop.py --old HEAD~3 --new path/to/bpe.py

The sample is the first ``--bytes`` of ``<data>/<corpus>/train.txt`` (the file repeated when
it is shorter, as TinyStories is), cut after its last newline. ``--old`` and ``--new`` are
a git revision (its ``lm/tokenizer/training/bpe.py``) or a path to a ``bpe.py``; the default old
version is the one before ``merge_loop`` was split into named steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["LM_NATIVE"] = "0"  # the Python merge loop, also in the callgrind children

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
from bench_bpe_train import data_dir  # noqa: E402  (the same data folder as the BPE benchmark)

OUT = HERE / "out"
#: merge_loop as one 200-line function, before it was split into named steps.
DEFAULT_OLD = "3c34742^"
SPECIALS = ["<|endoftext|>"]


def sample_counts(data: Path, corpus: str, n_bytes: int) -> Path:
    """Pre-token counts of the first ``n_bytes`` of the corpus, pickled (made once)."""
    src = data / corpus / "train.txt"
    cached = OUT / f"merge_loop_{corpus}_{n_bytes}_{src.stat().st_size}.pkl"
    if cached.exists():
        return cached
    from lm.tokenizer.pretokenize import count_pretokens

    text = src.read_bytes()
    text = (text * (n_bytes // len(text) + 1))[:n_bytes]
    text = text[: text.rfind(b"\n") + 1]
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".txt", dir=OUT) as f:
        f.write(text)
        f.flush()
        counts = count_pretokens(f.name, SPECIALS, workers=1, as_bytes=True).counts
    with open(cached, "wb") as f:
        pickle.dump(counts, f)
    return cached


def bpe_source(version: str, tmp: Path) -> Path:
    """A path to ``bpe.py`` of ``version``: a file as is, else a git revision's copy."""
    if Path(version).is_file():
        return Path(version).resolve()
    text = subprocess.run(
        ["git", "show", f"{version}:lm/tokenizer/training/bpe.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = tmp / f"bpe_{re.sub(r'[^A-Za-z0-9]', '_', version)}.py"
    path.write_text(text)
    return path


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_counts(path: Path) -> dict[bytes, int]:
    with open(path, "rb") as f:
        return pickle.load(f)


TOGGLE_C = (
    "#include <valgrind/callgrind.h>\nvoid toggle_collect(void) { CALLGRIND_TOGGLE_COLLECT; }\n"
)


def toggle_library() -> Path:
    """A shared library whose ``toggle_collect()`` switches callgrind's counting on or off."""
    lib = OUT / "callgrind_toggle.so"
    if not lib.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        src = OUT / "callgrind_toggle.c"
        src.write_text(TOGGLE_C)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def child(bpe: str, counts: str, merges: int) -> None:
    """Call ``merge_loop`` once, counted by callgrind (started with ``--collect-atstart=no``)."""
    import ctypes

    toggle = ctypes.CDLL(str(toggle_library())).toggle_collect
    module = load_module(Path(bpe), "bpe_under_test")
    word_counts = load_counts(Path(counts))
    toggle()
    module.merge_loop(word_counts, merges)
    toggle()


def callgrind(bpe: Path, counts: Path, merges: int) -> int:
    """Instructions of one ``merge_loop`` call."""
    toggle_library()
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(bpe),
        str(counts),
        str(merges),
    ]
    env = dict(os.environ, PYTHONHASHSEED="0", LM_NATIVE="0")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))


def cpu_seconds(module, word_counts, merges: int) -> float:
    start = time.process_time()
    module.merge_loop(word_counts, merges)
    return time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", default=DEFAULT_OLD, help="git revision or bpe.py path")
    p.add_argument("--new", default=str(REPO / "lm" / "tokenizer" / "bpe.py"))
    p.add_argument(
        "--data", type=Path, help="folder with tinystories/ and web/ (default: bench_bpe_train's)"
    )
    p.add_argument("--corpora", nargs="+", default=["tinystories", "web"])
    p.add_argument("--bytes", type=int, default=5_000_000)
    p.add_argument("--merges", type=int, default=7743, help="vocab 8000 with one special token")
    p.add_argument("--measures", nargs="+", default=["check", "callgrind", "time"])
    p.add_argument("--repeat", type=int, default=7, help="rounds of the wall-time A/B")
    p.add_argument("--child", nargs=3, metavar=("BPE", "COUNTS", "MERGES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        bpe, counts, merges = args.child
        child(bpe, counts, int(merges))
        return

    data = data_dir(args.data)  # --data, $LM_BENCH_DATA, or shared/data; a clear exit if missing
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        old_path, new_path = bpe_source(args.old, Path(tmp)), bpe_source(args.new, Path(tmp))
        old, new = load_module(old_path, "bpe_old"), load_module(new_path, "bpe_new")
        for corpus in args.corpora:
            counts_path = sample_counts(data, corpus, args.bytes)
            word_counts = load_counts(counts_path)
            row = {"corpus": corpus, "bytes": args.bytes, "distinct_pretokens": len(word_counts)}
            if "check" in args.measures:
                merges_old = old.merge_loop(word_counts, args.merges)[1]
                merges_new = new.merge_loop(word_counts, args.merges)[1]
                row["merges"] = len(merges_new)
                row["merges_equal"] = merges_old == merges_new
            if "callgrind" in args.measures:
                a = callgrind(old_path, counts_path, args.merges)
                b = callgrind(new_path, counts_path, args.merges)
                row["instructions"] = {"old": a, "new": b, "ratio": round(b / a, 4)}
            if "time" in args.measures:
                times = {"old": [], "new": []}
                for r in range(args.repeat):
                    order = [("old", old), ("new", new)][:: 1 if r % 2 else -1]
                    for name, module in order:
                        times[name].append(cpu_seconds(module, word_counts, args.merges))
                a, b = statistics.median(times["old"]), statistics.median(times["new"])
                ratios = [n / o for o, n in zip(times["old"], times["new"], strict=True)]
                row["cpu_seconds"] = {
                    "old_median": round(a, 4),
                    "new_median": round(b, 4),
                    "ratio_of_medians": round(b / a, 4),
                    "median_of_ratios": round(statistics.median(ratios), 4),
                }
            print(json.dumps(row), flush=True)
            results.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    info = {"old": args.old, "new": args.new, "results": results}
    (OUT / "bench_merge_loop.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
