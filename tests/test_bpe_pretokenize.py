"""Pre-tokenization and chunking: counts never depend on chunk size or worker count."""

from __future__ import annotations

from collections import Counter

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm.errors import LMError
from lm.tokenizer.chunks import find_boundary
from lm.tokenizer.pretokenize import GPT2_PATTERN, count_pretokens, pretokenize

# every test here runs once per tokenization engine (native C extension, Python reference),
# the native one once per path of its scanner (avx2, sse2, portable: those the CPU runs)
pytestmark = pytest.mark.usefixtures("engine_scan")

SPECIALS = ["<|endoftext|>", "<|end of text|>"]  # the second has safe-looking spots inside it


def expected_counts(text: str, specials: list[str]) -> Counter:
    pieces = (
        regex.split(
            "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)), text
        )
        if specials
        else [text]
    )
    return Counter(t for p in pieces for t in regex.findall(GPT2_PATTERN, p))


def write(tmp_path, text: str):
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    return path


def test_pretokenize_gpt2_pattern():
    assert pretokenize("Hello, world! It's  2024\n\n ok<|endoftext|>x", ["<|endoftext|>"]) == [
        "Hello", ",", " world", "!", " It", "'s", " ", " 2024", "\n\n", " ok", "x",
    ]  # fmt: skip


def test_boundaries_are_safe_and_monotone(tmp_path):
    text = "ab c.\n\nd<|end of text|> e<|endoftext|>f  g\t\th é日 x" * 3
    path = write(tmp_path, text)
    data = path.read_bytes()
    specials = [s.encode() for s in SPECIALS]
    with open(path, "rb") as f:
        prev = 0
        for offset in range(len(data) + 2):
            b = find_boundary(f, offset, len(data), specials)
            assert b >= min(offset, len(data)) and b >= prev
            prev = b
            if 0 < b < len(data):
                spanned = any(
                    data.startswith(s, j)
                    for s in specials
                    for j in range(max(0, b - len(s) + 1), b)
                )
                assert not spanned, (offset, b)
                at_special = any(data.startswith(s, b) for s in specials)
                at_text = 0x21 <= data[b - 1] <= 0x7E and data[b] in b" \n"
                assert at_special or at_text, (offset, b, data[b - 3 : b + 3])


chunk_texts = st.lists(
    st.sampled_from(
        [
            "a",
            "bc",
            " ",
            "  ",
            "\n",
            " \n",
            "\t",
            "é",
            "日本",
            "🙂",
            "'s",
            "1",
            "!?",
            "<|endoftext|>",
            "<|end of text|>",
            "d ",
            "<|end",
            "of",
        ]
    ),
    max_size=80,
).map("".join)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=chunk_texts.filter(bool), chunk_size=st.integers(1, 40))
def test_counts_do_not_depend_on_chunk_size(tmp_path, text, chunk_size):
    path = write(tmp_path, text)
    got = count_pretokens(path, SPECIALS, chunk_size=chunk_size)
    assert got.counts == expected_counts(text, SPECIALS)
    whole = count_pretokens(path, SPECIALS, chunk_size=10**9)
    assert whole.n_chunks == 1
    assert (got.n_special, got.n_documents) == (whole.n_special, whole.n_documents)


def test_one_giant_line_still_splits_and_parallelizes(tmp_path):
    words = ["alpha", "beta,", "gamma!", "it's", "42", "naïve", "x"]
    text = " ".join(
        words[i % 7] + ("  " if i % 11 == 0 else "") for i in range(20000)
    )  # no newline
    path = write(tmp_path, text)
    single = count_pretokens(path, SPECIALS, chunk_size=10**9)
    assert single.n_chunks == 1 and single.counts == expected_counts(text, SPECIALS)
    for workers in (1, 2):
        split = count_pretokens(path, SPECIALS, workers=workers, chunk_size=4096)
        assert split.n_chunks > 20
        assert split.counts == single.counts


def test_text_without_any_safe_boundary_is_one_chunk(tmp_path):
    # Documented behaviour: no space/newline after a printable character, no special token,
    # so there is no place where cutting is safe; the chunk runs on to the end of the file.
    text = "x" * 5000 + "\u3000" + "y" * 5000
    path = write(tmp_path, text)
    got = count_pretokens(path, SPECIALS, workers=2, chunk_size=100)
    assert got.n_chunks == 1
    assert got.counts == expected_counts(text, SPECIALS)


def test_documents_counted(tmp_path):
    path = write(tmp_path, "a\n<|endoftext|>\nb\n<|endoftext|>\n")
    assert count_pretokens(path, ["<|endoftext|>"], chunk_size=3).n_documents == 2
    path = write(tmp_path, "a<|endoftext|>b<|endoftext|>tail")
    assert count_pretokens(path, ["<|endoftext|>"], chunk_size=2).n_documents == 3
    path = write(tmp_path, "no special tokens at all")
    assert count_pretokens(path, [], chunk_size=4).n_documents == 1


def test_invalid_utf8_first_bad_byte_reported_with_workers(tmp_path):
    good = ("line of text\n" * 400).encode()
    data = good + b"bad \xc3\x28 here\n" + good + b"\xff\n"
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    offset = len(good) + 4
    with pytest.raises(LMError, match=rf"byte offset {offset} \(line 401, byte 5 of the line\)"):
        count_pretokens(path, [], workers=3, chunk_size=500)


def test_bad_chunk_size(tmp_path):
    with pytest.raises(LMError, match="chunk_size"):
        count_pretokens(write(tmp_path, "abc"), [], chunk_size=0)


def test_directory_is_not_a_corpus(tmp_path):
    with pytest.raises(LMError, match="not a regular file"):
        count_pretokens(tmp_path, [])
