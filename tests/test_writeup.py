"""lm writeup on artifacts made here: every problem in the handout's order, numbers equal
to the files they cite, and a "not run yet" line with its command for what is missing."""

from __future__ import annotations

import json

import pytest
from writeup_checks import HANDOUT_ORDER, check_writeup, sections

from lm.cli import main
from lm.writeup import write_writeup


def plan(edition: str = "full", in_edition: bool = True) -> dict:
    """A plan over results/ in the current directory, the way the workflow writes it."""

    def sweep(name):
        return {
            "name": name,
            "in_edition": in_edition,
            "report": f"results/sweeps/{name}/report.json",
            "curves": f"results/sweeps/{name}/curves.png",
            "runs": {},
            "command": f"snakemake results/sweeps/{name}/report.md",
        }

    def run(name):
        return {
            "name": name,
            "in_edition": in_edition,
            "dir": f"results/runs/{name}",
            "command": f"snakemake results/runs/{name}/eval.json",
        }

    return {
        "edition": edition,
        "roles": {
            "tinystories": {
                "name": "ts",
                "tokenizer": "results/ts/tokenizer",
                "command": "snakemake results/ts/tokenizer",
            },
            "owt": {
                "name": "web",
                "in_edition": in_edition,
                "tokenizer": "results/web/tokenizer",
                "command": "snakemake results/web/tokenizer",
            },
            "tokenizer_experiments": {
                "name": "all",
                "report": "results/tokenizer_experiments/all/report.json",
                "command": "snakemake results/tokenizer_experiments/all/report.md",
            },
            "accounting": {
                "name": "accounting",
                "transformer": "results/accounting/transformer.json",
                "adamw": "results/accounting/adamw.json",
                "command": "snakemake accounting",
            },
            "lr_tuning": {
                "name": "lr_tuning",
                "report": "results/lr_tuning/report.json",
                "curves": "results/lr_tuning/curves.png",
                "command": "snakemake results/lr_tuning/report.md",
            },
            "learning_rate": {**sweep("lr"), "in_edition": True},
            "batch_size": sweep("bs"),
            "ablations": sweep("abl"),
            "main_experiment": run("main"),
            "leaderboard": {"name": None, "command": "snakemake results/runs/main/eval.json"},
        },
    }


def test_nothing_built_says_not_run_yet_with_each_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = plan()
    record = write_writeup(p, "results/writeup.md", "results/writeup.json")
    check_writeup(tmp_path)
    _, found = sections((tmp_path / "results/writeup.md").read_text())
    assert list(found) == HANDOUT_ORDER
    by_key = {r["key"]: r for r in record["problems"]}
    for key, problem in by_key.items():
        if key == "leaderboard":
            assert problem["status"] == "not configured"
            assert "*Not configured:*" in found[key]
        else:
            assert problem["status"] == "not run", key
            assert "*Not run yet:*" in found[key], key
        assert problem["command"].startswith("snakemake "), key
        assert f"`{problem['command']}`" in found[key], key
        assert problem["facts"] == [] and problem["sources"] == []
    assert by_key["no_pos_emb"]["command"] == p["roles"]["ablations"]["command"]


def test_demo_edition_points_at_the_full_scale_problems(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_writeup(plan("demo", in_edition=False), "results/writeup.md", "results/writeup.json")
    md = (tmp_path / "results/writeup.md").read_text()
    assert "**Demo scale.**" in md
    _, found = sections(md)
    for key in (
        "train_bpe_expts_owt",
        "batch_size_experiment",
        "swiglu_ablation",
        "main_experiment",
    ):
        assert "*Not in the demo:*" in found[key], key
    assert "`snakemake results/sweeps/bs/report.md`" in found["batch_size_experiment"]
    check_writeup(tmp_path)


def test_accounting_and_toy_numbers_equal_their_artifacts(tmp_path, monkeypatch):
    from lm.accounting import write_reports
    from lm.training.lr_tuning import lr_tuning

    monkeypatch.chdir(tmp_path)
    write_reports(
        "results/accounting",
        models=["gpt2-small", "gpt2-medium"],
        preset="gpt2-medium",
        context_length=2048,
    )
    lr_tuning("results/lr_tuning")
    assert (
        main(
            [
                "writeup",
                "--plan",
                json.dumps(plan()),
                "--out",
                "results/writeup.md",
                "--json",
                "results/writeup.json",
            ]
        )
        == 0
    )
    record = check_writeup(tmp_path)
    by_key = {r["key"]: r for r in record["problems"]}
    for key in ("transformer_accounting", "adamwAccounting", "learning_rate_tuning"):
        assert by_key[key]["status"] == "answered" and len(by_key[key]["facts"]) > 5, key
    _, found = sections((tmp_path / "results/writeup.md").read_text())
    t = json.loads((tmp_path / "results/accounting/transformer.json").read_text())
    medium = next(m for m in t["models"] if m["name"] == "gpt2-medium")
    assert f"**{medium['parameters']['total']:,}**" in found["transformer_accounting"]
    assert (
        "![loss per iteration of the SGD toy](lr_tuning/curves.png)"
        in found["learning_rate_tuning"]
    )


def test_a_plan_that_is_not_json_is_named(tmp_path, capsys):
    assert main(["writeup", "--plan", "{nope", "--out", str(tmp_path / "w.md")]) == 2
    assert "--plan" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["edition", "roles"])
def test_a_plan_without_its_keys_is_named(tmp_path, capsys, missing):
    p = plan()
    del p[missing]
    assert main(["writeup", "--plan", json.dumps(p), "--out", str(tmp_path / "w.md")]) == 2
    assert "edition" in capsys.readouterr().err


def test_fill_records_each_field_as_a_fact_in_order(tmp_path):
    from lm.writeup.facts import Artifact, Section
    from lm.writeup.problems.spec import fill

    art = Artifact(
        "results/a.json",
        {"total": 2_500_000_000, "runs": [{"lr": 0.003, "name": "r0"}], "note": "as is"},
    )
    s = Section("k", "t", tmp_path)
    text = fill(
        s,
        art,
        "{run}: lr {value:g} of {/total|x/1e9:.1f} G, {name!s}; {/note!s} {{braces}}",
        "runs",
        0,
        run="`r0`",
        value=("lr",),
    )
    assert text == "`r0`: lr 0.003 of 2.5 G, r0; as is {braces}"
    assert [(f["inputs"][0]["key"], f["op"], f["format"]) for f in s.facts] == [
        (["runs", 0, "lr"], "x", "g"),
        (["total"], "x/1e9", ".1f"),
        (["runs", 0, "name"], "x", ""),
        (["note"], "x", ""),
    ]
    assert s.sources == ["results/a.json"]
    assert fill(s, art, "{total} bytes") == "2,500,000,000 bytes"  # the default format is ","


def _tokenizer_stats(corpus_bytes: int, longest: str) -> dict:
    return {
        "corpus_bytes": corpus_bytes,
        "documents": 7,
        "vocab_size": 300,
        "vocab_size_requested": 300,
        "merges": 43,
        "stopped_early": False,
        "workers": 1,
        "total_seconds": 0.25,
        "pretokenize_seconds": 0.05,
        "merge_seconds": 0.2,
        "peak_rss_mb": 40.5,
        "peak_rss_workers_mb": 0.0,
        "longest_tokens": [{"id": 299, "length_bytes": len(longest), "text": longest}],
    }


def test_openwebtext_tokenizer_without_tokenizer_experiments(tmp_path, monkeypatch):
    # the workflow's plan has no tokenizer experiments when the target names no datasets
    monkeypatch.chdir(tmp_path)
    for name, size, longest in (("ts", 1000, " said"), ("web", 5000, " government")):
        out = tmp_path / f"results/{name}/tokenizer/stats.json"
        out.parent.mkdir(parents=True)
        out.write_text(json.dumps(_tokenizer_stats(size, longest)))
    p = plan()
    p["roles"]["tokenizer_experiments"] = None
    record = write_writeup(p, "results/writeup.md", "results/writeup.json")
    check_writeup(tmp_path)
    by_key = {r["key"]: r for r in record["problems"]}
    assert by_key["tokenizer_experiments"]["status"] == "not configured"
    assert by_key["train_bpe_expts_owt"]["status"] == "answered"
    _, found = sections((tmp_path / "results/writeup.md").read_text())
    owt = found["train_bpe_expts_owt"]
    assert "**(b)** Against the `ts` tokenizer (300 tokens, trained on 1,000 bytes)" in owt
    assert "its longest token is 11 bytes against 5." in owt
    assert "once both are in the tokenizer experiments" in owt
