import os

import pytest

from lm.data.text import inspect_text
from lm.errors import LMError


def test_counts(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("one\n<|endoftext|>\ntwo ü\nmore\n<|endoftext|>\nthree", encoding="utf-8")
    stats = inspect_text(p, progress=False)
    assert stats["documents"] == 3
    assert stats["lines"] == 6
    assert stats["bytes"] == p.stat().st_size


def test_invalid_utf8_names_offset_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    head = "ok line\nsecond é\n".encode()
    p.write_bytes(head + b"caf\xe9 latin1\n")
    with pytest.raises(LMError) as e:
        inspect_text(p, progress=False)
    msg = str(e.value)
    assert "bad.txt" in msg and "not UTF-8" in msg
    assert f"byte offset {len(head) + 3} " in msg
    assert "line 3" in msg and "iconv" in msg


def test_multibyte_characters_across_chunk_boundaries(tmp_path, monkeypatch):
    import lm.data.text as text

    monkeypatch.setattr(text, "CHUNK", 7)  # cut every multi-byte char somewhere
    p = tmp_path / "u.txt"
    content = "héllo wörld 😀 <|endoftext|>\n日本語 <|endoftext|>\n" * 5
    p.write_text(content, encoding="utf-8")
    stats = inspect_text(p, progress=False)
    assert stats["documents"] == 10
    assert stats["bytes"] == len(content.encode())
    p.write_bytes(content.encode() + b"\xff")
    with pytest.raises(LMError, match=f"byte offset {len(content.encode())} "):
        inspect_text(p, progress=False)
    p.write_bytes(content.encode() + "😀".encode()[:2])  # truncated char at the very end
    with pytest.raises(LMError, match="not UTF-8"):
        inspect_text(p, progress=False)


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(LMError, match="does not exist"):
        inspect_text(tmp_path / "nope.txt", what="datasets.x.train")
    with pytest.raises(LMError, match="not a regular file"):
        inspect_text(tmp_path)
    p = tmp_path / "locked.txt"
    p.write_text("x")
    p.chmod(0)
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    with pytest.raises(LMError, match="not readable"):
        inspect_text(p)
