"""Checks of a generated writeup against the artifacts it cites, written independently of
lm.writeup: every fact's number is recomputed from its source file, must appear in its
section, and no digit of the prose may come from anywhere else."""

from __future__ import annotations

import json
import re
from pathlib import Path

# The handout's problems with an artifact, in the handout's order.
HANDOUT_ORDER = [
    "train_bpe_tinystories",
    "train_bpe_expts_owt",
    "tokenizer_experiments",
    "transformer_accounting",
    "learning_rate_tuning",
    "adamwAccounting",
    "learning_rate",
    "batch_size_experiment",
    "generate",
    "layer_norm_ablation",
    "pre_norm_ablation",
    "no_pos_emb",
    "swiglu_ablation",
    "main_experiment",
    "leaderboard",
]


def _trigram_repeats(text: str) -> float:
    words = re.findall(r"[a-z0-9']+", text.lower())
    seen, repeats, total = set(), 0, 0
    for gram in zip(words, words[1:], words[2:], strict=False):
        total += 1
        repeats += gram in seen
        seen.add(gram)
    return repeats / total if total else 0.0


OPS = {
    "x": lambda x: x,
    "100*x": lambda x: x * 100,
    "x/1e6": lambda x: x / 10**6,
    "x/1e9": lambda x: x / 10**9,
    "x/1e12": lambda x: x / 10**12,
    "x/1e15": lambda x: x / 10**15,
    "len": lambda x: len(x),
    "a/b": lambda a, b: a / b,
    "100*a/b": lambda a, b: a / b * 100,
    "a-b": lambda a, b: a - b,
    "100*|a-b|/b": lambda a, b: abs(a - b) / b * 100,
    "100*repeated_trigrams": lambda t: _trigram_repeats(t) * 100,
}


def sections(markdown: str) -> tuple[str, dict[str, str]]:
    """(preamble, {problem key: its Markdown}) in order of appearance."""
    parts = re.split(r"^## `([A-Za-z_]+)`", markdown, flags=re.M)
    return parts[0], {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _lookup(data, key):
    for k in key:
        data = data[k]
    return data


def prose(text: str) -> str:
    """``text`` without fenced blocks, code spans and link targets (names, paths, samples)."""
    text = re.sub(r"^(`{3,})[^\n]*\n.*?^\1\s*$", "", text, flags=re.M | re.S)
    text = re.sub(r"(`+)(?:(?!\1).)+?\1", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def check_writeup(
    root: Path, md: str = "results/writeup.md", js: str = "results/writeup.json"
) -> dict:
    """Assert the writeup under ``root`` agrees with the artifacts it cites; return its record."""
    markdown = (root / md).read_text(encoding="utf-8")
    record = json.loads((root / js).read_text(encoding="utf-8"))
    preamble, found = sections(markdown)
    assert list(found) == HANDOUT_ORDER
    assert [p["key"] for p in record["problems"]] == HANDOUT_ORDER
    title, _, rest = preamble.partition("\n")
    assert title.startswith("# ")
    assert not re.search(r"\d", prose(rest)), prose(rest)
    cache: dict[str, object] = {}
    for problem in record["problems"]:
        text = found[problem["key"]]
        for source in problem["sources"]:
            assert f"[`{source}`]" in text, (problem["key"], source)
        for fact in problem["facts"]:
            values = []
            for inp in fact["inputs"]:
                assert inp["source"] in problem["sources"]
                if inp["source"] not in cache:
                    cache[inp["source"]] = json.loads((root / inp["source"]).read_text())
                values.append(_lookup(cache[inp["source"]], inp["key"]))
            expected = format(OPS[fact["op"]](*values), fact["format"])
            assert fact["text"] == expected, (problem["key"], fact)
            assert expected in text, (problem["key"], expected)
        rest = prose(text)
        for fact_text in sorted({f["text"] for f in problem["facts"]}, key=len, reverse=True):
            rest = rest.replace(fact_text, "#")
        stray = re.findall(r".{0,30}\d.{0,30}", rest)
        assert not stray, (problem["key"], stray)
    return record


def commands(record: dict) -> dict[str, str]:
    """{problem key: command} of every problem that is not answered but names a command."""
    return {p["key"]: p["command"] for p in record["problems"] if p["command"]}
