"""Training jobs as the workflow launches them, through real `snakemake`: a run with
`training.processes: 2` is one job that starts `torchrun` with 2 processes (gloo on CPU) and
ends with the 1-process run's losses; every train job holds its own GPUs of the pool
(faked here: CUDA_VISIBLE_DEVICES lists GPUs this CPU machine does not have, and a CPU
torch ignores it), never more GPUs at once than there are."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import add_micro_runs, copy_checkout, snakemake, tiny_config

pytestmark = pytest.mark.slow

FAKE_GPUS = {"CUDA_VISIBLE_DEVICES": "3,5,7"}
TARGETS = ("results/runs/single/result.json", "results/runs/ddp/result.json")


def checkout(tmp_path: Path) -> Path:
    root = copy_checkout(tmp_path / "repo")
    cfg = add_micro_runs(tiny_config(demo=30), runs=("single", "ddp"))
    cfg["runs"]["ddp"]["training"] = {"processes": 2}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root


def train_commands(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """run -> the shell command of its train job, from snakemake's log (--printshellcmds)."""
    log = proc.stdout + proc.stderr
    # the shell ignores SIGTERM, which is for lm train alone (lm.training.stop)
    commands = re.findall(r"^Shell command: trap '' TERM; (lm with-gpus .*)$", log, re.M)
    return {re.search(r"--out results/runs/(\S+)", c).group(1): c for c in commands}


def test_a_multi_process_run_is_planned_as_one_torchrun_job(tmp_path):
    root = checkout(tmp_path)
    # no GPUs here: the 2 processes run on CPU (gloo), holding none
    plan = snakemake(root, "-n", *TARGETS, check=True, env={"CUDA_VISIBLE_DEVICES": ""})
    commands = train_commands(plan)
    assert sorted(commands) == ["ddp", "single"]  # one job per run, the 2-process one too
    assert commands["ddp"].startswith(
        "lm with-gpus 0 -- torchrun --standalone --nproc-per-node 2 -m lm train --config "
    )
    assert commands["single"].startswith("lm with-gpus 0 -- lm train --config ")
    # more GPUs than allowed (3 here, 1 by --resources): refused at planning, with the way out
    too_many = snakemake(root, "-n", TARGETS[1], "--resources", "gpu=1", env=FAKE_GPUS)
    assert too_many.returncode != 0
    assert "run ddp needs 2 GPU(s)" in too_many.stdout + too_many.stderr


def train_losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m["train_loss"] for m in lines if m.get("train_loss") is not None}


@pytest.mark.skipif(
    importlib.util.find_spec("lm.training.distributed") is None,
    reason="awaits data-parallel lm train (lm.training.distributed, issue 12 part 1)",
)
def test_two_processes_under_torchrun_equal_one_and_hold_their_own_gpus(tmp_path):
    root = checkout(tmp_path)
    env = {**FAKE_GPUS, "LM_GPU_LOCKS": str(tmp_path / "locks")}  # not this machine's pool
    commands = train_commands(snakemake(root, *TARGETS, check=True, env=env))
    assert commands["ddp"].startswith("lm with-gpus 2 -- torchrun --standalone --nproc-per-node 2 ")
    assert commands["single"].startswith("lm with-gpus 1 -- lm train ")
    held = {}
    for run in ("single", "ddp"):
        log = (root / f"results/runs/{run}/train.log").read_text()
        held[run] = re.search(r"holding GPU\(s\) (\S+)", log).group(1).split(",")
    assert len(held["single"]) == 1 and len(held["ddp"]) == 2
    assert set(held["single"]) | set(held["ddp"]) <= {"3", "5", "7"}

    single, ddp = (train_losses(root / "results/runs" / run) for run in ("single", "ddp"))
    assert sorted(single) == sorted(ddp) == [5, 10, 15, 20]
    for step, loss in single.items():
        assert ddp[step] == pytest.approx(loss, rel=1e-5), step
    result = json.loads((root / "results/runs/ddp/result.json").read_text())
    assert result["status"] == "ok"
