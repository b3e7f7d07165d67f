"""Every fault named: damaged tokenizer files, a full disk, config mistakes and a corrupt
checkpoint, each met with real damage (files edited as a user or a crash would, a real
tmpfs filled up, real snakemake, a real HTTP server) and answered by one clear message,
exit status 2, nothing partial left, and a rerun after the fix equal to a clean run."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_checkout, snakemake, tiny_config

from lm.cli import main
from lm.tokenizer.serialization import str_to_token, token_to_str
from lm.training.config import resolve_run

EOT = "<|endoftext|>"


def _corpus(path: Path, docs: int = 80, seed: int = 0) -> Path:
    from lm.data.demo import write_corpus

    write_corpus(path, documents=docs, seed=seed)
    return path


def _leftovers(d: Path) -> list[str]:
    """Temporaries (hidden .NAME.PID.*.tmp) anywhere under ``d``."""
    return sorted(p.name for p in d.rglob(".*.tmp")) if d.exists() else []


# ------------------------------------------------------------ a damaged tokenizer directory


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A real tokenizer trained by `lm train-bpe`, a text, and the ids a clean `lm encode` writes."""
    d = tmp_path_factory.mktemp("tok")
    text = _corpus(d / "text.txt")
    assert main(["train-bpe", str(text), "--vocab-size", "320", "--out", str(d / "tok"),
                 "--no-progress"]) == 0  # fmt: skip
    assert _encode(text, d / "tok", d / "clean.npy") == 0
    return d / "tok", text, np.load(d / "clean.npy")


def _encode(text: Path, tok: Path, out: Path) -> int:
    return main(["encode", str(text), "--tokenizer", str(tok), "--out", str(out),
                 "--workers", "1", "--no-progress"])  # fmt: skip


def _merge_lines(tok: Path) -> list[str]:
    return (tok / "merges.txt").read_text(encoding="utf-8").split("\n")


def _vocab_line(tok: Path, key: str) -> int:
    lines = (tok / "vocab.json").read_text(encoding="utf-8").split("\n")
    return next(
        i
        for i, line in enumerate(lines, 1)
        if line.startswith(json.dumps(key, ensure_ascii=False) + ":")
    )


def _damage_and_encode(tokenizer, tmp_path, capsys, damage) -> str:
    """Copy the tokenizer, ``damage(dir)`` it, run `lm encode`: exit 2, nothing written.
    Then put the files back and encode again: the ids of a clean run. Returns the message."""
    clean, text, clean_ids = tokenizer
    tok = tmp_path / "tok"
    shutil.copytree(clean, tok)
    damage(tok)
    capsys.readouterr()
    out = tmp_path / "enc" / "ids.npy"
    assert _encode(text, tok, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("lm encode: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "enc").exists() or list((tmp_path / "enc").iterdir()) == []
    for name in ("vocab.json", "merges.txt"):  # the fix: the files written together
        shutil.copy2(clean / name, tok / name)
    assert _encode(text, tok, out) == 0
    assert np.array_equal(np.load(out), clean_ids)
    return err


def test_a_deleted_merge_line_is_named_not_encoded_differently(tokenizer, tmp_path, capsys):
    lines = _merge_lines(tokenizer[0])
    a, b = lines[16].split(" ")  # line 17 of merges.txt
    made = token_to_str(str_to_token(a) + str_to_token(b))
    vocab = json.loads((tokenizer[0] / "vocab.json").read_text(encoding="utf-8"))

    def delete(tok):
        (tok / "merges.txt").write_text("\n".join(lines[:16] + lines[17:]), encoding="utf-8")

    err = _damage_and_encode(tokenizer, tmp_path, capsys, delete)
    assert (
        f"vocab.json: line {_vocab_line(tokenizer[0], made)} token {made!r} (id {vocab[made]}) "
        f"is not made by any merge of {tmp_path / 'tok' / 'merges.txt'} and is not a special "
        f"token: a line of merges.txt is missing (the merge making {made!r} belongs at line 17)"
    ) in err
    assert "use the vocab.json and merges.txt written together by lm train-bpe" in err


def test_the_last_merge_line_deleted_is_caught_by_the_recorded_special_tokens(
    tokenizer, tmp_path, capsys
):
    lines = [line for line in _merge_lines(tokenizer[0]) if line]
    a, b = lines[-1].split(" ")
    made = token_to_str(str_to_token(a) + str_to_token(b))

    def delete_last(tok):
        (tok / "merges.txt").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")

    err = _damage_and_encode(tokenizer, tmp_path, capsys, delete_last)
    assert f"token {made!r}" in err
    assert f"belongs at the end (after line {len(lines) - 1})" in err


def test_a_duplicated_merge_line_is_named(tokenizer, tmp_path, capsys):
    lines = _merge_lines(tokenizer[0])

    def duplicate(tok):
        (tok / "merges.txt").write_text(
            "\n".join(lines[:17] + [lines[16]] + lines[17:]), encoding="utf-8"
        )

    err = _damage_and_encode(tokenizer, tmp_path, capsys, duplicate)
    assert re.search(r"merges.txt: line 18: merge '.+' '.+' makes '.+', which line 17 already "
                     r"makes; each token is made by one merge, so remove line 18", err), err  # fmt: skip


def test_an_unknown_token_in_merges_is_named(tokenizer, tmp_path, capsys):
    lines = _merge_lines(tokenizer[0])

    def unknown(tok):
        (tok / "merges.txt").write_text(
            "\n".join(lines[:9] + ["Ġzzqq Ġxxyy"] + lines[10:]), encoding="utf-8"
        )

    err = _damage_and_encode(tokenizer, tmp_path, capsys, unknown)
    assert "merges.txt: line 10: merge part 'Ġzzqq' is not in the vocabulary" in err


def test_a_gap_in_the_ids_is_named(tokenizer, tmp_path, capsys):
    vocab = json.loads((tokenizer[0] / "vocab.json").read_text(encoding="utf-8"))
    by_id = {i: k for k, i in vocab.items()}

    def gap(tok):
        moved = {k: (i + 1 if i >= 300 else i) for k, i in vocab.items()}
        (tok / "vocab.json").write_text(
            json.dumps(moved, ensure_ascii=False, indent=0), encoding="utf-8"
        )

    err = _damage_and_encode(tokenizer, tmp_path, capsys, gap)
    line = _vocab_line(tokenizer[0], by_id[300])
    assert f"vocab.json: line {line} id 300 is missing (ids jump from 299 to 301)" in err


# ------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A real 512 KiB tmpfs (mounting needs root, as in CI); remount(size) frees space."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")

    def remount(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    try:
        yield mnt, remount
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


NO_SPACE = (
    r"no space left on device writing {path} \(more than \d+ bytes needed, (?P<free>\d+) free\); "
    r"free space and rerun\n"
)


def test_disk_full_while_encoding(tokenizer, small_disk, tmp_path, capsys):
    mnt, remount = small_disk
    tok, _, _ = tokenizer
    text = _corpus(tmp_path / "big.txt", docs=3000, seed=5)  # ~1 MB of ids, the disk has 512 KiB
    out = mnt / "tokens" / "train.npy"
    capsys.readouterr()
    assert _encode(text, tok, out) == 2
    err = capsys.readouterr().err
    said = re.fullmatch("lm encode: error: " + NO_SPACE.format(path=re.escape(str(out))), err)
    assert said, err
    assert int(said["free"]) == shutil.disk_usage(mnt).free  # the space free once it gave up
    assert list((mnt / "tokens").iterdir()) == []  # nothing partial, no temporary
    remount("8m")
    assert _encode(text, tok, out) == 0
    assert _encode(text, tok, tmp_path / "clean.npy") == 0
    assert np.array_equal(np.load(out), np.load(tmp_path / "clean.npy"))
    assert _leftovers(mnt) == []


def _run_spec(steps=60, **training):
    # big enough that a checkpoint (about 1.5 MB with AdamW's moments) overflows 512 KiB
    spec = {
        "model": {
            "vocab_size": 64,
            "context_length": 16,
            "d_model": 64,
            "num_layers": 2,
            "num_heads": 2,
            "d_ff": 128,
        },  # fmt: skip
        "optimizer": {"lr": 1e-2},
        "training": {
            "steps": steps,
            "batch_size": 4,
            "eval_every": 20,
            "eval_batches": 2,
            "log_every": 5,
            "checkpoint_every": 20,
            "device": "cpu",
            **training,
        },  # fmt: skip
        "threads": 1,
    }
    return resolve_run("f", spec)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    for split, n in (("train", 20_000), ("valid", 2_000)):
        ids = (np.arange(n) * 7 + (rng.random(n) < 0.1) * rng.integers(0, 64, n)) % 64
        np.save(d / f"{split}.npy", ids.astype(np.uint16))
    return d / "train.npy", d / "valid.npy"


def _train_cmd(run_json: Path, tokens, out: Path) -> list[str]:
    return [sys.executable, "-m", "lm", "train", "--config", str(run_json), "--train-tokens",
            str(tokens[0]), "--valid-tokens", str(tokens[1]), "--out", str(out), "--no-progress"]  # fmt: skip


def _losses(out: Path):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r["val_loss"], r["grad_norm"]) for r in records]


@pytest.mark.slow
def test_disk_full_while_saving_a_checkpoint(tokens, small_disk, tmp_path):
    mnt, remount = small_disk
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps(_run_spec().to_dict()))
    out = mnt / "run"
    proc = subprocess.run(_train_cmd(run_json, tokens, out), capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.splitlines(keepends=True)[-1]
    path = re.escape(str(out / "checkpoints" / "step_00000020.pt"))
    said = re.fullmatch("lm train: error: " + NO_SPACE.format(path=path), last)
    assert said, proc.stderr
    # true once it gave up: torch.save's writer no longer holds its deleted file open
    assert int(said["free"]) == shutil.disk_usage(mnt).free
    assert "inline_container" not in proc.stderr and "Traceback" not in proc.stderr
    assert list((out / "checkpoints").iterdir()) == []  # no checkpoint, half or whole
    remount("16m")
    subprocess.run(_train_cmd(run_json, tokens, out), check=True, capture_output=True)
    subprocess.run(_train_cmd(run_json, tokens, tmp_path / "clean"), check=True,
                   capture_output=True)  # fmt: skip
    assert _losses(out) == _losses(tmp_path / "clean")
    assert _leftovers(mnt) == []


# ------------------------------------------------------------------------- a corrupt checkpoint


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_is_set_aside_and_the_run_resumes(tokens, tmp_path):
    run = _run_spec(steps=400, checkpoint_every=30, keep_checkpoints=4, eval_every=50)
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps(run.to_dict()))
    subprocess.run(_train_cmd(run_json, tokens, tmp_path / "clean"), check=True,
                   capture_output=True)  # fmt: skip

    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    proc = subprocess.Popen(_train_cmd(run_json, tokens, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(list(ckpts.glob("step_*.pt"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it was killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ckpts / "final.pt").exists(), "killed too late"
    steps = sorted(ckpts.glob("step_*.pt"))
    assert len(steps) >= 3
    newest, second, third = steps[-1], steps[-2], steps[-3]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped, same size
    second.write_bytes(bytes(data))

    resumed = subprocess.run(_train_cmd(run_json, tokens, out), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["resumed_at_step"] == int(third.stem.split("_")[1])
    assert result["checkpoints_set_aside"] == [
        f"checkpoints/{second.name}.corrupt",
        f"checkpoints/{newest.name}.corrupt",
    ]
    assert (ckpts / f"{newest.name}.corrupt").is_file()
    assert (ckpts / f"{second.name}.corrupt").is_file()
    assert f"set aside as {newest.name}.corrupt" in resumed.stderr
    assert f"set aside as {second.name}.corrupt" in resumed.stderr
    assert "truncated or overwritten" in resumed.stderr and "damaged on disk" in resumed.stderr
    assert _losses(out) == _losses(tmp_path / "clean")
    clean = json.loads((tmp_path / "clean" / "result.json").read_text())
    assert result["final_val_loss"] == clean["final_val_loss"]
    assert clean["checkpoints_set_aside"] == []


# ------------------------------------------------------------------------- config mistakes


@pytest.mark.slow
def test_a_split_with_url_and_path_says_give_exactly_one(tmp_path):
    root = copy_checkout(tmp_path / "repo")
    (root / "local.yaml").write_text(
        yaml.safe_dump(
            {"datasets": {"owt": {"train": {"url": "http://127.0.0.1:9/x.txt", "path": "x.txt"}}}}
        )
    )
    proc = snakemake(root, "-n", "results/owt/tokenizer", "--configfile", "local.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        "config error at `datasets.owt.train`: give exactly one of url, path, generate "
        "(it gives url and path)"
    ) in out
    assert "valid under each of" not in out


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a temporary directory."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_a_checksum_mismatch_names_the_configfile_it_came_from(tmp_path, http_dir):
    served, base = http_dir
    _corpus(served / "valid.txt", docs=4, seed=3)
    good = hashlib.sha256((served / "valid.txt").read_bytes()).hexdigest()
    root = copy_checkout(tmp_path / "repo")
    (root / "config.yaml").write_text(yaml.safe_dump(tiny_config(demo=10)))
    mirror = {"datasets": {"demo": {"valid": {"url": f"{base}/valid.txt", "sha256": "0" * 64}}}}
    (root / "mirror.yaml").write_text(yaml.safe_dump(mirror))
    target = "results/demo/raw/valid.txt"
    proc = snakemake(root, target, "--configfile", "mirror.yaml")
    out = proc.stdout + proc.stderr + (root / "results/demo/raw/valid.fetch.log").read_text()
    assert proc.returncode != 0
    assert "update datasets.demo.valid.sha256 in mirror.yaml." in out, out
    assert "in config.yaml" not in out
    assert not (root / target).exists() and _leftovers(root / "results") == []
    mirror["datasets"]["demo"]["valid"]["sha256"] = good  # the fix
    (root / "mirror.yaml").write_text(yaml.safe_dump(mirror))
    proc = snakemake(root, target, "--configfile", "mirror.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / target).read_bytes() == (served / "valid.txt").read_bytes()


def test_disk_full_while_downloading(small_disk, http_dir, tmp_path, capsys):
    mnt, remount = small_disk
    served, base = http_dir
    _corpus(served / "train.txt", docs=3000, seed=2)  # about 1 MB; the disk has 512 KiB
    out = mnt / "raw" / "train.txt"
    capsys.readouterr()
    assert main(["download", f"{base}/train.txt", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch("lm download: error: " + NO_SPACE.format(path=re.escape(str(out))), err)
    assert list((mnt / "raw").iterdir()) == []
    remount("8m")
    assert main(["download", f"{base}/train.txt", "--out", str(out), "--no-progress"]) == 0
    assert out.read_bytes() == (served / "train.txt").read_bytes()
    assert _leftovers(mnt) == []


def test_disk_full_while_training_bpe(small_disk, tmp_path, capsys):
    mnt, _ = small_disk
    text = _corpus(tmp_path / "text.txt")
    filler = mnt / "filler"  # the disk nearly full already: 8 KiB left
    filler.write_bytes(b"\0" * (shutil.disk_usage(mnt).free - 8192))
    out = mnt / "tokenizer"
    args = ["train-bpe", str(text), "--vocab-size", "600", "--no-progress", "--out"]
    capsys.readouterr()
    assert main([*args, str(out)]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch("lm train-bpe: error: " + NO_SPACE.format(path=re.escape(str(out))), err)
    assert sorted(p.name for p in mnt.iterdir()) == ["filler"]  # no half-written directory
    filler.unlink()  # space freed
    assert main([*args, str(out)]) == 0
    assert main([*args, str(tmp_path / "clean")]) == 0
    for name in ("vocab.json", "merges.txt"):
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    assert _leftovers(mnt) == []
