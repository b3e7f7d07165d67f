"""What jobs ask a scheduler for: a training run's runtime from its token budget and the
configured throughput, its memory from the model it builds, BPE training's memory from the
corpus's distinct pre-tokens, and the data steps' threads from --cores or the config."""

from __future__ import annotations

import math
import re

import pytest
import yaml
from conftest import REPO, copy_checkout, snakemake

from lm.data.demo import write_corpus
from lm.tokenizer.training.memory import bpe_training_mem_mb, distinct_pretokens_estimate
from lm.training import resolve_runs, run_resources, run_runtime

# CS336's 17M TinyStories model at batch 32: the reference the throughput figures are for
TS17M = {"d_model": 512, "num_layers": 4, "num_heads": 16, "d_ff": 1344, "context_length": 256,
         "rope_theta": 10000}  # fmt: skip


def run(**training):
    cfg = {
        "datasets": {"ts": {"tokenizer": {"vocab_size": 10000}}},
        "models": {"ts17m": TS17M},
        "runs": {
            "r": {
                "dataset": "ts",
                "model": {"preset": "ts17m"},
                "optimizer": {"lr": 1e-3},
                "training": {"batch_size": 32, "device": "cpu", **training},
            }
        },
    }
    return resolve_runs(cfg)["r"]


def test_runtime_of_the_reference_model_is_its_tokens_at_the_configured_speed():
    r = run(steps=1000)  # 8,192,000 tokens
    sched = {"throughput": {"cpu": 2048}, "safety_factor": 1.5, "startup_minutes": 5}
    assert run_runtime(r, sched) == math.ceil(1.5 * 1000 * 32 * 256 / 2048 / 60 + 5)  # 105
    # twice the tokens, twice the time
    assert run_runtime(run(steps=2000), sched) == math.ceil(1.5 * 2000 * 32 * 256 / 2048 / 60 + 5)


def test_runtime_scales_with_the_models_flops_and_the_device():
    sched = {"throughput": {"cpu": 1000, "cuda": 50000}, "safety_factor": 1.0, "startup_minutes": 0}
    base = run(steps=1000)
    deeper = base.replace(**{"model.num_layers": 16})  # about 3x the training FLOPs per token
    assert 2.5 < run_runtime(deeper, sched) / run_runtime(base, sched) < 3.5
    gpu = run(steps=1000, device="cuda")
    assert run_runtime(gpu, sched) == math.ceil(1000 * 32 * 256 / 50000 / 60)
    four = run(steps=1000, device="cuda", processes=4)
    assert run_runtime(four, sched) == math.ceil(1000 * 32 * 256 / 50000 / 4 / 60)
    four = four.replace(**{"training.processes": 1, "resources.gpu": 4})  # one process a GPU
    assert run_runtime(four, sched) == math.ceil(1000 * 32 * 256 / 50000 / 4 / 60)


def test_runtime_declared_wins_and_a_wallclock_budget_caps_it():
    r = run(steps=100_000)
    assert run_runtime(r) > 24 * 60  # 1000 tokens/s on CPU by default: days
    assert run_runtime(r.replace(**{"resources.runtime": 90})) == 90
    budgeted = run(steps=100_000, max_wallclock_minutes=30)
    assert run_runtime(budgeted, {"startup_minutes": 10}) == 40


def test_count_params_is_the_built_models_for_silu():
    """Issue 12: tinystories-17m with `ffn: silu` has 22,696,448 parameters (the SiLU FFN is
    3/2·d_ff wide); the memory estimate counted 19,943,936."""
    from lm.training.resources import count_params
    from lm.training.run_config import ResourcesConfig

    silu = run(steps=10).replace(**{"model.ffn": "silu"})
    built = silu.model.build(device="meta")
    assert count_params(silu.model) == sum(p.numel() for p in built.parameters()) == 22_696_448
    # the estimate holds 16 bytes (weights, gradients, two AdamW moments) of each parameter
    assert run_resources(silu.replace(resources=ResourcesConfig())).mem_mb * 2**20 > 16 * 22_696_448


def test_distinct_pretokens_counted_when_small_and_estimated_high_when_large(tmp_path):
    corpus = tmp_path / "train.txt"
    write_corpus(corpus, documents=600, seed=0)
    special = ["<|endoftext|>"]
    from lm.tokenizer.pretokenize import pretokenize

    exact = len(set(pretokenize(corpus.read_text(encoding="utf-8"), special)))
    counted = distinct_pretokens_estimate(corpus, special)
    assert counted["exact"] and counted["distinct_pretokens"] == exact
    sampled = distinct_pretokens_estimate(corpus, special, sample_bytes=corpus.stat().st_size // 8)
    assert not sampled["exact"]
    # Heaps' extrapolation errs high (vocabulary growth slows), within a small factor
    assert exact <= sampled["distinct_pretokens"] <= 4 * exact


def test_bpe_training_memory_follows_distinct_pretokens_and_workers():
    small = bpe_training_mem_mb(10_000, workers=4, corpus_bytes=10**10)
    assert bpe_training_mem_mb(10_000_000, workers=4, corpus_bytes=10**10) > 10 * small
    assert bpe_training_mem_mb(10_000_000, 16, 10**10) > bpe_training_mem_mb(10_000_000, 4, 10**10)
    # the corpus size matters only through the chunk each worker holds (capped at 4 MB)
    assert bpe_training_mem_mb(10_000, 4, 10**10) == bpe_training_mem_mb(10_000, 4, 10**12)


def _workers(out: str) -> set[str]:
    return set(re.findall(r"lm (?:train-bpe|encode) .*?--workers (\d+)", out))


@pytest.mark.slow
def test_data_threads_come_from_cores_or_the_config_not_the_host(tmp_path):
    root = copy_checkout(tmp_path / "repo")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    targets = ["results/demo/tokens/train.npy", "results/demo/tokens/valid.npy"]
    dry = ("-n", "-p", "--forceall", *targets)
    # run here: all that --cores allows
    assert _workers(snakemake(root, "--cores", "1", *dry, check=True).stdout) == {"1"}
    assert _workers(snakemake(root, "--cores", "3", *dry, check=True).stdout) == {"3"}
    # the config wins (within --cores, as for every rule run here)
    cfg["scheduler"] = {"data_threads": 5}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert _workers(snakemake(root, "--cores", "8", *dry, check=True).stdout) == {"5"}
    # on a cluster, not this host's cores: the configured number, else 4 (planned with a
    # --cores above both: a dry run's default of 1 would cap them)
    if _has_slurm_plugin():
        slurm = ("--workflow-profile", "workflow/profiles/slurm", "--cores", "100", *dry)
        assert _workers(snakemake(root, *slurm, check=True).stdout) == {"5"}
        del cfg["scheduler"]
        (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        assert _workers(snakemake(root, *slurm, check=True).stdout) == {"4"}


def _has_slurm_plugin() -> bool:
    import importlib.util

    return importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
