"""A training run's directory and the checkpoints in it.

``OUT/`` holds ``config.json`` (the resolved run), ``metrics.jsonl``, ``checkpoints/``
(``step_XXXXXXXX.pt`` while running, ``final.pt`` when done), ``curves.png`` and
``result.json``. :class:`RunDir` prepares it before training (clears what a killed run
half-wrote, applies ``--fresh``, picks the checkpoint to resume from or refuses one of
another config), finds the newest checkpoint, and saves checkpoints atomically (a
temporary name, renamed when complete), keeping the newest ``keep`` step files.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from lm.errors import LMError
from lm.io import write_json
from lm.training import checkpoint as ckpt
from lm.training.run_config import resume_differences


def step_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The step checkpoints in ``ckpt_dir``, oldest first."""
    return sorted(ckpt_dir.glob("step_*.pt"))


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """final.pt if the run finished, else the newest step checkpoint, else None."""
    final = ckpt_dir / "final.pt"
    if final.is_file():
        return final
    steps = step_checkpoints(ckpt_dir)
    return steps[-1] if steps else None


class RunDir:
    """The run directory ``out``: its paths, its preparation and its checkpoints."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.checkpoints = self.out / "checkpoints"
        self.metrics = self.out / "metrics.jsonl"

    def latest(self) -> Path | None:
        """The checkpoint to resume from (see :func:`latest_checkpoint`), or None."""
        return latest_checkpoint(self.checkpoints) if self.checkpoints.is_dir() else None

    def prepare(self, config: dict, *, fresh: bool, on_config_change: str, device):
        """Rank 0's part before training, for the run whose ``config.json`` is ``config``:
        clear temporaries, apply ``fresh``, pick the checkpoint to resume from (or refuse one
        of another config). Returns ``(decision, payload)``: the decision, (checkpoint path
        or None, error message or None), is what every rank acts on; the payload is the
        checkpoint read onto ``device`` (None without one), which rank 0 restores from
        instead of reading it again."""
        ckpt_dir = self.checkpoints
        if ckpt_dir.is_dir():
            for p in ckpt_dir.glob(".*.tmp"):  # half-written by a killed run; never complete
                p.unlink(missing_ok=True)
        if fresh and ckpt_dir.is_dir():
            self._discard()
        resume_from, payload = self._newest_good(device)
        if resume_from is not None:
            diffs = resume_differences(payload.get("config") or {}, config)
            shown = ", ".join(diffs[:5]) + (" ..." if len(diffs) > 5 else "")
            if diffs and on_config_change == "restart":
                warnings.warn(
                    f"{ckpt_dir}: checkpoints of a run with a different config ({shown} differ) discarded; starting over",
                    stacklevel=4,
                )
                self._discard()
                resume_from, payload = None, None
            elif diffs:
                error = (
                    f"{resume_from} was written by a run with a different config ({shown} differ), so "
                    f"continuing it would mix two runs. Restore the old config to resume, or discard the old "
                    f"run: delete {ckpt_dir} (or pass --fresh to lm train)"
                )
                return (None, error), None
        self.out.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(exist_ok=True)
        write_json(self.out / "config.json", config)
        return (resume_from, None), payload

    def _discard(self) -> None:
        """Remove every checkpoint, with their checks and those set aside as corrupt."""
        for pattern in ("*.pt", "*.pt.check.json", "*.corrupt", "*.corrupt.check.json"):
            for p in self.checkpoints.glob(pattern):
                p.unlink()

    def _newest_good(self, device):
        """The newest checkpoint that verifies (:func:`~lm.training.checkpoint.verify_checkpoint`)
        and loads, with its payload, or (None, None). Each bad one is set aside as
        ``NAME.corrupt`` (with a warning in the log), so the run resumes from the one before."""
        while (path := self.latest()) is not None:
            problem = ckpt.verify_checkpoint(path)
            if problem is None:
                try:
                    return path, ckpt.read_checkpoint(path, map_location=device)
                except LMError as e:
                    problem = str(e)
            corrupt = path.with_name(path.name + ".corrupt")
            os.replace(path, corrupt)
            if ckpt.check_path(path).exists():
                os.replace(ckpt.check_path(path), ckpt.check_path(corrupt))
            warnings.warn(
                f"{path}: {problem}; set aside as {corrupt.name}, resuming from the checkpoint "
                f"before it (from the start if there is none)",
                stacklevel=5,
            )
        return None, None

    def set_aside(self) -> list[str]:
        """The checkpoints set aside as corrupt (paths relative to the run directory)."""
        if not self.checkpoints.is_dir():
            return []
        return [str(p.relative_to(self.out)) for p in sorted(self.checkpoints.glob("*.corrupt"))]

    def save(self, name: str, model, optimizer, step: int, *, keep: int, **fields) -> None:
        """Write checkpoint ``name`` atomically (``fields``: ``config``, ``batch_rng``,
        ``extra``, as :func:`lm.training.checkpoint.save_checkpoint` takes them), then keep
        the newest ``keep`` step checkpoints; none once ``final.pt`` is written."""
        ckpt.save_checkpoint(model, optimizer, step, self.checkpoints / name, **fields)
        keep = keep if name != "final.pt" else 0
        for old in step_checkpoints(self.checkpoints)[: -keep or None]:
            old.unlink(missing_ok=True)
            ckpt.check_path(old).unlink(missing_ok=True)
