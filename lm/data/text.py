"""Check that a corpus file is readable UTF-8 text, streaming, and count what is in it."""

from __future__ import annotations

import os
from pathlib import Path

from lm.errors import LMError
from lm.progress import progress_bar

CHUNK = 4 << 20


def check_readable(path: str | Path, what: str = "the file") -> Path:
    """Return ``path`` as a Path if it is an existing, readable regular file; else a clear error."""
    path = Path(os.path.expandvars(os.path.expanduser(str(path))))
    if not path.exists():
        raise LMError(
            f"{what}: file {path} does not exist. Fix the path in config.yaml "
            f"(relative paths are relative to the directory you run snakemake in)."
        )
    if not path.is_file():
        raise LMError(f"{what}: {path} is not a regular file. Point it at a text file.")
    if not os.access(path, os.R_OK):
        raise LMError(f"{what}: file {path} is not readable. Check its permissions (chmod +r).")
    return path


def inspect_text(
    path: str | Path,
    separator: str = "<|endoftext|>",
    what: str = "the file",
    progress: bool = True,
) -> dict:
    """Stream ``path``, check it decodes as UTF-8, and count bytes, lines and documents.

    Documents are counted as occurrences of ``separator`` (plus one for trailing text
    after the last separator). Invalid UTF-8 raises an ``LMError`` giving the byte
    offset and line of the first bad byte.
    """
    path = check_readable(path, what)
    if not separator:
        raise LMError("the document separator must be a non-empty string, e.g. <|endoftext|>")
    sep = separator.encode("utf-8")
    size = path.stat().st_size
    n_bytes = n_lines = n_sep = 0
    carry = b""  # an incomplete UTF-8 sequence at the end of the previous chunk
    tail = b""  # the last len(sep)-1 bytes, to count separators that straddle chunks
    last_byte = b""
    trailing_text = False
    with (
        open(path, "rb") as f,
        progress_bar(size, f"check {path.name}", "B", progress, unit_scale=True) as bar,
    ):
        while True:
            chunk = f.read(CHUNK)
            final = not chunk
            data = carry + chunk
            base = n_bytes - len(carry)  # file offset of data[0]
            try:
                data.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as e:
                err = e
                if e.reason == "unexpected end of data" and not final:
                    # a multi-byte character cut by the chunk boundary: finish it next round
                    try:
                        data[: e.start].decode("utf-8")
                        err = None
                        carry = data[e.start :]
                    except UnicodeDecodeError as e2:
                        err = e2
                if err is not None:
                    offset = base + err.start
                    line = n_lines + data[: err.start].count(b"\n") + 1  # carry holds no newline
                    bad = data[err.start : err.start + 1].hex()
                    raise LMError(
                        f"{what}: {path} is not UTF-8 text: invalid byte 0x{bad} at byte offset "
                        f"{offset} (line {line}). Convert it to UTF-8 first, e.g. "
                        f"`iconv -f latin1 -t utf-8 {path.name} > fixed.txt`, and point the config "
                        f"at that."
                    ) from None
            if final:
                break
            window = tail + chunk
            n_sep += window.count(sep)
            last = window.rfind(sep)
            if last >= 0:  # is there text after the last separator seen so far?
                trailing_text = bool(window[last + len(sep) :].strip())
            elif chunk.strip():
                trailing_text = True
            tail = window[-(len(sep) - 1) :] if len(sep) > 1 else b""
            n_lines += chunk.count(b"\n")
            n_bytes += len(chunk)
            last_byte = chunk[-1:]
            bar.update(len(chunk))
    # text after the last separator that is more than whitespace counts as a document
    documents = n_sep + (1 if trailing_text else 0)
    if last_byte and last_byte != b"\n":
        n_lines += 1
    return {
        "path": str(path),
        "bytes": n_bytes,
        "lines": n_lines,
        "documents": documents,
        "separator": separator,
    }
