"""The whole demo DAG run by the real `snakemake` on a tiny config: raw text -> tokenizer ->
tokens -> tokenizer experiments -> accounting -> a small sweep -> eval -> samples ->
results index -> HTML report. Then: nothing to do; a change reruns only what depends on it."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from conftest import Workflow, tiny_config

pytestmark = pytest.mark.slow


def pipeline_config() -> dict:
    cfg = tiny_config(demo=40)
    cfg["models"] = {
        "micro": {
            "d_model": 16,
            "num_layers": 1,
            "num_heads": 2,
            "d_ff": 32,
            "context_length": 16,
            "rope_theta": 10000,
        }
    }
    cfg["training_defaults"] = {
        "threads": 1,
        "training": {
            "batch_size": 4,
            "steps": 6,
            "eval_every": 3,
            "eval_batches": 2,
            "log_every": 2,
            "checkpoint_every": 3,
        },
    }
    cfg["runs"] = {
        "micro": {"dataset": "demo", "model": {"preset": "micro"}, "optimizer": {"lr": 1e-2}}
    }
    cfg["sweeps"] = {"micro-lr": {"base": "micro", "grid": {"optimizer.lr": [1e-3, 1e-2]}}}
    cfg["generation"] = {
        "prompts": ["Once upon a time", "The dog"],
        "max_new_tokens": 8,
        "temperature": 0.8,
        "top_p": 0.9,
        "seed": 0,
    }
    cfg["evaluation"] = {"batch_size": 4}
    cfg["accounting"] = {"models": ["gpt2-small"], "preset": "gpt2-small", "long_context": 2048}
    cfg["tokenizer_experiments"] = {"documents": 3, "throughput_mb": 0.01}
    cfg["targets"]["demo"].update(sweeps=["micro-lr"], accounting=True, lr_tuning=True)
    return cfg


RUNS = ["micro-lr-lr1e-3", "micro-lr-lr1e-2"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real run of `snakemake demo` and of `snakemake --report`, shared by the tests here."""
    wf = Workflow(tmp_path_factory.mktemp("pipeline"))
    wf.write_config(pipeline_config())
    first = wf.run("demo")
    report = wf.run("demo", extra=("--report", "results/report.html"))
    again = wf.run("demo")
    return wf, first, report, again


def test_demo_builds_every_stage(built):
    wf, first, _, _ = built
    r = wf.root / "results"
    ran = set(wf.jobs_run(first))
    assert {
        "fetch_split",
        "train_tokenizer",
        "encode_split",
        "tokenizer_experiments",
        "accounting",
        "run_config",
        "train",
        "evaluate",
        "samples",
        "sweep_report",
        "lr_tuning",
        "results_index",
    } <= ran
    for f in ("vocab.json", "merges.txt", "stats.json", "report.md"):
        assert (r / "demo/tokenizer" / f).is_file()
    tokens = np.load(r / "demo/tokens/valid.npy", mmap_mode="r")
    vocab = json.loads((r / "demo/tokenizer/vocab.json").read_text())
    assert tokens.dtype == np.uint16 and 0 < tokens.size and int(tokens.max()) < len(vocab)
    assert (r / "tokenizer_experiments/demo/report.md").is_file()
    assert (r / "accounting/transformer.md").is_file() and (r / "accounting/adamw.md").is_file()
    assert (r / "lr_tuning/report.md").is_file()
    for f in ("report.md", "curves.png", "summary.csv"):
        assert (r / "sweeps/micro-lr" / f).is_file()
    for run in RUNS:
        d = r / "runs" / run
        assert json.loads((d / "config.json").read_text())["optimizer"]["lr"] in (1e-3, 1e-2)
        ev = json.loads((d / "eval.json").read_text())
        # every validation token after the first is predicted once
        assert ev["tokens_predicted"] == tokens.size - 1
        assert math.isfinite(ev["loss"]) and ev["perplexity"] == pytest.approx(math.exp(ev["loss"]))
        samples = (d / "samples.md").read_text()
        assert "Once upon a time" in samples and "The dog" in samples
    index = (r / "README.md").read_text()
    for link in (
        "demo/tokenizer/report.md",
        "accounting/transformer.md",
        "sweeps/micro-lr/report.md",
        f"runs/{RUNS[0]}/samples.md",
        "lr_tuning/report.md",
    ):
        assert link in index, link


def report_categories(html: str) -> dict:
    """The report's table of contents: category -> subcategory -> files (a JSON in the page)."""
    match = re.search(r"var categories = (\{.*?\});?\n", html)
    assert match, "no categories in the HTML report"
    return json.loads(match.group(1))


def test_html_report_gathers_every_stage(built):
    wf, _, report, _ = built
    html = (wf.root / "results/report.html").read_text(encoding="utf-8")
    categories = report_categories(html)
    assert set(categories) == {"Tokenizers", "Accounting", "Training", "Sweeps", "Samples"}
    files = {cat: {f for sub in subs.values() for f in sub} for cat, subs in categories.items()}
    assert "results/demo/tokenizer/report.md" in files["Tokenizers"]
    assert "results/tokenizer_experiments/demo/report.md" in files["Tokenizers"]
    assert files["Accounting"] == {
        "results/accounting/transformer.md",
        "results/accounting/adamw.md",
    }
    assert "results/lr_tuning/report.md" in files["Training"]
    assert {f"results/runs/{run}/curves.png" for run in RUNS} <= files["Training"]
    assert {
        f"results/sweeps/micro-lr/{f}" for f in ("report.md", "curves.png", "summary.csv")
    } == files["Sweeps"]
    assert {f"results/runs/{run}/samples.md" for run in RUNS} == files["Samples"]


def test_second_run_has_nothing_to_do(built):
    wf, _, _, again = built
    assert wf.jobs_run(again) == []


def test_changing_the_prompts_reruns_only_the_samples(built):
    wf, _, _, _ = built
    cfg = pipeline_config()
    cfg["generation"]["prompts"] = ["A cat"]
    wf.write_config(cfg)
    try:
        ran = wf.jobs_run(wf.run("demo"))
    finally:
        wf.write_config(pipeline_config())
    assert sorted(set(ran) - {"demo"}) == ["results_index", "samples"]
    assert ran.count("samples") == len(RUNS)
    assert "A cat" in (wf.root / "results/runs" / RUNS[0] / "samples.md").read_text()


def test_unknown_run_in_a_target_is_named(workflow):
    cfg = pipeline_config()
    cfg["targets"]["demo"]["runs"] = ["mcro"]
    workflow.write_config(cfg)
    proc = workflow.run("demo", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "targets.demo.runs" in out and "unknown run 'mcro'" in out


def test_unknown_preset_in_a_run_is_named(workflow):
    cfg = pipeline_config()
    cfg["runs"]["micro"]["model"]["preset"] = "mikro"
    workflow.write_config(cfg)
    proc = workflow.run("demo", check=False, extra=("-n",))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "mikro" in out and "micro" in out


def test_mistyped_training_key_fails_at_start_up(workflow):
    cfg = pipeline_config()
    cfg["training_defaults"]["training"]["bach_size"] = 4
    workflow.write_config(cfg)
    proc = workflow.run("demo", check=False, extra=("-n",))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "bach_size" in out and "config error" in out
