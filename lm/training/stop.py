"""Stopping a run on request: a signal makes the loop finish its step, save, and exit.

A scheduler warns a job before its time limit or a preemption with a signal (SLURM's
``--signal``, SIGTERM by default; Kubernetes, ``kill`` and systemd send SIGTERM too), and
Ctrl-C sends SIGINT. While a run trains, :class:`StopRequest` turns the first SIGTERM or
SIGINT into a request instead of the end of the process: the loop finishes the step it is
in, saves a checkpoint at that step (the normal atomic save, verified on resume), and
:mod:`lm.training.cli` exits with :data:`EXIT_STOPPED` and one line::

    lm train: stopped by SIGTERM at step 120; checkpoint saved; rerun to resume

Rerunning the same command resumes from that checkpoint and ends equal to an uninterrupted
run (metrics.jsonl and final weights). Further signals while the run finishes its step and
saves are ignored, so a second Ctrl-C or a scheduler repeating its warning cannot cut the
save short (SIGKILL still can; the save is atomic, so the run resumes from the checkpoint
before). Under ``torchrun`` every rank asks the others each step whether any was signalled
(one all-reduce of one number), so all stop after the same step and the checkpoint is
consistent; torchrun passes a SIGTERM or SIGINT it receives on to its workers.
"""

from __future__ import annotations

import os
import signal
import threading

import torch

from lm.training.distributed import Dist

#: Exit status of ``lm train`` stopped by a signal after saving its checkpoint: EX_TEMPFAIL
#: of sysexits.h ("a temporary failure; try again"). Non-zero, so a scheduler or Snakemake
#: counts the job as not done and retries it, and distinct from an error (2), a crash (1)
#: and a process killed outright (128 + the signal).
EXIT_STOPPED = getattr(os, "EX_TEMPFAIL", 75)

#: The signals that ask a run to stop.
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):  # noqa: N818 - a run's outcome, not an error
    """Training stopped on a signal after saving its checkpoint at ``step``."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved; "
            f"rerun to resume"
        )


class StopRequest:
    """While entered (``with StopRequest() as stop:``), SIGTERM and SIGINT set
    :attr:`signum` (the first one received) instead of ending the process; the previous
    handlers come back on exit. Outside the main thread, where Python cannot take signals,
    it installs nothing and is never requested."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _note(self, signum: int, frame) -> None:
        if self.signum is None:  # later signals: already stopping
            self.signum = signum

    def requested(self, dist: Dist, device: torch.device) -> int | None:
        """The signal that asks the run to stop now, on every rank alike (a collective under
        torchrun: any rank's signal stops all), or None."""
        if not dist.active:
            return self.signum
        return dist.maximum(self.signum or 0, device) or None
