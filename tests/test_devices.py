"""The GPU pool (lm.devices, `lm with-gpus`) with real processes on a faked device list:
concurrent holders get disjoint devices, a holder killed with SIGKILL frees its devices,
and each command sees exactly its own in CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lm.devices import DevicePool, machine_gpus, parse_devices
from lm.errors import LMError

LM = [sys.executable, "-m", "lm"]


def test_parse_devices_reads_cuda_visible_devices_as_cuda_does():
    assert parse_devices("0,1,3") == ["0", "1", "3"]
    assert parse_devices(" 2 , GPU-8f3a ") == ["2", "GPU-8f3a"]
    assert parse_devices("") == []
    assert parse_devices("0,-1,2") == ["0"]  # the list ends at the first invalid entry
    with pytest.raises(LMError, match="listed twice"):
        parse_devices("0,0")


def test_machine_gpus_follow_cuda_visible_devices_when_set():
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "4,5"}) == ["4", "5"]
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_pool_hands_out_disjoint_devices_and_takes_them_back(tmp_path):
    pool = DevicePool(["0", "1", "2"], tmp_path)
    a = pool.try_acquire(2)
    b = pool.try_acquire(1)
    assert a is not None and b is not None
    assert set(a) | set(b) == {"0", "1", "2"} and not set(a) & set(b)
    assert pool.try_acquire(1) is None  # all taken: nothing held after the failed try
    assert [h is not None for _, h in pool.status()] == [True, True, True]
    with pytest.raises(LMError, match="no 1 free GPU"):
        pool.acquire(1, timeout=0.2)
    with pytest.raises(LMError, match="this machine has 3"):
        pool.acquire(4)
    from lm.devices import release

    release(b)
    with pool.holding(1) as got:
        assert got == list(b)
    release(a)
    assert [h for _, h in pool.status()] == [None, None, None]


def holder(tmp_path: Path, name: str, n: int, *extra: str) -> subprocess.Popen:
    """`lm with-gpus N` of a command that records its CUDA_VISIBLE_DEVICES, then sleeps."""
    out = tmp_path / f"{name}.devices"
    code = (
        "import os, pathlib, time; "
        f"pathlib.Path({str(out)!r}).write_text(os.environ['CUDA_VISIBLE_DEVICES']); "
        "time.sleep(120)"
    )
    cmd = [*LM, "with-gpus", str(n), "--devices", "0,1,2,3", "--lock-dir", str(tmp_path / "locks")]
    return subprocess.Popen(
        [*cmd, *extra, "--", sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def devices_of(tmp_path: Path, name: str, proc: subprocess.Popen, timeout: float = 60) -> set:
    out = tmp_path / f"{name}.devices"
    deadline = time.monotonic() + timeout
    while not out.exists() or not out.read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{name} never got its devices"
        time.sleep(0.05)
    return set(out.read_text().split(","))


@pytest.mark.slow
def test_concurrent_jobs_get_disjoint_devices_and_a_killed_job_frees_its_own(tmp_path):
    procs = {}
    try:
        procs["a"] = holder(tmp_path, "a", 2)
        procs["b"] = holder(tmp_path, "b", 1)
        procs["c"] = holder(tmp_path, "c", 1)
        got = {name: devices_of(tmp_path, name, p) for name, p in procs.items()}
        assert [len(got[n]) for n in "abc"] == [2, 1, 1]
        assert set.union(*got.values()) == {"0", "1", "2", "3"}  # disjoint: 4 distinct

        # the pool is full: one more job waits, and gives up at its timeout with a clear error
        late = holder(tmp_path, "late", 1, "--timeout", "1")
        _, err = late.communicate(timeout=60)
        assert late.returncode == 2 and "no 1 free GPU(s)" in err

        # SIGKILL (no cleanup code runs): the kernel drops the locks, a waiting job gets them
        procs["d"] = holder(tmp_path, "d", 2)
        time.sleep(1)
        assert not (tmp_path / "d.devices").exists()  # still waiting
        os.kill(procs["a"].pid, signal.SIGKILL)
        procs["a"].wait(timeout=30)
        assert devices_of(tmp_path, "d", procs["d"]) == got["a"]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.communicate()


def test_with_gpus_zero_hides_every_gpu_and_too_many_is_an_error(tmp_path):
    show = [sys.executable, "-c", "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    zero = subprocess.run(
        [*LM, "with-gpus", "0", "--", *show], capture_output=True, text=True, env=env
    )
    assert zero.returncode == 0 and zero.stdout.strip() == "''"
    lock_dir = str(tmp_path / "locks")
    many = subprocess.run(
        [*LM, "with-gpus", "3", "--lock-dir", lock_dir, "--", *show],
        capture_output=True,
        text=True,
        env=env,
    )
    assert many.returncode == 2
    assert "3 GPU(s) wanted but this machine has 2 (devices: 0,1)" in many.stderr


@pytest.mark.slow
def test_a_job_waiting_for_a_full_pool_times_out_naming_the_pool_and_its_holders(tmp_path):
    """LM_GPU_WAIT bounds the wait of `lm with-gpus` (no --timeout): the error names the
    GPUs, who holds them and the pool's lock directory."""
    first = holder(tmp_path, "first", 4)
    try:
        devices_of(tmp_path, "first", first)
        cmd = [*LM, "with-gpus", "1", "--devices", "0,1,2,3", "--lock-dir", str(tmp_path / "locks")]
        late = subprocess.run(
            [*cmd, "--", sys.executable, "-c", "pass"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "LM_GPU_WAIT": "1"},
        )
    finally:
        first.kill()
        first.wait(timeout=30)
    assert late.returncode == 2, late.stderr
    assert "waiting up to 1 s for 1 free GPU(s) among 0,1,2,3" in late.stderr
    assert re.search(
        rf"no 1 free GPU\(s\) among 0,1,2,3 after 1 s: GPU 0 held by pid {first.pid} \S+",
        late.stderr,
    ), late.stderr
    assert f"(the GPU pool, locks in {tmp_path / 'locks'})" in late.stderr
