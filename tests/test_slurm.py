"""The SLURM profile on a real SLURM cluster (`python3 dev.py slurm` brings one up on this
machine): the commands of docs/cluster.md's try-it block, exactly as they stand there, on the
shipped config.yaml, submit every job with sbatch; sacct saw each one complete; the outputs
equal a local run's; and a job no node can hold stops the run before anything is submitted.

Without a cluster the tests are skipped, unless LM_REQUIRE_SLURM=1 (as .ci/run sets): then
they fail, so a CI machine where `dev.py slurm` broke cannot pass by skipping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections import Counter
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, copy_checkout

PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
DOCS = REPO / "docs" / "cluster.md"
#: The jobs of the documented flow that SLURM runs (run_config is a localrule: it only
#: writes run.json); the demo's splits are generated (fetch_split), the train split checked.
CLUSTER_JOBS = Counter(
    {"fetch_split": 2, "inspect_split": 1, "train_tokenizer": 1, "encode_split": 2,
     "train": 1, "evaluate": 1}
)  # fmt: skip
#: Seconds SLURM's commands may take here before a check gives up.
SLURM_TIMEOUT_S = 60


def documented_flow() -> list[str]:
    """The commands of the code block of docs/cluster.md that starts the local cluster."""
    for block in re.findall(r"```bash\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S):
        lines = [re.sub(r"\s+#.*$", "", ln).strip() for ln in block.splitlines()]
        if lines and lines[0] == "python3 dev.py slurm":
            return [ln for ln in lines if ln]
    raise AssertionError(f"{DOCS} has no ```bash block starting with `python3 dev.py slurm`")


def _no_cluster_reason() -> str | None:
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "the SLURM executor plugin is not installed (pip install -e '.[slurm]')"
    if not shutil.which("sbatch"):
        return "no SLURM on this machine (sbatch is not on PATH)"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=SLURM_TIMEOUT_S
        )
        sacct = subprocess.run(
            ["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=SLURM_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as e:
        return f"`{shlex.join(e.cmd)}` did not answer within {SLURM_TIMEOUT_S} s"
    if states.returncode != 0 or not {"idle", "mixed", "allocated", "completing"} & {
        s.rstrip("*") for s in states.stdout.split()
    }:
        return f"no SLURM node is up (sinfo: {states.stdout.strip() or states.stderr.strip()})"
    if sacct.returncode:
        return "SLURM accounting does not answer (sacct fails; the executor plugin polls it)"
    return None


@pytest.fixture(scope="module")
def cluster():
    """`python3 dev.py slurm`'s part: the cluster is up (its own check, without the
    virtual environment dev.py would make in the copy)."""
    reason = _no_cluster_reason()
    if reason is None:
        return
    if os.environ.get("LM_REQUIRE_SLURM") == "1":
        pytest.fail(f"LM_REQUIRE_SLURM=1 but {reason}; run `python3 dev.py slurm` as root")
    pytest.skip(f"{reason}; start one with `python3 dev.py slurm` (as root)")


def _sacct(job_ids: list[str]) -> list[dict]:
    fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "Timelimit", "ReqMem",
              "AllocCPUS", "Elapsed"]  # fmt: skip
    out = subprocess.run(
        ["sacct", "-a", "-X", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)],
        capture_output=True, text=True, check=True, timeout=SLURM_TIMEOUT_S,
    ).stdout  # fmt: skip
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()[1:]]
    print("\n".join(out.splitlines()))  # shown with -s / on failure: the run's sacct lines
    return rows


@pytest.fixture(scope="module")
def flow(cluster, tmp_path_factory):
    """The documented flow, run once for the module's checks, and a local run of the same
    targets in another copy of the checkout (its data steps beside the cluster run)."""
    commands = documented_flow()
    assert commands[0] == "python3 dev.py slurm"  # done by the cluster fixture
    snakemakes = [c for c in commands if c.startswith("snakemake ")]
    targets = [shlex.split(c)[-1] for c in snakemakes]
    assert targets == ["results/demo/tokens/valid.npy", "results/runs/demo/eval.json"]
    base = tmp_path_factory.mktemp("flow")
    local, remote = copy_checkout(base / "local"), copy_checkout(base / "slurm")
    # the local run of the data steps goes on beside the cluster run, whose jobs mostly wait
    # for status polls; its training after the cluster's (two trainings at once on a small
    # machine slow each other down many times over)
    local_run = subprocess.Popen(
        [str(SNAKEMAKE), "--cores", "2", targets[0]], cwd=local,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    logs, started = [], time.monotonic()
    for cmd in commands[1:]:
        argv = shlex.split(cmd)
        if argv[0] == "snakemake":
            argv[0] = str(SNAKEMAKE)
        done = subprocess.run(argv, cwd=remote, capture_output=True, text=True, timeout=1800)
        logs.append(done.stdout + done.stderr)
        assert done.returncode == 0, f"{cmd}:\n{logs[-1]}"
    wall = time.monotonic() - started
    local_out = local_run.communicate(timeout=600)[0]
    assert local_run.returncode == 0, local_out
    local_run = subprocess.run(
        [str(SNAKEMAKE), "--cores", "2", *targets], cwd=local,
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert local_run.returncode == 0, local_run.stdout + local_run.stderr
    print(f"documented cluster flow: {wall:.0f} s")
    log = "\n".join(logs)
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    return SimpleNamespace(local=local, remote=remote, log=log, wall=wall, job_ids=job_ids)


@pytest.mark.slow
def test_documented_flow_runs_every_job_through_sbatch(flow):
    all_rows = _sacct(flow.job_ids)
    assert len(all_rows) == len(flow.job_ids), flow.log
    # a train job that reached its time limit on a slow machine stopped with a checkpoint
    # (exit 75) and was submitted again, resuming there: each such attempt is one more job
    trains = [r for r in all_rows if r["Comment"].startswith("rule_train_wildcards_")]
    stopped = trains[:-1]
    assert {r["State"] for r in stopped} <= {"TIMEOUT", "FAILED"}, stopped
    assert flow.log.count("returned non-zero exit status 75") >= len(stopped), flow.log
    rows = [r for r in all_rows if r not in stopped]
    assert len(rows) == sum(CLUSTER_JOBS.values()), flow.log
    rules = Counter(re.match(r"rule_(\w+?)_wildcards_", r["Comment"]).group(1) for r in rows)
    assert rules == CLUSTER_JOBS
    assert {r["State"] for r in rows} == {"COMPLETED"}
    assert {r["ExitCode"] for r in rows} == {"0:0"}
    assert re.search(r"^localrule run_config:", flow.log, re.M)

    # the data steps asked for no more CPUs than the node has (4 by default on a cluster)
    node_cpus = max(int(n) for n in _sinfo("%c").split())
    data = [r for r in rows if re.match(r"rule_(train_tokenizer|encode_split)_", r["Comment"])]
    assert {int(r["AllocCPUS"]) for r in data} == {min(4, node_cpus)}
    assert set(re.findall(r"--workers (\d+)", flow.log)) == {str(min(4, node_cpus))}

    # what the train job asked SLURM for is what the workflow declared for it
    from lm.training.config import resolve_runs
    from lm.training.resources import run_runtime

    config = yaml.safe_load((flow.remote / "config.yaml").read_text())
    demo = resolve_runs(config)["demo"]
    train = next(r for r in rows if r["Comment"].startswith("rule_train_wildcards_"))
    assert train["ReqMem"] == f"{demo.resources.mem_mb}M"
    assert int(train["AllocCPUS"]) == demo.threads
    assert _minutes(train["Timelimit"]) == run_runtime(demo, config.get("scheduler")) < 120


@pytest.mark.slow
def test_documented_flow_outputs_equal_a_local_run(flow):
    local, remote = flow.local, flow.remote
    for name in ("demo/tokenizer/vocab.json", "demo/tokenizer/merges.txt",
                 "demo/tokens/train.npy", "demo/tokens/valid.npy"):  # fmt: skip
        assert (remote / "results" / name).read_bytes() == (
            local / "results" / name
        ).read_bytes(), name
    results = [
        json.loads((root / "results/runs/demo/result.json").read_text()) for root in (local, remote)
    ]
    for key in ("steps", "tokens", "initial_val_loss", "final_train_loss", "final_val_loss"):
        assert results[0][key] == results[1][key], key
    losses = [
        [
            json.loads(line).get("train_loss")
            for line in (root / "results/runs/demo/metrics.jsonl").open()
        ]
        for root in (local, remote)
    ]
    assert losses[0] == losses[1] and any(x is not None for x in losses[0])
    evals = [
        json.loads((root / "results/runs/demo/eval.json").read_text())["loss"]
        for root in (local, remote)
    ]
    assert evals[0] == evals[1]


def _sinfo(fmt: str) -> str:
    return subprocess.run(
        ["sinfo", "-h", "-N", "-o", fmt], capture_output=True, text=True, check=True,
        timeout=SLURM_TIMEOUT_S,
    ).stdout  # fmt: skip


@pytest.mark.slow
def test_a_job_no_node_can_hold_stops_the_run_before_any_submission(cluster, tmp_path):
    """A run asking for more GPUs than any node has (and one asking for more memory) fails
    at start-up, each named with its request and the largest node; nothing reaches sbatch."""
    root = copy_checkout(tmp_path / "repo")
    node = _sinfo("%N|%c|%m|%G").split()[0].split("|")
    demo = {"dataset": "demo", "model": {"preset": "demo-tiny"}, "threads": 2,
            "training": {"steps": 10, "device": "cpu"}}  # fmt: skip
    big = {
        "runs": {
            "demo-8gpu": {**demo, "resources": {"gpu": 8}},
            "demo-mem": {**demo, "resources": {"mem_mb": int(node[2]) * 2}},
        }
    }
    (root / "big.yaml").write_text(yaml.safe_dump(big))
    done = subprocess.run(
        [str(SNAKEMAKE), "results/runs/demo-8gpu/result.json",
         "results/runs/demo-mem/result.json", "--workflow-profile", "workflow/profiles/slurm",
         "--configfile", "big.yaml"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = done.stdout + done.stderr
    print(log)
    assert done.returncode != 0, log
    assert "submitted with SLURM jobid" not in log
    largest = f"{node[0]} ({node[1]} CPUs, {node[2]} MB, 0 GPU(s))"
    assert re.search(
        rf"job train \(run=demo-8gpu\) asks for \d+ CPUs, \d+ MB, 8 GPU\(s\), but no "
        rf"node of SLURM's default partition \S+ has that much: the largest, "
        rf"{re.escape(largest)}, lacks 8 GPU\(s\) \(it has 0\)",
        log,
    ), log
    assert re.search(
        rf"job train \(run=demo-mem\) asks for \d+ CPUs, {int(node[2]) * 2} MB, 0 GPU\(s\)"
        rf".*lacks {int(node[2]) * 2} MB \(it has {node[2]}\)",
        log,
    ), log


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
