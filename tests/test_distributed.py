"""Data-parallel training under real torchrun processes (gloo on CPU).

The N-process run must see exactly the data of the 1-process run: same losses at every
logged step (to float rounding of the gradient average), same final weights; also as two
"nodes" meeting at a c10d rendezvous on 127.0.0.1, and after a kill, resumed at another
process count. A rank that dies makes the others fail, named, instead of hanging.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import micro_run, micro_tokens, write_run

from lm.errors import LMError
from lm.training import distributed
from lm.training.loop import train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _setup(tmp: Path, **training) -> tuple[Path, Path, Path]:
    defaults = dict(steps=40, eval_every=20, log_every=5, checkpoint_every=20)
    cfg = write_run(tmp / "run.json", micro_run("ddp-micro", **{**defaults, **training}))
    return (cfg, *micro_tokens(tmp))


def _lm_train(cfg, train_npy, valid_npy, out) -> list[str]:
    return [
        "-m", "lm", "train", "--config", str(cfg), "--train-tokens", str(train_npy),
        "--valid-tokens", str(valid_npy), "--out", str(out), "--progress", "none",
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(launch: list[str], args: list[str], **env) -> subprocess.Popen:
    """torchrun with ``launch`` options running ``args``, in a session of its own (a
    killpg takes the launcher; its workers die with it)."""
    return subprocess.Popen(
        [*TORCHRUN, *launch, *args],
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _standalone(nproc: int, args: list[str], **env) -> subprocess.Popen:
    return _torchrun(["--standalone", f"--nproc-per-node={nproc}"], args, **env)


def _two_nodes(args: list[str], run_id: str, **env) -> list[subprocess.Popen]:
    """Two one-process "nodes" on 127.0.0.1 meeting at a c10d rendezvous."""
    port = _free_port()
    launch = [
        "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={run_id}", "--max-restarts=0",
    ]  # fmt: skip
    return [_torchrun(launch, args, **env) for _ in range(2)]


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _reference(tmp: Path, cfg: Path, train_npy: Path, valid_npy: Path) -> Path:
    """The same run as one plain process (in this process: no launcher at all)."""
    from lm.training.config import run_from_file

    out = tmp / "single"
    train(run_from_file(cfg), train_npy, valid_npy, out, progress=False)
    return out


def assert_same_run(a: Path, b: Path, weights_atol: float = 1e-5) -> None:
    ma, mb = _metrics(a), _metrics(b)
    assert [r["step"] for r in ma] == [r["step"] for r in mb]
    for ra, rb in zip(ma, mb, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm"):
            if ra[key] is None:
                assert rb[key] is None, (ra, rb)
            else:
                assert rb[key] == pytest.approx(ra[key], rel=1e-5), (key, ra, rb)
    wa = torch.load(a / "checkpoints" / "final.pt", weights_only=True)["model"]
    wb = torch.load(b / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=weights_atol, msg=k)
    ra = json.loads((a / "result.json").read_text())
    rb = json.loads((b / "result.json").read_text())
    assert (ra["steps"], ra["tokens"]) == (rb["steps"], rb["tokens"])


# ---------------------------------------------------------------------------- unit


def test_shards_cover_the_global_batch_once():
    for world in (1, 2, 4):
        rows = [
            list(range(16))[distributed.Dist(world=world, rank=r).shard(16)] for r in range(world)
        ]
        assert sum(rows, []) == list(range(16))


def test_batch_must_divide_over_the_processes(tmp_path):
    from lm.training import loop
    from lm.training.config import run_from_file
    from lm.training.stop import StopRequest

    cfg, train_npy, valid_npy = _setup(tmp_path, batch_size=6)

    with pytest.raises(LMError, match="batch_size 6 is the global batch.*4 processes"):
        loop._train_process(
            run_from_file(cfg),
            train_npy,
            valid_npy,
            tmp_path / "out",
            dist=distributed.Dist(world=4, rank=0),
            device=torch.device("cpu"),
            t_setup=0.0,
            progress=False,
            fresh=False,
            sync_timing=False,
            on_config_change="error",
            stop=StopRequest(),
        )
    assert not (tmp_path / "out").exists()


def test_dist_timeout_is_checked(monkeypatch):
    monkeypatch.setenv("LM_DIST_TIMEOUT", "soon")
    with pytest.raises(LMError, match="LM_DIST_TIMEOUT"):
        distributed.timeout_s()
    monkeypatch.setenv("LM_DIST_TIMEOUT", "12.5")
    assert distributed.timeout_s() == 12.5


# ---------------------------------------------------------------------------- torchrun


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default run's config and tokens, and that run trained as one plain process:
    the reference the two-process and the two-node tests compare with (trained once)."""
    tmp = tmp_path_factory.mktemp("ddp-default")
    cfg, train_npy, valid_npy = _setup(tmp)
    return cfg, train_npy, valid_npy, _reference(tmp, cfg, train_npy, valid_npy)


@pytest.mark.slow
def test_two_processes_equal_one(default_run, tmp_path):
    cfg, train_npy, valid_npy, single = default_run
    two = tmp_path / "two"
    proc = _standalone(2, _lm_train(cfg, train_npy, valid_npy, two))
    out = _finish(proc)
    assert "2 processes" in out
    assert_same_run(single, two)
    result = json.loads((two / "result.json").read_text())
    assert result["processes"] == 2
    # only rank 0 wrote: one line per logged step, one final checkpoint
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == [
        "final.pt",
        "final.pt.check.json",
    ]


@pytest.mark.slow
def test_two_processes_equal_one_through_a_batch_warmup(tmp_path):
    """training.batch_warmup_steps: each step's smaller global batch (2, 2, 4, ... 8
    windows) splits over the two processes as the full one does; the tokens count them."""
    from lm.training.config import run_from_file

    cfg, train_npy, valid_npy = _setup(
        tmp_path, steps=20, eval_every=10, checkpoint_every=10, batch_warmup_steps=8,
        batch_warmup_start=2,
    )  # fmt: skip
    two = tmp_path / "two"
    proc = _standalone(2, _lm_train(cfg, train_npy, valid_npy, two))
    single = _reference(tmp_path, cfg, train_npy, valid_npy)
    _finish(proc)
    # the same losses (1e-5); the weights within 1e-4: with one window a rank, a few of
    # Adam's near-zero gradient elements turn the average's rounding into 5e-5 (measured)
    assert_same_run(single, two, weights_atol=1e-4)
    run = run_from_file(cfg)
    assert run.batch_size_at(1) == 2 and run.batch_size_at(9) == 8
    assert json.loads((two / "result.json").read_text())["tokens"] == run.tokens_through(20)


@pytest.mark.slow
def test_two_nodes_on_localhost_equal_one(default_run, tmp_path):
    cfg, train_npy, valid_npy, single = default_run
    nodes = tmp_path / "nodes"
    procs = _two_nodes(_lm_train(cfg, train_npy, valid_npy, nodes), "lm-test")
    for p in procs:
        _finish(p)
    assert_same_run(single, nodes)


def _wait_for(path_glob, directory: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not list(directory.glob(path_glob)):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"no {path_glob} in {directory} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_two_process_run_resumes_exactly_at_another_process_count(tmp_path):
    # killed at its first checkpoint (step 50): 100 steps of room before the run could end
    cfg, train_npy, valid_npy = _setup(tmp_path, steps=150, checkpoint_every=50, log_every=10)
    out = tmp_path / "killed"
    proc = _standalone(2, _lm_train(cfg, train_npy, valid_npy, out))
    _wait_for("checkpoints/step_*.pt", out, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert killed_at < 150, "the run ended before it could be killed; make it longer"
    # resume as one process, then compare with an uninterrupted single-process run
    resumed = subprocess.run(
        [sys.executable, *_lm_train(cfg, train_npy, valid_npy, out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["sessions"] == 2 and result["resumed_at_step"] >= 50
    assert_same_run(_reference(tmp_path, cfg, train_npy, valid_npy), out)


@pytest.mark.slow
def test_a_dead_rank_fails_the_job_instead_of_hanging(tmp_path):
    """Two nodes; node 1 is killed mid-training. Node 0's rank must fail within the
    collective timeout with a message that says what happened."""
    cfg, train_npy, valid_npy = _setup(tmp_path, steps=100_000, checkpoint_every=100)
    out = tmp_path / "dead"
    procs = _two_nodes(_lm_train(cfg, train_npy, valid_npy, out), "lm-dead", LM_DIST_TIMEOUT="20")
    _wait_for("checkpoints/step_*.pt", out, procs[0])
    os.killpg(procs[1].pid, signal.SIGKILL)
    t0 = time.monotonic()
    try:
        log, _ = procs[0].communicate(timeout=150)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert procs[0].returncode != 0
    assert time.monotonic() - t0 < 150
    assert "another process of this job probably died or hangs" in log, log[-3000:]


@pytest.mark.slow
def test_a_hung_rank_fails_the_job_after_the_collective_timeout(tmp_path):
    """A rank that stops answering (SIGSTOP) without dying: the other fails after
    LM_DIST_TIMEOUT, and torchrun ends the job."""
    cfg, train_npy, valid_npy = _setup(tmp_path, steps=100_000, checkpoint_every=100)
    out = tmp_path / "hung"
    proc = _standalone(2, _lm_train(cfg, train_npy, valid_npy, out), LM_DIST_TIMEOUT="8")
    _wait_for("checkpoints/step_*.pt", out, proc)
    workers = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(workers) == 2, workers
    stopped = max(workers, key=int)
    os.kill(int(stopped), signal.SIGSTOP)
    try:
        log, _ = proc.communicate(timeout=150)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(stopped), signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "did not answer within 8 s" in log, log[-3000:]


def test_a_peer_that_never_joins_fails_the_join_naming_the_wait(tmp_path):
    """Rank 0 of 2 whose peer never starts: joining the process group gives up after
    LM_DIST_TIMEOUT with the message of every collective, not a raw torch traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "WORLD_SIZE": "2",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "LM_DIST_TIMEOUT": "2",
    }
    code = (
        "import torch\n"
        "from lm.errors import LMError\n"
        "from lm.training import distributed\n"
        "try:\n"
        "    distributed.setup(torch.device('cpu'))\n"
        "except LMError as e:\n"
        "    print(e)\n"
        "    raise SystemExit(3)\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    assert done.stdout.startswith(
        "rank 0 of 2: a collective (joining the process group) failed: a peer closed its "
        "connection or did not answer within 2 s (LM_DIST_TIMEOUT)"
    ), done.stdout
