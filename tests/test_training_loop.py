"""The training loop end to end on a tiny model: outputs, divergence, resume after SIGKILL, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import write_run

from lm.cli import main
from lm.errors import LMError
from lm.training import AdamW, load_checkpoint, save_checkpoint
from lm.training.checkpoint import read_checkpoint
from lm.training.config import resolve_run
from lm.training.loop import train

VOCAB = 64


def _run(name="t", optimizer=None, **training):
    spec = {
        "model": {
            "vocab_size": VOCAB,
            "context_length": 16,
            "d_model": 16,
            "num_layers": 1,
            "num_heads": 2,
            "d_ff": 32,
        },
        "optimizer": {"lr": 1e-2},
        "training": {
            "steps": 30,
            "batch_size": 4,
            "eval_every": 10,
            "eval_batches": 2,
            "log_every": 5,
            "checkpoint_every": 10,
            "device": "cpu",
        },
        "threads": 1,
    }
    spec["training"].update(training)
    spec["optimizer"].update(optimizer or {})
    return resolve_run(name, spec)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """A learnable stream: mostly +7 mod VOCAB, with a little noise."""
    d = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    for split, n in (("train", 20_000), ("valid", 2_000)):
        ids = (np.arange(n) * 7 + (rng.random(n) < 0.1) * rng.integers(0, VOCAB, n)) % VOCAB
        np.save(d / f"{split}.npy", ids.astype(np.uint16))
    return d / "train.npy", d / "valid.npy"


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_every_output_and_learns(tokens, tmp_path):
    cfg = _run()
    result = train(cfg, *tokens, tmp_path / "run", progress=False)
    out = tmp_path / "run"
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    assert json.loads((out / "result.json").read_text()) == result
    assert (out / "curves.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "final.pt",
        "final.pt.check.json",
    ]
    assert result["checkpoints_set_aside"] == []
    assert result["status"] == "ok" and result["steps"] == 30 and result["tokens"] == 30 * 4 * 16
    assert result["params"] == sum(p.numel() for p in cfg.model.build().parameters())
    records = _metrics(out)
    assert [r["step"] for r in records] == [0, 5, 10, 15, 20, 25, 30]
    assert set(records[1]) == {
        "step",
        "tokens",
        "wallclock_s",
        "lr",
        "train_loss",
        "val_loss",
        "grad_norm",
        "tokens_per_s",
    }
    assert [r["step"] for r in records if r["val_loss"] is not None] == [0, 10, 20, 30]
    assert result["final_val_loss"] == records[-1]["val_loss"] < records[0]["val_loss"] - 0.5
    assert set(result["time_breakdown_s"]) == {"data", "compute", "log", "eval", "checkpoint"}
    # a second call finds final.pt: nothing to train, same numbers
    again = train(cfg, *tokens, out, progress=False)
    assert again["final_val_loss"] == result["final_val_loss"] and again["sessions"] == 2


def test_divergence_ends_the_run_and_exits_zero(tokens, tmp_path, capsys):
    write_run(
        tmp_path / "run.json",
        _run("boom", steps=40).to_dict() | {"optimizer": {"lr": 100.0, "grad_clip": 0.0}},
    )
    status = main(
        [
            "train",
            "--config",
            str(tmp_path / "run.json"),
            "--train-tokens",
            str(tokens[0]),
            "--valid-tokens",
            str(tokens[1]),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert status == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["status"] == "diverged" and result["diverged_step"] == 5 and result["steps"] == 5
    assert "diverged at step 5" in capsys.readouterr().out
    assert (tmp_path / "out" / "checkpoints" / "final.pt").is_file()


def _cli(out, cfg_path, tokens):
    return [
        sys.executable,
        "-m",
        "lm",
        "train",
        "--config",
        str(cfg_path),
        "--train-tokens",
        str(tokens[0]),
        "--valid-tokens",
        str(tokens[1]),
        "--out",
        str(out),
        "--no-progress",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer", [None, {"name": "muon", "muon_lr": 0.05}], ids=["adamw", "muon"]
)
def test_resume_after_sigkill_is_bit_identical(tokens, tmp_path, optimizer):
    # checkpoint_every is not a multiple of log_every: the partial log window must survive too
    # killed at its first checkpoint (step 45): 105 steps of room before the run could end
    cfg = _run("r", optimizer, steps=150, checkpoint_every=45, log_every=10, eval_every=50)
    (tmp_path / "run.json").write_text(json.dumps(cfg.to_dict()))
    reference = train(cfg, *tokens, tmp_path / "a", progress=False)

    out = tmp_path / "b"
    proc = subprocess.Popen(_cli(out, tmp_path / "run.json", tokens), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while (
        not list((out / "checkpoints").glob("step_*.pt"))
        and time.monotonic() < deadline
        and proc.poll() is None
    ):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "result.json").exists() and not (out / "checkpoints" / "final.pt").exists(), (
        "killed too late"
    )
    killed_at = int(sorted((out / "checkpoints").glob("step_*.pt"))[-1].stem.split("_")[1])

    subprocess.run(_cli(out, tmp_path / "run.json", tokens), check=True, stdout=subprocess.DEVNULL)
    resumed = json.loads((out / "result.json").read_text())
    assert resumed["resumed_at_step"] == killed_at < 150 and resumed["sessions"] == 2
    losses = lambda rs: [(r["step"], r["train_loss"], r["val_loss"], r["grad_norm"]) for r in rs]  # noqa: E731
    assert losses(_metrics(out)) == losses(_metrics(tmp_path / "a"))
    assert resumed["final_val_loss"] == reference["final_val_loss"]
    # the checkpoint holds the optimizer the run asked for (Muon's momentum or AdamW's moments)
    state = read_checkpoint(out / "checkpoints" / "final.pt")["optimizer"]["state"]
    kinds = {key for s in state.values() for key in s}
    assert kinds == (
        {"momentum_buffer", "step", "exp_avg", "exp_avg_sq"}
        if optimizer
        else {"step", "exp_avg", "exp_avg_sq"}
    )


def test_resume_refuses_a_changed_config(tokens, tmp_path):
    cfg = _run(steps=12)
    out = tmp_path / "run"
    model = cfg.model.build()
    # a run stopped at step 5 (its checkpoint, as the loop writes it)
    save_checkpoint(
        model,
        AdamW(model.parameters()),
        5,
        out / "checkpoints" / "step_00000005.pt",
        config=cfg.to_dict(),
    )
    changed = _run(steps=12).replace(**{"optimizer.lr": 0.5})
    with pytest.raises(LMError, match=r"different config \(optimizer\.lr differ\).*--fresh"):
        train(changed, *tokens, out, progress=False)
    with pytest.warns(UserWarning, match=r"different config \(optimizer\.lr differ\) discarded"):
        result = train(changed, *tokens, out, progress=False, on_config_change="restart")
    assert result["resumed_at_step"] is None and result["steps"] == 12


def test_an_enabled_tracker_without_its_package_fails_before_training(
    tokens, tmp_path, monkeypatch
):
    """wandb is optional, but a run that enables it without the package is an error at the
    start (None in sys.modules makes `import wandb` raise ImportError), not a warning."""
    monkeypatch.setitem(sys.modules, "wandb", None)
    cfg = _run(steps=5).replace(**{"wandb.enabled": True})
    with pytest.raises(
        LMError, match=r"wandb\.enabled is true but the wandb package .*\[trackers\]"
    ):
        train(cfg, *tokens, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_token_ids_beyond_vocab_fail_before_training(tokens, tmp_path, capsys):
    (tmp_path / "run.json").write_text(
        json.dumps(_run().replace(**{"model.vocab_size": 32}).to_dict())
    )
    status = main(
        [
            "train",
            "--config",
            str(tmp_path / "run.json"),
            "--train-tokens",
            str(tokens[0]),
            "--valid-tokens",
            str(tokens[1]),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert (
        "holds token id 63 but the model's vocab_size is 32" in err
        and "set model.vocab_size >= 64" in err
    )
    assert not (tmp_path / "out").exists()


def test_split_shorter_than_context_is_an_error(tmp_path, tokens):
    np.save(tmp_path / "short.npy", np.arange(10, dtype=np.uint16))
    with pytest.raises(
        LMError, match=r"short\.npy has 10 tokens, fewer than context_length \+ 1 = 17"
    ):
        train(_run(), tokens[0], tmp_path / "short.npy", tmp_path / "out", progress=False)


def test_checkpoint_of_other_model_shape_names_the_tensor(tmp_path):
    cfg = _run().model
    small = cfg.build()
    save_checkpoint(small, torch.optim.SGD(small.parameters(), lr=0.1), 3, tmp_path / "c.pt")
    wider = cfg.replace(d_ff=48).build()
    with pytest.raises(
        LMError,
        match=r"tensor 'layers\.0\.ffn\.w1\.weight' has shape \(32, 16\) in the checkpoint but \(48, 16\)",
    ):
        load_checkpoint(tmp_path / "c.pt", wider)


def test_a_run_with_a_chunked_loss_trains_as_the_plain_run(tokens, tmp_path):
    """training.loss_chunk reaches the loop's loss: the same losses as the plain run, to
    float rounding (the chunks sum the tokens' losses in another order)."""
    plain = train(_run(steps=6, log_every=1, eval_every=3), *tokens, tmp_path / "a", progress=False)
    cfg = _run(steps=6, log_every=1, eval_every=3, loss_chunk=7)
    assert cfg.to_dict()["training"]["loss_chunk"] == 7
    chunked = train(cfg, *tokens, tmp_path / "b", progress=False)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= 6
    for r, s in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss"):  # None where the step logged none
            assert (s[key] is None) == (r[key] is None)
            assert r[key] is None or s[key] == pytest.approx(r[key], rel=1e-5)
    assert chunked["final_val_loss"] == pytest.approx(plain["final_val_loss"], rel=1e-5)
