"""The shared pieces of parallel work on a text (lm.tokenizer.chunks): forked workers with
results in order, errors and dead workers told here, and the first invalid UTF-8 of a file."""

from __future__ import annotations

import os
import random

import pytest

from lm.errors import LMError
from lm.tokenizer.chunks import BadUTF8, ForkedMap, first_bad_utf8, utf8_error


def square_and_pid(x):
    return x * x, os.getpid()


@pytest.mark.parametrize("workers", [1, 3])
def test_results_in_order_and_each_worker_finishes_once(workers):
    seen = []  # each forked worker appends to its own copy

    def task(x):
        seen.append(x)
        return square_and_pid(x)

    run = ForkedMap(task, list(range(20)), workers, finish=lambda: sorted(seen))
    results = list(run)
    assert [r for r, _ in results] == [x * x for x in range(20)]
    pids = {pid for _, pid in results}
    if workers == 1:
        assert pids == {os.getpid()} and run.finished == [] and seen == list(range(20))
    else:  # item i by worker i % 3, each worker's total sent back once
        assert os.getpid() not in pids and len(pids) == 3
        assert run.finished == [list(range(k, 20, 3)) for k in range(3)]
        assert seen == []


def test_workers_do_not_run_ahead_of_the_reader(tmp_path):
    """Results larger than a pipe's buffer: a worker starts an item only once the reader has
    taken (nearly all of) its previous result, so memory does not grow with the items."""
    started = tmp_path / "started"
    started.touch()

    def task(i):
        with open(started, "a") as f:
            f.write(f"{i}\n")
        return bytes(1 << 20)

    workers = 2
    with ForkedMap(task, list(range(24)), workers) as results:
        for i, result in enumerate(results):
            assert len(result) == 1 << 20
            n_started = len(started.read_text().split())
            assert n_started <= i + 1 + 2 * workers


def test_a_worker_error_is_raised_here_at_its_item():
    def task(x):
        if x == 7:
            raise BadUTF8(100 + x, "invalid start byte")
        return x

    got = []
    with pytest.raises(BadUTF8) as e:
        for r in ForkedMap(task, list(range(12)), 3):
            got.append(r)
    assert got == list(range(7)) and e.value.offset == 107
    assert "raised in worker process 1" in "".join(e.value.__notes__)


def test_a_dead_worker_is_named_and_the_others_are_stopped():
    def task(x):
        if x == 4:
            os._exit(3)  # as if killed for memory
        return x

    with pytest.raises(LMError, match=r"worker process 1 died without a result.*fewer workers"):
        list(ForkedMap(task, list(range(30)), 3))


def test_leaving_early_stops_the_workers():
    fork_map = ForkedMap(lambda x: x, list(range(1000)), 2)
    run = iter(fork_map)
    assert next(run) == 0
    pids = list(fork_map._running)
    assert len(pids) == 2
    run.close()
    for pid in pids:
        with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
            os.waitpid(pid, os.WNOHANG)


def test_first_bad_utf8_matches_decode_at_every_block_size(tmp_path):
    rng = random.Random(0)
    text = "".join(rng.choice(["a", "é", "日", "🙂", "\n", " "]) for _ in range(300)).encode()
    path = tmp_path / "t.txt"
    path.write_bytes(text)
    for block in (1, 2, 3, 5, 64, 1 << 20):
        assert first_bad_utf8(path, block) is None
    for bad in (b"\xff", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x99"):
        for at in (0, 1, 57, len(text)):
            at = len(text[:at].decode("utf-8", "ignore").encode())  # on a character boundary
            data = text[:at] + bad + text[at:]
            path.write_bytes(data)
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as e:
                want = (e.start, e.reason)
            for block in (1, 2, 3, 5, 64, 1 << 20):
                found = first_bad_utf8(path, block)
                assert (found.offset, found.reason) == want, (bad, at, block)


def test_utf8_error_names_file_offset_line_and_fix(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"one\ntwo\nthr\xffee\n")
    msg = str(utf8_error(path, 11, "invalid start byte"))
    assert msg.startswith(f"{path}: invalid UTF-8 at byte offset 11 (line 3, byte 4 of the line)")
    assert "iconv -t UTF-8" in msg
