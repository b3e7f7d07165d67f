"""How a run is launched: how many GPUs its job holds and the command that starts it.

A run is one job. With one process the command is ``lm train``; with N processes (a
run's ``training.processes: N``, or ``resources: {gpu: N}`` with N > 1: one process per
GPU) it is ``torchrun --standalone --nproc-per-node N -m lm train``, one job holding all
N GPUs (the pattern Snakemake recommends for multi-GPU jobs), and ``lm train`` itself
runs data-parallel under torchrun. Torch-free: the Snakefile builds its commands here.
"""

from __future__ import annotations

import shlex

from lm.errors import LMError
from lm.training.run_config import RunConfig


def run_processes(run: RunConfig) -> int:
    """Training processes of a resolved run: ``training.processes``, else one per GPU of
    a ``resources.gpu`` above 1."""
    processes = run.training.processes
    gpus = run.resources.gpu
    if processes > 1 and gpus > 0 and gpus != processes:
        raise LMError(
            f"run {run.name}: training.processes is {processes} but resources.gpu is {gpus}; "
            f"a multi-process run has one process per GPU, so set one of them (or both equal)"
        )
    processes = processes if processes > 1 else max(1, gpus)
    batch = run.training.batch_size
    if batch % processes:
        raise LMError(
            f"run {run.name}: training.batch_size {batch} (the global batch) does not split "
            f"evenly over {processes} processes; make it a multiple of {processes}"
        )
    return processes


def job_gpus(run: RunConfig, gpus_here: int) -> int:
    """GPUs the job of a resolved run holds, on a machine with ``gpus_here`` of them.

    Its ``resources.gpu`` (one per process for ``training.device: cuda``, or as
    declared); with ``device: auto``, one per process when this machine has GPUs (auto
    would pick CUDA there) and none otherwise.
    """
    device = run.training.device
    gpus = run.resources.gpu
    if device == "auto" and gpus == 0 and gpus_here > 0:
        return run_processes(run)
    return gpus


def train_launcher(run: RunConfig) -> str:
    """The shell words that start ``lm train`` for a resolved run: ``lm train``, or
    ``torchrun ... -m lm train`` for a multi-process run (its arguments follow)."""
    processes = run_processes(run)
    if processes == 1:
        return "lm train"
    words = ["torchrun", "--standalone", "--nproc-per-node", str(processes), "-m", "lm", "train"]
    return shlex.join(words)
