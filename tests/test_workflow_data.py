"""The data stage run for real by snakemake on tiny configs."""

import json

import pytest
from conftest import tiny_config

pytestmark = pytest.mark.slow


def test_builds_then_nothing_to_do_then_reruns_only_changed_dataset(workflow):
    config = tiny_config(demo=30, other=20)
    workflow.write_config(config)
    workflow.run("data")
    for name, docs in (("demo", 30), ("other", 20)):
        stats = json.loads((workflow.root / f"results/{name}/raw/train.stats.json").read_text())
        assert stats["documents"] == docs
        assert (workflow.root / f"results/{name}/raw/valid.txt").exists()

    again = workflow.run("data")
    assert "Nothing to be done" in again.stdout + again.stderr

    before = {p: p.stat().st_mtime_ns for p in (workflow.root / "results").rglob("*.*")}
    config["datasets"]["demo"]["train"]["generate"]["documents"] = 31
    workflow.write_config(config)
    changed = workflow.run("data")
    ran = workflow.jobs_run(changed)
    assert sorted(r for r in ran if r != "data") == ["fetch_split", "inspect_split"]
    rewritten = sorted(
        str(p.relative_to(workflow.root)) for p, t in before.items() if p.stat().st_mtime_ns != t
    )
    assert rewritten == [
        "results/demo/raw/train.fetch.log",
        "results/demo/raw/train.inspect.log",
        "results/demo/raw/train.stats.json",
        "results/demo/raw/train.txt",
    ]
    stats = json.loads((workflow.root / "results/demo/raw/train.stats.json").read_text())
    assert stats["documents"] == 31


def test_local_path_is_used_in_place(workflow, tmp_path):
    corpus = tmp_path / "my corpus.txt"
    corpus.write_text("a story\n<|endoftext|>\nanother\n<|endoftext|>\n", encoding="utf-8")
    config = tiny_config()
    config["datasets"]["demo"]["train"] = {"path": str(corpus)}
    workflow.write_config(config)
    workflow.run("data")
    stats = json.loads((workflow.root / "results/demo/raw/train.stats.json").read_text())
    assert stats["documents"] == 2 and stats["path"] == str(corpus)
    assert not (workflow.root / "results/demo/raw/train.txt").exists()  # never copied


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["datasets"]["demo"]["tokenizer"].update(vocab_sizee=5), "vocab_sizee"),
        (
            lambda c: c["datasets"]["demo"]["tokenizer"].update(vocab_size="big"),
            "datasets.demo.tokenizer.vocab_size",
        ),
        (lambda c: c.update(dataset={}), "dataset"),
        (lambda c: c["datasets"]["demo"]["train"].update(url="http://x/y"), "datasets.demo.train"),
    ],
)
def test_bad_config_fails_fast_naming_the_key(workflow, mutate, expected):
    config = tiny_config()
    mutate(config)
    workflow.write_config(config)
    proc = workflow.run("data", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config error at" in out and expected in out
    assert not (workflow.root / "results").exists()


def test_unknown_dataset_in_target(workflow):
    workflow.write_config(tiny_config())
    proc = workflow.run("results/nope/raw/train.stats.json", check=False)
    assert proc.returncode != 0
    assert "unknown dataset 'nope'" in proc.stdout + proc.stderr
    assert "demo" in proc.stdout + proc.stderr


def test_missing_path_and_non_utf8_path(workflow, tmp_path):
    config = tiny_config()
    config["datasets"]["demo"]["train"] = {"path": str(tmp_path / "absent.txt")}
    workflow.write_config(config)
    proc = workflow.run("data", check=False)
    assert proc.returncode != 0
    assert "datasets.demo.train.path" in proc.stdout + proc.stderr
    assert "does not exist" in proc.stdout + proc.stderr

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    config["datasets"]["demo"]["train"] = {"path": str(bad)}
    workflow.write_config(config)
    proc = workflow.run("data", check=False)
    assert proc.returncode != 0
    assert "not UTF-8" in proc.stdout + proc.stderr and "byte offset 3" in proc.stdout + proc.stderr
    assert not (workflow.root / "results/demo/raw/train.stats.json").exists()


def test_unreachable_url_fails_cleanly(workflow):
    config = tiny_config()
    config["datasets"]["demo"]["valid"] = {"url": "http://127.0.0.1:9/nothing.txt.gz"}
    workflow.write_config(config)
    proc = workflow.run("data", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "cannot reach http://127.0.0.1:9/nothing.txt.gz" in out and "path:" in out
    assert not (workflow.root / "results/demo/raw/valid.txt").exists()
