"""How a run is launched (lm.training.launch): its processes, the GPUs its job holds, and the
command that starts it; `training.processes` in the run config."""

from __future__ import annotations

import pytest
from conftest import MICRO_MODEL

from lm.errors import LMError
from lm.training.config import resolve_run
from lm.training.launch import job_gpus, run_processes, train_launcher
from lm.training.run_config import resume_differences


def run(**layers):
    base = {"model": dict(MICRO_MODEL, vocab_size=300), "training": {"steps": 10}}
    for section, values in layers.items():
        base.setdefault(section, {}).update(values)
    return resolve_run("r", base)


def test_one_process_is_plain_lm_train():
    r = run()
    assert r.training.processes == 1
    assert run_processes(r) == 1 and train_launcher(r) == "lm train"


def test_processes_launch_torchrun_with_that_many_processes():
    r = run(training={"processes": 2})
    assert run_processes(r) == 2
    assert train_launcher(r) == "torchrun --standalone --nproc-per-node 2 -m lm train"
    assert job_gpus(r, gpus_here=0) == 0  # device auto on a CPU machine: gloo on CPU
    assert job_gpus(r, gpus_here=8) == 2  # auto picks CUDA where there are GPUs: one each


def test_several_gpus_mean_one_process_per_gpu():
    r = run(resources={"gpu": 4})
    assert run_processes(r) == 4 and job_gpus(r, gpus_here=0) == 4
    assert "--nproc-per-node 4" in train_launcher(r)


def test_device_cuda_asks_one_gpu_per_process_and_cpu_none():
    assert job_gpus(run(training={"device": "cuda"}), gpus_here=0) == 1
    assert job_gpus(run(training={"device": "cuda", "processes": 2}), gpus_here=0) == 2
    assert job_gpus(run(training={"device": "cpu", "processes": 2}), gpus_here=8) == 0


def test_disagreeing_processes_and_gpus_or_an_uneven_batch_are_errors():
    with pytest.raises(LMError, match="processes is 2 but resources.gpu is 3"):
        run_processes(run(training={"processes": 2}, resources={"gpu": 3}))
    with pytest.raises(LMError, match="batch_size 10 .* multiple of 4"):
        run_processes(run(training={"processes": 4, "batch_size": 10}))


def test_processes_may_change_on_resume():
    assert resume_differences(run().to_dict(), run(training={"processes": 4}).to_dict()) == []


def test_processes_must_be_a_positive_whole_number():
    with pytest.raises(LMError, match="processes must be >= 1"):
        run(training={"processes": 0})
