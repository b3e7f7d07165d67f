"""Metric trackers for real, offline: W&B (WANDB_MODE=offline, its .wandb transaction log
read back as wandb's own protobuf records) and TensorBoard (read back with
tensorboard's EventAccumulator) hold the same per-step numbers as metrics.jsonl; a killed
and resumed run continues the same W&B run without repeating a step; under torchrun only
rank 0 logs; a sweep's members share a W&B group named after the sweep; and an enabled
tracker whose package is missing stops `lm train` before its first step, naming the fix.

wandb and tensorboard come with the dev extra (its trackers extra): without them these tests
fail rather than skip, so CI cannot pass them unrun."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import micro_run, micro_tokens, write_run

from lm.training import resolve_runs
from lm.training.trackers import wandb_history, wandb_records, wandb_run_id

TRACKED = ("train_loss", "val_loss", "lr")


def wandb_settings(directory: Path) -> dict:
    """W&B offline and silent, its settings and caches inside ``directory``."""
    return {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(directory / "wandb-dir"),
        "WANDB_CONFIG_DIR": str(directory / "wandb-config"),
        "WANDB_CACHE_DIR": str(directory / "wandb-cache"),
        "WANDB_DATA_DIR": str(directory / "wandb-data"),
    }


@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> dict:
    """wandb_settings(tmp_path) in the environment (also for subprocesses)."""
    env = wandb_settings(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _config(tmp: Path, name: str = "tracked", *, run: dict | None = None, **training) -> Path:
    cfg = run or micro_run(name, **training)
    cfg["wandb"] = {"enabled": True, "mode": "offline", "project": "lm-tests"}
    cfg["tensorboard"] = {"enabled": True}
    return write_run(tmp / f"{name}.json", cfg)


def _lm_train(cfg: Path, train_npy: Path, valid_npy: Path, out: Path) -> list[str]:
    return [
        "-m", "lm", "train", "--config", str(cfg), "--train-tokens", str(train_npy),
        "--valid-tokens", str(valid_npy), "--out", str(out), "--progress", "none",
    ]  # fmt: skip


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def wandb_sessions(out: Path) -> list[dict]:
    """Each W&B session of the run directory ``out`` (an ``offline-run-*`` directory), in
    order: its W&B run id (as its directory names it, and as its run record says where the
    session wrote one), group, project and history rows (``_step`` and the logged values),
    read from its ``.wandb`` file (protobuf records of wandb's own schema)."""
    sessions = []
    for run_dir in sorted((out / "wandb").glob("offline-run-*")):
        (log,) = run_dir.glob("*.wandb")
        session = {"id": log.stem.removeprefix("run-"), "history": wandb_history(log)}
        for record in wandb_records(log):
            if record.WhichOneof("record_type") == "run":
                assert record.run.run_id == session["id"], (record.run.run_id, log)
                session.update(group=record.run.run_group, project=record.run.project)
        sessions.append(session)
    return sessions


def assert_tracked_like_metrics(rows: list[dict], metrics: list[dict]) -> None:
    """W&B's history rows hold each step of metrics.jsonl once, with its train and val
    loss and learning rate (absent where metrics.jsonl has null)."""
    by_step = {}
    for row in rows:
        assert row["_step"] not in by_step, f"step {row['_step']} logged twice"
        by_step[row["_step"]] = row
    assert sorted(by_step) == [r["step"] for r in metrics]
    for r in metrics:
        for key in TRACKED:
            assert by_step[r["step"]].get(key) == r[key], (key, r, by_step[r["step"]])


def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of the event files in ``directory``, read by tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_tensorboard_like_metrics(directory: Path, metrics: list[dict]) -> None:
    scalars = tensorboard_scalars(directory)
    for key in TRACKED:
        expected = [(r["step"], np.float32(r[key])) for r in metrics if r[key] is not None]
        assert expected, key
        assert scalars[key] == expected, key  # event files hold float32


# ---------------------------------------------------------------------------- resolution


def test_sweep_members_share_a_wandb_group_named_after_the_sweep():
    cfg = yaml.safe_load(
        """
        models: {m: {d_model: 16, num_layers: 1, num_heads: 2, d_ff: 32, context_length: 16, vocab_size: 64}}
        training_defaults: {training: {steps: 4}, wandb: {enabled: true}, tensorboard: {enabled: true}}
        runs:
          base: {model: {preset: m}}
          grouped: {model: {preset: m}, wandb: {group: mine}}
        sweeps:
          lr: {base: base, grid: {optimizer.lr: [1e-3, 1e-2]}}
          own: {base: grouped, grid: {optimizer.lr: [1e-3]}}
          set: {base: base, grid: {optimizer.lr: [1e-3]}, variants: {g: {wandb.group: other}}}
        """
    )
    runs = resolve_runs(cfg)
    assert runs["base"].wandb.group is None
    lr = [r for r in runs.values() if (r.sweep or {}).get("name") == "lr"]
    assert len(lr) == 2 and {r.wandb.group for r in lr} == {"lr"}
    assert all(r.wandb.enabled and r.tensorboard.enabled for r in lr)  # training_defaults
    assert runs["own-lr1e-3"].wandb.group == "mine"  # a group the run sets wins
    assert runs["set-g-lr1e-3"].wandb.group == "other"
    # the group is in run.json, so lm train logs it whatever config file it is given
    assert runs["lr-lr1e-2"].to_dict()["wandb"]["group"] == "lr"


def test_tracker_settings_do_not_stop_a_resume():
    """Checkpoints written before the tensorboard section existed, or with other tracker
    settings, resume: trackers are not what a run computes."""
    from lm.training.run_config import RunConfig, resume_differences

    new = RunConfig.from_dict(micro_run("r")).replace(
        **{"tensorboard.enabled": True, "wandb.enabled": True, "wandb.group": "g"}
    )
    old = new.to_dict()
    del old["tensorboard"]
    old["wandb"] = {"enabled": False, "project": "lm", "entity": None, "group": None}
    assert resume_differences(old, new.to_dict()) == []
    assert resume_differences(old, new.replace(**{"optimizer.lr": 0.5}).to_dict()) == [
        "optimizer.lr"
    ]


def test_wandb_run_id_is_the_same_in_every_process(tmp_path):
    """hashlib, not hash(): another interpreter (another PYTHONHASHSEED) gets the same id."""
    code = "import sys; from pathlib import Path; from lm.training.trackers import wandb_history, wandb_records, wandb_run_id; print(wandb_run_id('a/b c', Path(sys.argv[1])))"
    ids = {
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert ids == {wandb_run_id("a/b c", tmp_path)}
    assert ids.pop().startswith("a-b-c-")  # W&B's characters only
    assert wandb_run_id("a/b c", tmp_path / "other") not in ids
    assert wandb_run_id("a/b c", tmp_path, restart=1) != wandb_run_id("a/b c", tmp_path)


@pytest.mark.parametrize("section", ["wandb", "tensorboard"])
def test_missing_tracker_package_stops_lm_train_before_training(
    tmp_path, section, monkeypatch, capsys
):
    """The package cannot be imported (None in sys.modules makes `import` raise ImportError;
    torch's tensorboard module, imported by an earlier test, is dropped so that it imports
    tensorboard again): lm train exits non-zero naming the setting, the package and the
    extra to install, and trains nothing. In this process: the exit status is main()'s,
    which `python -m lm` exits with."""
    from lm.cli import main

    for name in [m for m in sys.modules if m.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, section, None)
    train_npy, valid_npy = micro_tokens(tmp_path)
    run = micro_run("missing", steps=5)
    run[section] = {"enabled": True}
    cfg = write_run(tmp_path / "run.json", run)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(_lm_train(cfg, train_npy, valid_npy, out)[2:]) != 0
    err = capsys.readouterr().err
    assert f"{section}.enabled is true but the {section} package cannot be imported" in err
    assert "pip install -e '.[trackers]'" in err
    assert not out.exists()  # no directory prepared, no step trained


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def sweep_member(tmp_path_factory) -> Path:
    """The run directory of a sweep member resolved by `lm runs` from a pipeline config
    (W&B offline from training_defaults, TensorBoard from the base run) and trained by
    `lm train` under torchrun with two processes: one training (each costs a torch start-up
    and a W&B session) serves the tests of the sweep's W&B group and of rank 0 alone logging."""
    tmp = tmp_path_factory.mktemp("sweep-member")
    train_npy, valid_npy = micro_tokens(tmp)
    run = micro_run("base", steps=30, eval_every=10, log_every=5)
    config = {
        "runs": {"base": {k: v for k, v in run.items() if k != "name"}},
        "sweeps": {"tiny": {"base": "base", "grid": {"optimizer.lr": [0.02]}}},
        "training_defaults": {"wandb": {"enabled": True, "mode": "offline"}},
    }
    config["runs"]["base"]["tensorboard"] = {"enabled": True}
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp / "run"
    resolved = subprocess.run(
        [sys.executable, "-m", "lm", "runs", "--config", str(cfg), "--run", "tiny-lr2e-2"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    run_json = tmp / "run.json"
    run_json.write_text(resolved.stdout)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            *_lm_train(run_json, train_npy, valid_npy, out),
        ],  # fmt: skip
        env={**os.environ, "OMP_NUM_THREADS": "1", **wandb_settings(tmp)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_offline_wandb_and_tensorboard_hold_every_logged_step(sweep_member):
    """A sweep member trained by lm train from the pipeline config: its W&B run (offline)
    is grouped by the sweep and holds every step of metrics.jsonl; TensorBoard too."""
    out = sweep_member
    metrics = _metrics(out)
    assert [r["step"] for r in metrics] == [0, 5, 10, 15, 20, 25, 30]
    (session,) = wandb_sessions(out)
    assert session["id"] == wandb_run_id("tiny-lr2e-2", out)
    assert session["group"] == "tiny" and session["project"] == "lm"
    assert_tracked_like_metrics(session["history"], metrics)
    assert_tensorboard_like_metrics(out / "tensorboard", metrics)


@pytest.mark.slow
def test_killed_and_resumed_run_continues_the_same_wandb_run(tmp_path, wandb_env):
    """Killed after a checkpoint with steps logged past it, then resumed by the same
    command: one W&B run id over both sessions, every step of metrics.jsonl logged once
    (what the killed session's wandb had not written yet comes from the resumed one); the
    TensorBoard files hold each step once too."""
    train_npy, valid_npy = micro_tokens(tmp_path)
    # every step logged (about 600 bytes of W&B records a step), so wandb writes its first
    # 32 KiB blocks before the kill at step 106 or so and loses the rest: the resumed
    # session logs from the killed one's last written step on
    cfg = _config(tmp_path, steps=250, eval_every=50, log_every=1, checkpoint_every=100)
    out = tmp_path / "run"
    cmd = [sys.executable, *_lm_train(cfg, train_npy, valid_npy, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )

    def logged_past_a_checkpoint() -> bool:
        steps = [int(p.stem[5:]) for p in (out / "checkpoints").glob("step_*.pt")]
        state = out / "tensorboard" / "last_step.json"
        if not steps or not state.is_file():
            return False
        try:
            return json.loads(state.read_text())["step"] > max(steps) + 5
        except ValueError:
            return False  # being written

    deadline = time.monotonic() + 180
    while not logged_past_a_checkpoint():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the training process; wandb's service sees it die
    proc.wait()
    killed_at = json.loads((out / "tensorboard" / "last_step.json").read_text())["step"]
    assert killed_at < 250, "the run ended before it could be killed; make it longer"
    deadline = time.monotonic() + 60
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:  # until wandb's service has written and gone
            os.killpg(proc.pid, 0)
            time.sleep(0.1)
    (killed,) = wandb_sessions(out)
    assert 0 < len(killed["history"]) < killed_at, "wandb wrote all or nothing: retune the test"

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["sessions"] == 2 and result["resumed_at_step"] < killed_at  # steps redone
    metrics = _metrics(out)
    sessions = wandb_sessions(out)
    assert len(sessions) == 2 and sessions[0] == killed
    assert {s["id"] for s in sessions} == {wandb_run_id("tracked", out)}
    first, second = (s["history"] for s in sessions)
    assert min(r["_step"] for r in second) > max((r["_step"] for r in first), default=-1)
    # bit-identical resume on CPU: the killed session's values are the resumed run's
    assert_tracked_like_metrics(first + second, metrics)
    assert_tensorboard_like_metrics(out / "tensorboard", metrics)


@pytest.mark.slow
def test_under_torchrun_only_rank_0_logs(sweep_member):
    out = sweep_member
    assert json.loads((out / "result.json").read_text())["processes"] == 2
    metrics = _metrics(out)
    # one W&B session, each step once (a second rank's would log them again), one event file
    (session,) = wandb_sessions(out)
    assert_tracked_like_metrics(session["history"], metrics)
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert_tensorboard_like_metrics(out / "tensorboard", metrics)


@pytest.mark.slow
def test_a_run_that_starts_over_is_a_new_wandb_run_and_new_event_files(tmp_path, wandb_env):
    """--fresh discards the checkpoints: the W&B run of the new start has another id (its
    steps would otherwise repeat the old run's), and TensorBoard holds only the new start."""
    from lm.training.config import run_from_file
    from lm.training.loop import train

    train_npy, valid_npy = micro_tokens(tmp_path)
    out = tmp_path / "run"
    first = run_from_file(_config(tmp_path, steps=10, eval_every=5, log_every=5))
    train(first, train_npy, valid_npy, out, progress=False)
    again = first.replace(**{"optimizer.lr": 0.003})  # another run in the same directory
    train(again, train_npy, valid_npy, out, progress=False, fresh=True)
    metrics = _metrics(out)
    sessions = wandb_sessions(out)
    assert [s["id"] for s in sessions] == [
        wandb_run_id("tracked", out),
        wandb_run_id("tracked", out, restart=1),
    ]
    for session in sessions:
        assert [r["_step"] for r in session["history"]] == [0, 5, 10]
    assert_tracked_like_metrics(sessions[1]["history"], metrics)
    assert_tensorboard_like_metrics(out / "tensorboard", metrics)
