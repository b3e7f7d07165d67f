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
def test_bench_gpu_times_a_runs_recipe_at_its_own_batch(tmp_path):
    """--runs NAME: the run's model with its options and its optimizer (Muon), at its batch."""
    config = _micro_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["runs"]["recipe"] = {
        "dataset": "x",
        "model": {"preset": "micro", "ffn": "relu2", "qk_norm": "rms"},
        "optimizer": {"name": "muon", "muon_lr": 0.02, "lr": 3e-3},
        "schedule": {"name": "wsd"},
        "training": {"total_tokens": 1_000_000, "batch_size": 3},
    }
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cpu", "--config", str(config)]
        + ["--runs", "recipe", "--threads", "1", "--steps", "2", "--warmup", "1"]
        + ["--matmul-size", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [(r["model"], r["batch_size"], r["status"]) for r in result["rows"]] == [
        ("recipe", 3, "ok")
    ]
    model = result["models"]["recipe"]
    assert (model["ffn"], model["qk_norm"], model["optimizer"]) == ("relu2", "rms", "muon")
    assert abs(result["rows"][0]["mean_loss"] - math.log(VOCAB)) < 1.0
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cpu", "--config", str(config)]
        + ["--runs", "nosuch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode != 0 and "no run 'nosuch'" in proc.stderr


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


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_gpu_compile_modes_parse_and_misspellings_are_named():
    """KIND:MODE names a torch.compile mode, in --configs (where it adds a ':') and --compile;
    the plain names keep working; a misspelt mode fails naming what is allowed."""
    import torch

    bench = _bench_module()

    def grid(*argv, device_type="cuda"):
        return bench.build_grid(bench.parse_args(list(argv)), device_type)

    m = "tinystories-17m"
    configs = (
        f"{m}:bf16:model+loss:max-autotune:1024,{m}:bf16:model+loss:max-autotune-no-cudagraphs:1024,"
        f"{m}:bf16:model+loss:1024,{m}:bf16:model:default:8,{m}:fp32:eager:8"
    )
    assert grid("--configs", configs) == [
        (m, "bf16", "model+loss:max-autotune", 1024),
        (m, "bf16", "model+loss:max-autotune-no-cudagraphs", 1024),
        (m, "bf16", "model+loss", 1024),
        (m, "bf16", "model", 8),  # :default is the plain name
        (m, "fp32", "off", 8),
    ]
    assert grid("--models", m, "--compile", "off,model:reduce-overhead", "--batch-sizes", "4") == [
        (m, dtype, mode, 4)
        for dtype in ("bf16", "fp32")
        for mode in ("off", "model:reduce-overhead")
    ]
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert bench.uses_cudagraphs("model+loss:max-autotune", cuda)
    assert not bench.uses_cudagraphs("model+loss:max-autotune-no-cudagraphs", cuda)
    assert not bench.uses_cudagraphs("model+loss:max-autotune", cpu)  # no CUDA graphs on a CPU

    for argv, bad in (
        (["--configs", f"{m}:bf16:model+loss:max-autotun:1024"], "model+loss:max-autotun"),
        (["--configs", f"{m}:bf16:off:max-autotune:8"], "off:max-autotune"),
        (["--configs", f"{m}:bf16:model+loss:max-autotune:x:8"], None),
        (["--compile", "model+los"], "model+los"),
        (["--compile", "model:max_autotune"], "model:max_autotune"),
    ):
        with pytest.raises(SystemExit) as err:
            grid(*argv)
        message = str(err.value)
        if bad is None:
            assert "give MODEL:DTYPE:COMPILE:BATCH" in message
        else:
            assert f"{bad!r} is not a compile setting" in message
            assert "model+loss:MODE" in message and "max-autotune-no-cudagraphs" in message


# Real kernel names (as the CUDA profiler or nsys print them, from public profiles) and the
# CPU ops a --profile run on a CPU records, with the category each belongs to.
KERNEL_NAMES = [
    # cuBLAS on Hopper (sm90 xmma and nvjet), and CUTLASS / SIMT GEMMs
    (
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
        "matmul",
    ),
    ("nvjet_hsh_256x128_64x4_2x1_v_bz_TNN", "matmul"),
    ("nvjet_tst_128x128_64x4_1x2_h_bz_coopA", "matmul"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm>", "matmul"),
    ("ampere_sgemm_128x64_tn", "matmul"),
    # flash and memory-efficient attention (SDPA's backends)
    (
        "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, false, false, "
        "cutlass::half_t, Flash_kernel_traits<128, 128, 64, 4, cutlass::half_t> >, false, false, false, "
        "false, true, true, false, false>(pytorch_flash::Flash_fwd_params)",
        "attention",
    ),
    ("flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel", "attention"),
    ("flash_bwd_convert_dq_kernel", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x128_rf_sm80", "attention"),
    ("fmha_cutlassB_bf16_aligned_128x128_k128_sm80", "attention"),
    # inductor's triton kernels: by kind, whatever ops their names list
    ("triton_tem_fused_mm_3", "matmul"),
    ("triton_poi_fused_add_addmm_gelu_mul_0", "fused/elementwise"),
    (
        "triton_poi_fused__scaled_dot_product_flash_attention_add_mul_permute_stack_sub_unbind_view",
        "fused/elementwise",
    ),
    (
        "triton_red_fused__scaled_dot_product_cudnn_attention__to_copy_mean_mul_permute_pow_rsqrt",
        "fused/elementwise",
    ),
    ("triton_red_fused__log_softmax_1", "softmax/loss/reduction"),
    ("triton_per_fused_nll_loss_forward_2", "softmax/loss/reduction"),
    # at::native
    (
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, "
        "at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<float>, at::detail::Array<char*, 3>)",
        "fused/elementwise",
    ),
    (
        "void at::native::vectorized_elementwise_kernel<(int)4, at::native::FillFunctor<c10::Half>, "
        "at::detail::Array<char *, (int)1>>(int, T2, T3)",
        "copy/fill",
    ),
    (
        "void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::"
        "direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda()#12}"
        "::operator()() const::{lambda(c10::BFloat16)#1}>(at::TensorIteratorBase&, ...)",
        "copy/fill",
    ),
    ("Memcpy DtoD (Device -> Device)", "copy/fill"),
    ("Memset (Device)", "copy/fill"),
    (
        "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t"
        "<float, at::native::sum_functor<float, float, float>::operator()(at::TensorIterator&)"
        "::{lambda(float, float)#1}>, unsigned int, float, 4> >(at::native::ReduceOp<...>)",
        "softmax/loss/reduction",
    ),
    (
        "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
        "at::native::(anonymous namespace)::LogSoftMaxForwardEpilogue>(float*, float const*, int)",
        "softmax/loss/reduction",
    ),
    (
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous "
        "namespace)::TensorListMetadata<2>, at::native::(anonymous namespace)::BinaryOpListAlphaFunctor"
        "<float, 2, 2, 0>, std::plus<float>, float>(...)",
        "optimizer",
    ),
    ("void at::native::(anonymous namespace)::indexing_backward_kernel<float, 4>(...)", "other"),
    # CPU ops of a --profile run on a CPU (eager, then compiled)
    ("aten::mm", "matmul"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
    ("aten::mul", "fused/elementwise"),
    ("aten::mul_", "fused/elementwise"),
    ("aten::sub", "fused/elementwise"),
    ("aten::exp", "fused/elementwise"),
    ("aten::sigmoid_backward", "fused/elementwise"),
    ("aten::sum", "softmax/loss/reduction"),
    ("aten::amax", "softmax/loss/reduction"),
    ("aten::logsumexp", "softmax/loss/reduction"),
    ("aten::linalg_vector_norm", "softmax/loss/reduction"),
    ("aten::copy_", "copy/fill"),
    ("aten::_to_copy", "copy/fill"),
    ("aten::fill_", "copy/fill"),
    ("aten::cat", "copy/fill"),
    ("Optimizer.step#AdamW.step", "optimizer"),
    ("aten::_foreach_mul_", "optimizer"),
    (
        "## Call CompiledFxGraph f2wmfskx7saf4fwku6q27ygujdscldcmoppoluvupfg5iiiumdkf ##",
        "fused/elementwise",
    ),
    ("aten::index_select", "other"),
    ("aten::scatter_add_", "other"),
    ("TorchDynamo Cache Lookup", "other"),
    ("CompiledFunctionBackward", "other"),
    ("aten::view", "other"),
]


def test_bench_gpu_kernel_categories_of_real_names():
    bench = _bench_module()
    got = [(name, bench.kernel_category(name)) for name, _ in KERNEL_NAMES]
    assert got == KERNEL_NAMES
    assert {category for _, category in KERNEL_NAMES} == set(bench.CATEGORIES)


def test_bench_gpu_profile_on_cpu_reports_categories_and_top_kernels(tmp_path, capsys):
    bench = _bench_module()
    out = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--config", str(_micro_config(tmp_path)), "--models", "micro"]
    argv += ["--configs", "micro:fp32:off:2", "--steps", "1", "--warmup", "1", "--profile", "2"]
    assert bench.main([*argv, "--matmul-size", "0", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    prof = row["profile"]
    assert prof["steps"] == 2 and prof["source"] == "CPU ops (self time)"
    assert list(prof["categories"]) == list(bench.CATEGORIES)
    assert sum(prof["categories"].values()) == pytest.approx(1.0)
    for category in ("matmul", "attention", "optimizer"):  # ops the step certainly runs
        assert prof["categories"][category] > 0
    top = prof["top_kernels"]
    assert 0 < len(top) <= 10 and sum(k["share"] for k in top) <= 1 + 1e-9
    assert [k["share"] for k in top] == sorted((k["share"] for k in top), reverse=True)
    assert all(k["category"] in bench.CATEGORIES and k["calls_per_step"] > 0 for k in top)
    assert prof["busy_ms_per_step"] == pytest.approx(
        sum(k["ms_per_step"] for k in top) / sum(k["share"] for k in top)
    )
    table = out.with_suffix(".md").read_text()
    assert (
        "Where the time goes" in table and "Top kernels of micro fp32 compile off batch 2" in table
    )
    assert table in capsys.readouterr().out


@pytest.mark.slow
def test_bench_encode_checks_ids_against_its_peers_and_reports_shares(tmp_path):
    """benchmarks/bench_encode.py on tiny data: every row (ours, gigatoken, tiktoken, 1 and 2
    threads, and the web-like file through lm encode) has its ids asserted identical to the
    peers' inside the benchmark, so a clean exit is the check; the shares add up."""
    pytest.importorskip("gigatoken")
    pytest.importorskip("tiktoken")
    from lm.data.demo import write_corpus
    from lm.tokenizer import native

    if native.module() is None:
        pytest.skip("the shares time the native engine's encoder")
    data = tmp_path / "data"
    (data / "web").mkdir(parents=True)
    write_corpus(data / "web" / "train.txt", documents=150, seed=1)
    write_corpus(data / "web" / "valid.txt", documents=40, seed=2)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_encode.py"), "--only", "web"]
        + ["--threads", "1,2", "--repeat", "1", "--big", "1", "--data", str(data)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "bench_encode.json").read_text())
    got = {(r["dataset"], r["impl"], r["threads"]) for r in result["rows"]}
    for impl in ("ours", "gigatoken", "tiktoken"):
        for threads in (1, 2):
            assert ("web", impl, threads) in got
    big = [r for r in result["rows"] if r["dataset"].startswith("web_like_1MB")]
    assert {(r["impl"], r["threads"]) for r in big} == {
        (i, n) for i in ("lm encode", "gigatoken") for n in (1, 2)
    }
    (shares,) = result["shares"]
    assert shares["scan_share"] + shares["merge_share"] + shares["write_share"] == pytest.approx(
        1, abs=0.01
    )
    assert shares["scan_s"] > 0 and shares["total_s"] > 0
    table = (out / "bench_encode.md").read_text()
    assert "| web | 1 | wall |" in table and "ours / gigatoken" in table
