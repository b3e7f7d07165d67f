"""Data-parallel training under ``torchrun``: who this process is, and the few collectives
the training loop needs.

``lm train`` runs unchanged as N processes under ``torchrun`` (one node: ``torchrun
--standalone --nproc-per-node N -m lm train ...``; several nodes: the c10d rendezvous).
torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`setup` reads them and
joins the process group: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on
CPU. Without torchrun nothing is initialised and every helper here is the identity, so the
plain single-process loop pays nothing.

How the ranks share the work, so that the N-process run sees exactly the data of the
1-process run: ``training.batch_size`` is the global batch; every rank draws the same
seeded batch of window starts and takes its own contiguous slice (:meth:`Dist.shard`),
DDP averages the gradients (equal slices, so the average is the gradient of the global
mean loss), and validation windows are split the same way with the losses all-reduced.

Every collective has a timeout (``LM_DIST_TIMEOUT`` seconds, default 600): a rank that
died or hangs makes the others fail with :class:`~lm.errors.LMError` naming the cause
instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import signal
import sys
from dataclasses import dataclass

import torch

from lm import envvars
from lm.errors import LMError

DEFAULT_TIMEOUT_S = 600.0


def timeout_s() -> float:
    return envvars.seconds("LM_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``world`` processes, this one ``rank`` (``local_rank``
    on its node). ``world == 1`` is the plain single process."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    launched: bool = False  # started by torchrun: a process group, even of one process

    @property
    def active(self) -> bool:
        """In a process group: the collectives run (also for one process under torchrun;
        the DDP wrapper only for several, see the loop)."""
        return self.launched or self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes metrics, checkpoints, curves and result.json."""
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """This rank's contiguous share of a global batch of ``batch_size`` rows."""
        per = batch_size // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    # -- collectives (identity without a process group) ------------------------------

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``t`` over ranks (in place, also returned)."""
        if self.active:
            with self.guard("averaging losses"):
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
            t /= self.world
        return t

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on at least one (a joint decision)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        with self.guard("agreeing on when to stop"):
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def maximum(self, value: int, device: torch.device) -> int:
        """The largest of every rank's ``value`` (a whole number), on every rank."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=device)
        with self.guard("agreeing on a stop request"):
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (any picklable value)."""
        if not self.active:
            return obj
        box = [obj]
        with self.guard("receiving rank 0's decision"):
            torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self, what: str) -> None:
        if self.active:
            with self.guard(what):
                torch.distributed.barrier()

    @contextlib.contextmanager
    def guard(self, what: str):
        """Turn a failed or timed-out collective into an LMError that says what happened."""
        try:
            yield
        except (
            RuntimeError,
            ValueError,
        ) as e:  # DistBackendError and friends subclass RuntimeError
            raise LMError(
                f"rank {self.rank} of {self.world}: a collective ({what}) failed: a peer closed its "
                f"connection or did not answer within {timeout_s():g} s (LM_DIST_TIMEOUT); another "
                f"process of this job probably died or hangs (see its log). "
                f"Rerun the same command to resume from the last checkpoint. Cause: {e}"
            ) from e


SINGLE = Dist()


def from_env() -> Dist:
    """Where this process sits, from torchrun's environment (single process without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise LMError(
            f"WORLD_SIZE/RANK/LOCAL_RANK must be integers (set by torchrun): {e}"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise LMError(f"RANK {rank} is outside WORLD_SIZE {world}; launch lm train with torchrun")
    launched = "TORCHELASTIC_RUN_ID" in os.environ
    return Dist(world=world, rank=rank, local_rank=local_rank, launched=launched)


def die_with_launcher() -> None:
    """Under torchrun, end this worker when its launcher dies.

    torchrun starts each worker in a session of its own, so a kill of the launcher (by
    Snakemake, SLURM, Ctrl-C twice, the OOM killer) would leave the workers running on,
    writing into the run directory that the rerun resumes from. Linux's parent-death
    signal closes that hole; elsewhere this does nothing.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the launcher died before the signal was armed
        os._exit(1)


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when running under torchrun with several processes.

    Returns the process's :class:`Dist` and its device: ``cuda:LOCAL_RANK`` for a CUDA
    run (each process its own GPU), the given device otherwise.
    """
    die_with_launcher()
    dist = from_env()
    if not dist.active:
        return dist, device
    if not torch.distributed.is_available():
        raise LMError("this torch build has no torch.distributed; run lm train as one process")
    if device.type == "cuda":
        if dist.local_rank >= torch.cuda.device_count():
            raise LMError(
                f"LOCAL_RANK {dist.local_rank} has no GPU: this node sees {torch.cuda.device_count()}; "
                f"start at most that many processes per node (--nproc-per-node)"
            )
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise LMError(
            f"data-parallel training runs on CUDA (NCCL) or CPU (gloo), not {device.type}; "
            f"set training.device: cuda or cpu, or run one process"
        )
    if not torch.distributed.is_initialized():
        with dist.guard("joining the process group"):
            torch.distributed.init_process_group(
                backend=backend, timeout=datetime.timedelta(seconds=timeout_s())
            )
    return dist, device


def teardown(dist: Dist) -> None:
    if dist.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
