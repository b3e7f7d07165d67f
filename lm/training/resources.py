"""What a run asks a scheduler for: memory, GPUs and wall time, estimated from its config.

Declared ``resources:`` win; the rest comes from the run's shape through the accounting
formulas (:mod:`lm.accounting.formulas`, checked there against the built model). Torch-free:
the Snakefile sizes its jobs here.
"""

from __future__ import annotations

import math
from typing import Any

from lm.model.config import ModelConfig
from lm.training.run_config import ResourcesConfig, RunConfig


def count_params(model: ModelConfig) -> int:
    """Parameter count of the TransformerLM ``model`` describes: the accounting's count
    (checked there against the built model), not a second formula."""
    from lm.accounting.formulas import parameter_counts

    return parameter_counts(model)["total"]


def run_resources(run: RunConfig) -> ResourcesConfig:
    """The run's resources: declared values win; ``mem_mb`` and ``gpu`` are estimated
    (one GPU a process on CUDA).

    Host memory on CPU: parameters, gradients and the two AdamW moments (16 bytes a
    parameter in float32), activations of one batch kept for backward (a rough count per
    layer, plus attention scores and the logits), a copy of the state while a checkpoint
    is written, and the Python/torch baseline (500 MB); times 1.25 for allocator slack.
    Against measured peaks at the 17M shape on CPU (1.5 GB at batch 8, 4.4 GB at batch 32)
    this is high by 1.3-1.5x, which is the side to err on for a scheduler that kills jobs
    over their limit. On CUDA the activations live on the GPU and the host needs the CUDA
    runtime plus staging copies of the state.
    """
    model, train = run.model, run.training
    params = count_params(model)
    b, t, d = train.batch_size, model.context_length, model.d_model
    state_bytes = 16 * params
    per_layer = b * t * (16 * d + 3 * model.d_ff) * 4 + 3 * b * model.num_heads * t * t * 4
    logits = 3 * b * t * model.vocab_size * 4
    activations = model.num_layers * per_layer + logits
    # each process of a torchrun job holds the whole state; the batch is split among them
    procs = train.processes
    on_cuda = train.device.startswith("cuda")
    if on_cuda:
        mem = procs * (3000 + 2 * state_bytes / 2**20)
    else:
        mem = procs * (500 + 1.25 * (state_bytes + 4 * params) / 2**20) + 1.25 * activations / 2**20
    return ResourcesConfig(
        mem_mb=run.resources.mem_mb or int(math.ceil(mem / 100) * 100),
        gpu=run.resources.gpu if run.resources.gpu is not None else procs if on_cuda else 0,
        runtime=run.resources.runtime,
    )


#: What `scheduler:` in config.yaml may leave out (see run_runtime).
SCHEDULER_DEFAULTS: dict[str, Any] = {
    # training tokens/s of one device of each kind on REFERENCE_MODEL. cpu: docs/benchmarks.md's
    # 1-thread forward+backward speed at that shape (1,280 tokens/s), rounded down for the
    # optimizer step and evaluations. cuda: an H200 trains it at 312,700 tokens/s (lm train,
    # bf16 autocast, eager, 800 steps with an evaluation and a checkpoint); a third of that
    # leaves room for older GPUs. mps: not measured, a guess between the two.
    "throughput": {"cpu": 1000, "mps": 5000, "cuda": 100000},
    "safety_factor": 2.0,
    "startup_minutes": 10,
}

#: The model the `scheduler.throughput` figures are measured on: CS336's 17M TinyStories
#: model (the `tinystories-17m` preset, 10,000-token vocabulary) at batch 32.
REFERENCE_MODEL = ModelConfig(
    vocab_size=10000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344
)
REFERENCE_BATCH = 32


def training_flops_per_token(model: ModelConfig, batch_size: int) -> float:
    """FLOPs of one training step per token it trains on: forward, backward and the AdamW
    update, from the accounting formulas (lm.accounting.formulas.adamw_step_flops)."""
    from lm.accounting.formulas import adamw_step_flops

    return adamw_step_flops(model, batch_size)["total"] / (batch_size * model.context_length)


def device_kind(device: str) -> str:
    """cpu, cuda or mps: the `scheduler.throughput` entry a run's `training.device` uses
    (auto on a node the scheduler gave no GPU runs on its CPUs)."""
    return next((k for k in ("cuda", "mps") if device.startswith(k)), "cpu")


def run_runtime(run: RunConfig, scheduler: dict | None = None) -> int:
    """Minutes of wall time to ask a scheduler for, for a resolved run (`resources.runtime`
    when the run declares one).

    The run's tokens (steps x batch x context) at the configured throughput of its device
    kind (``scheduler.throughput``, tokens/s on REFERENCE_MODEL), scaled by the ratio of
    training FLOPs per token of the reference to the run's model, times the processes on
    CUDA (one GPU each); times ``safety_factor``, capped by the run's wall-clock budget
    (``training.max_wallclock_minutes``), plus ``startup_minutes`` (start-up, the final
    evaluation and checkpoint).
    """
    if run.resources.runtime:
        return run.resources.runtime
    sched = {**SCHEDULER_DEFAULTS, **(scheduler or {})}
    throughput = {**SCHEDULER_DEFAULTS["throughput"], **(sched.get("throughput") or {})}
    model, train = run.model, run.training
    kind = device_kind(train.device)
    # one GPU a process (resources.gpu: N alone also makes N processes: lm.training.launch)
    devices = max(train.processes, run.resources.gpu or 0) if kind == "cuda" else 1
    reference = training_flops_per_token(REFERENCE_MODEL, REFERENCE_BATCH)
    own = training_flops_per_token(model, train.batch_size)
    tokens_per_s = throughput[kind] * devices * reference / own
    minutes = None
    if train.steps:
        minutes = sched["safety_factor"] * run.tokens_through(train.steps) / tokens_per_s / 60
    budget = train.max_wallclock_minutes
    if budget is not None:
        minutes = budget if minutes is None else min(minutes, budget)
    return math.ceil(minutes + sched["startup_minutes"])
