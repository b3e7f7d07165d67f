"""``lm encode`` / encode_file (streaming .npy, parallel, dtype, stats, bad input) and
``lm tokenizer-experiments``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_tokenizer import EOT, make_text, train_small

from lm.cli import main
from lm.errors import LMError
from lm.tokenizer import Tokenizer, save_tokenizer
from lm.tokenizer.chunks import file_chunks
from lm.tokenizer.encoding.dataset import encode_file, write_npy_streaming
from lm.tokenizer.encoding.experiments import parse_dataset, run_experiments, sample_documents

# every test here runs once per tokenization engine (native C extension, Python reference)
pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    vocab, merges = train_small(d)
    save_tokenizer(vocab, merges, d)
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    path.write_text(make_text(n_docs=120, seed=21) + EOT, encoding="utf-8", newline="")
    return path


def test_encode_file_equals_encode_for_any_workers_and_chunks(tok_dir, corpus, tmp_path):
    tok = Tokenizer.from_dir(tok_dir, [EOT])
    expected = tok.encode(corpus.read_bytes().decode("utf-8"))
    for workers, chunk in [(1, None), (1, 257), (2, 1000), (2, 64)]:
        out = tmp_path / f"w{workers}_{chunk}" / "train.npy"
        stats = encode_file(corpus, tok_dir, out, [EOT], workers=workers, chunk_size=chunk)
        ids = np.load(out, mmap_mode="r")
        assert ids.dtype == np.uint16
        assert ids.tolist() == expected
        assert stats["tokens"] == len(expected)
        assert stats["special_token_counts"] == {EOT: expected.count(tok.special_ids[EOT])}
        saved = json.loads((out.parent / "train.stats.json").read_text())
        assert saved["dtype"] == "uint16" and "65536" in saved["dtype_reason"]
        assert saved["bytes"] == corpus.stat().st_size
        assert saved["bytes_per_token"] == pytest.approx(saved["bytes"] / saved["tokens"], rel=1e-3)
        for key in ("mb_per_s", "tokens_per_s", "seconds", "workers"):
            assert key in saved
    assert not list(tmp_path.rglob(".*.tmp"))  # no temp file left behind


def _python_engine_ids(tok_dir, text: str, specials, monkeypatch) -> list[int]:
    """The ids of the pure-Python engine (the reference), whatever engine the test runs."""
    with monkeypatch.context() as m:
        m.setenv("LM_NATIVE", "0")
        return Tokenizer.from_dir(tok_dir, specials).encode(text)


def test_encode_file_threads_equal_one_worker_and_the_python_engine(
    tok_dir, tmp_path, monkeypatch, engine
):
    """Workers are threads with the native engine: any number of them, any chunk size,
    gives the ids of one worker and of the Python engine, in file order, on text with two
    special tokens (one a prefix of the other), non-ASCII, whitespace runs longer than a
    chunk and pre-tokens longer than the short-token cache holds."""
    specials = [EOT, "<|end|>"]
    text = (
        make_text(n_docs=40, seed=5, eot="<|end|>")
        + EOT
        + " " * 3000
        + "naïve café 日本語のテキスト😀 ," * 50
        + "\n" * 700
        + "x" * 40
        + "supercalifragilisticexpialidocious"
        + EOT
    )
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8", newline="")
    ref = _python_engine_ids(tok_dir, text, specials, monkeypatch)
    tok = Tokenizer.from_dir(tok_dir, specials)
    for workers, chunk in [(1, 64), (2, 64), (3, 500), (2, None)]:
        out = tmp_path / f"w{workers}_{chunk}.npy"
        stats = encode_file(path, tok, out, specials, workers=workers, chunk_size=chunk)
        assert np.load(out).tolist() == ref, (workers, chunk)
        assert stats["special_token_counts"] == {s: ref.count(tok.special_ids[s]) for s in specials}
        assert stats["worker_kind"] == ("threads" if engine == "native" else "processes")


def test_invalid_utf8_in_a_later_chunk_names_its_file_offset(tok_dir, tmp_path):
    bad = tmp_path / "bad.txt"
    good = b"some fine words here.\n" * 200
    bad.write_bytes(good + b"caf\xc3 later\n" + good)
    offset = len(good) + 3
    for workers in (1, 3):
        with pytest.raises(
            LMError,
            match=rf"invalid UTF-8 at byte offset {offset} \(line 201, byte 4 of the line\)",
        ):
            encode_file(bad, tok_dir, tmp_path / "bad.npy", workers=workers, chunk_size=100)
        assert not (tmp_path / "bad.npy").exists()


def test_chunks_tile_the_file_at_safe_points(corpus):
    bounds = file_chunks(corpus, [EOT], 300)
    assert bounds[0][0] == 0 and bounds[-1][1] == corpus.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert len(bounds) > 10


def test_empty_input_gives_an_empty_array(tok_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    stats = encode_file(empty, tok_dir, tmp_path / "empty.npy", workers=2)
    ids = np.load(tmp_path / "empty.npy", mmap_mode="r")
    assert ids.shape == (0,) and ids.dtype == np.uint16
    assert stats["tokens"] == 0 and stats["bytes_per_token"] is None


def test_large_vocabulary_uses_uint32_and_says_so(tmp_path):
    vocab, merges = train_small(tmp_path, special_tokens=())
    # ids run without a gap (a loaded tokenizer is checked for that): fill up to 70000
    vocab.update({i: f"<|unused{i}|>".encode() for i in range(len(vocab), 70000)})
    vocab[70000] = EOT.encode()  # an id above the uint16 range
    save_tokenizer(vocab, merges, tmp_path / "tok")
    text = tmp_path / "t.txt"
    text.write_text(f"hello world{EOT}second doc", encoding="utf-8")
    stats = encode_file(text, tmp_path / "tok", tmp_path / "t.npy", [EOT])
    ids = np.load(tmp_path / "t.npy", mmap_mode="r")
    assert ids.dtype == np.uint32 and 70000 in ids.tolist()
    assert stats["dtype"] == "uint32" and "more than the 65536" in stats["dtype_reason"]


def test_invalid_utf8_names_offset_and_line(tok_dir, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nsecond \xff line\n")
    with pytest.raises(
        LMError, match=r"bad.txt: invalid UTF-8 at byte offset 17 \(line 2, byte 8 of the line\)"
    ):
        encode_file(bad, tok_dir, tmp_path / "bad.npy")
    assert not (tmp_path / "bad.npy").exists()


def test_missing_inputs_are_clear_errors(tok_dir, tmp_path):
    with pytest.raises(LMError, match="does not exist"):
        encode_file(tmp_path / "nope.txt", tok_dir, tmp_path / "x.npy")
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(LMError, match="tokenizer directory .* does not exist"):
        encode_file(tmp_path / "a.txt", tmp_path / "no_tok", tmp_path / "x.npy")


def test_malformed_tokenizer_files_fail_before_encoding(tok_dir, tmp_path):
    bad = tmp_path / "tok"
    bad.mkdir()
    (bad / "vocab.json").write_text(
        (tok_dir / "vocab.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (bad / "merges.txt").write_text("#version: 0.2\nĠ\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(LMError, match=r"merges.txt: line 2: .* is not a merge"):
        encode_file(tmp_path / "a.txt", bad, tmp_path / "x.npy")


def test_streaming_writer_rewrites_the_header(tmp_path):
    n = write_npy_streaming(
        tmp_path / "a.npy", np.dtype(np.uint16), (np.arange(k, dtype=np.uint16) for k in range(50))
    )
    a = np.load(tmp_path / "a.npy")
    assert n == len(a) == sum(range(50))
    assert a.tolist() == [i for k in range(50) for i in range(k)]


def test_cli_encode(tok_dir, corpus, tmp_path, capsys):
    out = tmp_path / "results" / "tokens" / "valid.npy"
    stats = tmp_path / "s.json"
    rc = main(["encode", str(corpus), "--tokenizer", str(tok_dir), "--out", str(out), "--workers", "2",
               "--stats", str(stats), "--no-progress"])  # fmt: skip
    assert rc == 0
    assert json.loads(stats.read_text())["tokens"] == len(np.load(out, mmap_mode="r"))
    assert "tokens (uint16)" in capsys.readouterr().out


def test_cli_encode_bad_input_exits_2(tok_dir, tmp_path, capsys):
    rc = main(
        [
            "encode",
            str(tmp_path / "missing.txt"),
            "--tokenizer",
            str(tok_dir),
            "--out",
            str(tmp_path / "x.npy"),
        ]
    )
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ tokenizer experiments


def test_sample_documents_names_invalid_utf8(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"doc one" + EOT.encode() + b"doc \xff two\n")
    with pytest.raises(
        LMError, match=r"bad.txt: invalid UTF-8 at byte offset 24 \(line 1, byte 25 "
    ):
        sample_documents(bad, n=2)


def test_sample_documents_is_seeded_and_streaming(corpus):
    docs, seen = sample_documents(corpus, n=10, seed=1)
    again, _ = sample_documents(corpus, n=10, seed=1)
    other, _ = sample_documents(corpus, n=10, seed=2)
    assert len(docs) == 10 and seen == 120 and docs == again and docs != other
    text = corpus.read_bytes().decode("utf-8")
    assert all(d in text for d in docs)
    few, seen_few = sample_documents(corpus, n=10, seed=1, max_bytes=2000)
    assert seen_few < 120 and len(few) <= 10


def test_experiments_report_one_dataset(tok_dir, corpus, tmp_path):
    report = run_experiments(
        [parse_dataset(f"demo={corpus}:{tok_dir}")], tmp_path / "exp", throughput_bytes=20000
    )
    md = (tmp_path / "exp" / "report.md").read_text()
    saved = json.loads((tmp_path / "exp" / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    own = report["datasets"]["demo"]["own"]
    assert own["bytes_per_token"] > 1.0
    assert report["matrix_bytes_per_token"]["demo"]["demo"] == own["bytes_per_token"]
    assert (
        report["throughput"]["demo"]["bytes_per_s"] > 0
        and report["throughput"]["demo"]["pile_seconds"] > 0
    )
    assert report["datasets"]["demo"]["dtype"] == "uint16"
    for heading in ("(a)", "(b)", "(c)", "(d)", "Pile"):
        assert heading in md


def test_experiments_cross_matrix_via_cli(tok_dir, corpus, tmp_path):
    other_text = tmp_path / "other.txt"
    other_text.write_text(EOT.join(["ünïcödé текст 日本語 " * 20] * 12), encoding="utf-8")
    other_tok = tmp_path / "other_tok"
    vocab, merges = train_small(tmp_path, vocab_size=300, seed=5)
    save_tokenizer(vocab, merges, other_tok)
    rc = main(["tokenizer-experiments", "--dataset", f"a={corpus}:{tok_dir}", "--dataset", f"b={other_text}:{other_tok}",
               "--out", str(tmp_path / "exp"), "--throughput-mb", "0.02"])  # fmt: skip
    assert rc == 0
    report = json.loads((tmp_path / "exp" / "report.json").read_text())
    m = report["matrix_bytes_per_token"]
    assert set(m) == {"a", "b"} and set(m["a"]) == {"a", "b"}
    assert m["a"]["a"] > m["b"]["a"]  # the tokenizer trained on a's text compresses it best


def test_bad_dataset_spec():
    with pytest.raises(LMError, match="NAME=RAWTEXT:TOKENIZER_DIR"):
        parse_dataset("just-a-path.txt")
