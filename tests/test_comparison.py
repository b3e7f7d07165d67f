"""Comparison reports (results/comparisons/{name}/, lm compare-runs): built by the real
`snakemake` from two tiny runs on datasets with different tokenizers, their numbers checked
against the runs' eval.json and against bits per byte recomputed here from the raw text;
the OpenWebText main experiment planned from a `path:` copy of the data."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from conftest import (
    MICRO_MODEL,
    Workflow,
    copy_checkout,
    snakemake,
    tiny_config,
    write_readme_local_yaml,
)

from lm.data.demo import write_corpus
from lm.reports.comparison import explain

EOT = "<|endoftext|>"


def _row(run, dataset, loss, bytes_per_token, vocab=1000):
    return {
        "run": run,
        "dataset": dataset,
        "vocab_size": vocab,
        "eval_loss": loss,
        "bytes_per_token": bytes_per_token,
        "bits_per_byte": loss / math.log(2) / bytes_per_token,
    }


def test_the_paragraph_follows_the_numbers():
    # the lower loss per token stays lower per byte
    same = explain([_row("ts", "tinystories", 1.5, 4.0), _row("owt", "owt", 3.2, 4.4)])
    assert "The order holds per byte: ts" in same
    for number in ("1.5000", "3.2000", "4.000", "4.400", "0.5410", "1.0492"):
        assert number in same, number
    assert "narrows from 2.13x per token to 1.94x per byte" in same
    # a tokenizer that packs much more text per token: the order flips per byte
    flip = explain([_row("a", "x", 1.0, 2.0), _row("b", "y", 1.8, 4.5)])
    assert "The order changes per byte: b predicts its text best" in flip
    assert "2.25x the text of one of a" in flip
    # one tokenizer: per token and per byte agree
    one = explain([_row("lr1", "demo", 2.0, 3.0), _row("lr2", "demo", 2.5, 3.0)])
    assert "same amount of text" in one and "stays at 1.25x" in one
    # a run without bits per byte is named, not compared
    gone = explain([_row("a", "x", 1.0, 2.0), {**_row("b", "y", 1.0, 2.0), "bits_per_byte": None}])
    assert gone.startswith("Fewer than two runs") and "b has no evaluation" in gone


def comparison_config(data: Path) -> dict:
    """Two datasets read in place (`path:`, so no fetch jobs): different training corpora
    and vocabularies, the same validation text, so bytes/token differ by tokenizer alone."""
    cfg = tiny_config(small=30, large=30)
    for name, seed in (("small", 0), ("large", 3)):
        for split, docs in (("train", 30), ("valid", 5)):
            path = data / f"{name}_{split}.txt"
            write_corpus(path, documents=docs, seed=seed if split == "train" else 1)
            cfg["datasets"][name][split] = {"path": str(path)}
    cfg["datasets"]["large"]["tokenizer"]["vocab_size"] = 420
    cfg["models"] = {"micro": MICRO_MODEL}
    cfg["training_defaults"] = {
        "threads": 1,
        "training": {"batch_size": 4, "steps": 4, "eval_every": 2, "eval_batches": 1},
    }
    cfg["runs"] = {
        name: {"dataset": name, "model": {"preset": "micro"}, "optimizer": {"lr": 1e-2}}
        for name in ("small", "large")
    }
    cfg["generation"] = {"prompts": ["Once upon a time"], "max_new_tokens": 6, "seed": 0}
    cfg["evaluation"] = {"batch_size": 8}
    cfg["comparisons"] = {"pair": {"runs": ["small", "large"], "title": "small vs large"}}
    return cfg


@pytest.mark.slow
def test_snakemake_builds_a_comparison_whose_numbers_are_the_runs(workflow: Workflow):
    from lm.tokenizer import Tokenizer

    data = workflow.root / "data"
    data.mkdir()
    workflow.write_config(comparison_config(data))
    workflow.run("results/comparisons/pair/report.md")
    out = workflow.root / "results" / "comparisons" / "pair"
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["run"] for r in report["runs"]] == ["small", "large"]
    for row in report["runs"]:
        name = row["run"]
        ev = json.loads((workflow.root / f"results/runs/{name}/eval.json").read_text())
        assert row["eval_loss"] == ev["loss"] and row["bits_per_byte"] == ev["bits_per_byte"]
        assert row["bytes_per_token"] == ev["bytes_per_token"]
        # bits per byte from scratch: the split's UTF-8 bytes over its ids, counted here
        text = (data / f"{name}_valid.txt").read_bytes()
        tok = Tokenizer.from_dir(workflow.root / f"results/{name}/tokenizer", [EOT])
        n_ids = len(tok.encode(text.decode("utf-8")))
        assert ev["split_bytes"] == len(text) and ev["split_tokens"] == n_ids
        bits = ev["loss"] * n_ids / len(text) / math.log(2)
        assert row["bits_per_byte"] == pytest.approx(bits, rel=1e-12)
        # the table and the paragraph show the same numbers
        assert f"| {name} | {name} | {tok.vocab_size:,} | ok |" in md
        for v in (ev["loss"], ev["bytes_per_token"], ev["bits_per_byte"]):
            assert f"{v:.4f}" in md
        assert f"{ev['bits_per_byte']:.4f} bits/byte for {name}" in report["explanation"]
        sample = json.loads((workflow.root / f"results/runs/{name}/samples.json").read_text())
        assert sample["samples"][0]["prompt"] + sample["samples"][0]["completion"] in md
    bpts = [r["bytes_per_token"] for r in report["runs"]]
    assert bpts[0] != bpts[1]
    assert report["explanation"] in md and "# Comparison: small vs large" in md
    # the runs' eval.json carries bits per byte next to nats per token
    assert re.search(r"bits/byte", (workflow.root / "results/runs/small/evaluate.log").read_text())
    # results/README.md lists the comparison with its figures
    from lm.reports.index import collect

    listed = {str(e["path"]): e for e in collect(workflow.root / "results")}
    entry = listed[str(out / "report.md")]
    assert entry["section"] == "Comparisons"
    assert f"{report['runs'][1]['bits_per_byte']:.4f} bits/byte" in entry["description"]


@pytest.mark.slow
def test_main_experiment_plans_from_a_local_copy_of_openwebtext(tmp_path):
    """`snakemake -n results/comparisons/main-experiment/report.md --configfile local.yaml`
    with the documented local.yaml (docs/data.md): OpenWebText from the `path:` files (no fetch), the
    32K tokenizer, both runs trained, evaluated and sampled, then the comparison."""
    root = copy_checkout(tmp_path / "repo")
    local = write_readme_local_yaml(root, tmp_path / "data")
    target = "results/comparisons/main-experiment/report.md"
    proc = snakemake(root, "-n", target, "--configfile", local.name, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", out, re.S | re.M)
    outputs = [(rule, m) for rule, body in jobs for m in re.findall(r"output: (\S+)", body)]
    fetched = [o for rule, o in outputs if rule == "fetch_split"]
    assert fetched and all(o.startswith("results/tinystories/") for o in fetched), fetched
    assert f"input: {tmp_path / 'data' / 'owt_train.txt'}" in out  # read in place
    for rule, path in [
        ("train_tokenizer", "results/owt/tokenizer"),
        ("train", "results/runs/owt-main/result.json"),
        ("evaluate", "results/runs/owt-main/eval.json"),
        ("train", "results/runs/ts17m-lr-lr3e-3/result.json"),
        ("comparison_report", target),
    ]:
        assert any(r == rule and o.startswith(path) for r, o in outputs), (rule, path)
    assert not (root / "results" / "owt").exists()  # planned only
