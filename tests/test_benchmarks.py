"""benchmarks/bench_gpu.py runs on CPU, and its numbers agree with each other and with the accounting."""

import json
import math
import os
import resource
import subprocess
import sys

import pytest
import yaml
from conftest import MICRO_MODEL, REPO

BENCH = REPO / "benchmarks" / "bench_gpu.py"
VOCAB = 64
HUGE = 1_000_000  # a batch whose activations cannot fit under MEMORY_LIMIT
MEMORY_LIMIT = 3 << 30  # address space of the benchmark process (a micro run peaks near 0.7 GB)


def _micro_config(tmp_path):
    path = tmp_path / "config.yaml"
    model = {**MICRO_MODEL, "vocab_size": VOCAB}
    run = {"dataset": "x", "model": {"preset": "micro"}, "training": {"total_tokens": 1_000_000}}
    path.write_text(yaml.safe_dump({"models": {"micro": model}, "runs": {"ts17m": run}}))
    return path


def _bench(tmp_path, *args, limit_memory=False):
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "PYTHONPATH": str(REPO)}  # as on a machine where lm is not installed
    return subprocess.run(
        [sys.executable, str(BENCH), "--device", "cpu", "--config", str(_micro_config(tmp_path))]
        + ["--models", "micro", "--threads", "1", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        preexec_fn=cap if limit_memory else None,
    )


def _micro_training_flops_per_token():
    """By hand: per layer Q, K, V, O (8·d²), SwiGLU (6·d·d_ff), QKᵀ and ·V (4·T·d); the LM
    head (2·d·V); training = forward + backward (2x forward)."""
    d, f, T, L = (MICRO_MODEL[k] for k in ("d_model", "d_ff", "context_length", "num_layers"))
    return 3 * (L * (8 * d * d + 6 * d * f + 4 * T * d) + 2 * d * VOCAB)


@pytest.mark.slow
def test_bench_gpu_on_cpu_reports_consistent_numbers_and_survives_an_oom(tmp_path):
    out = tmp_path / "bench.json"
    steps = 2
    proc = _bench(
        tmp_path,
        *("--dtypes", "fp32,bf16", "--batch-sizes", f"2,{HUGE},3", "--steps", str(steps)),
        *("--warmup", "1", "--peak-tflops", "0.5", "--matmul-size", "32", "--out", str(out)),
        limit_memory=True,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["dtype"], r["batch_size"], r["status"]) for r in rows] == [
        (dtype, batch, "oom" if batch == HUGE else "ok")
        for dtype in ("fp32", "bf16")
        for batch in (2, HUGE, 3)
    ]  # the configs after an out-of-memory one still ran
    assert all(r["error"] and "allocate" in r["error"] for r in rows if r["status"] == "oom")
    assert result["peak_tflops"] == {"fp32": 0.5, "bf16": 0.5}
    assert set(result["matmul_tflops"]) == {"fp32", "bf16"}

    ok = [r for r in rows if r["status"] == "ok"]
    fpt = _micro_training_flops_per_token()
    assert result["models"]["micro"]["flops_per_token"] == fpt
    for r in ok:
        tokens = r["batch_size"] * MICRO_MODEL["context_length"] * steps
        assert r["flops_per_token"] == fpt
        assert r["tokens_per_s"] == pytest.approx(tokens / r["timed_s"], rel=1e-9)
        assert r["achieved_tflops"] == pytest.approx(r["tokens_per_s"] * fpt / 1e12, rel=1e-9)
        assert r["mfu"] == pytest.approx(r["achieved_tflops"] / 0.5, rel=1e-9)
        matmul = result["matmul_tflops"][r["dtype"]]
        assert r["mfu_vs_matmul"] == pytest.approx(r["achieved_tflops"] / matmul, rel=1e-9)
        assert r["peak_memory_gb"] is None  # no allocator statistics on a CPU
        # random targets: the loss of a freshly initialised model is near ln(vocab)
        assert abs(r["mean_loss"] - math.log(VOCAB)) < 1.0
    by_key = {(r["dtype"], r["batch_size"]): r for r in ok}
    for batch in (2, 3):
        bf16, fp32 = by_key["bf16", batch], by_key["fp32", batch]
        assert bf16["vs_fp32"] == pytest.approx(bf16["tokens_per_s"] / fp32["tokens_per_s"])
        assert fp32["vs_fp32"] is None and bf16["vs_eager"] is None  # nothing to compare with

    best = max(ok, key=lambda r: r["tokens_per_s"])
    assert result["ts17m"]["tokens_per_s"] == best["tokens_per_s"]
    assert result["ts17m"]["hours"] == pytest.approx(1_000_000 / best["tokens_per_s"] / 3600)
    table = out.with_suffix(".md").read_text()
    assert table in proc.stdout
    assert table.count("| micro |") == 6 and "| oom: " in table


@pytest.mark.slow
def test_bench_gpu_budget_skips_configs_and_bad_input_is_named(tmp_path):
    out = tmp_path / "bench.json"
    configs = "micro:bf16:model+loss:2,micro:float32:eager:3"
    proc = _bench(
        tmp_path,
        "--configs",
        configs,
        "--max-seconds",
        "0",
        "--matmul-size",
        "0",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [(r["dtype"], r["compile"], r["batch_size"], r["status"]) for r in result["rows"]] == [
        ("bf16", "model+loss", 2, "skipped"),
        ("fp32", "off", 3, "skipped"),
    ]
    assert all("--max-seconds" in r["error"] for r in result["rows"]) and result["ts17m"] is None

    proc = _bench(tmp_path, "--models", "nosuch")
    assert proc.returncode != 0 and "no preset 'nosuch'" in proc.stderr and "micro" in proc.stderr
    proc = _bench(tmp_path, "--configs", "micro:fp16:off:2")
    assert proc.returncode != 0 and "'fp16' is not one of fp32, bf16" in proc.stderr


def test_bench_gpu_cuda_default_list_names_real_presets():
    """The built-in CUDA list (what a GPU run without grid options measures) parses, puts the
    goal's point first, and every model it names is a preset of config.yaml with a vocabulary."""
    import importlib.util

    from lm.model.config import load_presets

    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    grid = bench.build_grid(bench.parse_args([]), "cuda")
    assert grid[0] == ("tinystories-17m", "bf16", "model+loss", 512)
    assert len(grid) == len(set(grid)) == len(bench.CUDA_DEFAULT_CONFIGS)
    presets = load_presets(REPO / "config.yaml")
    assert all("vocab_size" in presets[name] for name, *_ in grid)
    # any grid option replaces the list with the cross product
    assert bench.build_grid(bench.parse_args(["--dtypes", "fp32"]), "cuda")[0] == (
        "tinystories-17m",
        "fp32",
        "off",
        32,
    )
