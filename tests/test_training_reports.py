"""Sweep report from run directories, and the learning-rate toy."""

import csv
import json

import pytest

from lm.cli import main
from lm.errors import LMError
from lm.training.lr_tuning import classify, run_toy


def _fake_run(root, name, lr, losses, status="ok", diverged_step=None):
    """A run directory as lm train leaves it (only the files the report reads)."""
    d = root / name
    d.mkdir(parents=True)
    config = {
        "name": name,
        "optimizer": {"lr": lr},
        "training": {"steps": 20},
        "sweep": {"name": "lr", "base": "b", "variant": None, "values": {"optimizer.lr": lr}},
    }
    records = [
        {
            "step": 10 * i,
            "tokens": 640 * i,
            "wallclock_s": float(i),
            "lr": lr,
            "train_loss": v if i else None,
            "val_loss": v,
            "grad_norm": 1.0,
            "tokens_per_s": 640.0,
        }
        for i, v in enumerate(losses)
    ]
    vals = [v for v in losses if v is not None]
    result = {
        "run": name,
        "status": status,
        "diverged_step": diverged_step,
        "diverged_reason": "train loss is nan at step 10" if status == "diverged" else None,
        "final_val_loss": losses[-1] if status == "ok" else None,
        "best_val_loss": min(vals),
        "best_val_step": 10 * losses.index(min(vals)),
        "final_train_loss": losses[-1],
        "steps": 10 * (len(losses) - 1),
        "tokens": 640 * (len(losses) - 1),
        "wallclock_s": float(len(losses)),
        "params": 1000,
    }
    (d / "config.json").write_text(json.dumps(config))
    (d / "result.json").write_text(json.dumps(result))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return d


def test_sweep_report_files(tmp_path):
    dirs = [
        _fake_run(tmp_path, "lr-lr1e-4", 1e-4, [7.0, 6.8, 6.6]),
        _fake_run(tmp_path, "lr-lr1e-3", 1e-3, [7.0, 5.0, 4.0]),
        _fake_run(tmp_path, "lr-lr1", 1.0, [7.0, None], status="diverged", diverged_step=10),
    ]
    # an evaluated run: its whole-split loss and bits per byte join the table
    (dirs[1] / "eval.json").write_text(json.dumps({"loss": 4.25, "bits_per_byte": 1.5625}))
    out = tmp_path / "report"
    assert main(["sweep-report", "--runs", *map(str, dirs), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert (rows[1]["eval_loss"], rows[1]["bits_per_byte"]) == ("4.25", "1.5625")
    assert rows[0]["bits_per_byte"] == ""
    assert [r["run"] for r in rows] == ["lr-lr1e-4", "lr-lr1e-3", "lr-lr1"]
    assert rows[1]["optimizer.lr"] == "0.001" and rows[1]["best_val_loss"] == "4.0"
    assert rows[2]["status"] == "diverged" and rows[2]["diverged_step"] == "10"
    md = (out / "report.md").read_text()
    assert "| 4.25 | 1.562 |" in md
    assert "Best: **lr-lr1e-3**" in md and "diverged at step 10" in md and "train loss is nan" in md
    assert (out / "curves.png").stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["diverged"] == ["lr-lr1"]


def test_sweep_report_missing_run(tmp_path):
    from lm.reports.sweep import sweep_report

    (tmp_path / "half").mkdir()
    with pytest.raises(LMError, match="has no config.json; train it first"):
        sweep_report([tmp_path / "half"], tmp_path / "out")


def test_lr_toy_outcomes():
    outcomes = {lr: classify(run_toy(lr, 10, seed=0)) for lr in (1e1, 1e2, 1e3)}
    assert outcomes == {1e1: "decays", 1e2: "collapses", 1e3: "diverges"}
    assert run_toy(1e1, 10, 0) == run_toy(1e1, 10, 0)  # seeded
    assert classify([1.0, float("nan")]) == "diverges" and classify([1.0, 1.0]) == "flat"


def test_lr_tuning_cli_writes_report(tmp_path):
    assert main(["lr-tuning", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["outcome"] for r in report["runs"]] == ["decays", "collapses", "diverges"]
    assert len(report["runs"][0]["losses"]) == 10
    md = (tmp_path / "report.md").read_text()
    assert "**lr = 100: collapses**" in md and (tmp_path / "curves.png").is_file()
