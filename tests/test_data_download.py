"""download() against a real HTTP server on 127.0.0.1."""

import gzip
import hashlib
import http.server
import re
import socket
import threading

import pytest

from lm.data.download import download
from lm.errors import LMError

BODY = ("Once upon a time there was a test.\n<|endoftext|>\n" * 2000).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, declared_length = route
        self.send_response(200)
        self.send_header("Content-Length", str(declared_length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def server():
    gz = gzip.compress(BODY)
    two_members = gzip.compress(BODY[:1000]) + gzip.compress(BODY[1000:])
    Handler.routes = {
        "/plain.txt": (BODY, len(BODY)),
        "/data.txt.gz": (gz, len(gz)),
        "/two.txt.gz": (two_members, len(two_members)),
        "/truncated.txt": (BODY[:500], len(BODY)),
        # a gzip file cut short, served with a matching length: only the gzip stream says so
        "/cut.txt.gz": (gz[: len(gz) // 2], len(gz) // 2),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_plain_with_checksum(server, tmp_path):
    out = tmp_path / "a.txt"
    summary = download(f"{server}/plain.txt", out, hashlib.sha256(BODY).hexdigest(), progress=False)
    assert out.read_bytes() == BODY
    assert summary["bytes_downloaded"] == len(BODY) and not summary["decompressed"]


@pytest.mark.parametrize("name", ["data.txt.gz", "two.txt.gz"])
def test_gzip_is_decompressed_while_streaming(server, tmp_path, name):
    out = tmp_path / "a.txt"
    summary = download(f"{server}/{name}", out, progress=False)
    assert out.read_bytes() == BODY
    assert summary["decompressed"]


def test_checksum_mismatch_removes_file(server, tmp_path):
    with pytest.raises(LMError, match="checksum mismatch.*datasets.x.train.sha256"):
        download(
            f"{server}/plain.txt",
            tmp_path / "a.txt",
            "0" * 64,
            what="datasets.x.train",
            progress=False,
        )
    assert leftovers(tmp_path) == []


def test_truncated_body_removes_file(server, tmp_path):
    with pytest.raises(LMError, match="cut short after 500 of"):
        download(f"{server}/truncated.txt", tmp_path / "a.txt", progress=False)
    assert leftovers(tmp_path) == []


def test_truncated_gzip_removes_file(server, tmp_path):
    with pytest.raises(LMError, match="gzip stream"):
        download(f"{server}/cut.txt.gz", tmp_path / "a.txt", progress=False)
    assert leftovers(tmp_path) == []


def test_http_error_says_how_to_use_a_local_copy(server, tmp_path):
    with pytest.raises(LMError, match=r"HTTP 404.*path: /path/to/file"):
        download(
            f"{server}/missing.txt", tmp_path / "a.txt", what="datasets.x.valid", progress=False
        )
    assert leftovers(tmp_path) == []


def test_connection_refused(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(LMError, match=r"cannot reach .*datasets.owt.train.*path:"):
        download(
            f"http://127.0.0.1:{port}/x.txt",
            tmp_path / "a.txt",
            what="datasets.owt.train",
            progress=False,
        )
    assert leftovers(tmp_path) == []


def test_a_server_that_never_answers_times_out_naming_the_url(tmp_path, monkeypatch):
    """A server that accepts the connection but sends nothing: the download gives up after
    LM_DOWNLOAD_TIMEOUT seconds, naming the URL and the timeout, and leaves nothing."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # the kernel accepts connections; nobody ever reads or answers
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/x.txt"
    monkeypatch.setenv("LM_DOWNLOAD_TIMEOUT", "0.5")
    try:
        with pytest.raises(LMError) as e:
            download(url, tmp_path / "a.txt", what="datasets.owt.train", progress=False)
    finally:
        sock.close()
    assert f"no answer from {url} for datasets.owt.train within 0.5 s (LM_DOWNLOAD_TIMEOUT)" in str(
        e.value
    )
    assert leftovers(tmp_path) == []


class StallingHandler(http.server.BaseHTTPRequestHandler):
    """Sends its headers and the first bytes of a body, then nothing more."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY[:100])
        self.wfile.flush()
        self.server.release.wait(30)  # holds the connection open, silent


def test_a_download_that_stalls_times_out_naming_the_url(tmp_path, monkeypatch):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StallingHandler)
    httpd.release = threading.Event()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/x.txt"
    monkeypatch.setenv("LM_DOWNLOAD_TIMEOUT", "0.5")
    try:
        with pytest.raises(LMError) as e:
            download(url, tmp_path / "a.txt", what="datasets.owt.train", progress=False)
    finally:
        httpd.release.set()
        httpd.shutdown()
    assert re.match(
        rf"download of {re.escape(url)} for datasets.owt.train stalled: no data within 0.5 s "
        rf"\(LM_DOWNLOAD_TIMEOUT\) after \d+ bytes; the partial file was removed",
        str(e.value),
    ), str(e.value)
    assert leftovers(tmp_path) == []
