"""A training run longer than its SLURM time limit finishes by itself over several jobs.

The run asks for ``resources: {runtime: 2}`` and trains for about 1.6 jobs' worth, sized by
a probe of this machine's speed just before (and sized again, and rerun, if the machine got
so much faster that it ended inside one job). Through
the SLURM profile as typed, each job gets SIGTERM at its time limit (a job this short asks
for no earlier warning: SLURM would send it as the job starts), ``lm train`` saves at the
step it is in and exits 75 within SLURM's KillWait, and Snakemake submits the job again,
which resumes; sacct shows the TIMEOUT jobs and the last one completed. Not 1 minute: on a
busy 2-core machine the two Snakemake start-ups of a SLURM job, lm's and the final report
take 50-60 s, so a job with nothing left to train but its report still timed out at 1
minute (measured), and the run never ended. The final metrics.jsonl and weights equal an
uninterrupted run's.
Needs the cluster of ``python3 dev.py slurm`` (skipped without one, failed under
LM_REQUIRE_SLURM=1).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import SNAKEMAKE, add_micro_runs, copy_checkout
from test_slurm import _sacct, cluster  # noqa: F401 - a fixture
from test_training_stop import assert_bit_identical

RUN = "long"
#: steps of the probe that times this machine before the run's length is chosen
PROBE_STEPS = 300
#: seconds of training that fit in one 2-minute job (the rest goes to its start-ups)
JOB_TRAIN_S = 100
#: the run is sized to train this many jobs' worth at the speed measured just before
JOBS = 1.6
#: runs tried: the machine's speed changes with the other tests' load (the micro model
#: trained 29 to 140 steps/s in CI), so a run that ended inside one job is sized again from
#: that job's own speed and run again
ATTEMPTS = 3


def slurm_config(data: Path) -> dict:
    """Demo-like data read in place (no fetch jobs: the DAG stays short, each SLURM job
    costs a status poll)."""
    from lm.data.demo import write_corpus

    for split, docs, seed in (("train", 30, 0), ("valid", 5, 1)):
        write_corpus(data / f"{split}.txt", documents=docs, seed=seed)
    return {
        "datasets": {
            "demo": {
                "train": {"path": str(data / "train.txt")},
                "valid": {"path": str(data / "valid.txt")},
                "tokenizer": {"vocab_size": 300, "special_tokens": ["<|endoftext|>"]},
            }
        },
        "targets": {"all": {"datasets": ["demo"]}, "demo": {"datasets": ["demo"]}},
    }


def _checkout(root: Path, config: dict) -> Path:
    copy_checkout(root)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def long_run_config(data, steps: int) -> dict:
    config = slurm_config(data)
    add_micro_runs(
        config, (RUN,), steps=steps, checkpoint_every=500, log_every=50, eval_every=500,
        device="cpu",
    )  # fmt: skip
    config["runs"][RUN]["resources"] = {"runtime": 2}  # minutes: shorter than the training
    return config


def _train(root: Path, inputs: list[str], out: Path, **popen) -> subprocess.Popen:
    """``lm train`` of the run's resolved config on its tokens, into ``out``."""
    return subprocess.Popen(
        [sys.executable, "-m", "lm", "train", "--config", str(root / inputs[0]),
         "--train-tokens", str(root / inputs[1]), "--valid-tokens", str(root / inputs[2]),
         "--out", str(out), "--progress", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen,
    )  # fmt: skip


def _seconds_per_step(out: Path) -> float:
    """Training seconds per step of a finished run (its metrics' wall-clock: start-up left out)."""
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return last["wallclock_s"] / last["step"]


def _steps_for(per_step: float) -> int:
    return max(PROBE_STEPS, round(JOBS * JOB_TRAIN_S / per_step / 100) * 100)


@pytest.mark.slow
def test_a_run_longer_than_its_time_limit_finishes_over_several_jobs(cluster, tmp_path):  # noqa: F811
    root = _checkout(tmp_path / "slurm", long_run_config(tmp_path / "data", PROBE_STEPS))
    inputs = [f"results/runs/{RUN}/run.json", "results/demo/tokens/train.npy",
              "results/demo/tokens/valid.npy"]  # fmt: skip
    subprocess.run([str(SNAKEMAKE), *inputs], cwd=root, check=True, capture_output=True)
    probe = _train(root, inputs, tmp_path / "probe")
    assert probe.wait(timeout=600) == 0, probe.communicate()[0][-3000:]
    steps = _steps_for(_seconds_per_step(tmp_path / "probe"))
    out = root / "results" / "runs" / RUN
    for attempt in range(1, ATTEMPTS + 1):
        config = long_run_config(tmp_path / "data", steps)
        (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        subprocess.run([str(SNAKEMAKE), *inputs], cwd=root, check=True, capture_output=True)
        assert json.loads((root / inputs[0]).read_text())["training"]["steps"] == steps
        # the uninterrupted run, beside the cluster's (its jobs mostly wait for their limit)
        reference = tmp_path / f"reference{attempt}"
        local = _train(root, inputs, reference)
        started = time.monotonic()
        run = subprocess.run(
            [str(SNAKEMAKE), "--workflow-profile", "workflow/profiles/slurm",
             "--slurm-init-seconds-before-status-checks", "5", f"results/runs/{RUN}/result.json"],
            cwd=root, capture_output=True, text=True, timeout=1500,
        )  # fmt: skip
        wall = time.monotonic() - started
        log = run.stdout + run.stderr
        assert run.returncode == 0, log[-6000:]
        rows = _sacct(re.findall(r"has been submitted with SLURM jobid (\d+)", log))
        print(f"attempt {attempt}: {steps} steps, {len(rows)} job(s), cluster run {wall:.0f} s")
        if len(rows) >= 2 or attempt == ATTEMPTS:
            break
        # done inside one job: size the run again from that job's speed
        local.kill()
        local.wait()
        shutil.rmtree(out)
        steps = max(2 * steps, _steps_for(_seconds_per_step(out)))
    assert local.wait(timeout=900) == 0, local.communicate()[0][-3000:]

    assert len(rows) >= 2, rows
    assert {r["Timelimit"] for r in rows} == {"00:02:00"}
    assert rows[-1]["State"] == "COMPLETED"
    assert all(r["State"] in ("FAILED", "TIMEOUT") for r in rows[:-1]), rows
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == steps
    assert result["sessions"] == len(rows)
    assert_bit_identical(out, reference)
