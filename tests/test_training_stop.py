"""A run told to stop (SIGTERM, SIGINT) saves at the step it is in, exits 75 with one line,
and the rerun ends equal to an uninterrupted run: real processes, real signals, sent once
metrics.jsonl shows the run is training."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import micro_run, micro_tokens, write_run
from test_distributed import _env, _lm_train, _standalone, assert_same_run

from lm.training.checkpoint import verify_checkpoint
from lm.training.config import run_from_file
from lm.training.loop import train
from lm.training.stop import EXIT_STOPPED

#: the signal goes out at step 20; 130 steps after it leave room for a slow machine
STEPS = 150
#: a checkpoint every 45 steps, logs every 10: a stop lands between them almost always
SHAPE = dict(steps=STEPS, checkpoint_every=45, log_every=10, eval_every=50)
MESSAGE = re.compile(
    r"^lm train: stopped by (SIG[A-Z]+) at step (\d+); checkpoint saved; rerun to resume$",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The run's config and tokens, and the run trained without interruption."""
    tmp = tmp_path_factory.mktemp("stop")
    cfg = write_run(tmp / "run.json", micro_run("stop-micro", **SHAPE))
    train_npy, valid_npy = micro_tokens(tmp)
    reference = tmp / "reference"
    train(run_from_file(cfg), train_npy, valid_npy, reference, progress=False)
    return cfg, train_npy, valid_npy, reference


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until metrics.jsonl has a record at ``step`` or later (the run is in its loop)."""
    deadline = time.monotonic() + timeout
    metrics = out / "metrics.jsonl"
    while True:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no step {step} in {metrics} after {timeout} s"
        if metrics.is_file():
            lines = metrics.read_text().splitlines()
            if lines and lines[-1].endswith("}") and json.loads(lines[-1])["step"] >= step:
                return
        time.sleep(0.01)


def assert_stopped(out: Path, signame: str, stderr: str, returncode: int) -> int:
    """The stop as it must look: exit 75, the one line, a verified checkpoint at the stop
    step and nothing of a finished run. Returns the step."""
    assert returncode == EXIT_STOPPED, stderr[-3000:]
    found = MESSAGE.findall(stderr)
    assert len(found) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    name, step = found[0][0], int(found[0][1])
    assert name == signame and 0 < step < STEPS
    newest = sorted((out / "checkpoints").glob("step_*.pt"))[-1]
    assert newest.name == f"step_{step:08d}.pt" and verify_checkpoint(newest) is None
    assert not (out / "result.json").exists() and not (out / "checkpoints" / "final.pt").exists()
    return step


def assert_bit_identical(out: Path, reference: Path) -> None:
    """metrics.jsonl (but the wall clock) and the final weights equal the reference's."""
    clocked = {"wallclock_s", "tokens_per_s"}
    lines = lambda p: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k not in clocked}
        for line in (p / "metrics.jsonl").read_text().splitlines()
    ]
    assert lines(out) == lines(reference)
    final = lambda p: torch.load(p / "checkpoints" / "final.pt", weights_only=True)["model"]  # noqa: E731
    a, b = final(out), final(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _resume(cmd: list[str], out: Path, stopped_at: int, sessions: int = 2) -> dict:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == STEPS
    assert result["resumed_at_step"] == stopped_at and result["sessions"] == sessions
    return result


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_saves_at_the_step_exits_75_and_the_rerun_is_bit_identical(setup, tmp_path, sig):
    cfg, train_npy, valid_npy, reference = setup
    out = tmp_path / "run"
    cmd = [sys.executable, *_lm_train(cfg, train_npy, valid_npy, out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    wait_for_step(out, 20, proc)
    proc.send_signal(sig)
    if sig == signal.SIGINT:  # Ctrl-C pressed twice: the second must not cut the save short
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    step = assert_stopped(out, sig.name, stderr, proc.returncode)

    _resume(cmd, out, step)
    assert_bit_identical(out, reference)


@pytest.mark.slow
def test_torchrun_passes_sigterm_on_and_every_rank_stops_at_the_same_step(setup, tmp_path):
    cfg, train_npy, valid_npy, reference = setup
    out = tmp_path / "ddp"
    proc = _standalone(2, _lm_train(cfg, train_npy, valid_npy, out))
    wait_for_step(out, 20, proc)
    os.kill(proc.pid, signal.SIGTERM)  # the launcher alone, as a scheduler signals it
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, output[-3000:]  # not done: a scheduler must run it again
    assert len(MESSAGE.findall(output)) == 1, output[-3000:]  # rank 0 speaks for the job
    step = int(MESSAGE.findall(output)[0][1])
    newest = sorted((out / "checkpoints").glob("step_*.pt"))[-1]
    assert newest.name == f"step_{step:08d}.pt" and verify_checkpoint(newest) is None
    assert not (out / "result.json").exists()
    # resumed by 2 processes again; equal to the 1-process run within DDP's rounding
    again = _standalone(2, _lm_train(cfg, train_npy, valid_npy, out))
    output, _ = again.communicate(timeout=240)
    assert again.returncode == 0, output[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["resumed_at_step"] == step and result["sessions"] == 2
    assert_same_run(reference, out)
