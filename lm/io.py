"""Small file helpers shared by every stage: atomic writes, JSON, peak memory."""

from __future__ import annotations

import contextlib
import errno
import gc
import glob
import json
import os
import resource
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from lm.errors import LMError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    On any exception the temporary file is removed, so a reader never sees a
    half-written artifact. The file gets the usual permissions (0666 less the umask),
    not the 0600 of a private temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        prefix=temporary_prefix(path), suffix=suffix + ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        full = disk_full(e, tmp)
        written = _size(tmp)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if full:
            _release(e)
            raise no_space_error(path, written) from None
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike):
    """Yield a temporary directory beside ``path``; on success rename it onto ``path``
    (replacing an older one), so ``path`` is always either the old or the complete new
    directory. On any exception the temporary directory is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if path.exists():
            old = Path(
                tempfile.mkdtemp(prefix=temporary_prefix(path), suffix=".old.tmp", dir=path.parent)
            )
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        full = disk_full(e, tmp)
        written = _size(tmp)
        if full:
            _release(e)
        shutil.rmtree(tmp, ignore_errors=True)
        if full or isinstance(e, NoSpaceError):  # named by the directory, not its temporary
            raise no_space_error(path, written) from None
        raise


def _release(error: BaseException) -> None:
    """Close what the frames of ``error`` (and of the errors it chains) still hold open: a
    failed writer (torch.save's) keeps its deleted file, and so its space, until then, and
    the space reported free must be free."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__context__ or error.__cause__
    gc.collect()


class NoSpaceError(LMError):
    """A write failed because its file system is full (or the user's quota is spent)."""


def disk_full(error: BaseException, where: Path) -> bool:
    """Whether ``error``, raised while writing under ``where``, means the disk is full:
    an ``OSError`` with errno ENOSPC or EDQUOT, or a library's own write failure (such as
    ``torch.save``'s ``RuntimeError: [enforce fail at inline_container.cc] ... file write
    failed``, which drops the errno) on a file system with no space left."""
    if isinstance(error, NoSpaceError):
        return False  # already said, by an inner writer
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(error, RuntimeError) and any(
        sign in str(error) for sign in ("write failed", "inline_container")
    ):
        return free_bytes(where) < _NEARLY_FULL
    return False


# A write failure on a file system with less than this free counts as "disk full".
_NEARLY_FULL = 1 << 20


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to this user on the file system of ``path`` (or of its nearest existing
    parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def no_space_error(path: str | os.PathLike | None, written: int | None = None) -> NoSpaceError:
    """The one message for a full disk: what was being written, how much it needed as far as
    is known (more than the ``written`` bytes it had when the disk filled), and what is free."""
    if path is None:  # an OSError without a file name: say no more than is known
        return NoSpaceError("no space left on device; free space and rerun")
    free = free_bytes(Path(path).parent)
    need = f"more than {written} bytes needed, " if written is not None else ""
    return NoSpaceError(
        f"no space left on device writing {path} ({need}{free} free); free space and rerun"
    )


def _size(path: Path) -> int | None:
    """Bytes of the device the file or directory tree ``path`` takes (its blocks, which is
    what a full disk counts; None if it is gone)."""
    try:
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        return sum(p.stat().st_blocks * 512 for p in files)
    except OSError:
        return None


def temporary_prefix(path: Path) -> str:
    """The name prefix of the temporaries of ``path``: hidden, with this process's id."""
    return f".{path.name}.{os.getpid()}."


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``path`` (files or directories) left by processes that died.

    A process killed with SIGKILL (or a machine that lost power) cannot clean up after
    itself, so the next writer of the same artifact does. Only temporaries whose process
    is gone are removed: a concurrent writer's are left alone. Returns what was removed.
    """
    path = Path(path)
    removed = []
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = leftover.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        removed.append(leftover)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size in MiB of this process (or of its waited-for children)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    kb = resource.getrusage(who).ru_maxrss
    if sys.platform == "darwin":  # bytes there, KiB on Linux
        kb /= 1024
    return kb / 1024
