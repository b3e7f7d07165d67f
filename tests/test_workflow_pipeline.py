"""The whole demo DAG run by the real `snakemake` on a tiny config: raw text -> tokenizer ->
tokens -> tokenizer experiments -> accounting -> a small sweep and a run -> eval -> samples ->
the sweep's best run exported for Hugging Face -> results index -> writeup -> HTML report.
Then: nothing to do; a change reruns only what depends on it. The writeup's numbers equal the
artifacts it cites; what is missing gives a command that `snakemake -n` accepts. (One build
serves every test here: each `snakemake demo` of its own would cost a minute or two. The
full-scale writeup, whose build is the longest, has its own module:
tests/test_workflow_writeup_full.py.)"""

from __future__ import annotations

import json
import math
import platform
import re
import shutil
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
import torch
from conftest import REPO, Workflow
from hf_checks import LOGIT_TOLERANCE, logit_difference
from pipeline_setup import DEMO_ANSWERS, pipeline_config
from writeup_checks import HANDOUT_ORDER, check_writeup, commands, sections

from lm.codeversion import command_version
from lm.inference.run import load_run

pytestmark = pytest.mark.slow


RUNS = ["micro-lr-lr1e-3", "micro-lr-lr1e-2"]  # the sweep's members
ALL_RUNS = [*RUNS, "micro-post"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real run of `snakemake demo` and of `snakemake --report`, shared by the tests here."""
    wf = Workflow(tmp_path_factory.mktemp("pipeline"))
    wf.write_config(pipeline_config())
    first = wf.run("demo")
    report = wf.run("demo", extra=("--report", "results/report.html"))
    again = wf.run("demo")
    # the demo writeup and every file it cites, as built: later tests change results/
    snap = wf.root.parent / f"{wf.root.name}-demo-writeup"
    record = json.loads((wf.root / "results/writeup.json").read_text())
    cited = {f for p in record["problems"] for f in p["sources"]}
    for f in cited | {"results/writeup.md", "results/writeup.json"}:
        (snap / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wf.root / f, snap / f)
    for f in (f for p in record["problems"] for f in p["figures"]):
        assert (wf.root / f).is_file(), f
    return wf, first, report, again, snap


def test_demo_builds_every_stage(built):
    wf, first, _, _, _ = built
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
        "export_best_hf",
        "writeup_report",
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
    for run in ALL_RUNS:
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
        "writeup.md",
    ):
        assert link in index, link


#: Each JSON artifact of the demo, and the lm command that writes it.
PROVENANCE_ARTIFACTS = {
    "demo/raw/valid.stats.json": "inspect-text",
    "demo/tokenizer/stats.json": "train-bpe",
    "demo/tokens/valid.stats.json": "encode",
    "tokenizer_experiments/demo/report.json": "tokenizer-experiments",
    "accounting/transformer.json": "accounting",
    "accounting/adamw.json": "accounting",
    "lr_tuning/report.json": "lr-tuning",
    "sweeps/micro-lr/report.json": "sweep-report",
    "writeup.json": "writeup",
    **{f"runs/{run}/result.json": "train" for run in ALL_RUNS},
    **{f"runs/{run}/eval.json": "evaluate" for run in ALL_RUNS},
}


def test_every_artifact_records_its_provenance(built):
    """A complete block in each JSON artifact: the command that wrote it with the code
    version its rule ran with, the installed versions, the commit of the checkout whose
    lm ran (the tests' own, when they run in one); `lm provenance` prints it; the writeup
    and the HTML report show one each."""
    wf, _, _, _, _ = built
    r = wf.root / "results"
    git = shutil.which("git")
    head = (
        subprocess.run([git, "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        if git and (REPO / ".git").exists()
        else None
    )
    for name, command in PROVENANCE_ARTIFACTS.items():
        block = json.loads((r / name).read_text())["provenance"]
        assert block["command"] == command, name
        assert block["code_version"] == command_version(command), name
        assert block["lm"] == version("lm") and block["python"] == platform.python_version()
        assert block["packages"] == {p: version(p) for p in ("torch", "numpy", "snakemake")}
        assert block["tokenization_engine"] in ("native", "python")
        assert block["device"]["cpu"] and block["processes"] == 1, name
        if head is not None and head.returncode == 0:
            assert block["git"]["commit"] == head.stdout.strip(), name
            assert isinstance(block["git"]["dirty"], bool)
    result = r / "runs" / RUNS[0] / "result.json"
    shown = subprocess.run(
        [sys.executable, "-m", "lm", "provenance", str(result)], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert f"command: train\ncode_version: {command_version('train')}\n" in shown.stdout
    assert f"packages.torch: {version('torch')}" in shown.stdout.splitlines()
    md = (r / "writeup.md").read_text()
    assert md.count("## Provenance") == 1
    assert "| command | `writeup` |" in md and f"| packages.torch | `{version('torch')}` |" in md
    html = (r / "report.html").read_text(encoding="utf-8")
    assert html.count("Provenance</strong> of this report") == 1
    shown_torch = r"packages\.torch: <(tt|code)[^>]*>" + re.escape(version("torch")) + "<"
    assert re.search(shown_torch, html.replace('\\"', '"'))


def report_categories(html: str) -> dict:
    """The report's table of contents: category -> subcategory -> files (a JSON in the page)."""
    match = re.search(r"var categories = (\{.*?\});?\n", html)
    assert match, "no categories in the HTML report"
    return json.loads(match.group(1))


def test_html_report_gathers_every_stage(built):
    wf, _, report, _, _ = built
    html = (wf.root / "results/report.html").read_text(encoding="utf-8")
    categories = report_categories(html)
    assert set(categories) == {
        "Tokenizers",
        "Accounting",
        "Training",
        "Sweeps",
        "Samples",
        "Writeup",
    }
    files = {cat: {f for sub in subs.values() for f in sub} for cat, subs in categories.items()}
    assert "results/demo/tokenizer/report.md" in files["Tokenizers"]
    assert "results/tokenizer_experiments/demo/report.md" in files["Tokenizers"]
    assert files["Accounting"] == {
        "results/accounting/transformer.md",
        "results/accounting/adamw.md",
    }
    assert "results/lr_tuning/report.md" in files["Training"]
    assert {f"results/runs/{run}/curves.png" for run in ALL_RUNS} <= files["Training"]
    assert {
        f"results/sweeps/micro-lr/{f}" for f in ("report.md", "curves.png", "summary.csv")
    } == files["Sweeps"]
    assert {f"results/runs/{run}/samples.md" for run in ALL_RUNS} == files["Samples"]
    assert files["Writeup"] == {"results/writeup.md"}


def test_second_run_has_nothing_to_do(built):
    wf, _, _, again, _ = built
    assert wf.jobs_run(again) == []


def test_the_demo_exports_the_sweeps_best_run_and_skips_post_norm(built):
    wf, first, _, _, _ = built
    ran = wf.jobs_run(first)
    assert ran.count("export_best_hf") == 1 and "export_hf" not in ran
    results = wf.root / "results"
    assert not (results / "runs" / "micro-post" / "hf").exists()  # post-norm: left out
    losses = {
        r: json.loads((results / "runs" / r / "result.json").read_text())["final_val_loss"]
        for r in RUNS
    }
    best = min(losses, key=losses.get)
    hf = results / "sweeps" / "micro-lr" / "hf"
    assert f"# {best}" in (hf / "README.md").read_text()
    model, _, _ = load_run(results / "runs" / best)
    ids = torch.randint(0, model.vocab_size, (2, 16))
    assert logit_difference(model, hf, ids) < LOGIT_TOLERANCE
    # one run's own export, and a refused one that leaves nothing behind
    one = wf.run("results/runs/micro-lr-lr1e-3/hf")
    assert wf.jobs_run(one) == ["export_hf"]
    assert (results / "runs" / "micro-lr-lr1e-3" / "hf" / "model.safetensors").is_file()
    refused = wf.run("results/runs/micro-post/hf", check=False)
    assert refused.returncode != 0
    assert "norm='post'" in refused.stdout + refused.stderr
    assert not (results / "runs" / "micro-post" / "hf").exists()


def test_changing_the_prompts_reruns_only_the_samples(built):
    wf, _, _, _, _ = built
    cfg = pipeline_config()
    cfg["generation"]["prompts"] = ["A cat"]
    wf.write_config(cfg)
    try:
        ran = wf.jobs_run(wf.run("demo"))
    finally:
        wf.write_config(pipeline_config())
    # the writeup quotes a sample, so it follows
    assert sorted(set(ran) - {"demo"}) == ["results_index", "samples", "writeup_report"]
    assert ran.count("samples") == len(ALL_RUNS)
    assert "A cat" in (wf.root / "results/runs" / RUNS[0] / "samples.md").read_text()


def test_demo_writeup_answers_each_problem_from_the_artifacts(built):
    _, _, _, _, snap = built
    record = check_writeup(snap)  # order, and every number against the file it cites
    md = (snap / "results/writeup.md").read_text()
    assert "**Demo scale.**" in md
    status = {p["key"]: p["status"] for p in record["problems"]}
    assert {k for k, v in status.items() if v == "answered"} == DEMO_ANSWERS
    assert status["leaderboard"] == "not configured"
    assert {v for k, v in status.items() if k not in DEMO_ANSWERS | {"leaderboard"}} == {
        "not in this edition"
    }
    _, found = sections(md)
    assert "![loss curves of sweep micro-lr](sweeps/micro-lr/curves.png)" in found["learning_rate"]
    assert "Once upon a time" in found["generate"]


def test_demo_writeup_commands_are_accepted_by_snakemake(built):
    wf, _, _, _, snap = built
    record = json.loads((snap / "results/writeup.json").read_text())
    _, found = sections((snap / "results/writeup.md").read_text())
    wanted = commands(record)
    assert set(wanted) == set(HANDOUT_ORDER) - DEMO_ANSWERS
    for key, command in wanted.items():
        assert f"`{command}`" in found[key], key
    assert all(c.split()[0] == "snakemake" for c in wanted.values())
    # one dry run plans every command's targets together (each alone would cost a start-up)
    targets = sorted({w for c in wanted.values() for w in c.split()[1:]})
    proc = wf.run(*targets, extra=("-n",), check=False)
    assert proc.returncode == 0, (targets, proc.stdout[-2000:], proc.stderr[-2000:])


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
