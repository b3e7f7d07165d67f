"""Metric trackers: where a run's metrics go besides ``metrics.jsonl``.

A *sink* takes the run's metrics records (the dicts of ``metrics.jsonl``: step, tokens,
wallclock_s, lr, train_loss, val_loss on eval steps, grad_norm, tokens_per_s) one at a
time: ``log(record)``, then ``close()``. :func:`open_sinks` opens the sinks a run enables
in its config (``wandb.enabled``, ``tensorboard.enabled``), on the main process only:

- :class:`WandbSink`, Weights & Biases (the ``wandb`` package). Its run id is a digest of
  the run directory and the run's name, so a killed run that resumes continues the same W&B
  run; the group is ``wandb.group`` (a sweep member's default: the sweep's name).
- :class:`TensorboardSink`, TensorBoard event files in ``OUT/tensorboard/`` (the
  ``tensorboard`` package, through torch's ``SummaryWriter``).

Both log every number of a record (``step`` is the x axis) under its ``metrics.jsonl`` key.
A resumed run gives the sinks its records so far, then repeats the steps between its
checkpoint and the kill; a sink skips the steps its tracker already holds, so no step is
logged twice and none a killed session's tracker lost (W&B writes its offline log in 32 KiB
blocks) is missing: W&B online says where the run it resumes stands (``starting_step``);
offline, the steps are read back from the run's earlier ``.wandb`` files; TensorBoard's
are counted in ``tensorboard/last_step.json`` (events are flushed before a step counts).
A run that starts over (no checkpoint to resume from, ``--fresh``, a changed config) is a
new W&B run and replaces the TensorBoard files.

The packages are optional (``pip install -e '.[trackers]'``); :func:`require` is how
``lm train`` fails before any training when an enabled tracker's package is missing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import shutil
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from lm.errors import LMError
from lm.io import write_json
from lm.training.run_config import RunConfig

INSTALL = "pip install -e '.[trackers]'"


class Sink(Protocol):
    """What the loop logs to: a record at a time, then close."""

    def log(self, record: dict) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict) -> dict[str, float]:
    """The record's numbers a tracker plots, by their metrics.jsonl key (not ``step``, the x
    axis; not what is None: no val_loss between evals, a loss that was not finite)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step"
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


# ---------------------------------------------------------------------------- packages


def _enabled(run: RunConfig) -> list[tuple[str, str]]:
    """(config section, module to import) of each tracker ``run`` enables."""
    wanted = []
    if run.wandb.enabled:
        wanted.append(("wandb", "wandb"))
    if run.tensorboard.enabled:
        # torch's SummaryWriter needs the tensorboard package (it writes its protobufs)
        wanted.append(("tensorboard", "torch.utils.tensorboard"))
    return wanted


def require(run: RunConfig) -> None:
    """Import the package of every tracker ``run`` enables; a missing one is an LMError
    naming the setting, the package and the fix (so a run fails before it trains, not at
    its first log)."""
    for section, module in _enabled(run):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise LMError(
                f"run {run.name}: {section}.enabled is true but the {section} package cannot be "
                f"imported ({e}); install the trackers extra ({INSTALL}, or pip install {section}) "
                f"or set {section}.enabled: false"
            ) from None


# ---------------------------------------------------------------------------- resuming


class _State:
    """A sink's small state in ``path`` (JSON), kept between the sessions of a run."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict | None:
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def write(self, state: dict) -> None:
        write_json(self.path, state)


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records (``wandb.proto.wandb_internal_pb2.Record``) of a ``.wandb``
    file, W&B's transaction log: a 7-byte header (``:W&B``, a magic number, a version),
    then LevelDB's log format: 32 KiB blocks of chunks, each a 7-byte header (checksum,
    length, type: 1 whole record, 2 first, 3 middle, 4 last chunk) and its bytes; a block's
    tail shorter than a chunk header is padding. A record cut off by a kill is not
    yielded."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    if len(data) < 7:  # created, nothing written yet
        return
    if data[:4] != b":W&B":
        raise LMError(f"{path} is not a W&B transaction log (no :W&B header)")
    pos, parts = 7, []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # padding up to the next block
            pos += left
            continue
        if pos + 7 + length > len(data):
            break
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def wandb_history(path: Path) -> list[dict]:
    """The history rows (``_step`` and the logged values) of a ``.wandb`` file."""
    rows = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def _offline_last_step(directory: Path, run_id: str) -> int:
    """The last step the offline sessions of W&B run ``run_id`` under ``directory`` hold."""
    steps = [
        row["_step"]
        for log in directory.glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
        for row in wandb_history(log)
        if "_step" in row
    ]
    return max(steps, default=-1)


def wandb_run_id(run_name: str, out: Path, restart: int = 0) -> str:
    """The W&B run id of the run directory ``out``: the name (W&B's characters only) and a
    digest of the directory's absolute path and the name, the same in every process and
    session; ``restart`` n > 0 (the n-th start over in that directory) adds ``-n``."""
    digest = hashlib.sha256(f"{out.resolve()}\0{run_name}".encode()).hexdigest()[:12]
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in run_name)[:40]
    return f"{name}-{digest}" + (f"-{restart}" if restart else "")


# ---------------------------------------------------------------------------- sinks


class WandbSink:
    """The run's records as one W&B run (``wandb.init`` with ``resume="allow"``), its files
    under ``OUT/wandb/`` (offline: ``wandb sync OUT/wandb/offline-run-*`` uploads them)."""

    def __init__(self, run: RunConfig, out: Path, *, resumed: bool):
        import wandb

        directory = out / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        self.state = _State(directory / "lm-run.json")
        state = self.state.read()
        if not (resumed and state is not None and isinstance(state.get("id"), str)):
            # a new W&B run, numbered after the one it replaces in this directory
            restart = int(state.get("restart", 0)) + 1 if state is not None else 0
            state = {"id": wandb_run_id(run.name, out, restart), "restart": restart}
            self.state.write(state)
        run_id = state["id"]
        # what the W&B run holds already: offline, its earlier sessions here do (read before
        # this session adds its own); online, the server says (the step after its last)
        offline_last = _offline_last_step(directory, run_id) if resumed else -1
        cfg = run.wandb
        # WANDB_MODE in the environment (offline on a node without network) wins over the
        # config's mode; wandb.init's own argument would win over the environment
        mode = {} if os.environ.get("WANDB_MODE") else {"mode": cfg.mode}
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            name=run.name,
            id=run_id,
            resume="allow",
            config=run.to_dict(),
            dir=str(out),
            **mode,
        )
        self.last_step = max(self.run.starting_step - 1, offline_last)

    def log(self, record: dict) -> None:
        step = record["step"]
        if step <= self.last_step:
            return
        self.run.log(scalars(record), step=step)
        self.last_step = step

    def close(self) -> None:
        self.run.finish()


class TensorboardSink:
    """The run's records as TensorBoard scalars, event files in ``OUT/tensorboard/``."""

    def __init__(self, out: Path, *, resumed: bool):
        from torch.utils.tensorboard import SummaryWriter

        directory = out / "tensorboard"
        self.state = _State(directory / "last_step.json")
        state = self.state.read() if resumed else None
        if state is None and directory.exists():  # the files of a run that started over
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.last_step = int(state["step"]) if state is not None else -1
        self.writer = SummaryWriter(log_dir=str(directory))

    def log(self, record: dict) -> None:
        step = record["step"]
        if step <= self.last_step:
            return
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # on disk before the step counts as logged
        self.last_step = step
        self.state.write({"step": step})

    def close(self) -> None:
        self.writer.close()


def open_sinks(
    run: RunConfig, out: Path, *, main: bool, resumed: bool, history: Iterable[dict] = ()
) -> list[Sink]:
    """The sinks ``run`` enables, open, for the main process (others log nothing: []).
    ``resumed``: the run continues from a checkpoint (its sinks continue too); ``history``,
    its records so far, go to each sink first: a sink logs those its tracker lacks (what
    a killed session's tracker had not written yet), so the tracker ends with every step."""
    if not main:
        return []
    require(run)
    out = Path(out)
    sinks: list[Sink] = []
    try:
        if run.wandb.enabled:
            sinks.append(WandbSink(run, out, resumed=resumed))
        if run.tensorboard.enabled:
            sinks.append(TensorboardSink(out, resumed=resumed))
        for record in history:
            for sink in sinks:
                sink.log(record)
    except BaseException:
        close_sinks(sinks)
        raise
    return sinks


def close_sinks(sinks: list[Sink]) -> None:
    """Close every sink, even when one fails to (the first error is raised after)."""
    error = None
    for sink in sinks:
        try:
            sink.close()
        except Exception as e:  # noqa: BLE001 - the others still close
            error = error or e
    if error is not None:
        raise error
