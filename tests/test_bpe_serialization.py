"""vocab.json + merges.txt: exact round trip, GPT-2 format, loads in HuggingFace tokenizers,
and clear errors for malformed files."""

from __future__ import annotations

import json

import pytest
import regex

from lm.errors import LMError
from lm.tokenizer import load_tokenizer, save_tokenizer, train_bpe
from lm.tokenizer.serialization import bytes_to_unicode, str_to_token, token_to_str

GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def test_byte_to_unicode_map():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert str_to_token(token_to_str(bytes(range(256)))) == bytes(range(256))


def sample_tokenizer():
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [
        (b" ", b"t"),
        (b" t", b"h"),
        (b"\xe2", b"\x80"),
        (b"\xe2\x80", b"\x99"),
        (b"\xff", b"\n"),
        (b"\r", b"\n"),
    ]
    for a, b in merges:
        vocab[len(vocab)] = a + b
    vocab[len(vocab)] = b"<|endoftext|>"
    vocab[len(vocab)] = "<|é|>".encode()
    return vocab, merges


def test_round_trip_exact(tmp_path):
    vocab, merges = sample_tokenizer()
    vocab_path, merges_path = save_tokenizer(vocab, merges, tmp_path / "tok")
    assert (vocab_path.name, merges_path.name) == ("vocab.json", "merges.txt")
    assert load_tokenizer(vocab_path, merges_path) == (vocab, merges)
    lines = merges_path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#version") and lines[1] == "Ġ t" and lines[2] == "Ġt h"
    mapping = json.loads(vocab_path.read_text(encoding="utf-8"))
    assert mapping["Ġth"] == 257 and mapping["<|endoftext|>"] == 262


def test_round_trip_trained(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(
        "I’m naïve — 日本語!\r\n  tabs\tand 🙂🙂 " * 20 + "<|endoftext|>done", encoding="utf-8"
    )
    vocab, merges = train_bpe(path, 400, ["<|endoftext|>"])
    save_tokenizer(vocab, merges, tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok" / "vocab.json", tmp_path / "tok" / "merges.txt") == (
        vocab,
        merges,
    )


def reference_encode(text: str, vocab: dict[int, bytes], merges, special: str) -> list[int]:
    ids = {t: i for i, t in vocab.items()}
    rank = {pair: r for r, pair in enumerate(merges)}
    out = []
    for k, piece in enumerate(text.split(special)):
        if k:
            out.append(ids[special.encode()])
        for pre in regex.findall(GPT2, piece):
            parts = [bytes([b]) for b in pre.encode("utf-8")]
            while len(parts) > 1:
                best = min(
                    zip(parts, parts[1:], strict=False), key=lambda p: rank.get(p, len(rank))
                )
                if best not in rank:
                    break
                merged, i = [], 0
                while i < len(parts):
                    if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                        merged.append(parts[i] + parts[i + 1])
                        i += 2
                    else:
                        merged.append(parts[i])
                        i += 1
                parts = merged
            out.extend(ids[p] for p in parts)
    return out


def test_huggingface_loads_files_with_same_ids(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    corpus = "The cat's hat is naïve — it’s 日本の猫. 1234 cats!\n\n  indented\ttext " * 30
    path = tmp_path / "c.txt"
    path.write_text(corpus + "<|endoftext|>" + corpus.upper(), encoding="utf-8")
    vocab, merges = train_bpe(path, 500, ["<|endoftext|>"])
    out = tmp_path / "tok"
    vocab_path, merges_path = save_tokenizer(vocab, merges, out)

    hf = tokenizers.Tokenizer(models.BPE.from_file(str(vocab_path), str(merges_path)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens(["<|endoftext|>"])
    assert hf.get_vocab_size() == len(vocab)
    assert hf.get_vocab() == {token_to_str(t): i for i, t in vocab.items()}
    text = "The cat’s naïve hat<|endoftext|>1234  CATS!\n\nnew 日本 text 🙂"
    ids = hf.encode(text).ids
    assert ids == reference_encode(text, vocab, merges, "<|endoftext|>")
    assert hf.decode(ids, skip_special_tokens=False) == text


# ---- malformed files: the message names the file and the line ----


def saved(tmp_path):
    vocab, merges = sample_tokenizer()
    return save_tokenizer(vocab, merges, tmp_path)


def test_missing_file(tmp_path):
    vocab_path, merges_path = saved(tmp_path)
    with pytest.raises(LMError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.json", merges_path)


def test_vocab_not_json(tmp_path):
    vocab_path, merges_path = saved(tmp_path)
    vocab_path.write_text('{\n"a": 1,\n"b": 2\n"c": 3}\n', encoding="utf-8")
    with pytest.raises(LMError, match=r"vocab.json: line 4 .*not valid JSON"):
        load_tokenizer(vocab_path, merges_path)


def test_vocab_bad_id_and_duplicates(tmp_path):
    vocab_path, merges_path = saved(tmp_path)
    vocab_path.write_text('{\n"a": 0,\n"b": "x"\n}', encoding="utf-8")
    with pytest.raises(LMError, match=r"vocab.json: line 3 token 'b' has id 'x'"):
        load_tokenizer(vocab_path, merges_path)
    vocab_path.write_text('{\n"a": 0,\n"b": 0\n}', encoding="utf-8")
    with pytest.raises(LMError, match=r"line 3 id 0 is given to both"):
        load_tokenizer(vocab_path, merges_path)
    vocab_path.write_text('{\n"a": 0,\n"a": 1\n}', encoding="utf-8")
    with pytest.raises(LMError, match=r"appears twice"):
        load_tokenizer(vocab_path, merges_path)


def test_vocab_token_not_in_byte_map(tmp_path):
    vocab_path, merges_path = saved(tmp_path)
    vocab_path.write_text('{\n"a": 0,\n"a b": 1\n}', encoding="utf-8")
    with pytest.raises(LMError, match=r"line 3 token 'a b' contains ' '.*Ġ"):
        load_tokenizer(vocab_path, merges_path)


def test_merges_line_malformed(tmp_path):
    vocab_path, merges_path = saved(tmp_path)
    merges_path.write_text("#version: 0.2\nĠ t\nĠt h x\n", encoding="utf-8")
    with pytest.raises(LMError, match=r"merges.txt: line 3: 'Ġt h x' is not a merge"):
        load_tokenizer(vocab_path, merges_path)


def test_merge_part_not_in_vocab(tmp_path):
    vocab_path, merges_path = saved(tmp_path)
    merges_path.write_text("#version: 0.2\nĠ t\nĠq h\n", encoding="utf-8")
    with pytest.raises(
        LMError, match=r"merges.txt: line 3: merge part 'Ġq' is not in the vocabulary"
    ):
        load_tokenizer(vocab_path, merges_path)


def test_merged_token_not_in_vocab(tmp_path):
    vocab_path, merges_path = saved(tmp_path)
    merges_path.write_text("#version: 0.2\nĠ t\nh e\n", encoding="utf-8")
    with pytest.raises(LMError, match=r"line 3: merged token 'he' is not in the vocabulary"):
        load_tokenizer(vocab_path, merges_path)


def test_invalid_utf8_file(tmp_path):
    vocab_path, merges_path = saved(tmp_path)
    merges_path.write_bytes(b"#version: 0.2\n\xff t\n")
    with pytest.raises(LMError, match=r"merges.txt: line 2 \(byte offset 14\) is not valid UTF-8"):
        load_tokenizer(vocab_path, merges_path)


def test_save_rejects_duplicate_tokens(tmp_path):
    vocab = {i: bytes([i]) for i in range(256)}
    vocab[256] = b"a"
    with pytest.raises(LMError, match="ids 97 and 256 are the same token"):
        save_tokenizer(vocab, [], tmp_path)


def test_vocab_line_numbers_only_for_errors(tmp_path, monkeypatch):
    # Finding a token's line scans the file: doing it for every token made loading a 32K
    # vocabulary take seconds. A well-formed file must never ask for a line number.
    import lm.tokenizer.serialization as serialization

    vocab_path, merges_path = saved(tmp_path)

    def no_lines(text, key):
        raise AssertionError(f"line number looked up for a well-formed token {key!r}")

    monkeypatch.setattr(serialization, "_line_of", no_lines)
    assert load_tokenizer(vocab_path, merges_path) == sample_tokenizer()
