"""`lm encode` streams: a file larger than the memory the process may use encodes, under a
hard address-space cap (RLIMIT_AS) set in a subprocess, to exactly the ids of an uncapped
encoding. Once per tokenization engine."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lm.data.demo import write_corpus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine")]

EOT = "<|endoftext|>"
FILE_MB = 32
CHUNK = 256 << 10  # bytes per chunk: what the encoder holds at once scales with this

# The capped child: measures its own address space after the imports (numpy, the tokenizer;
# several hundred MB of mappings), allows a quarter of the file more, then encodes the file.
# It then checks that the cap bites: reading the whole file at once must fail under it.
CHILD = """
import json, resource, sys
from lm.tokenizer.encoding.dataset import encode_file

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

path, tokenizer, out, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
size = __import__("os").path.getsize(path)
# the provenance block stats.json records costs the same for any file (its code version parses
# lm's sources once, then is cached): made before the baseline, so the cap measures the encoding
__import__("lm.provenance").provenance.provenance("encode")
base = vm("VmSize")
cap = base + size // 4
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
stats = encode_file(path, tokenizer, out, workers=1, chunk_size=chunk)
peak = vm("VmPeak")
try:
    with open(path, "rb") as f:
        whole = f.read()
    bites = False
except MemoryError:
    bites = True
print(json.dumps({"base": base, "cap": cap, "peak": peak, "size": size, "bites": bites,
                  "tokens": stats["tokens"], "engine": stats["engine"]}))
"""


def test_encode_runs_in_less_memory_than_the_file(tmp_path, engine):
    from lm.tokenizer import Tokenizer
    from lm.tokenizer.training.directory import train_to_dir

    small = tmp_path / "small.txt"
    write_corpus(small, documents=600, seed=0)  # ~350 KB of stories, each ending with EOT
    train_to_dir(small, tmp_path / "tok", 2000, [EOT])
    data = small.read_bytes()
    copies = -(-(FILE_MB << 20) // len(data))
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        for _ in range(copies):
            f.write(data)
    out = tmp_path / "big.npy"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(big), str(tmp_path / "tok"), str(out), str(CHUNK)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(proc.stdout)
    assert r["engine"] == engine
    assert r["size"] > 4 * (r["cap"] - r["base"])  # the file is 4x what the process may add
    assert r["bites"], "the cap should refuse holding the whole file"
    assert r["peak"] <= r["cap"]
    # the ids of an uncapped encoding: the small corpus's, once per copy (each copy ends
    # with `<|endoftext|>\n`, where the pre-tokenizer splits anyway)
    ids = Tokenizer.from_dir(tmp_path / "tok", [EOT]).encode(data.decode("utf-8"))
    got = np.load(out, mmap_mode="r")
    assert r["tokens"] == len(got) == copies * len(ids)
    assert np.array_equal(got, np.tile(np.array(ids, dtype=got.dtype), copies))
