"""The records of a run: metrics.jsonl, the means since the last record, tokens per
second, the divergence check, and the sinks that get every record."""

from __future__ import annotations

import json
import math

import torch

from lm.training.clock import WallClock
from lm.training.distributed import SINGLE
from lm.training.metrics import MetricsFile, Recorder, divergence
from lm.training.state import LoopState


class ListSink:
    """A sink (the interface: log(record), close()) that keeps what it is given."""

    def __init__(self):
        self.records, self.closed = [], False

    def log(self, record: dict) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed = True


def _recorder(tmp_path, state=None, factor=2.0, sinks=None):
    state = state or LoopState()
    file = MetricsFile(tmp_path / "metrics.jsonl", state.records)
    recorder = Recorder(
        state,
        dist=SINGLE,
        device=torch.device("cpu"),
        clock=WallClock(state.elapsed),
        divergence_factor=factor,
        file=file,
        sinks=sinks if sinks is not None else [],
    )
    return recorder, state


def _lines(tmp_path):
    return [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_divergence_names_a_non_finite_loss_or_a_rise_above_the_factor():
    assert divergence(5, 3.0, None, start=2.0, factor=2.0) is None
    assert divergence(5, math.nan, None, start=2.0, factor=2.0) == "train loss is nan at step 5"
    assert divergence(5, None, math.inf, start=2.0, factor=2.0) == "val loss is inf at step 5"
    assert divergence(7, 4.5, None, start=2.0, factor=2.0) == (
        "train loss 4.5 at step 7 is above 2 x the initial val loss 2"
    )
    assert divergence(7, 4.5, 9.0, start=2.0, factor=None) is None  # the check is off
    assert divergence(7, 4.5, None, start=None, factor=2.0) is None  # no initial loss
    assert divergence(7, None, None, start=2.0, factor=2.0) is None


def test_a_record_averages_the_steps_since_the_last_and_goes_to_every_sink(tmp_path):
    sink = ListSink()
    recorder, state = _recorder(tmp_path, sinks=[sink])
    first = recorder.record(0, None, 4.0)
    assert first == {
        "step": 0, "tokens": 0, "wallclock_s": first["wallclock_s"], "lr": None,
        "train_loss": None, "val_loss": 4.0, "grad_norm": None, "tokens_per_s": None,
    }  # fmt: skip
    for loss, norm in ((3.0, 1.0), (2.0, 0.5)):
        recorder.add(torch.tensor(loss), torch.tensor(norm))
        state.tokens += 64
    second = recorder.record(2, 0.01, None)
    assert (second["train_loss"], second["grad_norm"], second["lr"]) == (2.5, 0.75, 0.01)
    assert second["tokens"] == 128 and second["tokens_per_s"] > 0
    assert second["wallclock_s"] >= first["wallclock_s"]
    assert recorder.pending() == ([], [])  # taken by the record
    assert state.records == sink.records == _lines(tmp_path) == [first, second]
    assert state.status == "running"
    recorder.close()
    assert sink.closed and recorder.file.file.closed


def test_a_rise_above_the_factor_diverges_the_run_once(tmp_path):
    recorder, state = _recorder(tmp_path)
    recorder.record(0, None, 2.0)
    recorder.add(torch.tensor(5.0), torch.tensor(1.0))
    recorder.record(1, 0.1, None)
    assert (state.status, state.diverged_step) == ("diverged", 1)
    assert state.diverged_reason == "train loss 5 at step 1 is above 2 x the initial val loss 2"
    recorder.add(torch.tensor(math.nan), torch.tensor(1.0))
    recorder.record(2, 0.1, None)
    assert state.diverged_step == 1  # the first reason stays


def test_non_finite_values_are_null_in_the_record_and_the_reason_is_kept(tmp_path):
    recorder, state = _recorder(tmp_path)
    recorder.add(torch.tensor(math.inf), torch.tensor(math.nan))
    rec = recorder.record(1, 0.1, math.nan)
    assert (rec["train_loss"], rec["val_loss"], rec["grad_norm"]) == (None, None, None)
    assert state.status == "diverged" and state.diverged_reason == "train loss is inf at step 1"
    assert _lines(tmp_path) == [rec]  # strict JSON: no NaN or Infinity in the file
    recorder.close()


def test_a_resumed_recorder_rewrites_the_file_and_keeps_the_pending_steps(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{"step": 5}\n{"step": 7, "cut')
    state = LoopState(
        step=6, tokens=96, elapsed=12.0, records=[{"step": 0, "val_loss": 3.0}],
        pending_losses=[2.0], pending_norms=[1.0],
    )  # fmt: skip
    recorder, _ = _recorder(tmp_path, state=state)
    assert _lines(tmp_path) == [{"step": 0, "val_loss": 3.0}]  # the checkpoint's records only
    assert recorder.pending() == ([2.0], [1.0])
    recorder.add(torch.tensor(4.0), torch.tensor(3.0))
    rec = recorder.record(7, 0.1, None)
    assert (rec["train_loss"], rec["grad_norm"]) == (3.0, 2.0)
    assert rec["wallclock_s"] >= 12.0  # the clock counts the earlier sessions
    assert _lines(tmp_path)[-1] == rec
    recorder.close()


def test_the_progress_line_shows_the_latest_record(tmp_path, capsys):
    recorder, _ = _recorder(tmp_path)
    recorder.record(0, None, 3.0)  # before the line opens: shown nowhere
    recorder.open_progress(3, "r", "log", initial=1)
    recorder.add(torch.tensor(1.25), torch.tensor(1.0))
    recorder.record(2, 0.1, 1.5)
    recorder.advance()
    recorder.close_progress()
    lines = capsys.readouterr().err.splitlines()
    assert "r: 1/3 steps" in lines[0]  # opened at the resumed step
    assert "r: 2/3 steps" in lines[-1] and "loss 1.250 | val_loss 1.500" in lines[-1]
    assert recorder.bar is None
    recorder.close()
