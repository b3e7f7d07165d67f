"""The run directory: preparation (temporaries, --fresh, the checkpoint to resume from, a
changed config), the newest checkpoint, atomic saves and pruning."""

from __future__ import annotations

import json

import pytest
import torch

from lm.training import AdamW
from lm.training.checkpoint import read_checkpoint
from lm.training.rundir import RunDir, latest_checkpoint

CONFIG = {"name": "r", "optimizer": {"lr": 0.01}, "training": {"steps": 10, "log_every": 5}}


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def _save(rundir: RunDir, name: str, step: int, keep: int = 1, config=CONFIG) -> None:
    model = _model()
    rundir.save(name, model, AdamW(model.parameters()), step, keep=keep, config=config)


def test_a_new_directory_is_made_and_holds_the_config(tmp_path):
    rundir = RunDir(tmp_path / "out")
    decision, payload = rundir.prepare(CONFIG, fresh=False, on_config_change="error", device="cpu")
    assert decision == (None, None) and payload is None
    assert rundir.checkpoints.is_dir()
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == CONFIG
    assert rundir.metrics == tmp_path / "out" / "metrics.jsonl"


def test_saves_are_atomic_and_keep_the_newest_step_files(tmp_path):
    rundir = RunDir(tmp_path)
    rundir.checkpoints.mkdir()
    for step in (10, 20, 30):
        _save(rundir, f"step_{step:08d}.pt", step, keep=2)
    assert sorted(p.name for p in rundir.checkpoints.iterdir()) == [
        "step_00000020.pt",
        "step_00000020.pt.check.json",
        "step_00000030.pt",
        "step_00000030.pt.check.json",
    ]  # no temporary left behind, the oldest pruned (with its size and sha256)
    assert read_checkpoint(rundir.latest())["iteration"] == 30
    _save(rundir, "final.pt", 35, keep=2)
    assert sorted(p.name for p in rundir.checkpoints.iterdir()) == [
        "final.pt",
        "final.pt.check.json",
    ]  # none once final
    assert rundir.latest() == rundir.checkpoints / "final.pt"


def test_latest_prefers_final_then_the_newest_step(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert RunDir(tmp_path / "none").latest() is None  # no checkpoints/ at all
    for name in ("step_00000100.pt", "step_00000020.pt"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "step_00000100.pt"
    (tmp_path / "final.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "final.pt"


def test_prepare_resumes_the_same_run_and_clears_temporaries(tmp_path):
    rundir = RunDir(tmp_path)
    rundir.checkpoints.mkdir()
    _save(rundir, "step_00000010.pt", 10)
    (rundir.checkpoints / ".step_00000020.pt.abc.tmp").write_bytes(b"half")
    # a bookkeeping key (log_every) may change between sessions
    config = {**CONFIG, "training": {"steps": 10, "log_every": 1}}
    (path, error), payload = rundir.prepare(
        config, fresh=False, on_config_change="error", device="cpu"
    )
    assert path == rundir.checkpoints / "step_00000010.pt" and error is None
    assert payload["iteration"] == 10
    assert not list(rundir.checkpoints.glob("*.tmp"))


def test_prepare_refuses_or_restarts_a_changed_config(tmp_path):
    rundir = RunDir(tmp_path)
    rundir.checkpoints.mkdir()
    _save(rundir, "step_00000010.pt", 10)
    changed = {**CONFIG, "optimizer": {"lr": 0.02}}
    (path, error), payload = rundir.prepare(
        changed, fresh=False, on_config_change="error", device="cpu"
    )
    assert path is None and payload is None
    assert "optimizer.lr differ" in error and "--fresh" in error
    assert (rundir.checkpoints / "step_00000010.pt").is_file()  # nothing discarded
    with pytest.warns(UserWarning, match="optimizer.lr differ.*starting over"):
        decision, _ = rundir.prepare(changed, fresh=False, on_config_change="restart", device="cpu")
    assert decision == (None, None) and not list(rundir.checkpoints.glob("*.pt"))


def test_fresh_discards_the_checkpoints(tmp_path):
    rundir = RunDir(tmp_path)
    rundir.checkpoints.mkdir()
    _save(rundir, "final.pt", 10)
    decision, payload = rundir.prepare(CONFIG, fresh=True, on_config_change="error", device="cpu")
    assert decision == (None, None) and payload is None
    assert not list(rundir.checkpoints.iterdir())


def test_a_corrupt_newest_checkpoint_is_set_aside(tmp_path):
    rundir = RunDir(tmp_path)
    rundir.checkpoints.mkdir()
    for step in (10, 20, 30):
        _save(rundir, f"step_{step:08d}.pt", step, keep=3)
    newest = rundir.checkpoints / "step_00000030.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    middle = rundir.checkpoints / "step_00000020.pt"
    data = bytearray(middle.read_bytes())
    data[-50] ^= 1  # one bit flipped
    middle.write_bytes(bytes(data))
    with pytest.warns(UserWarning) as caught:
        (path, error), payload = rundir.prepare(
            CONFIG, fresh=False, on_config_change="error", device="cpu"
        )
    assert path == rundir.checkpoints / "step_00000010.pt" and error is None
    assert payload["iteration"] == 10
    said = [str(w.message) for w in caught]
    assert (
        f"{newest}: it has 100 bytes" in said[0]
        and "set aside as step_00000030.pt.corrupt" in said[0]
    )
    assert "damaged on disk" in said[1] and "set aside as step_00000020.pt.corrupt" in said[1]
    assert rundir.set_aside() == [
        "checkpoints/step_00000020.pt.corrupt",
        "checkpoints/step_00000030.pt.corrupt",
    ]
    # a checkpoint that matches its check but does not load is set aside too
    (rundir.checkpoints / "step_00000010.pt.check.json").unlink()
    (rundir.checkpoints / "step_00000010.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="cannot be read"):
        (path, _), payload = rundir.prepare(
            CONFIG, fresh=False, on_config_change="error", device="cpu"
        )
    assert path is None and payload is None and len(rundir.set_aside()) == 3
    rundir.prepare(CONFIG, fresh=True, on_config_change="error", device="cpu")
    assert rundir.set_aside() == []  # --fresh discards them with the rest
