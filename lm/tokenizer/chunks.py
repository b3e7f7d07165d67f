"""Work on a text in pieces, in parallel: chunks cut at safe boundaries, forked workers, UTF-8 errors.

Pre-token counting (:mod:`lm.tokenizer.pretokenize`), dataset encoding
(:mod:`lm.tokenizer.encoding.dataset`) and :meth:`lm.tokenizer.Tokenizer.encode_parallel` all
cut a text where the cut changes nothing (a byte offset of a file here, a character position
of a string for ``encode_parallel``), hand the pieces to workers (forked processes here;
threads with the native engine, which releases the GIL, in dataset encoding and
``encode_parallel``), and put the results back in order. This module holds the parts they
share:

- :func:`find_boundary` and :func:`file_chunks`: a file cut into byte ranges of about
  ``chunk_size`` at safe boundaries, which neither a special token nor a pre-token straddles.
- :class:`ForkedMap`: a function over a list of pieces (byte ranges, spans), run by forked
  worker processes that inherit the caller's memory (the tokenizer, the text), results in
  order and in bounded memory.
- :class:`BadUTF8` and :func:`utf8_error`: invalid UTF-8 found in a piece, told as an
  ``LMError`` naming the file, the byte offset, the line and the fix.
"""

from __future__ import annotations

import codecs
import gc
import heapq
import math
import os
import pickle
import re
import signal
import traceback
from collections.abc import Callable, Sequence

from lm.errors import LMError

# ---------------------------------------------------------------------- safe boundaries

#: Upper bound on the bytes one task reads at once (a chunk may run past it only
#: to reach the next safe boundary).
MAX_CHUNK_SIZE = 4 << 20
#: Lower bound, so tiny files are not cut into pointlessly small tasks.
MIN_CHUNK_SIZE = 64 << 10

# A text byte position p is a safe boundary when the byte before it is printable ASCII
# other than space (so not whitespace) and the byte at p is a space or a newline.
# Every alternative of the GPT-2 pattern (lm.tokenizer.pretokenize.GPT2_PATTERN) either
# contains no whitespace or contains only whitespace, and a leading space is only ever at
# the start of a match; so no match can hold both the non-space before p and the space at
# p: the match covering p-1 ends at p. The pattern has no look-behind, so matching from p
# on does not depend on what came before. Splitting there leaves the pre-tokens unchanged.
_SAFE_TEXT_BOUNDARY = re.compile(rb"[\x21-\x7e](?=[ \n])")
_BOUNDARY_WINDOW = 1 << 16


def chunk_size_for(size: int, workers: int) -> int:
    """A chunk size giving each worker a few chunks, within [MIN_CHUNK_SIZE, MAX_CHUNK_SIZE]."""
    target = math.ceil(size / max(1, 4 * workers))
    return max(MIN_CHUNK_SIZE, min(MAX_CHUNK_SIZE, target))


def find_boundary(f, offset: int, size: int, special_bytes: list[bytes]) -> int:
    """The first safe chunk boundary at or after ``offset`` in the open binary file ``f``.

    A safe boundary is a byte offset ``p`` that no special-token occurrence spans, and that
    is either the start of a special token, or a space/newline right after a printable
    non-space ASCII character (see ``_SAFE_TEXT_BOUNDARY``). Splitting the file at such a
    ``p`` changes neither the special-token split nor the pre-tokens. The result depends
    only on the file and ``offset`` (never on how much is read at a time), and is
    non-decreasing in ``offset``, so the boundaries tile the file. Returns ``size`` if no
    safe boundary follows (a chunk then runs to the end of the file).
    """
    if offset <= 0:
        return 0
    if offset >= size:
        return size
    longest = max((len(s) for s in special_bytes), default=1)
    pos = offset
    while pos < size:
        base = max(0, pos - longest)
        f.seek(base)
        buf = f.read(pos + _BOUNDARY_WINDOW + longest - base)
        lo, hi = pos - base, min(pos + _BOUNDARY_WINDOW, size) - base
        for p in _candidates(buf, lo, hi, special_bytes):
            if not _spanned(buf, p, special_bytes):
                return base + p
        pos += _BOUNDARY_WINDOW
    return size


def _candidates(buf: bytes, lo: int, hi: int, special_bytes: list[bytes]):
    """Candidate boundaries p in ``buf[lo:hi]``, in increasing order (lazily)."""
    text = (m.end() for m in _SAFE_TEXT_BOUNDARY.finditer(buf, lo - 1, hi))
    specials = []
    for s in special_bytes:
        j = buf.find(s, lo, hi + len(s) - 1)
        while 0 <= j < hi:
            specials.append(j)
            j = buf.find(s, j + 1, hi + len(s) - 1)
    return heapq.merge(sorted(specials), text)


def _spanned(buf: bytes, p: int, special_bytes: list[bytes]) -> bool:
    """Whether an occurrence of a special token starts before ``p`` and ends after it."""
    for s in special_bytes:
        j = buf.find(s, max(0, p - len(s) + 1), p + len(s) - 1)
        while 0 <= j < p:
            if j + len(s) > p:
                return True
            j = buf.find(s, j + 1, p + len(s) - 1)
    return False


def file_chunks(path: str | os.PathLike, special_tokens, chunk_size: int) -> list[tuple[int, int]]:
    """(start, end) byte ranges tiling the file, cut at the first safe boundary at or after
    each multiple of ``chunk_size`` (empty ranges dropped)."""
    size = os.path.getsize(path)
    if size == 0:
        return []
    special_bytes = [s.encode("utf-8") for s in special_tokens]
    cuts = [0]
    with open(path, "rb") as f:
        for k in range(1, -(-size // chunk_size)):
            p = find_boundary(f, k * chunk_size, size, special_bytes)
            if p > cuts[-1]:
                cuts.append(p)
    if cuts[-1] < size:
        cuts.append(size)
    return list(zip(cuts, cuts[1:], strict=False))


def read_range(path: str | os.PathLike, start: int, end: int) -> bytes:
    """The bytes ``[start, end)`` of the file."""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


# ---------------------------------------------------------------------- UTF-8 errors


class BadUTF8(Exception):
    """Invalid UTF-8 at byte ``offset`` of the file a piece came from (picklable, so a worker
    can send it back); :func:`utf8_error` turns it into the message for the user."""

    def __init__(self, offset: int, reason: str):
        super().__init__(offset, reason)
        self.offset, self.reason = offset, reason


def decode_utf8(data: bytes, start: int = 0) -> str:
    """``data`` (the bytes of a file from byte ``start`` on) as text; :class:`BadUTF8` with
    the file offset of the first invalid byte if it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadUTF8(start + e.start, e.reason) from None


def first_bad_utf8(path: str | os.PathLike, block: int = 1 << 20) -> BadUTF8 | None:
    """The first invalid UTF-8 of a file (read in blocks), or ``None`` if it is all valid."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read before this block
    with open(path, "rb") as f:
        while True:
            data = f.read(block)
            held = len(decoder.getstate()[0])  # the start of a character cut by the last block
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:  # e.start counts from the held bytes
                return BadUTF8(offset - held + e.start, e.reason)
            if not data:
                return None
            offset += len(data)


def utf8_error(path: str | os.PathLike, offset: int, reason: str) -> LMError:
    """The ``LMError`` for invalid UTF-8 at byte ``offset`` of the text file ``path``."""
    line, column = _line_and_column(path, offset)
    return LMError(
        f"{path}: invalid UTF-8 at byte offset {offset} (line {line}, byte {column} of the line): "
        f"{reason}; the text must be UTF-8 (re-encode it, e.g. with iconv -t UTF-8)"
    )


def _line_and_column(path: str | os.PathLike, offset: int) -> tuple[int, int]:
    """1-based line and byte column of byte ``offset`` in ``path``, reading it in blocks."""
    line, last_nl, pos = 1, -1, 0
    with open(path, "rb") as f:
        while pos < offset:
            block = f.read(min(1 << 20, offset - pos))
            if not block:
                break
            n = block.count(b"\n")
            if n:
                line += n
                last_nl = pos + block.rindex(b"\n")
            pos += len(block)
    return line, offset - last_nl


# ---------------------------------------------------------------------- forked workers


class ForkedMap:
    """``task(item)`` for each of ``items``, in order, computed by ``workers`` forked processes.

        with ForkedMap(encode_range, ranges, workers=4) as results:
            for ids in results:          # in the order of ranges
                ...

    Worker ``k`` takes items ``k``, ``k + workers``, ... and sends each result (pickled)
    through its own pipe as soon as it has it; this process reads the pipes in turn, so the
    results come in item order. A worker blocks while its pipe is full (64 KiB on Linux),
    so it cannot run ahead of the reader by more than one large result: memory holds about
    two results per worker, however many items there are. The workers are forked when iteration starts (``iter``, or entering ``with``, which
    also stops them on the way out): they inherit this process's memory (a tokenizer and its
    caches, a text), so only the items' results travel.

    ``finish`` (optional) is called in each worker after its last item, and what it returns
    is sent back too: after iteration, ``finished`` holds them in worker order. This is
    how a worker that accumulates (pre-token counts) returns its total once, not per item.

    With one worker, or where ``os.fork`` does not exist, everything runs in this process,
    in order, and ``finish`` is not called: the caller's own state holds the total.

    Errors: an exception in ``task`` or ``finish`` is raised here (with the worker's
    traceback as a note), at the item where it happened; a worker that dies without a
    result (killed, out of memory) raises ``LMError``. Leaving the loop early, or an error,
    kills the workers that are still running.
    """

    def __init__(
        self,
        task: Callable,
        items: Sequence,
        workers: int,
        finish: Callable | None = None,
        what: str = "worker",
    ):
        self.task, self.items, self.finish, self.what = task, items, finish, what
        self.workers = max(1, min(int(workers), len(items)))
        self.forked = self.workers > 1 and hasattr(os, "fork")
        self.finished: list = []
        self._children: list = []  # (pid, read end of its pipe) of each worker
        self._running: dict[int, int] = {}  # pid -> worker, until reaped

    def __enter__(self):
        """Start the workers now (not at the first result); the results, in order."""
        return iter(self)

    def __exit__(self, *exc) -> None:
        self._stop()

    def __iter__(self):
        if not self.forked:
            return map(self.task, self.items)
        self._children = [self._fork(k) for k in range(self.workers)]
        return self._in_order(self._children)

    def _in_order(self, children):
        try:
            for i in range(len(self.items)):
                yield self._receive(children[i % self.workers], i % self.workers)
            if self.finish is not None:
                self.finished = [self._receive(child, k) for k, child in enumerate(children)]
        finally:
            self._stop()

    def _stop(self) -> None:
        """Close the pipes; kill and reap the workers still there (none after a full run)."""
        for _, pipe in self._children:
            pipe.close()
        for pid in list(self._running):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap(pid)

    def _fork(self, k: int):
        """Start worker ``k``; returns its pid and the read end of its pipe."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(r)
            self._work(k, w)
        os.close(w)
        self._running[pid] = k
        return pid, open(r, "rb")

    def _work(self, k: int, fd: int):
        code = 0
        try:
            gc.disable()  # short-lived: a collection would only copy shared pages
            with open(fd, "wb") as out:
                try:
                    for item in self.items[k :: self.workers]:
                        _send(out, ("ok", self.task(item)))
                    if self.finish is not None:
                        _send(out, ("ok", self.finish()))
                except BaseException as e:  # sent to the parent, which raises it
                    tb = "".join(traceback.format_exception(e))
                    try:
                        message = pickle.dumps(("error", e, tb))
                    except Exception:  # not picklable: its traceback says what it was
                        message = pickle.dumps(("error", None, tb))
                    out.write(message)
        except BaseException:
            code = 1
        finally:
            os._exit(code)

    def _reap(self, pid: int) -> int:
        """Wait for worker ``pid`` to end; its wait status."""
        del self._running[pid]
        return os.waitpid(pid, 0)[1]

    def _receive(self, child, k: int):
        pid, pipe = child
        try:
            msg = pickle.load(pipe)
        except (EOFError, pickle.UnpicklingError):  # nothing, or cut short
            status = self._reap(pid)
            raise LMError(
                f"{self.what} process {k} died without a result (wait status {status}); "
                f"out of memory? try fewer workers"
            ) from None
        if msg[0] == "ok":
            return msg[1]
        _, error, tb = msg
        if error is None:
            raise LMError(f"{self.what} process {k} failed:\n{tb}")
        error.add_note(f"(raised in {self.what} process {k}:\n{tb})")
        raise error


def _send(out, msg) -> None:
    pickle.dump(msg, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()
