"""Progress reporting: plain lines at a steady cadence in a log, a tqdm bar on a terminal."""

from __future__ import annotations

import io

import pytest

from lm import progress as prog
from lm.progress import LogProgress, NoProgress, format_duration, progress_bar, resolve_mode


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_log_lines_come_every_percent_but_not_closer_than_the_minimum_interval():
    clock, buf = Clock(), io.StringIO()
    p = LogProgress(10_000, "merge", "merges", file=buf, clock=clock)
    for i in range(1, 10_001):  # 10 ms per merge: 1% = 100 merges = 1 s, all in 100 s
        clock.t = i / 100
        p.update()
    p.close()
    out = lines(buf)
    # a line at the start, then one per LOG_MIN_INTERVAL_S (the last at the end)
    assert len(out) == 1 + round(100 / prog.LOG_MIN_INTERVAL_S)
    assert "merge: 0/10,000 merges (0.0%)" in out[0]
    assert "merge: 1,000/10,000 merges (10.0%)" in out[1] and "ETA 1m30s" in out[1]
    assert "merge: 10,000/10,000 merges (100.0%)" in out[-1] and "100 merges/s" in out[-1]
    assert "ETA" in out[1] and "ETA" not in out[-1]


def test_a_slow_step_still_reports_at_the_maximum_interval():
    clock, buf = Clock(), io.StringIO()
    p = LogProgress(1000, "encode", "B", unit_scale=True, file=buf, clock=clock)
    for _ in range(5):
        clock.t += prog.LOG_MAX_INTERVAL_S
        p.update(1)  # far less than 1% each time
    assert len(lines(buf)) == 6
    assert "5 B/1.0 kB (0.5%)" in lines(buf)[-1]


def test_eta_and_postfix_in_a_training_line():
    clock, buf = Clock(), io.StringIO()
    p = LogProgress(400, "ts17m", "steps", initial=100, file=buf, clock=clock)
    clock.t = 20.0
    p.set_postfix(loss="3.210", **{"tokens/s": "81,920"})
    p.update(100)  # 100 steps in 20 s: 5 steps/s, 200 left = 40 s
    last = lines(buf)[-1]
    assert "ts17m: 200/400 steps (50.0%)" in last
    assert "5.00 steps/s" in last and "ETA 40s" in last
    assert last.endswith("loss 3.210 | tokens/s 81,920")


def test_close_writes_the_final_state_once():
    clock, buf = Clock(), io.StringIO()
    with LogProgress(3, "x", file=buf, clock=clock) as p:
        p.update(3)
    p.close()
    assert len(lines(buf)) == 2


def test_work_that_ends_short_of_its_total_gets_no_eta_at_the_end():
    clock, buf = Clock(), io.StringIO()
    with LogProgress(100, "merge", "merges", file=buf, clock=clock) as p:
        clock.t = 1.0
        p.update(60)  # BPE ran out of pairs
    assert "60/100 merges (60.0%)" in lines(buf)[-1] and "ETA" not in lines(buf)[-1]


@pytest.mark.parametrize(
    "mode, tty, kind",
    [
        ("auto", True, "bar"),
        ("auto", False, "log"),
        (True, False, "log"),
        ("log", True, "log"),
        ("none", True, "none"),
        (False, True, "none"),
        (None, False, "none"),
    ],
)
def test_mode_resolution(mode, tty, kind):
    class Stream(io.StringIO):
        def isatty(self):
            return tty

    assert resolve_mode(mode, Stream()) == kind


def test_no_progress_accepts_every_call_and_a_bad_mode_is_named():
    p = progress_bar(10, "x", mode="none")
    assert isinstance(p, NoProgress)
    p.update(3)
    p.set_postfix(loss=1)
    p.close()
    with pytest.raises(ValueError, match="one of auto, bar, log, none"):
        progress_bar(10, "x", mode="loud")


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600, "1h00m"), (7380, "2h03m")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_cli_steps_log_progress_lines(tmp_path, capsys):
    """`lm train-bpe --progress log` (what the pipeline runs) writes plain lines, no bar."""
    from lm.cli import main
    from lm.data.demo import write_corpus

    corpus = write_corpus(tmp_path / "c.txt", documents=30, seed=0)
    assert corpus
    code = main(
        ["train-bpe", str(tmp_path / "c.txt"), "--vocab-size", "300", "--out",
         str(tmp_path / "tok"), "--progress", "log"]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "pre-tokenize: 0 B/" in err and "(100.0%)" in err
    assert "merge: 0/43 merges (0.0%)" in err
