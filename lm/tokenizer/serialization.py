"""Tokenizer files in the GPT-2 format: ``vocab.json`` + ``merges.txt``.

A token is a byte string, which need not be valid UTF-8 on its own (half of a
multi-byte character is a fine token). GPT-2 stores tokens as text through a fixed
one-to-one map from each of the 256 bytes to a printable unicode character
(:func:`bytes_to_unicode`), so any byte string becomes a string without spaces
or control characters, and back.

- ``vocab.json``: ``{"<mapped token>": id, ...}``.
- ``merges.txt``: a ``#version: 0.2`` header, then one merge per line in creation
  order, the two parts in mapped form separated by one space.

These load unchanged in HuggingFace ``tokenizers`` (``ByteLevel`` BPE) and tiktoken.

    save_tokenizer(vocab, merges, out_dir)         # writes out_dir/vocab.json, out_dir/merges.txt
    vocab, merges = load_tokenizer(vocab_path, merges_path)
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from lm.errors import LMError
from lm.io import atomic_open

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
MERGES_HEADER = "#version: 0.2"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 map from each byte value to one printable unicode character.

    Bytes that are printable Latin-1 characters (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``)
    map to themselves; the other 68 (control characters, space, ...) map, in byte
    order, to ``chr(256)``, ``chr(257)``, ... So space (0x20) becomes ``Ġ``.
    """
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    kept = set(keep)
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in kept:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    """Inverse of :func:`bytes_to_unicode`."""
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_str(token: bytes) -> str:
    """A token's bytes in GPT-2 mapped form, e.g. ``b" the"`` -> ``"Ġthe"``."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def str_to_token(text: str) -> bytes:
    """Inverse of :func:`token_to_str`. Raises ``KeyError`` on a character outside the map."""
    table = unicode_to_bytes()
    return bytes(table[c] for c in text)


def save_tokenizer(
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    out_dir: str | os.PathLike,
) -> tuple[Path, Path]:
    """Write ``out_dir/vocab.json`` and ``out_dir/merges.txt``; return their paths.

    Each file is written atomically. Raises ``LMError`` if two ids share the same
    bytes (the format keys the vocabulary by token, so it cannot hold both).
    """
    out_dir = Path(out_dir)
    mapped: dict[str, int] = {}
    for token_id, token in sorted(vocab.items()):
        if not isinstance(token, bytes | bytearray):
            raise LMError(f"vocab id {token_id}: token must be bytes, got {type(token).__name__}")
        key = token_to_str(bytes(token))
        if key in mapped:
            raise LMError(
                f"vocab ids {mapped[key]} and {token_id} are the same token {bytes(token)!r}; "
                f"{VOCAB_FILE} maps each token to one id, so remove one of them"
            )
        mapped[key] = int(token_id)
    vocab_path = out_dir / VOCAB_FILE
    merges_path = out_dir / MERGES_FILE
    with atomic_open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(mapped, f, ensure_ascii=False, indent=0)
        f.write("\n")
    with atomic_open(merges_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(MERGES_HEADER + "\n")
        for a, b in merges:
            f.write(f"{token_to_str(a)} {token_to_str(b)}\n")
    return vocab_path, merges_path


def _line_of(text: str, key: str) -> str:
    """' line N' where ``key`` appears as a JSON string in ``text``, or '' if not found."""
    for form in (json.dumps(key, ensure_ascii=False), json.dumps(key)):
        pos = text.find(form)
        if pos >= 0:
            return f" line {text.count(chr(10), 0, pos) + 1}"
    return ""


def _read_text(path: Path, what: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LMError(
            f"{what} {path} does not exist; train a tokenizer first (lm train-bpe)"
        ) from None
    except OSError as e:
        raise LMError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise LMError(
            f"{path}: line {line} (byte offset {e.start}) is not valid UTF-8; "
            f"a GPT-2 {what} is UTF-8 text"
        ) from None


def load_vocab(vocab_path: str | os.PathLike) -> dict[int, bytes]:
    """Read a GPT-2 ``vocab.json`` into ``{id: token bytes}``."""
    path = Path(vocab_path)
    text = _read_text(path, "vocab file")

    def no_duplicates(pairs):
        seen: dict = {}
        for k, v in pairs:
            if k in seen:
                raise LMError(
                    f"{path}:{_line_of(text, k)} token {k!r} appears twice; each token has one id"
                )
            seen[k] = v
        return seen

    try:
        raw = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise LMError(
            f"{path}: line {e.lineno} column {e.colno}: not valid JSON ({e.msg})"
        ) from None
    if not isinstance(raw, dict):
        raise LMError(
            f"{path}: expected a JSON object mapping tokens to ids, got {type(raw).__name__}"
        )
    vocab: dict[int, bytes] = {}
    for key, token_id in raw.items():
        # (the line number is looked up only for an error message: finding it for every
        # token would make loading quadratic in the vocabulary size)
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            raise LMError(
                f"{path}:{_line_of(text, key)} token {key!r} has id {token_id!r}; ids must be "
                f"non-negative integers"
            )
        try:
            token = str_to_token(key)
        except KeyError as e:
            raise LMError(
                f"{path}:{_line_of(text, key)} token {key!r} contains {e.args[0]!r}, which is not a "
                f"GPT-2 byte-to-unicode character; vocab.json must store tokens in that mapped form "
                f"(space is 'Ġ')"
            ) from None
        if not token:
            raise LMError(f"{path}:{_line_of(text, key)} the empty string is not a token")
        if token_id in vocab:
            raise LMError(
                f"{path}:{_line_of(text, key)} id {token_id} is given to both "
                f"{token_to_str(vocab[token_id])!r} and {key!r}; ids must be unique"
            )
        vocab[token_id] = token
    return vocab


def load_merges(
    merges_path: str | os.PathLike, vocab: dict[int, bytes] | None = None
) -> list[tuple[bytes, bytes]]:
    """Read a GPT-2 ``merges.txt``; if ``vocab`` is given, check every part is in it."""
    return _read_merges(Path(merges_path), vocab)[0]


def _read_merges(
    path: Path, vocab: dict[int, bytes] | None
) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """The merges of ``path`` and the line number of each."""
    text = _read_text(path, "merges file")
    known = set(vocab.values()) if vocab is not None else None
    merges: list[tuple[bytes, bytes]] = []
    line_numbers: list[int] = []
    lines = text.split("\n")
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if lineno == 1 and line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise LMError(
                f"{path}: line {lineno}: {line!r} is not a merge; each line must be two tokens "
                f"separated by one space"
            )
        pair = []
        for part in parts:
            try:
                pair.append(str_to_token(part))
            except KeyError as e:
                raise LMError(
                    f"{path}: line {lineno}: {part!r} contains {e.args[0]!r}, which is not a GPT-2 "
                    f"byte-to-unicode character"
                ) from None
        a, b = pair
        if known is not None:
            for part, token in zip(parts, pair, strict=True):
                if token not in known:
                    raise LMError(
                        f"{path}: line {lineno}: merge part {part!r} is not in the vocabulary; "
                        f"merges.txt and vocab.json do not belong together"
                    )
            if a + b not in known:
                raise LMError(
                    f"{path}: line {lineno}: merged token {token_to_str(a + b)!r} is not in the "
                    f"vocabulary; merges.txt and vocab.json do not belong together"
                )
        merges.append((a, b))
        line_numbers.append(lineno)
    return merges, line_numbers


_MATCHING_FILES = (
    "use the vocab.json and merges.txt written together by lm train-bpe, or retrain the "
    "tokenizer (lm train-bpe)"
)


def verify_tokenizer(
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    vocab_path: Path,
    merges_path: Path,
    merge_lines: list[int],
    special_tokens: list[str] | None = None,
) -> None:
    """Check that ``vocab`` is exactly 256 bytes + one token per merge + special tokens.

    Ids run 0..N-1 without a gap; every single byte is a token; each merge makes a token
    no other merge makes; every other token is a special token: one of ``special_tokens``
    when they are known (``stats.json`` of ``lm train-bpe``), else one after every merged
    token, where ``save_tokenizer`` puts them. Raises ``LMError`` naming the file and line.
    A ``merges.txt`` with a line deleted fails here instead of encoding differently.
    """
    ids = sorted(vocab)
    for expected, token_id in enumerate(ids):
        if token_id != expected:
            key = token_to_str(vocab[token_id])
            raise LMError(
                f"{vocab_path}:{_vocab_line(vocab_path, key)} id {expected} is missing (ids jump "
                f"from {expected - 1} to {token_id}); a vocabulary's ids run from 0 to its size "
                f"- 1 without a gap; {_MATCHING_FILES}"
            )
    token_id = {token: i for i, token in vocab.items()}
    missing = [b for b in range(256) if bytes([b]) not in token_id]
    if missing:
        shown = ", ".join(token_to_str(bytes([b])) for b in missing[:8])
        raise LMError(
            f"{vocab_path}: lacks {len(missing)} of the 256 single bytes ({shown}); a byte-level "
            f"vocabulary holds every byte; {_MATCHING_FILES}"
        )
    made_by: dict[int, int] = {}  # token id -> index of the merge that makes it
    for index, (a, b) in enumerate(merges):
        made = token_id[a + b]
        if made in made_by:
            first = merge_lines[made_by[made]]
            raise LMError(
                f"{merges_path}: line {merge_lines[index]}: merge "
                f"{token_to_str(a)!r} {token_to_str(b)!r} makes {token_to_str(a + b)!r}, which "
                f"line {first} already makes; each token is made by one merge, so remove line "
                f"{merge_lines[index]} (or {_MATCHING_FILES})"
            )
        made_by[made] = index
    _check_unmerged(vocab, made_by, vocab_path, merges_path, merge_lines, special_tokens)


def _check_unmerged(vocab, made_by, vocab_path, merges_path, merge_lines, special_tokens):
    """Every token that is neither a byte nor made by a merge must be a special token."""
    specials = None if special_tokens is None else {s.encode("utf-8") for s in special_tokens}
    last_made = max(made_by, default=-1)
    for i in sorted(vocab):
        token = vocab[i]
        if len(token) == 1 or i in made_by:
            continue
        if (specials is None and i > last_made) or (specials is not None and token in specials):
            continue
        after = [j for j in made_by if j > i]
        where = (
            f"line {merge_lines[made_by[min(after)]]}"
            if after
            else f"the end (after line {merge_lines[-1] if merge_lines else 1})"
        )
        key = token_to_str(token)
        raise LMError(
            f"{vocab_path}:{_vocab_line(vocab_path, key)} token {key!r} (id {i}) is not made by "
            f"any merge of {merges_path} and is not a special token: a line of merges.txt is "
            f"missing (the merge making {key!r} belongs at {where}); {_MATCHING_FILES}"
        )


def _vocab_line(vocab_path: Path, key: str) -> str:
    return _line_of(vocab_path.read_text(encoding="utf-8"), key)


def load_tokenizer(
    vocab_path: str | os.PathLike,
    merges_path: str | os.PathLike,
    special_tokens: list[str] | None = None,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Read ``vocab.json`` and ``merges.txt`` into ``(vocab, merges)``, as ``train_bpe`` returns them.

    Raises ``LMError`` naming the file and line for malformed files, for a merge whose
    parts (or result) are not in the vocabulary, and for files that do not make one
    tokenizer (:func:`verify_tokenizer`; ``special_tokens``: those it was trained with,
    when known).
    """
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    vocab = load_vocab(vocab_path)
    merges, lines = _read_merges(merges_path, vocab)
    verify_tokenizer(vocab, merges, vocab_path, merges_path, lines, special_tokens)
    return vocab, merges
