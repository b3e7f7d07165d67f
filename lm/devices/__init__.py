"""Which GPUs a job may use: the machine's GPUs, and a lock-file pool that hands them out.

Snakemake's local executor counts a ``gpu`` resource (so it never starts more GPU jobs
than ``--resources gpu=G``) but never says *which* GPU a job got. The pool does: each
device has a lock file in one directory, and a job holds ``flock`` locks on the files of
its devices for as long as it runs, with ``CUDA_VISIBLE_DEVICES`` naming exactly those.
The kernel drops a lock when the last process holding it ends, however it ends (a
``kill -9`` too), so a killed job cannot leak a device, and there is no state to clean up.

The pool is this machine's: by default ``$XDG_RUNTIME_DIR/lm-gpu-locks`` (or
``/tmp/lm-gpu-locks-UID``), shared by every pipeline the user runs here, so two
``snakemake`` processes in two checkouts do not put their jobs on one GPU either; a job
that finds every device taken waits for one. ``LM_GPU_LOCKS`` names another directory.

Torch-free and quick: the Snakefile imports it at start-up to count the GPUs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from lm import envvars
from lm.errors import LMError

#: Seconds between two looks at the pool while every wanted device is taken.
POLL_S = 0.5

#: Seconds ``lm with-gpus`` waits for free GPUs before it fails naming the pool and the
#: jobs holding them (``LM_GPU_WAIT`` or ``--timeout`` changes it): a day, longer than a
#: job of another pipeline on this machine should hold them.
DEFAULT_WAIT_S = 24 * 3600.0


def gpu_wait_timeout() -> float:
    """``LM_GPU_WAIT`` in seconds, else DEFAULT_WAIT_S."""
    return envvars.seconds("LM_GPU_WAIT", DEFAULT_WAIT_S, zero_ok=True)


def machine_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs jobs on this machine may use, as ``CUDA_VISIBLE_DEVICES`` entries.

    ``CUDA_VISIBLE_DEVICES``, when set, is the answer (a SLURM job's allocation, or a
    user's choice: ``CUDA_VISIBLE_DEVICES=0,1 snakemake ...`` uses two GPUs; an empty value
    means none). Otherwise the indices ``nvidia-smi`` lists, or none without it. CUDA
    itself is never initialised (the Snakefile runs this before forking jobs).
    """
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_devices(env["CUDA_VISIBLE_DEVICES"])
    return nvidia_smi("index")


def nvidia_smi(field: str) -> list[str]:
    """``nvidia-smi --query-gpu=FIELD``: one value per GPU; none without nvidia-smi, or
    when it fails (a driver problem: no usable GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def parse_devices(text: str) -> list[str]:
    """The devices of a ``CUDA_VISIBLE_DEVICES``-style list (``"0,1"``, ``"GPU-uuid"``).

    As CUDA reads it: the list ends at the first invalid entry (``-1`` hides every GPU).
    """
    devices = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        if entry in devices:
            raise LMError(f"device {entry!r} is listed twice in {text!r}; list each GPU once")
        devices.append(entry)
    return devices


def default_lock_dir() -> Path:
    """``LM_GPU_LOCKS``, else ``$XDG_RUNTIME_DIR/lm-gpu-locks``, else a per-user folder in /tmp."""
    if os.environ.get("LM_GPU_LOCKS"):
        return Path(os.environ["LM_GPU_LOCKS"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "lm-gpu-locks"
    return Path(tempfile.gettempdir()) / f"lm-gpu-locks-{os.getuid()}"


def _lock_name(device: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock"


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or None if it is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


class DevicePool:
    """The ``devices`` of one machine, handed out under the lock files in ``lock_dir``."""

    def __init__(self, devices: list[str], lock_dir: str | os.PathLike | None = None):
        self.devices = list(devices)
        self.lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()

    def try_acquire(self, n: int) -> dict[str, int] | None:
        """``n`` free devices locked now (device -> lock descriptor), or None, holding none."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        held: dict[str, int] = {}
        for device in self.devices:
            if len(held) == n:
                break
            fd = _try_lock(self.lock_dir / _lock_name(device))
            if fd is not None:
                held[device] = fd
        if len(held) == n:
            return held
        release(held)
        return None

    def acquire(self, n: int, timeout: float | None = None, log=None) -> dict[str, int]:
        """Wait until ``n`` devices are free and lock them; LMError after ``timeout`` s."""
        if n > len(self.devices):
            shown = ",".join(self.devices) or "none"
            raise LMError(
                f"{n} GPU(s) wanted but this machine has {len(self.devices)} (devices: {shown}); "
                f"ask for fewer (resources.gpu, training.processes) or run where there are more"
            )
        start = time.monotonic()
        said = False
        while True:
            held = self.try_acquire(n)
            if held is not None:
                return held
            if timeout is not None and time.monotonic() - start >= timeout:
                raise LMError(
                    f"no {n} free GPU(s) among {','.join(self.devices)} after {timeout:g} s: "
                    f"{self.holders()} (the GPU pool, locks in {self.lock_dir}). Wait for "
                    f"them or end them; LM_GPU_WAIT or --timeout waits longer"
                )
            if log is not None and not said:
                shown = "forever" if timeout is None else f"up to {timeout:g} s"
                log(
                    f"waiting {shown} for {n} free GPU(s) among {','.join(self.devices)}: "
                    f"{self.holders()}"
                )
                said = True
            time.sleep(POLL_S)

    @contextlib.contextmanager
    def holding(self, n: int, timeout: float | None = None, log=None) -> Iterator[list[str]]:
        """Hold ``n`` devices for the ``with`` block; yields their names."""
        held = self.acquire(n, timeout, log) if n else {}
        try:
            yield list(held)
        finally:
            release(held)

    def holders(self) -> str:
        """Who holds the taken devices, for messages: ``GPU 0 held by pid 12 lm train ...``."""
        held = [f"GPU {d} held by pid {h}" for d, h in self.status() if h is not None]
        return "; ".join(held) or "held by other jobs"

    def status(self) -> list[tuple[str, str | None]]:
        """Each device with what holds it (``"PID COMMAND"``), or None when it is free."""
        out = []
        for device in self.devices:
            path = self.lock_dir / _lock_name(device)
            fd = _try_lock(path) if self.lock_dir.is_dir() else None
            if fd is not None or not path.exists():
                out.append((device, None))
            else:
                out.append((device, path.read_text(errors="replace").strip() or "(unknown)"))
            if fd is not None:
                os.close(fd)
        return out


def release(held: Mapping[str, int]) -> None:
    for fd in held.values():
        os.close(fd)  # closing the last descriptor drops the lock


def run_with_gpus(
    n: int,
    command: list[str],
    devices: list[str] | None = None,
    lock_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
) -> None:
    """Hold ``n`` GPUs of the pool and replace this process by ``command`` seeing only them.

    Waits at most ``timeout`` seconds (default: gpu_wait_timeout()) for them. The command inherits the lock descriptors, so the devices stay taken exactly as long
    as it (or any process it passes them on to) lives. ``n == 0`` hides every GPU.
    """
    if not command:
        raise LMError("no command to run; give it after --, e.g. lm with-gpus 1 -- lm train ...")
    if n < 0:
        raise LMError(f"the number of GPUs must be >= 0, got {n}")
    env = dict(os.environ)
    if n == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        if devices is None and "CUDA_VISIBLE_DEVICES" not in env:
            # nvidia-smi's indices follow the PCI bus; make CUDA number the GPUs the same way
            env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        pool = DevicePool(machine_gpus() if devices is None else devices, lock_dir)
        log = lambda msg: print(f"lm with-gpus: {msg}", file=sys.stderr, flush=True)  # noqa: E731
        held = pool.acquire(n, gpu_wait_timeout() if timeout is None else timeout, log)
        for fd in held.values():
            os.set_inheritable(fd, True)
            os.ftruncate(fd, 0)  # who holds it, for `lm gpus`
            os.write(fd, f"{os.getpid()} {shlex.join(command)}\n".encode())
        env["CUDA_VISIBLE_DEVICES"] = ",".join(held)
        log(f"holding GPU(s) {env['CUDA_VISIBLE_DEVICES']} (CUDA_VISIBLE_DEVICES)")
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        raise LMError(f"command {command[0]!r} not found on PATH") from None
