"""Caching reruns exactly what changed, through real snakemake on a copy of the checkout:
a docstring or comment edit reruns nothing; a code change reruns the steps whose command
imports the edited module, and everything after them (lm.codeversion)."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import MICRO_MODEL, Workflow, copy_checkout, snakemake, tiny_config

pytestmark = pytest.mark.slow

TARGETS = ("results/runs/micro/eval.json", "results/runs/micro/samples.md")


def config() -> dict:
    cfg = tiny_config(demo=30)
    cfg["models"] = {"micro": MICRO_MODEL}
    cfg["training_defaults"] = {
        "threads": 1,
        "training": {"batch_size": 4, "steps": 4, "eval_every": 2, "eval_batches": 1,
                     "log_every": 2, "checkpoint_every": 2},
    }  # fmt: skip
    cfg["runs"] = {
        "micro": {"dataset": "demo", "model": {"preset": "micro"}, "optimizer": {"lr": 1e-2}}
    }
    cfg["generation"] = {"prompts": ["Once"], "max_new_tokens": 4}
    return cfg


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = copy_checkout(tmp_path_factory.mktemp("caching") / "repo")
    (root / "config.yaml").write_text(yaml.safe_dump(config(), sort_keys=False))
    proc = plan(root, dry=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert planned(plan(root)) == set()
    return root


def plan(root: Path, dry: bool = True) -> subprocess.CompletedProcess:
    return snakemake(root, *TARGETS, *(["-n"] if dry else []))


def planned(proc: subprocess.CompletedProcess) -> set[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(Workflow(Path()).jobs_run(proc))


@contextlib.contextmanager
def edited(path: Path, old: str, new: str):
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))
    try:
        yield
    finally:
        path.write_text(text)


def test_docstring_and_comment_edits_rerun_nothing(built):
    transformer = built / "lm/model/transformer.py"
    text = transformer.read_text()
    first_doc = text.index('"""') + 3
    with edited(transformer, text[first_doc : first_doc + 20], "An edited docstring. "):
        with edited(built / "lm/training/loop.py", "import math\n", "import math  # a comment\n"):
            assert planned(plan(built)) == set()


def test_a_change_in_checkpoint_code_reruns_evaluation(built):
    checkpoint = built / "lm/training/checkpoint.py"
    with edited(checkpoint, "from __future__ import annotations\n",
                "from __future__ import annotations\n\nFORMAT_REVISION = 2\n"):  # fmt: skip
        jobs = planned(plan(built))
    assert "evaluate" in jobs and "train" in jobs
    assert "train_tokenizer" not in jobs and "encode_split" not in jobs


def test_a_change_in_pretokenization_reruns_the_tokenizer_and_all_after(built):
    pretokenize = built / "lm/tokenizer/pretokenize.py"
    with edited(pretokenize, "from __future__ import annotations\n",
                "from __future__ import annotations\n\nREVISION = 2\n"):  # fmt: skip
        jobs = planned(plan(built))
    assert {"train_tokenizer", "encode_split", "train", "evaluate", "samples"} <= jobs
    assert "fetch_split" not in jobs and "inspect_split" not in jobs
