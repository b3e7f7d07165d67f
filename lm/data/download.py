"""Download a file over HTTP(S) once: streamed, progress bar, ``.gz`` decompressed on the fly,
optional SHA-256 check, written atomically (a failed or truncated download leaves nothing).
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from lm import envvars
from lm.errors import LMError
from lm.io import atomic_open
from lm.progress import progress_bar

CHUNK = 1 << 20

#: Seconds a download waits for the server to connect, answer or send more data
#: (``LM_DOWNLOAD_TIMEOUT`` changes it) before it fails naming the URL.
DEFAULT_TIMEOUT_S = 60.0


def download_timeout() -> float:
    """``LM_DOWNLOAD_TIMEOUT`` in seconds, else DEFAULT_TIMEOUT_S."""
    return envvars.seconds("LM_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_S)


def _is_gzip(url: str, first: bytes) -> bool:
    return url.split("?", 1)[0].endswith(".gz") or first[:2] == b"\x1f\x8b"


class _Gunzip:
    """Streaming gzip decoder that also handles multi-member files (``cat a.gz b.gz``)."""

    def __init__(self):
        self._d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self.mid_member = False  # True while a member has started but not ended

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._d.decompress(data))
            if self._d.eof:
                data = self._d.unused_data
                self._d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                self.mid_member = False
            else:
                self.mid_member = True
                data = b""
        return b"".join(out)


def local_copy_hint(what: str) -> str:
    """How to use a copy of the file already on disk instead of downloading it."""
    parts = what.split(".")
    if len(parts) == 3 and parts[0] == "datasets":
        override = f"datasets: {{{parts[1]}: {{{parts[2]}: {{path: /path/to/file}}}}}}"
        return (
            f"If you have a copy of the file, use it without editing config.yaml: put "
            f"`{override}` in a file of your own, say local.yaml, and add "
            f"`--configfile local.yaml` to the snakemake command (its path: replaces the url:)."
        )
    return f"If you have a copy of the file, point {what} at it with `path: /path/to/file`."


def download(
    url: str,
    out: str | Path,
    sha256: str | None = None,
    *,
    what: str = "the dataset",
    timeout: float | None = None,
    progress: bool = True,
    sha256_from: str = "config.yaml",
) -> dict:
    """Fetch ``url`` into ``out`` (decompressing ``.gz``) and return a summary.

    ``sha256``, when given, is checked against the bytes as served (before
    decompression). ``what`` names the config key in error messages, e.g.
    ``datasets.owt.train``; ``sha256_from`` the config file that gave the checksum.
    ``timeout``: seconds to wait for the server each time (default: download_timeout()).
    """
    hint = local_copy_hint(what)
    timeout = download_timeout() if timeout is None else timeout
    waited = f"within {timeout:g} s (LM_DOWNLOAD_TIMEOUT)"
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise LMError(
            f"cannot download {url} for {what}: HTTP {e.code} {e.reason}. {hint}"
        ) from None
    except (TimeoutError, urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            raise LMError(
                f"no answer from {url} for {what} {waited}: the server is slow or unreachable. "
                f"Run again, or {hint[3:]}"
            ) from None
        raise LMError(f"cannot reach {url} for {what}: {reason}. {hint}") from None

    expected = response.headers.get("Content-Length")
    expected = int(expected) if expected and expected.isdigit() else None
    digest = hashlib.sha256()
    received = 0
    written = 0
    gunzip = None
    try:
        with (
            response,
            atomic_open(out, "wb") as f,
            progress_bar(
                expected, f"download {Path(out).name}", "B", progress, unit_scale=True
            ) as bar,
        ):
            while True:
                try:
                    data = response.read(CHUNK)
                except http.client.IncompleteRead as e:
                    received += len(e.partial)
                    raise LMError(
                        f"download of {url} for {what} was cut short after {received} of "
                        f"{expected} bytes; the partial file was removed. Run again, or {hint[3:]}"
                    ) from None
                if not data:
                    break
                received += len(data)
                digest.update(data)
                bar.update(len(data))
                if gunzip is None and received == len(data):
                    gunzip = _Gunzip() if _is_gzip(url, data) else False
                if gunzip:
                    data = gunzip.feed(data)
                f.write(data)
                written += len(data)
            if expected is not None and received < expected:
                raise LMError(
                    f"download of {url} for {what} was cut short after {received} of {expected} "
                    f"bytes; the partial file was removed. Run again, or {hint[3:]}"
                )
            if gunzip and gunzip.mid_member:
                raise LMError(
                    f"download of {url} for {what} ended in the middle of its gzip stream "
                    f"(truncated file); the partial file was removed. Run again, or {hint[3:]}"
                )
            if sha256 and digest.hexdigest() != sha256.lower():
                raise LMError(
                    f"checksum mismatch for {url} ({what}): expected sha256 {sha256.lower()}, "
                    f"got {digest.hexdigest()}; the file was removed. If the file changed upstream "
                    f"on purpose, update {what}.sha256 in {sha256_from}."
                )
    except zlib.error as e:
        raise LMError(
            f"{url} ({what}) is not a valid gzip file ({e}); the partial file was removed."
        ) from None
    except TimeoutError:
        raise LMError(
            f"download of {url} for {what} stalled: no data {waited} after {received} bytes; "
            f"the partial file was removed. Run again, or {hint[3:]}"
        ) from None
    except ConnectionError as e:
        raise LMError(
            f"download of {url} for {what} failed after {received} bytes: {e}; the partial file "
            f"was removed. Run again, or {hint[3:]}"
        ) from None
    return {
        "url": url,
        "bytes_downloaded": received,
        "bytes_written": written,
        "sha256": digest.hexdigest(),
        "decompressed": bool(gunzip),
    }
