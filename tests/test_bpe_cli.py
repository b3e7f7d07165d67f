"""``lm train-bpe`` end to end: files written, stats, report, atomic replacement, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

from lm.cli import main
from lm.tokenizer import load_tokenizer, train_bpe


def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    docs = [
        f"Story {i}: the cat sat on the mat, and it's {i % 7} o'clock. Naïve café!"
        for i in range(60)
    ]
    path.write_text("".join(d + "\n<|endoftext|>\n" for d in docs), encoding="utf-8")
    return path


def test_cli_end_to_end(tmp_path, capsys):
    path = corpus(tmp_path)
    out = tmp_path / "results" / "tok"
    rc = main(["train-bpe", str(path), "--vocab-size", "300", "--out", str(out), "--workers", "2",
               "--chunk-size", "512", "--no-progress"])  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "merges.txt",
        "report.md",
        "stats.json",
        "vocab.json",
    ]
    assert "300 tokens" in capsys.readouterr().out
    vocab, merges = load_tokenizer(out / "vocab.json", out / "merges.txt")
    assert (vocab, merges) == train_bpe(path, 300, ["<|endoftext|>"])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["vocab_size"] == 300 and stats["merges"] == 300 - 257 and stats["documents"] == 60
    assert stats["corpus_bytes"] == path.stat().st_size and stats["workers"] == 2
    assert {"pretokenize_seconds", "merge_seconds", "peak_rss_mb", "longest_tokens"} <= set(stats)
    longest = stats["longest_tokens"][0]
    assert longest["length_bytes"] == max(len(t) for t in vocab.values() if t != b"<|endoftext|>")
    report = (out / "report.md").read_text()
    assert "pre-tokenization" in report and "merging" in report and "Longest token" in report
    # no temporary directories left beside the output
    assert [p.name for p in out.parent.iterdir()] == ["tok"]


def test_cli_replaces_existing_output(tmp_path):
    path = corpus(tmp_path)
    out = tmp_path / "tok"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert main(["train-bpe", str(path), "--vocab-size", "270", "--out", str(out), "--no-special-tokens",
                 "--workers", "1", "--no-progress"]) == 0  # fmt: skip
    assert not (out / "stale.txt").exists()
    vocab, _ = load_tokenizer(out / "vocab.json", out / "merges.txt")
    assert len(vocab) == 270 and b"<|endoftext|>" not in vocab.values()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_bad_input_exits_2_with_message(tmp_path, capsys):
    path = corpus(tmp_path)
    out = tmp_path / "tok"
    assert (
        main(["train-bpe", str(path), "--vocab-size", "100", "--out", str(out), "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert "lm train-bpe: error: vocab_size 100 is too small" in err and "at least 257" in err
    assert not out.exists()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\x80\n")
    assert (
        main(["train-bpe", str(bad), "--vocab-size", "300", "--out", str(out), "--no-progress"])
        == 2
    )
    assert "byte offset 3 (line 2" in capsys.readouterr().err
    assert main(["train-bpe", str(path), "--vocab-size", "300", "--out", str(out), "--special-token", "",
                 "--no-progress"]) == 2  # fmt: skip
    assert "empty string" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_module_entry_point(tmp_path):
    path = corpus(tmp_path)
    out = tmp_path / "tok"
    proc = subprocess.run(
        [sys.executable, "-m", "lm", "train-bpe", str(path), "--vocab-size", "280", "--out", str(out),
         "--special-token", "<|endoftext|>", "--special-token", "<|pad|>", "--workers", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "pre-tokenize" in proc.stderr and "merge" in proc.stderr  # tqdm bars
    vocab, _ = load_tokenizer(out / "vocab.json", out / "merges.txt")
    assert vocab[278] == b"<|endoftext|>" and vocab[279] == b"<|pad|>"
