"""The full-scale writeup on top of the tiny demo (the config of tests/pipeline_setup.py):
first it reads only what exists and names a command for each missing artifact; running
every command it names then answers every problem. It has its own module, and its own
`snakemake demo`, so that its long build (both tokenizer experiments, the sweeps micro-bs
and micro-abl, the web tokenizer and web-main) runs on a worker beside
tests/test_workflow_pipeline.py instead of after it."""

from __future__ import annotations

import pytest
from conftest import Workflow
from pipeline_setup import DEMO_ANSWERS, pipeline_config
from writeup_checks import check_writeup, commands

pytestmark = pytest.mark.slow


def writeup_config() -> dict:
    """The pipeline's config less the demo's parts no writeup reads (the run micro-post and
    the Hugging Face export, which tests/test_workflow_pipeline.py checks): fewer jobs to
    wait for before the writeup's own build."""
    cfg = pipeline_config()
    cfg["targets"]["demo"].update(runs=[], export_hf=False)
    return cfg


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The demo, built by the real `snakemake demo`: the artifacts the writeup reads first."""
    wf = Workflow(tmp_path_factory.mktemp("writeup-full"))
    wf.write_config(writeup_config())
    wf.run("demo")
    return wf


def test_full_writeup_fills_in_as_its_artifacts_appear(built):
    wf = built
    first = wf.run("writeup")
    assert set(wf.jobs_run(first)) == {"writeup_report", "writeup"}  # reads, builds nothing
    record = check_writeup(wf.root)
    assert "**Full scale.**" in (wf.root / "results/writeup.md").read_text()
    status = {p["key"]: p["status"] for p in record["problems"]}
    assert {k for k, v in status.items() if v == "answered"} == DEMO_ANSWERS - {
        "tokenizer_experiments"  # of target all, which the demo did not build
    }
    assert status["batch_size_experiment"] == "not run"
    wanted = commands(record)
    assert wanted["batch_size_experiment"] == "snakemake results/sweeps/micro-bs/report.md"
    # run every command the writeup gives, then the writeup again: every problem answered
    targets = sorted({w for c in wanted.values() for w in c.split()[1:]})
    wf.run(*targets)
    again = wf.run("writeup")
    assert set(wf.jobs_run(again)) == {"writeup_report", "writeup"}, again.stdout + again.stderr
    record = check_writeup(wf.root)
    status = {p["key"]: p["status"] for p in record["problems"]}
    assert status.pop("leaderboard") == "not configured"
    assert set(status.values()) == {"answered"}
    sources = {f for p in record["problems"] for f in p["sources"]}
    assert {
        "results/web/tokenizer/stats.json",
        "results/sweeps/micro-bs/report.json",
        "results/sweeps/micro-abl/report.json",
        "results/runs/web-main/eval.json",
    } <= sources
    assert wf.jobs_run(wf.run("writeup")) == []
