"""BPE training semantics: hand-derived examples, tie-breaking, special tokens, and equality
with a slow reference (recount every pair at every step) on many random corpora."""

from __future__ import annotations

from collections import Counter

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm.errors import LMError
from lm.tokenizer import train_bpe
from lm.tokenizer.training.bpe import _inverted, merge_loop, train_bpe_with_stats

# every test here runs once per tokenization engine (native C extension, Python reference)
pytestmark = pytest.mark.usefixtures("engine")

GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def reference_bpe(text: str, vocab_size: int, special_tokens: list[str]):
    """Obviously-correct BPE: split, count pre-tokens, then recount all pairs every step."""
    specials = list(dict.fromkeys(special_tokens))
    pieces = [text]
    if specials:
        alternation = "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))
        pieces = regex.split(alternation, text)
    words: Counter = Counter()
    for piece in pieces:
        for pretoken in regex.findall(GPT2, piece):
            words[tuple(bytes([b]) for b in pretoken.encode("utf-8"))] += 1
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    while len(vocab) + len(specials) < vocab_size:
        pairs: Counter = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        merged: Counter = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    for s in specials:
        vocab[len(vocab)] = s.encode("utf-8")
    return vocab, merges


def write(tmp_path, text: str, name: str = "corpus.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


SENNRICH = (
    "low low low low low lower lower widest widest widest newest newest newest newest newest newest"
)


def test_sennrich_example_merges_derived_by_hand(tmp_path):
    # Pre-tokens (GPT-2 pattern, so words after the first carry their space):
    #   "low" x1, " low" x4, " lower" x2, " widest" x3, " newest" x6.
    # Step by step (count; ties -> greatest pair of byte strings):
    #  1. (s,t) 9 = (e,s) 9, "s" > "e"        2. (e,st) 9
    #  3. (o,w) 7 = (l,o) 7, "o" > "l"        4. (l,ow) 7
    #  5. at 6: ( ,low) (w,est) ( ,n) (n,e) (e,w) -> "w" greatest
    #  6. at 6: ( ,low) ( ,n) (n,e) (e,west) -> "n"
    #  7. at 6: ( ,low) ( ,ne) (ne,west) -> "ne"
    #  8. at 6: ( ,low) ( ,newest) -> "newest" > "low"
    #  9. ( ,low) 6
    # 10. at 3: ( ,w) (w,i) (i,d) (d,est) -> "w"    11. (wi,d)    12. (wid,est)
    # 13. ( ,widest) 3
    # 14. at 2: ( low,e) (e,r) -> "e" > " low"      15. ( low,er)
    # then no pair is left ("low" is one token).
    expected = [
        (b"s", b"t"), (b"e", b"st"), (b"o", b"w"), (b"l", b"ow"), (b"w", b"est"),
        (b"n", b"e"), (b"ne", b"west"), (b" ", b"newest"), (b" ", b"low"),
        (b"w", b"i"), (b"wi", b"d"), (b"wid", b"est"), (b" ", b"widest"),
        (b"e", b"r"), (b" low", b"er"),
    ]  # fmt: skip
    path = write(tmp_path, SENNRICH)
    vocab, merges = train_bpe(path, 256 + 1 + 100, ["<|endoftext|>"])
    assert merges == expected
    assert len(vocab) == 256 + len(expected) + 1  # stopped early, without error
    assert vocab[256 + 5] == b"newest"[:2]  # merge 6 is (n, e)
    assert vocab[len(vocab) - 1] == b"<|endoftext|>"
    # the first six are the handout's (it splits on whitespace, so has no leading spaces)
    assert merges[:6] == [
        (b"s", b"t"),
        (b"e", b"st"),
        (b"o", b"w"),
        (b"l", b"ow"),
        (b"w", b"est"),
        (b"n", b"e"),
    ]
    # and vocab_size is respected exactly when there are pairs to spare
    vocab, merges = train_bpe(path, 256 + 1 + 6, ["<|endoftext|>"])
    assert merges == expected[:6] and len(vocab) == 263


def test_ids_bytes_then_merges_then_specials(tmp_path):
    path = write(tmp_path, "aaa bbb aaa<|endoftext|>ccc ccc")
    vocab, merges = train_bpe(path, 256 + 3 + 2, ["<|endoftext|>", "<|pad|>"])
    assert [vocab[i] for i in range(256)] == [bytes([i]) for i in range(256)]
    assert [vocab[256 + i] for i in range(3)] == [a + b for a, b in merges]
    assert vocab[259] == b"<|endoftext|>" and vocab[260] == b"<|pad|>"


def test_tie_goes_to_greatest_pair(tmp_path):
    # "ab", " ab", " cd", " cd": (a,b)=2, ( ,c)=2, (c,d)=2, ( ,a)=1 -> (c,d), the greatest
    path = write(tmp_path, "ab ab cd cd")
    _, merges = train_bpe(path, 257, [])
    assert merges == [(b"c", b"d")]


def test_tie_break_compares_bytes_not_ids(tmp_path):
    # (" ", "ab") vs ("a", "b")-made tokens: ids would order them differently from bytes.
    # After ("a","b") [4x] and ("x","y") [4x, "x">"a" so it goes first], the pairs
    # (" ", "ab") and ("xy", "z") tie at 2; b"xy" > b" " so ("xy", "z") wins though its
    # left id is the newer one.
    path = write(tmp_path, "xyz xyzab ab abxy")
    vocab, merges = train_bpe(path, 256 + 10, [])
    _, ref = reference_bpe("xyz xyzab ab abxy", 256 + 10, [])
    assert merges == ref


@given(st.lists(st.binary(max_size=4), min_size=2, max_size=6, unique=True))
def test_inverted_key_orders_pairs_greatest_first(tokens):
    pairs = [(a, b) for a in tokens for b in tokens]
    by_key = sorted(pairs, key=lambda p: (_inverted(p[0]), _inverted(p[1])))
    assert by_key == sorted(pairs, reverse=True)


def test_special_tokens_never_merged_across(tmp_path):
    text = "x<|endoftext|>y" * 50 + "<|endoftext|>".join(["hello world"] * 20)
    path = write(tmp_path, text)
    vocab, merges = train_bpe(path, 400, ["<|endoftext|>"])
    for a, b in merges:
        assert b"<|" not in a + b and b"|>" not in a + b
        assert a + b not in (b"xy", b"x<", b">y")
    assert list(vocab.values()).count(b"<|endoftext|>") == 1
    assert (vocab, merges) == reference_bpe(text, 400, ["<|endoftext|>"])


def test_overlapping_special_tokens_longest_first(tmp_path):
    specials = ["<s>", "<s><s>", "s>"]
    text = "a<s><s>b<s>c s> <s><s><s>dd" * 5
    path = write(tmp_path, text)
    assert train_bpe(path, 300, specials) == reference_bpe(text, 300, specials)


def test_duplicate_special_tokens_are_dropped(tmp_path):
    path = write(tmp_path, "ab ab<|endoftext|>ab")
    vocab, _ = train_bpe(path, 300, ["<|endoftext|>", "<|endoftext|>"])
    assert list(vocab.values()).count(b"<|endoftext|>") == 1


def test_repeated_byte_runs(tmp_path):
    # (a, a) merges overlap: "aaaaa" -> "aa aa a" -> ...; and "abab" makes (ab, ab)
    text = "aaaaa aaa aaaa abababab abab aaaaaaa baba " * 3
    path = write(tmp_path, text)
    assert train_bpe(path, 300, []) == reference_bpe(text, 300, [])


def test_multibyte_text(tmp_path):
    text = "naïve café 日本語の文章 emoji 🙂🙂 déjà vu " * 4 + "ß ẞ ﬁ ½ ² ٣"
    path = write(tmp_path, text)
    assert train_bpe(path, 330, ["<|endoftext|>"]) == reference_bpe(text, 330, ["<|endoftext|>"])


def test_merge_loop_without_pairs():
    tokens, merges = merge_loop({b"a": 3, b"b": 1}, 10)
    assert merges == [] and len(tokens) == 256


# Random corpora: a small alphabet (so counts tie often), multi-byte characters,
# contractions, whitespace runs and special tokens.
FRAGMENTS = ["a", "b", "ab", " ", "  ", "\n", "\n\n", "\t", "'s", "'ll", "é", "日", "🙂", "1", "23", "!", ".", "<|endoftext|>", "<|x|>", " the", "ba"]  # fmt: skip
corpora = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=60).map("".join)
SPECIALS = ["<|endoftext|>", "<|x|>"]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=corpora, extra=st.integers(0, 40), chunk_size=st.sampled_from([1, 3, 16, None]))
def test_equals_reference_on_random_corpora(tmp_path, text, extra, chunk_size):
    expected = reference_bpe(text, 256 + len(SPECIALS) + extra, SPECIALS)
    path = write(tmp_path, text)
    if not any(regex.findall(GPT2, p) for p in regex.split(r"<\|endoftext\|>|<\|x\|>", text)):
        with pytest.raises(LMError):
            train_bpe(path, 256 + len(SPECIALS) + extra, SPECIALS, chunk_size=chunk_size)
        return
    got = train_bpe(path, 256 + len(SPECIALS) + extra, SPECIALS, chunk_size=chunk_size)
    assert got == expected


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.lists(st.sampled_from(FRAGMENTS), min_size=20, max_size=120).map("".join),
    workers=st.sampled_from([2, 3]),
)
def test_equals_reference_with_worker_processes(tmp_path, text, workers):
    path = write(tmp_path, text * 3)
    expected = reference_bpe(text * 3, 300, SPECIALS)
    if not expected[1] and len(expected[0]) == 256 + len(SPECIALS):
        return  # nothing to learn; covered elsewhere
    assert train_bpe(path, 300, SPECIALS, workers=workers, chunk_size=7) == expected


def test_result_independent_of_workers_and_chunks(tmp_path):
    words = ["the", "cat", "sat", "on", "a", "mat", "naïve", "日本", "it's", "42"]
    text = "\n<|endoftext|>\n".join(
        " ".join(words[(i * 7 + j) % 10] for j in range(i % 13 + 1)) for i in range(400)
    )
    path = write(tmp_path, text)
    base = train_bpe(path, 400, ["<|endoftext|>"])
    assert base == reference_bpe(text, 400, ["<|endoftext|>"])
    for workers, chunk_size in [(1, 5), (2, 64), (3, 1000), (2, None)]:
        assert (
            train_bpe(path, 400, ["<|endoftext|>"], workers=workers, chunk_size=chunk_size) == base
        )


def test_stats(tmp_path):
    path = write(tmp_path, "doc one\n<|endoftext|>\ndoc two\n<|endoftext|>\ntrailing")
    vocab, merges, stats = train_bpe_with_stats(path, 270, ["<|endoftext|>"])
    assert stats["documents"] == 3 and stats["corpus_bytes"] == path.stat().st_size
    assert stats["merges"] == len(merges) and stats["vocab_size"] == len(vocab)
    assert (
        stats["pretokenize_seconds"] >= 0
        and stats["merge_seconds"] >= 0
        and stats["peak_rss_mb"] > 0
    )


# ---- bad input ----


@pytest.mark.parametrize("vocab_size", [0, 255, 256])
def test_vocab_size_too_small(tmp_path, vocab_size):
    path = write(tmp_path, "hello")
    with pytest.raises(LMError, match="at least 257"):
        train_bpe(path, vocab_size, ["<|endoftext|>"])


def test_vocab_size_exactly_minimum_gives_no_merges(tmp_path):
    vocab, merges = train_bpe(write(tmp_path, "hello hello"), 257, ["<|endoftext|>"])
    assert merges == [] and len(vocab) == 257


def test_empty_special_token(tmp_path):
    with pytest.raises(LMError, match="empty string"):
        train_bpe(write(tmp_path, "hello"), 300, ["<|endoftext|>", ""])


def test_single_byte_special_token(tmp_path):
    with pytest.raises(LMError, match="single byte"):
        train_bpe(write(tmp_path, "hello"), 300, ["!"])


def test_special_tokens_given_as_string(tmp_path):
    with pytest.raises(LMError, match="list of strings"):
        train_bpe(write(tmp_path, "hello"), 300, "<|endoftext|>")


def test_empty_corpus(tmp_path):
    with pytest.raises(LMError, match="is empty"):
        train_bpe(write(tmp_path, ""), 300, ["<|endoftext|>"])


def test_corpus_of_special_tokens_only(tmp_path):
    with pytest.raises(LMError, match="no text besides special tokens"):
        train_bpe(write(tmp_path, "<|endoftext|><|endoftext|>"), 300, ["<|endoftext|>"])


def test_missing_file(tmp_path):
    with pytest.raises(LMError, match="does not exist"):
        train_bpe(tmp_path / "nope.txt", 300, [])


def test_invalid_utf8_names_offset_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nsecond line\nthird \xff line\n")
    with pytest.raises(LMError, match=r"byte offset 28 \(line 3, byte 7 of the line\)"):
        train_bpe(path, 300, [])
