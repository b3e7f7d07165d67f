"""Training throughput and MFU of the project's real training step, over a grid of settings.

    PYTHONPATH=. python3 benchmarks/bench_gpu.py --max-seconds 200 --out benchmarks/out/bench_gpu.json
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --steps 5     # smoke test (CPU)
    .venv/bin/python benchmarks/bench_gpu.py --models tinystories-17m --dtypes bf16 \\
        --compile model,model+loss --batch-sizes 128,512

What is timed is one training step as ``lm.training.loop`` does it: ``ModelConfig(...).build()``
(the preset from ``config.yaml``'s ``models:``, default ``attention: sdpa``), forward under the
autocast of the dtype, the project's ``cross_entropy``, ``backward``, ``gradient_clipping`` (at
1.0) and the project's ``AdamW`` (ts17m's hyperparameters), ``zero_grad``; ``--runs NAME`` times
a run of the config instead (its model with every option, its optimizer as ``lm train``
builds it: the recipe's Muon, ReLU², QK-norm ...). Batches are random
ids made on the device beforehand, so the data path is left out (``benchmarks/bench_train.py``
measures that). ``--warmup`` steps (which include compiling) are untimed; the ``--steps`` timed
steps run without a host sync (no ``.item()``) between CUDA events.

Grid: ``--models`` x ``--dtypes`` (fp32, bf16 = bf16 autocast) x ``--compile`` (off; model =
``torch.compile(model)`` around the model alone; model+loss = the forward and the loss compiled
as one function, as the loop compiles them: ``lm.training.step.forward_loss``; either with
``:MODE`` for a ``torch.compile`` mode, e.g. ``model+loss:max-autotune`` or
``model+loss:max-autotune-no-cudagraphs``) x ``--batch-sizes`` (one list for all models, or
``NAME:32,128`` per model), run in that nesting order; or ``--configs
MODEL:DTYPE:COMPILE:BATCH,...``, a list run as given. On CUDA with none of these options, a
built-in list in priority order (``CUDA_DEFAULT_CONFIGS``: the 17M model in bf16 compiled and
eager at several batch sizes, fp32, then gpt2-small). A config that runs out of memory is
reported as ``oom`` and the grid goes on; ``--max-seconds`` (wall clock since start) skips the
configs not yet started when it is spent (one that has started runs to its end).

``--profile [N]``: after timing a config, N more steps (default 5) under ``torch.profiler``
(CUDA kernels on a GPU, CPU ops' self time on a CPU) give the share of that time per kernel
category (``KERNEL_CATEGORIES``: matmul, attention, fused/elementwise, softmax/loss/reduction,
optimizer, copy/fill, other; from the kernel names) and the top 10 kernels.

FLOPs per token are ``lm accounting``'s: 3 x the forward matmuls (backward = 2 x forward), i.e.
6 x the matmul parameters (LM head included, embedding lookup not) + the attention scores;
the AdamW update (14 FLOPs per parameter per step) is not counted. MFU = achieved FLOP/s / peak:
the datasheet's dense peak of the device for the dtype (bf16 tensor cores; for fp32, the TF32
peak when ``torch.backends.cuda.matmul.allow_tf32`` is on, the plain fp32 peak when off; see
``--tf32``), or ``--peak-tflops``. With ``--matmul-size N`` (default 8192 on CUDA) a dense N^3
matmul is also timed in each dtype, and MFU is reported against that measured rate too.

Prints a Markdown table; ``--out`` writes the JSON (and the table beside it as .md).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import platform
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import yaml

from lm.accounting.formulas import flop_totals, forward_matmuls
from lm.io import write_json, write_text
from lm.model.config import ModelConfig, load_presets
from lm.training.functional import gradient_clipping
from lm.training.loop import build_optimizer, param_groups
from lm.training.optim import AdamW
from lm.training.step import forward_loss

ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16"}
COMPILE_KINDS = ("off", "model", "model+loss")
# torch.compile's modes (torch._inductor.list_mode_options()); "default" is the plain KIND
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # the ones that replay CUDA graphs
# ts17m's optimizer (config.yaml: training_defaults + the run); the values do not change the cost
LR, BETAS, EPS, WEIGHT_DECAY, GRAD_CLIP = 3e-3, (0.9, 0.95), 1e-8, 0.1, 1.0

# On CUDA with no grid option: the points that matter first, so that --max-seconds cuts the
# least useful (the compiles of the larger model and of fp32); estimated 3-4 minutes on an
# H100/H200, most of it compiling.
CUDA_DEFAULT_CONFIGS = (
    "tinystories-17m:bf16:model+loss:512",
    "tinystories-17m:bf16:model+loss:1024",
    "tinystories-17m:bf16:model:512",
    "tinystories-17m:bf16:off:512",
    "tinystories-17m:bf16:off:128",
    "tinystories-17m:bf16:off:32",
    "tinystories-17m:fp32:off:512",
    "gpt2-small:bf16:off:16",
    "gpt2-small:fp32:off:16",
    "tinystories-17m:bf16:model+loss:128",
    "gpt2-small:bf16:model+loss:16",
    "tinystories-17m:fp32:model+loss:512",
)

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets, by a substring of the device name,
# first match wins. "tf32" is the fp32 matmul rate on tensor cores (allow_tf32 on).
DATASHEET_PEAKS = (
    ("H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H200", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM
    ("H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)


# ---------------------------------------------------------------------------- arguments


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_batch_sizes(
    values: list[str] | None, models: list[str], device_type: str, own: dict | None = None
) -> dict:
    """``["32,128"]`` (all models) and/or ``["gpt2-small:8,16"]`` (one model) -> model -> sizes.
    ``own``: a run's own batch size, its default (on CPU too)."""
    default = [2] if device_type == "cpu" else None
    sizes = {m: default or ([32, 128, 512] if m == "tinystories-17m" else [8, 32]) for m in models}
    sizes.update({m: [b] for m, b in (own or {}).items() if m in sizes})
    for value in values or []:
        name, sep, rest = value.rpartition(":")
        targets = [name] if sep else models
        if sep and name not in models:
            raise SystemExit(
                f"--batch-sizes {value}: {name!r} is not in --models ({', '.join(models)})"
            )
        try:
            parsed = [int(b) for b in _csv(rest)]
        except ValueError:
            raise SystemExit(
                f"--batch-sizes {value}: give integers, e.g. 32,128 or gpt2-small:8,16"
            ) from None
        if not parsed or min(parsed) <= 0:
            raise SystemExit(f"--batch-sizes {value}: give positive integers, e.g. 32,128")
        for t in targets:
            sizes[t] = parsed
    return sizes


def parse_peak(text: str | None) -> dict[str, float] | None:
    """``989.4`` (every dtype) or ``bf16=989.4,fp32=66.9`` -> dtype -> TFLOP/s."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return dict.fromkeys(DTYPES, float(text))
        peaks = {}
        for part in _csv(text):
            key, value = part.split("=")
            key = DTYPE_ALIASES.get(key.strip(), key.strip())
            if key not in DTYPES:
                raise ValueError
            peaks[key] = float(value)
        return peaks
    except ValueError:
        raise SystemExit(f"--peak-tflops {text!r}: give a number, or bf16=X,fp32=Y") from None


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cuda, cpu, or auto (cuda if available)")
    ap.add_argument(
        "--models",
        help="comma-separated presets (default: tinystories-17m,gpt2-small; on CPU tinystories-17m)",
    )
    ap.add_argument(
        "--runs",
        help="comma-separated runs of --config (e.g. owt-leaderboard), each timed as a model "
        "of the grid with its own model options and optimizer (the recipe: Muon, ReLU², "
        "QK-norm ...), at its own batch size unless --batch-sizes names it",
    )
    ap.add_argument(
        "--batch-sizes",
        action="append",
        help="comma-separated, for every model; or NAME:32,128 for one model (repeatable). "
        "Default 32,128,512 for tinystories-17m and 8,32 for others (2 on CPU)",
    )
    ap.add_argument(
        "--dtypes",
        help="comma-separated from fp32, bf16 (autocast); default bf16,fp32, on CPU fp32 "
        "(bf16 there is emulated and ~20x slower)",
    )
    ap.add_argument(
        "--compile",
        default=None,
        help="comma-separated from off, model, model+loss, each compiled one optionally with "
        ":MODE, a torch.compile mode (e.g. model+loss:max-autotune); default off,model, on CPU off",
    )
    ap.add_argument(
        "--configs",
        help="instead of the grid: comma-separated MODEL:DTYPE:COMPILE:BATCH, run in this order "
        "(e.g. tinystories-17m:bf16:model+loss:512,tinystories-17m:bf16:model+loss:max-autotune:512)",
    )
    ap.add_argument(
        "--attention",
        default="sdpa",
        choices=("sdpa", "reference"),
        help="the model's attention variant",
    )
    ap.add_argument("--steps", type=int, default=20, help="timed steps per config")
    ap.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=5,
        default=0,
        metavar="N",
        help="after timing each config, profile N more steps (default 5): device time by "
        "kernel category and the top 10 kernels",
    )
    ap.add_argument(
        "--warmup", type=int, default=3, help="untimed steps first (compiling happens here)"
    )
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="skip configs not started within this wall-clock budget",
    )
    ap.add_argument(
        "--peak-tflops",
        help="the device's peak: a number, or bf16=X,fp32=Y (default: datasheet table by device name)",
    )
    ap.add_argument(
        "--matmul-size",
        type=int,
        default=None,
        help="N of the N^3 matmul timed as a measured peak (default 8192 on CUDA, 512 on CPU; 0 = skip)",
    )
    ap.add_argument(
        "--tf32",
        choices=("on", "off"),
        default=None,
        help="fp32 matmuls on TF32 tensor cores (default: torch's setting, off)",
    )
    ap.add_argument(
        "--config",
        default=str(ROOT / "config.yaml"),
        help="the YAML whose models: and runs.ts17m are used",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=None, help="write the JSON here (and the table as .md beside it)"
    )
    # the batch size of each --runs member; main fills it once the runs are resolved
    ap.set_defaults(run_batches={})
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.profile < 0:
        ap.error("--steps must be >= 1, --warmup and --profile >= 0")
    return args


def _checked(value: str, allowed, flag: str) -> str:
    value = DTYPE_ALIASES.get(value, value)
    if value not in allowed:
        raise SystemExit(f"{flag}: {value!r} is not one of {', '.join(allowed)}")
    return value


def checked_compile(value: str, flag: str) -> str:
    """``KIND`` or ``KIND:MODE`` (KIND from COMPILE_KINDS, MODE a torch.compile mode for a
    compiled KIND), in its canonical spelling: ``eager``/``none`` is ``off``, ``:default`` dropped."""
    kind, sep, mode = value.partition(":")
    kind = "off" if kind in ("none", "eager") else kind
    if kind not in COMPILE_KINDS or (sep and (kind == "off" or mode not in TORCH_COMPILE_MODES)):
        raise SystemExit(
            f"{flag}: {value!r} is not a compile setting: give one of {', '.join(COMPILE_KINDS)}, "
            f"or model:MODE / model+loss:MODE with MODE one of {', '.join(TORCH_COMPILE_MODES)}"
        )
    return kind if mode in ("", "default") else f"{kind}:{mode}"


def build_grid(args, device_type: str) -> list[tuple[str, str, str, int]]:
    """(model, dtype, compile, batch) in run order: ``--configs`` as listed, else the cross
    product of ``--models``, ``--dtypes``, ``--compile`` and ``--batch-sizes``, nested in that
    order (defaults for the ones not given); on CUDA with none of them, CUDA_DEFAULT_CONFIGS."""
    grid_options = (args.models, args.runs, args.dtypes, args.compile, args.batch_sizes)
    configs = args.configs
    if not configs and device_type == "cuda" and not any(grid_options):
        configs = ",".join(CUDA_DEFAULT_CONFIGS)
    if configs:
        grid = []
        for item in _csv(configs):
            parts = item.split(":")  # COMPILE may hold one ':' itself (model+loss:max-autotune)
            if len(parts) not in (4, 5) or not parts[-1].isdigit() or int(parts[-1]) <= 0:
                raise SystemExit(
                    f"--configs {item!r}: give MODEL:DTYPE:COMPILE:BATCH, e.g. tinystories-17m:bf16:model:512"
                )
            dtype = _checked(parts[1], DTYPES, "--configs")
            mode = checked_compile(":".join(parts[2:-1]), "--configs")
            grid.append((parts[0], dtype, mode, int(parts[-1])))
        return grid
    cpu = device_type == "cpu"
    runs = _csv(args.runs or "")
    default_models = "" if runs else "tinystories-17m" if cpu else "tinystories-17m,gpt2-small"
    models = _csv(args.models or default_models) + runs
    dtypes = _csv(args.dtypes or ("fp32" if cpu else "bf16,fp32"))
    modes = _csv(args.compile or ("off" if cpu else "off,model"))
    if not (models and dtypes and modes):
        raise SystemExit("--models, --dtypes and --compile each need at least one value")
    dtypes = [_checked(d, DTYPES, "--dtypes") for d in dtypes]
    modes = [checked_compile(m, "--compile") for m in modes]
    batch_sizes = parse_batch_sizes(args.batch_sizes, models, device_type, args.run_batches)
    return [
        (name, dtype, mode, batch)
        for name in models
        for dtype in dtypes
        for mode in modes
        for batch in batch_sizes[name]
    ]


# ---------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Marks between steps: CUDA events on a GPU (no host sync until ``seconds``), else perf_counter."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """Durations between consecutive marks."""
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in itertools.pairwise(self.marks)]
        return [b - a for a, b in itertools.pairwise(self.marks)]


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """TFLOP/s of ``reps`` dense (n x n) @ (n x n) products in ``dtype`` (2·n³ FLOPs each)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    c = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=c)
    clock = StepClock(device)
    sync(device)
    clock.mark()
    for _ in range(reps):
        torch.mm(a, b, out=c)
    clock.mark()
    return 2 * n**3 * reps / sum(clock.seconds()) / 1e12


def flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token as ``lm accounting`` counts them: 3 x the forward matmuls."""
    forward = flop_totals(forward_matmuls(cfg, batch=1, seq_len=cfg.context_length))["total"]
    return 3 * forward / cfg.context_length


def uses_cudagraphs(compile_setting: str, device: torch.device) -> bool:
    return device.type == "cuda" and compile_setting.partition(":")[2] in CUDAGRAPH_MODES


def cudagraph_skips() -> int:
    """How many times inductor has chosen not to use CUDA graphs (its own counter)."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]


def make_step(model, optimizer, compile_setting: str, amp_dtype, device: torch.device):
    """One training step as ``lm.training.loop`` runs it; returns ``step(x, y) -> loss``.
    ``compile_setting``: ``KIND`` or ``KIND:MODE`` (see :func:`checked_compile`)."""
    kind, _, mode = compile_setting.partition(":")
    mode = mode or None
    module = torch.compile(model, dynamic=False, mode=mode) if kind == "model" else model
    # the loop's own forward and loss (lm.training.step.forward_loss), compiled with the
    # loss as the loop compiles it (training.compile: true), or around the model alone
    loss_of = forward_loss(
        module, amp_dtype, device.type, compile=kind == "model+loss" and not mode
    )
    if kind == "model+loss" and mode:
        # a mode the loop does not use: its forward and loss, compiled here with that mode
        # (a mode parameter in the loop would change train's code version: every run reruns)
        loss_of = torch.compile(loss_of, mode=mode)
    # CUDA graphs (mode max-autotune or reduce-overhead, on a GPU): inductor's CUDA graph
    # trees record the compiled forward and backward once and replay them. The rest of the
    # step stays eager around the replays, which works here because:
    # - the optimizer updates the parameters in place, so the addresses the graphs recorded
    #   them at stay valid; the batches are copied into the graphs' input buffers at each
    #   replay (a small copy a training loop would pay too, so it stays in what is timed);
    # - the graphs' outputs (the loss; the gradients the backward hands to .grad) live in
    #   the graphs' memory pool and are overwritten by the next replay. Clipping and the
    #   optimizer read the gradients before that, and zero_grad(set_to_none) drops them;
    #   the loss is kept across steps (run_config stacks them at the end), so it is cloned
    #   out of the pool: kept as is, it would raise "accessing tensor output of CUDAGraphs
    #   that has been overwritten by a subsequent run";
    # - cudagraph_mark_step_begin() says where an iteration starts, rather than leaving it to
    #   the trees' heuristic (a forward after a backward);
    # - were the graphs skipped (inductor logs "skipping cudagraphs due to ..."), the row would
    #   time the no-cudagraphs path under this name: run_config reports inductor's
    #   cudagraph_skips counter, and the table marks such a row.
    cudagraphs = uses_cudagraphs(compile_setting, device)

    def step(x, y):
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        for group in optimizer.param_groups:
            group["lr"] = LR
        loss = loss_of(x, y)
        loss.backward()
        gradient_clipping(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().clone() if cudagraphs else loss.detach()

    return step


def run_config(
    cfg: ModelConfig, dtype: str, compile_mode: str, batch: int, args, device, opt=None
) -> dict:
    """Warm up, then time ``args.steps`` steps; the measurements of one grid point. ``opt``:
    a run's optimizer config (lm.training.run_config.OptimizerConfig), built as lm train
    builds it; None: AdamW with ts17m's hyperparameters."""
    if compile_mode != "off":
        torch._dynamo.reset()  # a fresh static-shape compile, never a fallback past the recompile limit
    torch.manual_seed(args.seed)
    model = cfg.build().to(device)
    model.train()
    if opt is None:
        optimizer = AdamW(param_groups(model, WEIGHT_DECAY), lr=LR, betas=BETAS, eps=EPS)
    else:
        optimizer = build_optimizer(model, opt, device)
    step = make_step(model, optimizer, compile_mode, DTYPES[dtype], device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    shape = (batch, cfg.context_length)
    batches = [
        (
            torch.randint(0, cfg.vocab_size, shape, device=device, generator=g),
            torch.randint(0, cfg.vocab_size, shape, device=device, generator=g),
        )
        for _ in range(2)
    ]

    cudagraphs = uses_cudagraphs(compile_mode, device)
    skips_before = cudagraph_skips() if cudagraphs else 0
    t0 = time.perf_counter()
    for i in range(args.warmup):
        step(*batches[i % 2])
    sync(device)
    warmup_s = time.perf_counter() - t0

    losses = []
    clock = StepClock(device)
    clock.mark()
    for i in range(args.steps):
        losses.append(step(*batches[i % 2]))
        clock.mark()
    step_s = clock.seconds()
    final_loss = torch.stack(losses).float().mean().item()
    if not math.isfinite(final_loss):
        raise RuntimeError(f"the training loss is {final_loss}: the step is broken")
    timed_s = sum(step_s)
    measured = {
        "warmup_s": warmup_s,
        "timed_s": timed_s,
        "step_ms_median": 1000 * statistics.median(step_s),
        "tokens_per_s": batch * cfg.context_length * args.steps / timed_s,
        "mean_loss": final_loss,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9
        if device.type == "cuda"
        else None,
        # graphs inductor did not record (the row then timed the no-cudagraphs path)
        "cudagraph_skips": cudagraph_skips() - skips_before if cudagraphs else None,
    }
    if args.profile:
        try:
            measured["profile"] = profile_steps(step, batches, device, args.profile)
        except Exception as exc:  # the timing stands without it
            measured["profile"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return measured


# ---------------------------------------------------------------------------- profiling

# A kernel's category from its name (lower-cased; re.search), first match wins; "other" when
# none does. Names seen: cuBLAS (sm90_xmma_gemm_*, nvjet_*), flash / memory-efficient
# attention (pytorch_flash::flash_fwd_kernel, fmha_cutlass*), at::native's kernels
# (vectorized_elementwise_kernel<..., FillFunctor>, reduce_kernel, cunn_SoftMaxForward,
# multi_tensor_apply_kernel), inductor's triton_{poi,per,red,tem}_fused_<ops>_N, and on a CPU
# the aten:: ops. Inductor's kernels come first, by kind: triton_tem_ is a GEMM template
# (max-autotune), and a fused kernel names every op it fuses (a triton_poi_ kernel may name
# the attention whose inputs it prepares), so only a softmax or loss among them moves one
# out of "fused/elementwise", where norms, RoPE and SwiGLU land once compiled.
KERNEL_CATEGORIES = (
    ("matmul", r"^triton_tem_"),
    ("softmax/loss/reduction", r"^triton_.*(softmax|nll_loss|logsumexp|cross_entropy)"),
    ("fused/elementwise", r"^triton_|^## call compiledfxgraph"),  # on a CPU: its C++ kernels
    ("attention", r"flash|fmha|attention|sdpa"),
    ("optimizer", r"multi_tensor_apply|_foreach_|fused_adam|^optimizer\.step"),
    (
        "copy/fill",
        r"memcpy|memset|copy_kernel|fillfunctor|catarraybatchedcopy"
        r"|^aten::(copy_|_to_copy|clone|fill_|zero_|cat|stack)$",
    ),
    ("matmul", r"gemm|nvjet|xmma|cutlass|cublas|^aten::(mm|bmm|addmm|matmul|linear)$"),
    (
        "softmax/loss/reduction",
        r"softmax|reduce_kernel|nll_loss|logsumexp|^aten::(sum|mean|amax|max|linalg_vector_norm)$",
    ),
    (
        "fused/elementwise",
        r"elementwise|^aten::(mul|add|sub|div|neg|pow|rsqrt|sqrt|exp|silu|sigmoid|lerp|where)",
    ),
)
CATEGORIES = (
    "matmul",
    "attention",
    "fused/elementwise",
    "softmax/loss/reduction",
    "optimizer",
    "copy/fill",
    "other",
)  # the table's columns, in this order
_CATEGORY_RES = [(name, re.compile(pattern)) for name, pattern in KERNEL_CATEGORIES]


def kernel_category(name: str) -> str:
    lowered = name.lower()
    return next((cat for cat, regex in _CATEGORY_RES if regex.search(lowered)), "other")


def _cpu_scope(event) -> str:
    """The name a CPU op is classified by: that of its outermost optimizer ancestor if any (on a
    CPU the optimizer's and clipping's foreach calls run as per-tensor aten::sqrt, aten::mul_,
    ... under Optimizer.step or aten::_foreach_*), else its own."""
    scope, parent = event.name, event.cpu_parent
    while parent is not None:
        if kernel_category(parent.name) == "optimizer":
            scope = parent.name
        parent = parent.cpu_parent
    return scope


def profile_steps(step, batches, device: torch.device, n: int) -> dict:
    """``n`` more steps under torch.profiler: the time per step and its shares by kernel
    category, and the top 10 kernels. On a GPU the time is the device's (kernels, memcpy,
    memset); on a CPU the ops' self time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for i in range(n):
            step(*batches[i % 2])
        sync(device)
    times, calls = Counter(), Counter()
    for event in prof.events():
        annotation = getattr(event, "is_user_annotation", False)  # a range, not a kernel
        if cuda and event.device_type == DeviceType.CUDA and not annotation:
            key = (event.name, kernel_category(event.name))
            times[key] += event.time_range.elapsed_us()
        elif not cuda and event.device_type == DeviceType.CPU:
            key = (event.name, kernel_category(_cpu_scope(event)))
            times[key] += event.self_cpu_time_total
        else:
            continue
        calls[key] += 1
    total = sum(times.values())
    if total <= 0:
        raise RuntimeError("the profiler recorded no kernel time")
    by_category = Counter()
    for (_, category), us in times.items():
        by_category[category] += us
    return {
        "steps": n,
        "source": "CUDA kernels, memcpy, memset (device time)" if cuda else "CPU ops (self time)",
        "busy_ms_per_step": total / n / 1000,
        "categories": {c: by_category[c] / total for c in CATEGORIES},
        "top_kernels": [
            {
                "name": name[:500],
                "category": category,
                "share": us / total,
                "ms_per_step": us / n / 1000,
                "calls_per_step": calls[name, category] / n,
            }
            for (name, category), us in times.most_common(10)
        ],
    }


def is_oom(exc: BaseException) -> bool:
    """Out of memory, on the GPU or the CPU, also when wrapped (e.g. by the compiler)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
        text = str(exc).lower()
        if "out of memory" in text or "can't allocate memory" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ---------------------------------------------------------------------------- the report


def peaks_for(device: torch.device, override: dict | None) -> tuple[dict, str]:
    """dtype -> peak TFLOP/s used for MFU, and where the numbers come from."""
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return {}, "none (no datasheet peak for a CPU; give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, table in DATASHEET_PEAKS:
        if key in name:
            fp32 = "tf32" if tf32 else "fp32"
            return (
                {"bf16": table["bf16"], "fp32": table[fp32]},
                f"datasheet {key}, dense: bf16 {table['bf16']}, fp32 as {fp32} {table[fp32]} TFLOP/s",
            )
    return {}, f"none (no datasheet entry for {name!r}; give --peak-tflops)"


def add_ratios(rows: list[dict]) -> None:
    """vs_eager: tokens/s over the same point with compile off; vs_fp32: over the same in fp32."""
    ok = {
        (r["model"], r["dtype"], r["compile"], r["batch_size"]): r
        for r in rows
        if r["status"] == "ok"
    }
    for r in ok.values():
        eager = ok.get((r["model"], r["dtype"], "off", r["batch_size"]))
        fp32 = ok.get((r["model"], "fp32", r["compile"], r["batch_size"]))
        r["vs_eager"] = (
            r["tokens_per_s"] / eager["tokens_per_s"] if eager and r["compile"] != "off" else None
        )
        r["vs_fp32"] = (
            r["tokens_per_s"] / fp32["tokens_per_s"] if fp32 and r["dtype"] != "fp32" else None
        )


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.3g}%"


def _head(r: dict) -> str:
    compile_ = r["compile"]
    if r.get("cudagraph_skips"):
        compile_ += f" (CUDA graphs skipped {r['cudagraph_skips']}x)"
    return f"| {r['model']} | {r['dtype']} | {compile_} | {r['batch_size']} |"


def _kernel_name(name: str, width: int = 110) -> str:
    name = name.removeprefix("void ").replace("|", "\\|").replace("`", "'")
    return name if len(name) <= width else name[: width - 3] + "..."


def profile_markdown(rows: list[dict]) -> list[str]:
    """The --profile tables: shares by category per config, then each config's top kernels."""
    rows = [r for r in rows if r.get("profile")]
    if not rows:
        return []
    source = next((r["profile"]["source"] for r in rows if "source" in r["profile"]), "")
    lines = [
        "",
        f"Where the time goes (`--profile`: {source}), share by kernel category:",
        "",
        "| model | dtype | compile | batch | busy ms/step | timed ms/step | "
        + " | ".join(CATEGORIES)
        + " |",
        "| --- | --- | --- | ---: | ---: | ---: |" + " ---: |" * len(CATEGORIES),
    ]
    for r in rows:
        prof = r["profile"]
        if "error" in prof:
            lines.append(f"{_head(r)} profile failed: {prof['error']} |")
            continue
        shares = " | ".join(_pct(prof["categories"][c]) for c in CATEGORIES)
        lines.append(
            f"{_head(r)} {prof['busy_ms_per_step']:.4g} | {r['step_ms_median']:.4g} | {shares} |"
        )
    for r in rows:
        prof = r["profile"]
        if "error" in prof:
            continue
        lines += [
            "",
            f"Top kernels of {r['model']} {r['dtype']} compile {r['compile']} batch {r['batch_size']}:",
            "",
            "| share | ms/step | calls/step | category | kernel |",
            "| ---: | ---: | ---: | --- | --- |",
        ]
        lines += [
            f"| {_pct(k['share'])} | {k['ms_per_step']:.4g} | {k['calls_per_step']:.3g} | "
            f"{k['category']} | `{_kernel_name(k['name'])}` |"
            for k in prof["top_kernels"]
        ]
    return lines


def markdown(result: dict) -> str:
    lines = [
        f"Training step of `lm` on {result['device_name']} ({result['device']}), torch {result['torch']}, "
        f"attention {result['attention']}, {result['steps']} timed steps after {result['warmup']} warmup; "
        f"fp32 matmuls on TF32: {result['allow_tf32']}; peak: {result['peak_source']}.",
        "",
        "| model | dtype | compile | batch | tokens/s | TFLOP/s | MFU | MFU vs matmul | peak mem (GB) | vs eager | vs fp32 | warmup (s) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        head = _head(r)
        if r["status"] != "ok":
            lines.append(f"{head} {r['status']}: {r.get('error') or ''} | | | | | | | |")
            continue
        lines.append(
            f"{head} {r['tokens_per_s']:,.0f} | {r['achieved_tflops']:.3g} | {_pct(r['mfu'])} | "
            f"{_pct(r['mfu_vs_matmul'])} | {_fmt(r['peak_memory_gb'], '.2f')} | "
            f"{_fmt(r['vs_eager'], '.2f', 'x')} | {_fmt(r['vs_fp32'], '.2f', 'x')} | {r['warmup_s']:.1f} |"
        )
    lines += profile_markdown(result["rows"])
    lines.append("")
    models = ", ".join(
        f"{name} {m['params'] / 1e6:.1f}M parameters, {m['flops_per_token'] / 1e6:.1f} MFLOP/token"
        for name, m in result["models"].items()
    )
    lines.append(
        f"FLOPs: `lm accounting`'s 3 x forward matmuls per token (optimizer not counted): {models}."
    )
    if result["matmul_tflops"]:
        lines.append(
            f"Measured dense {result['matmul_size']}^3 matmul: "
            + ", ".join(f"{k} {v:.3g} TFLOP/s" for k, v in result["matmul_tflops"].items())
            + " (the 'MFU vs matmul' denominator)."
        )
    est = result.get("ts17m")
    if est:
        lines.append(
            f"ts17m ({est['tokens']:,} tokens of {est['model']}) at the best rate, "
            f"{est['tokens_per_s']:,.0f} tokens/s ({est['config']}): {est['hours'] * 60:.1f} minutes ({est['hours']:.2f} h) of training steps "
            "(evaluation, checkpoints and data loading not included)."
        )
    return "\n".join(lines) + "\n"


def ts17m_estimate(config: dict, rows: list[dict]) -> dict | None:
    run = ((config.get("runs") or {}).get("ts17m")) or {}
    tokens = (run.get("training") or {}).get("total_tokens")
    model = (run.get("model") or {}).get("preset")
    ok = [r for r in rows if r["status"] == "ok" and r["model"] == model]
    if not tokens or not ok:
        return None
    best = max(ok, key=lambda r: r["tokens_per_s"])
    return {
        "tokens": tokens,
        "model": model,
        "tokens_per_s": best["tokens_per_s"],
        "config": f"{best['dtype']}, compile {best['compile']}, batch {best['batch_size']}",
        "hours": tokens / best["tokens_per_s"] / 3600,
    }


# ---------------------------------------------------------------------------- main


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda, but CUDA is not available here; use --device cpu")
    if args.tf32 is not None:
        torch.set_float32_matmul_precision("high" if args.tf32 == "on" else "highest")

    config_path = Path(args.config)
    if not config_path.is_file():
        raise SystemExit(f"--config {config_path} does not exist; give the pipeline's config.yaml")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    presets = load_presets(config)
    runs = {}
    if args.runs:
        from lm.errors import LMError
        from lm.training.config import resolve_runs

        try:
            resolved = resolve_runs(config)
        except LMError as e:
            raise SystemExit(f"--config {config_path}: {e}") from None
        for name in _csv(args.runs):
            if name not in resolved:
                raise SystemExit(f"--runs: no run {name!r} in {config_path}")
            runs[name] = resolved[name]
    args.run_batches = {name: run.training.batch_size for name, run in runs.items()}
    grid = build_grid(args, device.type)
    models = list(dict.fromkeys(name for name, *_ in grid))
    dtypes = list(dict.fromkeys(dtype for _, dtype, *_ in grid))
    cfgs = {}
    for name in models:
        if name in runs:
            cfgs[name] = ModelConfig.from_dict(
                runs[name].model.to_dict(), where=f"run {name}", attention=args.attention
            )
            continue
        if name not in presets:
            raise SystemExit(f"no preset {name!r} in {config_path} (known: {', '.join(presets)})")
        if "vocab_size" not in presets[name]:
            raise SystemExit(
                f"preset {name!r} has no vocab_size (its run takes it from the tokenizer); add one in {config_path}"
            )
        cfgs[name] = ModelConfig.from_dict(
            presets[name], where=f"preset {name}", attention=args.attention
        )
    peaks, peak_source = peaks_for(device, parse_peak(args.peak_tflops))

    matmul_size = (
        args.matmul_size
        if args.matmul_size is not None
        else (8192 if device.type == "cuda" else 512)
    )
    matmul = {}
    if matmul_size > 0:
        for dtype in dtypes:
            matmul[dtype] = matmul_tflops(device, DTYPES[dtype] or torch.float32, matmul_size)
            print(
                f"matmul {matmul_size}^3 {dtype}: {matmul[dtype]:.3g} TFLOP/s",
                file=sys.stderr,
                flush=True,
            )

    rows = []
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "attention": args.attention,
        "steps": args.steps,
        "warmup": args.warmup,
        "max_seconds": args.max_seconds,
        "peak_tflops": peaks,
        "peak_source": peak_source,
        "matmul_size": matmul_size,
        "matmul_tflops": matmul,
        "flops_convention": "3 x forward matmul FLOPs per token (lm accounting); AdamW update not counted",
        "models": {
            name: {
                **cfg.to_dict(),
                "params": sum(p.numel() for p in cfg.build(device="meta").parameters()),
                "flops_per_token": flops_per_token(cfg),
                "optimizer": runs[name].optimizer.name if name in runs else "adamw",
            }
            for name, cfg in cfgs.items()
        },
        "profile_steps": args.profile,
        "rows": rows,
    }

    def report() -> str:
        """The table; with --out, the JSON and the table written (after every config, so that a
        crash in a later one loses nothing measured)."""
        add_ratios(rows)
        result.update(ts17m=ts17m_estimate(config, rows), wall_s=time.perf_counter() - started)
        table = markdown(result)
        if args.out:
            write_json(Path(args.out), result)
            write_text(Path(args.out).with_suffix(".md"), table)
        return table

    if args.profile and any(uses_cudagraphs(mode, device) for _, _, mode, _ in grid):
        # Profiling a CUDA graph captured before the profiler's first start has failed in
        # torch (pytorch#75504, #100441); one empty profile first is torch's own workaround
        # (torch.profiler._utils._init_for_cuda_graphs).
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]):
            pass

    for i, (name, dtype, mode, batch) in enumerate(grid, 1):
        cfg = cfgs[name]
        fpt = flops_per_token(cfg)
        row = {
            "model": name,
            "dtype": dtype,
            "compile": mode,
            "batch_size": batch,
            "context_length": cfg.context_length,
            "tokens_per_step": batch * cfg.context_length,
            "flops_per_token": fpt,
            "steps": args.steps,
            "status": "ok",
            "error": None,
        }
        label = f"[{i}/{len(grid)}] {name} {dtype} compile={mode} batch={batch}"
        elapsed = time.perf_counter() - started
        if args.max_seconds is not None and elapsed >= args.max_seconds:
            row.update(
                status="skipped",
                error=f"--max-seconds {args.max_seconds:g} spent ({elapsed:.0f} s)",
            )
            rows.append(row)
            print(f"{label}: skipped", file=sys.stderr, flush=True)
            continue
        release_memory(device)
        try:
            opt = runs[name].optimizer if name in runs else None
            row.update(run_config(cfg, dtype, mode, batch, args, device, opt))
        except Exception as exc:  # one config failing must not lose the others
            row.update(
                status="oom" if is_oom(exc) else "error",
                error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}",
            )
        if mode != "off":
            torch._dynamo.reset()
        release_memory(device)
        if row["status"] == "ok":
            achieved = row["tokens_per_s"] * fpt / 1e12
            peak = peaks.get(dtype)
            row.update(
                achieved_tflops=achieved,
                peak_tflops=peak,
                mfu=achieved / peak if peak else None,
                matmul_tflops=matmul.get(dtype),
                mfu_vs_matmul=achieved / matmul[dtype] if dtype in matmul else None,
            )
            print(
                f"{label}: {row['tokens_per_s']:,.0f} tokens/s, {achieved:.3g} TFLOP/s"
                + (f", MFU {_pct(row['mfu'])}" if row["mfu"] is not None else "")
                + f" (warmup {row['warmup_s']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"{label}: {row['status']}: {row['error']}", file=sys.stderr, flush=True)
        rows.append(row)
        report()

    print("\n" + report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
