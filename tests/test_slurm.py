"""The SLURM profile on a real SLURM cluster (`python3 dev.py slurm` brings one up on this
machine): every job of a tiny pipeline (data -> tokenizer -> tokens -> one run -> eval) is
submitted with sbatch, sacct saw each one complete, and the outputs equal a local run's.

Without a cluster the test is skipped, unless LM_REQUIRE_SLURM=1 (as .ci/run sets): then it
fails, so a CI machine where `dev.py slurm` broke cannot pass by skipping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, add_micro_runs, copy_checkout

PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
TARGET = "results/runs/micro/eval.json"
#: The jobs of TARGET that SLURM runs (run_config is a localrule: it only writes run.json).
CLUSTER_JOBS = Counter(
    {"inspect_split": 1, "train_tokenizer": 1, "encode_split": 2, "train": 1, "evaluate": 1}
)


def _no_cluster_reason() -> str | None:
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "the SLURM executor plugin is not installed (pip install -e '.[slurm]')"
    if not shutil.which("sbatch"):
        return "no SLURM on this machine (sbatch is not on PATH)"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if states.returncode != 0 or not {"idle", "mixed", "allocated"} & {
        s.rstrip("*") for s in states.stdout.split()
    }:
        return f"no SLURM node is up (sinfo: {states.stdout.strip() or states.stderr.strip()})"
    if subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True).returncode:
        return "SLURM accounting does not answer (sacct fails; the executor plugin polls it)"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = _no_cluster_reason()
    if reason is None:
        return
    if os.environ.get("LM_REQUIRE_SLURM") == "1":
        pytest.fail(f"LM_REQUIRE_SLURM=1 but {reason}; run `python3 dev.py slurm` as root")
    pytest.skip(f"{reason}; start one with `python3 dev.py slurm` (as root)")


def slurm_config(data: Path) -> dict:
    """Demo-like data read in place (no fetch jobs: the DAG stays short, each SLURM job
    costs a status poll) and one micro run."""
    from lm.data.demo import write_corpus

    for split, docs, seed in (("train", 30, 0), ("valid", 5, 1)):
        write_corpus(data / f"{split}.txt", documents=docs, seed=seed)
    cfg = {
        "datasets": {
            "demo": {
                "train": {"path": str(data / "train.txt")},
                "valid": {"path": str(data / "valid.txt")},
                "tokenizer": {"vocab_size": 300, "special_tokens": ["<|endoftext|>"]},
            }
        },
        "targets": {"all": {"datasets": ["demo"]}, "demo": {"datasets": ["demo"]}},
        "scheduler": {"data_threads": 1},
    }
    return add_micro_runs(cfg, checkpoint_every=10, device="cpu")


def _checkout(root: Path, config: dict) -> Path:
    copy_checkout(root)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def _sacct(job_ids: list[str]) -> list[dict]:
    fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "Timelimit", "ReqMem", "Elapsed"]
    out = subprocess.run(
        ["sacct", "-a", "-X", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()[1:]]
    print("\n".join(out.splitlines()))  # shown with -s / on failure: the run's sacct lines
    return rows


@pytest.mark.slow
def test_profile_runs_every_job_through_sbatch_and_matches_a_local_run(cluster, tmp_path):
    config = slurm_config(tmp_path / "data")
    local = _checkout(tmp_path / "local", config)
    remote = _checkout(tmp_path / "slurm", config)
    # the local run goes on beside the cluster run, whose jobs mostly wait for status polls
    local_run = subprocess.Popen(
        [str(SNAKEMAKE), "--cores", "2", TARGET], cwd=local,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    started = time.monotonic()
    cluster_run = subprocess.run(
        [str(SNAKEMAKE), "--workflow-profile", "workflow/profiles/slurm",
         "--slurm-init-seconds-before-status-checks", "1", "--retries", "0", TARGET],
        cwd=remote, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    wall = time.monotonic() - started
    local_out = local_run.communicate(timeout=600)[0]
    log = cluster_run.stdout + cluster_run.stderr
    assert cluster_run.returncode == 0, log
    assert local_run.returncode == 0, local_out
    print(f"cluster run: {wall:.0f} s")

    # every job but the localrule went through sbatch, and SLURM's accounting saw it finish
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    rows = _sacct(job_ids)
    assert len(rows) == len(job_ids) == sum(CLUSTER_JOBS.values()), log
    rules = Counter(re.match(r"rule_(\w+?)_wildcards_", r["Comment"]).group(1) for r in rows)
    assert rules == CLUSTER_JOBS
    assert {r["State"] for r in rows} == {"COMPLETED"}
    assert {r["ExitCode"] for r in rows} == {"0:0"}
    assert len({r["JobName"] for r in rows}) == 1  # one snakemake run submitted them all
    assert re.search(r"^localrule run_config:", log, re.M)

    # what the train job asked SLURM for is what the workflow declared for it
    from lm.training.config import resolve_runs
    from lm.training.resources import run_runtime

    micro = resolve_runs(config)["micro"]
    train = next(r for r in rows if r["Comment"].startswith("rule_train_wildcards_"))
    assert train["ReqMem"] == f"{micro.resources.mem_mb}M"
    assert _minutes(train["Timelimit"]) == run_runtime(micro, config.get("scheduler")) < 120

    # the outputs equal the local run's
    for name in ("demo/tokenizer/vocab.json", "demo/tokenizer/merges.txt",
                 "demo/tokens/train.npy", "demo/tokens/valid.npy"):  # fmt: skip
        assert (remote / "results" / name).read_bytes() == (
            local / "results" / name
        ).read_bytes(), name
    results = [
        json.loads((root / "results/runs/micro/result.json").read_text())
        for root in (local, remote)
    ]
    for key in ("steps", "tokens", "initial_val_loss", "final_train_loss", "final_val_loss"):
        assert results[0][key] == results[1][key], key
    losses = [
        [
            json.loads(line).get("train_loss")
            for line in (root / "results/runs/micro/metrics.jsonl").open()
        ]
        for root in (local, remote)
    ]
    assert losses[0] == losses[1] and any(x is not None for x in losses[0])
    evals = [json.loads((root / TARGET).read_text())["loss"] for root in (local, remote)]
    assert evals[0] == evals[1]


def _minutes(timelimit: str) -> int:
    """sacct's Timelimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = timelimit.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + (s > 0)


@pytest.mark.slow  # importing snakemake and its SLURM plugin takes 9 s
def test_profile_asks_for_gpus_as_one_task_owning_them():
    """A GPU job gets `--gpus=N` from its gpu resource and no `--ntasks-per-gpu`: torchrun is
    one task that starts the N processes itself (the plugin would start one per GPU)."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    defaults = yaml.safe_load(PROFILE.read_text())["default-resources"]
    # a user who sets `tasks` (e.g. for MPI jobs) still gets one task per node for a GPU job
    for extra in ({}, {"tasks": 4}):
        resources = Resources({**defaults, **extra, "gpu": 2, "mem_mb": 9000, "runtime": 75})
        job = SimpleNamespace(resources=resources, threads=8)
        params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "rule_train",
                  "account": "", "partition": "", "workdir": "."}  # fmt: skip
        call = get_submit_command(job, params) + set_gres_string(job)
        assert "--gpus=2" in call and "-t 75" in call and "--mem 9000" in call, call
        assert "ntasks" not in call, call
