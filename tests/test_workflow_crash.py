"""One way back after a crash, through real processes: `kill -9` of snakemake and every job
it runs, then the README's commands (`snakemake --unlock`, then the same command again).

Training resumes from its last checkpoint and ends bit-identical to an uninterrupted run;
BPE training and encoding leave no partial artifact and their rerun equals a clean run.
Commands are typed as in the README: no --cores (the default profile gives it).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from conftest import MICRO_MODEL, SNAKEMAKE, copy_checkout, snakemake, tiny_config

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def crash_config(documents: int) -> dict:
    cfg = tiny_config(demo=documents)
    cfg["datasets"]["demo"]["valid"]["generate"]["documents"] = 20
    cfg["models"] = {"micro": MICRO_MODEL}
    cfg["training_defaults"] = {
        "threads": 1,
        "training": {
            "batch_size": 4,
            "steps": 300,
            "eval_every": 100,
            "eval_batches": 2,
            "log_every": 10,
            "checkpoint_every": 50,
        },
    }
    cfg["runs"] = {
        "micro": {"dataset": "demo", "model": {"preset": "micro"}, "optimizer": {"lr": 1e-2}}
    }
    return cfg


def checkout(tmp_path: Path, documents: int = 60) -> Path:
    root = copy_checkout(tmp_path / "repo")
    (root / "config.yaml").write_text(yaml.safe_dump(crash_config(documents), sort_keys=False))
    return root


def crash_when(root: Path, target: str, ready, timeout: float = 300) -> None:
    """Start `snakemake TARGET`, wait until ``ready()`` (mid-job), then SIGKILL snakemake and
    every process under it, as a power cut or the OOM killer would."""
    log = open(root / "crashed-run.log", "w")
    proc = subprocess.Popen(
        [str(SNAKEMAKE), target], cwd=root, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(
                    f"snakemake ended before the crash point:\n{(root / 'crashed-run.log').read_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("the crash point was never reached")
            time.sleep(0.01)
    finally:
        try:
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL


def recover(root: Path, target: str) -> subprocess.CompletedProcess:
    """The README's way back: the plain command says the directory is locked and how to
    unlock it; `snakemake --unlock`; the same command again."""
    locked = snakemake(root, target)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    snakemake(root, "--unlock", check=True)
    return snakemake(root, target, check=True)


def log_has(path: Path, text: str):
    return lambda: path.is_file() and text in path.read_text(errors="replace")


def temporaries(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


def without_wallclock(path: Path) -> list[dict]:
    drop = {"wallclock_s", "tokens_per_s"}
    return [
        {k: v for k, v in json.loads(line).items() if k not in drop}
        for line in path.read_text().splitlines()
    ]


def test_training_killed_mid_run_resumes_and_ends_bit_identical(tmp_path):
    root = checkout(tmp_path)
    snakemake(root, "results/demo/tokens/train.npy", "results/demo/tokens/valid.npy", check=True)
    run = root / "results/runs/micro"
    crash_when(
        root, "results/runs/micro/result.json", lambda: any(run.glob("checkpoints/step_*.pt"))
    )
    assert not (run / "result.json").exists()
    assert "micro: " in (run / "train.log").read_text()  # progress lines reached the log

    recover(root, "results/runs/micro/result.json")
    resumed = json.loads((run / "result.json").read_text())
    assert resumed["status"] == "ok" and resumed["steps"] == 300
    assert resumed["sessions"] == 2 and resumed["resumed_at_step"] >= 50

    # the same run uninterrupted, by the same command the rule runs
    ref = tmp_path / "reference"
    subprocess.run(
        [str(BIN / "lm"), "train", "--config", str(run / "run.json"),
         "--train-tokens", str(root / "results/demo/tokens/train.npy"),
         "--valid-tokens", str(root / "results/demo/tokens/valid.npy"),
         "--out", str(ref), "--threads", "1", "--progress", "none"],
        check=True, capture_output=True,
    )  # fmt: skip
    clean = json.loads((ref / "result.json").read_text())
    assert clean["sessions"] == 1
    for key in ("final_val_loss", "final_train_loss", "best_val_loss", "initial_val_loss"):
        assert resumed[key] == clean[key], key
    assert without_wallclock(run / "metrics.jsonl") == without_wallclock(ref / "metrics.jsonl")


def test_bpe_training_killed_leaves_nothing_and_reruns_to_a_clean_result(tmp_path):
    root = checkout(tmp_path, documents=3000)
    snakemake(root, "results/demo/raw/train.stats.json", check=True)
    log = root / "results/demo/logs/train_tokenizer.log"
    crash_when(root, "results/demo/tokenizer", log_has(log, "pre-tokenize: "))
    assert not (root / "results/demo/tokenizer").exists()

    recover(root, "results/demo/tokenizer")
    assert temporaries(root / "results/demo") == []
    ref = tmp_path / "reference"
    subprocess.run(
        [str(BIN / "lm"), "train-bpe", str(root / "results/demo/raw/train.txt"),
         "--vocab-size", "300", "--out", str(ref), "--progress", "none"],
        check=True, capture_output=True,
    )  # fmt: skip
    for name in ("vocab.json", "merges.txt"):
        assert (root / "results/demo/tokenizer" / name).read_bytes() == (ref / name).read_bytes()


def test_encoding_killed_leaves_nothing_and_reruns_to_a_clean_result(tmp_path):
    root = checkout(tmp_path, documents=3000)
    snakemake(root, "results/demo/tokenizer", check=True)
    tokens = root / "results/demo/tokens"
    log = root / "results/demo/logs/encode_train.log"
    crash_when(root, "results/demo/tokens/train.npy", log_has(log, "encode train.txt: "))
    assert not (tokens / "train.npy").exists() and not (tokens / "train.stats.json").exists()

    recover(root, "results/demo/tokens/train.npy")
    assert temporaries(tokens) == []
    ref = tmp_path / "reference.npy"
    subprocess.run(
        [str(BIN / "lm"), "encode", str(root / "results/demo/raw/train.txt"),
         "--tokenizer", str(root / "results/demo/tokenizer"), "--out", str(ref),
         "--progress", "none"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert np.array_equal(np.load(tokens / "train.npy"), np.load(ref))
