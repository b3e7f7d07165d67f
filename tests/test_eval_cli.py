"""`lm evaluate`, `lm generate`, `lm samples`, `lm results-index` end to end on a tiny trained run."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lm.cli import main
from lm.data.demo import write_corpus
from lm.inference.evaluate import evaluate
from lm.inference.generate import generate
from lm.inference.run import load_run
from lm.tokenizer import Tokenizer
from lm.tokenizer.encoding.dataset import encode_file
from lm.tokenizer.training.directory import train_to_dir
from lm.training.config import resolve_run
from lm.training.loop import train

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """results/demo/{tokenizer,tokens}/ and results/runs/tiny/, as the pipeline lays them out."""
    root = tmp_path_factory.mktemp("pipeline")
    res = root / "results"
    res.mkdir()
    write_corpus(root / "train.txt", 60, seed=0)
    write_corpus(root / "valid.txt", 5, seed=1)
    train_to_dir(root / "train.txt", res / "demo" / "tokenizer", 320, [EOT])
    tok = Tokenizer.from_dir(res / "demo" / "tokenizer", [EOT])
    tokens_dir = res / "demo" / "tokens"
    tokens_dir.mkdir()
    for split in ("train", "valid"):
        ids = tok.encode((root / f"{split}.txt").read_text(encoding="utf-8"))
        np.save(res / "demo" / "tokens" / f"{split}.npy", np.array(ids, dtype=np.uint16))
    # valid.stats.json (bytes and tokens, for bits per byte) as the pipeline writes it
    stats = encode_file(root / "valid.txt", tok, root / "valid-again.npy")
    shutil.move(root / "valid-again.stats.json", res / "demo" / "tokens" / "valid.stats.json")
    assert np.array_equal(np.load(root / "valid-again.npy"), np.load(tokens_dir / "valid.npy"))
    assert stats["tokens"] == len(np.load(tokens_dir / "valid.npy"))
    spec = {
        "dataset": "demo",
        "model": {
            "vocab_size": tok.vocab_size,
            "context_length": 32,
            "d_model": 32,
            "num_layers": 1,
            "num_heads": 2,
            "d_ff": 64,
        },
        "optimizer": {"lr": 1e-2},
        "training": {
            "steps": 40,
            "batch_size": 8,
            "eval_every": 20,
            "eval_batches": 2,
            "log_every": 10,
            "device": "cpu",
        },
        "threads": 1,
    }
    tokens = res / "demo" / "tokens"
    train(
        resolve_run("tiny", spec),
        tokens / "train.npy",
        tokens / "valid.npy",
        res / "runs" / "tiny",
        progress=False,
    )
    return res


def _run(tree):
    return tree / "runs" / "tiny"


def test_evaluate_writes_what_evaluate_computes(tree, tmp_path, capsys):
    run, valid = _run(tree), tree / "demo" / "tokens" / "valid.npy"
    out = tmp_path / "eval.json"
    args = ["--run", str(run), "--valid-tokens", str(valid), "--out", str(out)]
    assert main(["evaluate", *args, "--batch-size", "4", "--threads", "1", "--no-progress"]) == 0
    record = json.loads(out.read_text())
    model, _, step = load_run(run)
    expected = evaluate(model, np.load(valid, mmap_mode="r"), 4)
    n = len(np.load(valid))
    assert record["tokens_predicted"] == expected["tokens_predicted"] == n - 1
    assert record["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert record["perplexity"] == pytest.approx(np.exp(expected["loss"]), rel=1e-6)
    assert (record["run"], record["status"], record["checkpoint_step"]) == ("tiny", "ok", step)
    assert step == 40 and record["split"] == str(valid) and record["note"] is None
    result = json.loads((run / "result.json").read_text())
    assert record["training_final_val_loss"] == result["final_val_loss"]
    assert "perplexity" in capsys.readouterr().out
    # bits per byte, recomputed independently: the valid text's UTF-8 bytes (every byte of
    # the file, the <|endoftext|> separators included) over its ids, counted here
    text = (tree.parent / "valid.txt").read_bytes()
    n_ids = len(Tokenizer.from_dir(tree / "demo" / "tokenizer", [EOT]).encode(text.decode()))
    assert n_ids == n and record["split_tokens"] == n and record["split_bytes"] == len(text)
    assert text.count(EOT.encode()) == 5  # documents, each followed by the separator
    assert record["bytes_per_token"] == len(text) / n
    bits = expected["loss"] * n_ids / len(text) / np.log(2)
    assert record["bits_per_byte"] == pytest.approx(bits, rel=1e-6)


def test_evaluate_bits_per_byte_needs_the_matching_split_stats(tree, tmp_path, capsys):
    run, valid = _run(tree), tree / "demo" / "tokens" / "valid.npy"
    out = tmp_path / "eval.json"
    args = ["evaluate", "--run", str(run), "--out", str(out), "--no-progress"]
    # no stats beside the tokens: loss as before, bits per byte null with a note
    shutil.copy(valid, tmp_path / "bare.npy")
    assert main([*args, "--valid-tokens", str(tmp_path / "bare.npy")]) == 0
    record = json.loads(out.read_text())
    assert record["loss"] is not None and record["bits_per_byte"] is None
    assert "bare.stats.json" in record["note"]
    # stats of another encoding (a token count that differs): a clear error, nothing written
    out.unlink()
    stale = tmp_path / "stale.stats.json"
    stale.write_text(json.dumps({"bytes": 100, "tokens": len(np.load(valid)) + 1}))
    argv = [*args, "--valid-tokens", str(valid), "--valid-stats", str(stale)]
    assert main(argv) == 2
    assert "re-encode the split" in capsys.readouterr().err
    assert not out.exists()


def _generate_args(tree, *extra):
    return ["generate", "--run", str(_run(tree)), "--prompt", "Once upon a time", *extra]


def test_generate_streams_the_prompt_and_its_continuation(tree, capsys):
    settings = ["--temperature", "0.9", "--top-p", "0.95", "--seed", "3", "--max-new-tokens", "40"]
    assert main(_generate_args(tree, *settings)) == 0
    out = capsys.readouterr()
    tok = Tokenizer.from_dir(tree / "demo" / "tokenizer", [EOT])
    model, _, _ = load_run(_run(tree))
    ids = generate(
        model,
        tok.encode("Once upon a time"),
        40,
        temperature=0.9,
        top_p=0.95,
        seed=3,
        eot_id=tok.special_ids[EOT],
    )
    assert ids, "the tiny model should say something"
    assert out.out == "Once upon a time" + tok.decode(ids) + "\n"
    assert re.search(r"\[\d+ new tokens", out.err)
    # the cache changes nothing
    assert main(_generate_args(tree, *settings, "--no-cache")) == 0
    assert capsys.readouterr().out == out.out


def test_samples_page_and_json(tree, tmp_path, capsys):
    prompts = ["Once upon a time", "The cat said `hi`\nand left"]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    md, js = tmp_path / "samples.md", tmp_path / "samples.json"
    argv = ["samples", "--run", str(_run(tree)), "--out", str(md), "--json", str(js)]
    settings = ["--max-new-tokens", "30", "--seed", "5", "--temperature", "0.7"]
    assert main([*argv, "--prompts", str(tmp_path / "prompts.json"), *settings]) == 0
    page, record = md.read_text(), json.loads(js.read_text())
    assert "# Samples: tiny" in page and "(step 40)" in page and "temperature 0.7" in page
    assert [s["prompt"] for s in record["samples"]] == prompts
    for s in record["samples"]:
        assert s["prompt"] + s["completion"] in page
    assert "``The cat said `hi` and left``" in page  # the inline prompt survives its backticks
    # each sample is what `lm generate` prints for its prompt with the same settings
    capsys.readouterr()
    assert main(_generate_args(tree, *settings, "--top-p", "0.9")) == 0
    printed = capsys.readouterr().out
    assert printed == prompts[0] + record["samples"][0]["completion"] + "\n"
    # the prompts may also be given inline
    assert main([*argv, "--prompts", json.dumps(prompts), *settings]) == 0
    assert json.loads(js.read_text())["samples"] == record["samples"]


def _diverged_copy(tree, tmp_path, checkpoint: str):
    """A copy of the run marked diverged: with no checkpoint, or one whose weights are NaN."""
    run = tmp_path / "results" / "runs" / "boom"
    shutil.copytree(_run(tree), run)
    shutil.copytree(tree / "demo", tmp_path / "results" / "demo")
    result = json.loads((run / "result.json").read_text())
    result.update(status="diverged", diverged_step=7, diverged_reason="loss is NaN")
    (run / "result.json").write_text(json.dumps(result))
    final = run / "checkpoints" / "final.pt"
    if checkpoint == "none":
        final.unlink()
    else:
        payload = torch.load(final, weights_only=True)
        payload["model"] = {k: v * float("nan") for k, v in payload["model"].items()}
        torch.save(payload, final)
    return run


@pytest.mark.parametrize("checkpoint", ["none", "nan"])
def test_a_diverged_run_gets_null_numbers_and_exit_zero(tree, tmp_path, checkpoint):
    run = _diverged_copy(tree, tmp_path, checkpoint)
    valid = tree / "demo" / "tokens" / "valid.npy"
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--run", str(run), "--valid-tokens", str(valid), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert record["status"] == "diverged" and record["diverged_step"] == 7
    assert record["loss"] is None and record["perplexity"] is None and record["note"]
    if checkpoint == "nan":
        assert record["tokens_predicted"] == len(np.load(valid)) - 1
    md, js = tmp_path / "samples.md", tmp_path / "samples.json"
    argv = ["samples", "--run", str(run), "--prompts", '["Once"]', "--out", str(md)]
    assert main([*argv, "--json", str(js)]) == 0
    assert "diverged" in md.read_text() and json.loads(js.read_text())["samples"] == []


def test_bad_input_exits_2_with_a_clear_message(tree, tmp_path, capsys):
    run = str(_run(tree))
    valid = str(tree / "demo" / "tokens" / "valid.npy")
    out = str(tmp_path / "x.json")
    cases = [
        (
            ["evaluate", "--run", str(tmp_path / "nope"), "--valid-tokens", valid, "--out", out],
            "run directory .*nope does not exist",
        ),
        (
            [
                "evaluate",
                "--run",
                run,
                "--valid-tokens",
                valid,
                "--out",
                out,
                "--checkpoint",
                str(tmp_path / "c.pt"),
            ],
            r"checkpoint .*c\.pt does not exist",
        ),
        (
            ["evaluate", "--run", run, "--valid-tokens", str(tmp_path / "v.npy"), "--out", out],
            "token file .* does not exist",
        ),
        (
            ["samples", "--run", run, "--prompts", '{"a": 1}', "--out", out],
            "must be a JSON list of strings, got dict",
        ),
        (
            ["samples", "--run", run, "--prompts", "[1, 2]", "--out", out],
            "holding non-strings",
        ),
        (
            ["samples", "--run", run, "--prompts", "Once upon", "--out", out],
            "neither a JSON list of strings nor a file",
        ),
        (
            ["samples", "--run", run, "--prompts", "[]", "--out", out],
            "empty list",
        ),
        (
            ["generate", "--run", run, "--prompt", "x", "--tokenizer", str(tmp_path)],
            "no tokenizer at",
        ),
        (
            ["generate", "--run", run, "--prompt", "", "--temperature", "0"],
            "prompt is empty",
        ),
        (
            ["generate", "--run", run, "--prompt", "x", "--top-p", "0"],
            "--top-p must be in",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert re.search(message, err), (argv, err)
    assert not Path(out).exists()
    # a run whose result is ok but whose checkpoint is gone is an error, not a diverged run
    broken = tmp_path / "results" / "runs" / "broken"
    shutil.copytree(_run(tree), broken)
    (broken / "checkpoints" / "final.pt").unlink()
    argv = ["samples", "--run", str(broken), "--prompts", '["a"]', "--out", out]
    assert main(argv) == 2
    assert "final.pt does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------- results-index


def _write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


@pytest.fixture
def fake_results(tmp_path):
    r = tmp_path / "results"
    for ds, vocab in (("stories", 1737), ("web", 32000)):
        _write(r / ds / "raw" / "train.stats.json", {"bytes": 2_500_000, "documents": 600})
        _write(r / ds / "tokenizer" / "vocab.json", "{}")
        _write(r / ds / "tokenizer" / "report.md", "# t")
        _write(
            r / ds / "tokenizer" / "stats.json",
            {"vocab_size": vocab, "merges": vocab - 257, "special_tokens": [EOT]},
        )
        for split in ("train", "valid"):
            _write(
                r / ds / "tokens" / f"{split}.stats.json",
                {"tokens": 12345, "dtype": "uint16", "bytes_per_token": 4.1},
            )
        _write(r / ds / "logs" / "x.md", "a log")
    _write(r / "tokenizer_experiments" / "all" / "report.md", "# e")
    _write(
        r / "tokenizer_experiments" / "all" / "report.json",
        {"datasets": {"stories": {}, "web": {}}, "throughput": {}},
    )
    _write(r / "accounting" / "transformer.md", "# a")
    _write(r / "accounting" / "adamw.md", "# b")
    _write(r / "accounting" / "adamw.json", {})
    ok = r / "runs" / "lr-1e-3"
    _write(ok / "config.json", {})
    _write(
        ok / "result.json",
        {"status": "ok", "steps": 500, "final_val_loss": 1.25, "best_val_loss": 1.2},
    )
    _write(ok / "eval.json", {"loss": 1.3, "perplexity": 3.669, "tokens_predicted": 45283})
    _write(ok / "samples.md", "# s")
    _write(
        ok / "samples.json", {"settings": {"temperature": 0.8, "top_p": 0.9}, "samples": [{}, {}]}
    )
    _write(ok / "curves.png", "png")
    _write(ok / "checkpoints" / "notes.md", "never indexed")
    bad = r / "runs" / "lr-3"
    _write(bad / "config.json", {})
    _write(
        bad / "result.json",
        {"status": "diverged", "diverged_step": 5, "diverged_reason": "loss is NaN"},
    )
    _write(
        bad / "eval.json",
        {"loss": None, "perplexity": None, "note": "the run diverged and left no checkpoint"},
    )
    sw = r / "sweeps" / "lr"
    _write(sw / "report.md", "# sweep")
    _write(
        sw / "report.json",
        {"runs": [{}, {}], "best": {"run": "lr-1e-3", "best_val_loss": 1.2}, "diverged": ["lr-3"]},
    )
    _write(sw / "summary.csv", "a,b\n")
    _write(sw / "curves.png", "png")
    for hf in (ok / "hf", sw / "hf"):
        _write(hf / "README.md", "# lr-1e-3\n\nA model card.")
        _write(hf / "config.json", {"dtype": "float32"})
        _write(hf / "model.safetensors", "weights")
    _write(r / "lr_tuning" / "report.md", "# lr")
    _write(
        r / "lr_tuning" / "report.json",
        {"runs": [{"lr": 10.0, "outcome": "decays"}, {"lr": 1000.0, "outcome": "diverges"}]},
    )
    _write(r / "lr_tuning" / "curves.png", "png")
    _write(r / "report.html", "<html>")
    _write(r / "notes" / "extra.md", "# other")
    _write(r / "README.md", "old index")
    return r


def test_results_index_lists_every_artifact_with_working_links(fake_results, capsys):
    out = fake_results / "README.md"
    assert main(["results-index", "--results", str(fake_results), "--out", str(out)]) == 0
    page = out.read_text()
    lines = page.splitlines()

    def line(link: str) -> str:
        found = [x for x in lines if f"]({link})" in x]
        assert len(found) == 1, (link, page)
        return found[0]

    assert "vocab 1,737 ids, 1,480 merges" in line("stories/tokenizer/report.md")
    assert "vocab 32,000 ids" in line("web/tokenizer/report.md")
    assert "12,345 tokens, uint16" in line("web/tokens/valid.stats.json")
    assert "2.5 MB, 600 documents" in line("stories/raw/train.stats.json")
    assert "stories, web" in line("tokenizer_experiments/all/report.md")
    line("accounting/transformer.md"), line("accounting/adamw.md")
    assert "ok, 500 steps, final val loss 1.2500" in line("runs/lr-1e-3/result.json")
    assert "perplexity 3.669" in line("runs/lr-1e-3/eval.json")
    assert "2 samples" in line("runs/lr-1e-3/samples.md")
    line("runs/lr-1e-3/curves.png")
    assert "diverged at step 5 (loss is NaN)" in line("runs/lr-3/result.json")
    assert "no perplexity" in line("runs/lr-3/eval.json")
    assert "best lr-1e-3 (val loss 1.2000), 1 diverged" in line("sweeps/lr/report.md")
    line("sweeps/lr/curves.png"), line("sweeps/lr/summary.csv")
    for hf in ("runs/lr-1e-3/hf", "sweeps/lr/hf"):
        assert "lr-1e-3 for transformers (LlamaForCausalLM, float32)" in line(f"{hf}/README.md")
    assert "lr 10: decays, lr 1000: diverges" in line("lr_tuning/report.md")
    line("lr_tuning/curves.png"), line("report.html"), line("notes/extra.md")
    assert "checkpoints" not in page and "logs" not in page and "](README.md)" not in page
    for heading in ("## Datasets", "## Runs", "## Sweeps", "## Accounting", "- **stories**"):
        assert heading in page
    # every link resolves, also from an index written elsewhere
    other = fake_results.parent / "site" / "index.md"
    assert main(["results-index", "--results", str(fake_results), "--out", str(other)]) == 0
    for index in (out, other):
        links = re.findall(r"\]\(([^)]+)\)", index.read_text())
        assert len(links) == 26
        assert all((index.parent / link).is_file() for link in links)
    assert "26 artifacts" in capsys.readouterr().out


def test_results_index_of_a_missing_directory(tmp_path, capsys):
    argv = ["results-index", "--results", str(tmp_path / "nope"), "--out", str(tmp_path / "i.md")]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
