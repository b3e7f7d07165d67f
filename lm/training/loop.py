"""The training loop: one resolved run config in, a trained run directory out.

``OUT/`` after a run::

    config.json          the fully resolved run config
    metrics.jsonl        one line per logged step: step, tokens, wallclock_s, lr, train_loss,
                         val_loss (on eval steps), grad_norm, tokens_per_s
    checkpoints/         step_XXXXXXXX.pt while running, final.pt when done
    curves.png           train and val loss against steps and against wallclock
    result.json          status ok|diverged (+ step), final/best losses, tokens, time, params

A run started on a directory that has checkpoints continues from the newest one: model,
optimizer, batch-sampling and torch RNG states, the metrics so far and the loop's own
counters all come back, so on CPU the continued run's losses equal an uninterrupted
run's bit for bit. metrics.jsonl is rewritten from the checkpoint, which drops lines a
killed run wrote after its last checkpoint.

The loop reads top to bottom; its parts are modules of their own: the run directory and
its checkpoints (:mod:`~lm.training.rundir`), one training step (:mod:`~lm.training.step`),
the records and their sinks (:mod:`~lm.training.metrics`), the wall-clock budget
(:mod:`~lm.training.budget`), the clocks (:mod:`~lm.training.clock`) and the state a
checkpoint keeps (:mod:`~lm.training.state`).

The loop times its own phases (data, compute = forward/backward/clip/step, log, eval,
checkpoint) and reports them in result.json, which is how ``benchmarks/bench_train.py``
measures the share of wallclock spent outside compute.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np
import torch

from lm.errors import LMError
from lm.io import peak_rss_mb, write_json
from lm.provenance import with_provenance
from lm.runtime import autocast_dtype, pick_device
from lm.training import batch_schedule, distributed, trackers
from lm.training import budget as wall
from lm.training import checkpoint as ckpt
from lm.training.clock import Phases, WallClock
from lm.training.data import check_length, check_tokens, gather_windows, open_tokens
from lm.training.metrics import MetricsFile, Recorder
from lm.training.muon import MuonAdamW, muon_param_groups
from lm.training.optim import AdamW
from lm.training.run_config import OptimizerConfig, RunConfig
from lm.training.rundir import RunDir
from lm.training.schedule import scheduled_lr
from lm.training.state import LoopState
from lm.training.step import TrainStep, forward_loss

# ---------------------------------------------------------------------------- pieces


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (embeddings, projections), none on gains and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: torch.nn.Module, opt: OptimizerConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The run's optimizer: AdamW (``opt.name == "adamw"``), or Muon for the blocks'
    matrices and AdamW for the rest (``"muon"``, :func:`lm.training.muon.muon_param_groups`),
    its Newton-Schulz iteration in ``opt.muon_ns_dtype`` (auto: bfloat16 on CUDA, else float32)."""
    if opt.name == "adamw":
        groups = param_groups(model, opt.weight_decay)
        return AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps)
    ns_dtype = opt.muon_ns_dtype
    if ns_dtype == "auto":
        ns_dtype = "bfloat16" if device.type == "cuda" else "float32"
    groups = muon_param_groups(
        model,
        lr_scale=opt.muon_lr / opt.lr,
        weight_decay=opt.muon_weight_decay,
        adamw_weight_decay=opt.weight_decay,
    )
    return MuonAdamW(
        groups, lr=opt.lr, betas=opt.betas, eps=opt.eps, momentum=opt.muon_momentum,
        nesterov=opt.muon_nesterov, ns_steps=opt.muon_ns_steps, adjust_lr=opt.muon_adjust_lr,
        ns_dtype=torch.bfloat16 if ns_dtype == "bfloat16" else torch.float32,
    )  # fmt: skip


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


@torch.no_grad()
def evaluate(
    model, loss_of, valid, starts: np.ndarray, context_length: int, device, dist=distributed.SINGLE
) -> float:
    """Mean loss (``loss_of``, see :func:`lm.training.step.forward_loss`) over the fixed
    validation batches (rows of ``starts``) of ``model`` in eval mode; under DDP each rank
    takes its slice of every row and the means are averaged over ranks."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device)
    cols = dist.shard(starts.shape[1])
    for row in starts:
        x, y = gather_windows(valid, row[cols], context_length, device)
        total += loss_of(x, y)
    model.train(was_training)
    return (dist.mean(total) / len(starts)).item()


# ---------------------------------------------------------------------------- the loop


def train(
    run: RunConfig,
    train_tokens: str | os.PathLike,
    valid_tokens: str | os.PathLike,
    out: str | os.PathLike,
    *,
    progress: bool | str = True,
    fresh: bool = False,
    threads: int | None = None,
    sync_timing: bool = False,
    on_config_change: str = "error",
) -> dict:
    """Train ``run`` (a resolved config, see ``resolve_runs``) into ``out``.

    Resumes from ``out/checkpoints/`` when it holds a checkpoint of the same run
    (``fresh=True`` discards them instead). Checkpoints of a run whose config differs
    (beyond bookkeeping keys such as device or log_every) raise an LMError, or with
    ``on_config_change="restart"`` are discarded with a warning (what a pipeline wants
    when it reruns a run because its config changed). ``threads`` (default: the run's
    ``threads``) bounds torch's CPU threads for the call; under torchrun they are the
    job's, shared out over the node's processes. ``sync_timing`` synchronizes
    CUDA at phase boundaries so the time breakdown is exact (slightly slower).
    Returns the result dict, also written to ``out/result.json``.
    """
    trackers.require(run)  # an enabled tracker's missing package fails here, before training
    threads = threads or run.threads
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this node
    if threads and per_node > 1:  # the job's threads, shared out
        threads = max(1, int(threads) // per_node)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _train(
            run,
            Path(train_tokens),
            Path(valid_tokens),
            Path(out),
            progress=progress,
            fresh=fresh,
            sync_timing=sync_timing,
            on_config_change=on_config_change,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    run: RunConfig, train_path, valid_path, out, *, progress, fresh, sync_timing, on_config_change
) -> dict:
    if on_config_change not in ("error", "restart"):
        raise LMError(f"on_config_change must be 'error' or 'restart', got {on_config_change!r}")
    t_setup = time.perf_counter()
    dist, device = distributed.setup(pick_device(run.training.device))
    try:
        return _train_process(
            run,
            train_path,
            valid_path,
            out,
            dist=dist,
            device=device,
            t_setup=t_setup,
            progress=progress if dist.main else False,
            fresh=fresh,
            sync_timing=sync_timing,
            on_config_change=on_config_change,
        )
    finally:
        distributed.teardown(dist)


@dataclass
class Session:
    """The parts of one process's training session, which the loop's steps act on."""

    run: RunConfig
    dist: distributed.Dist
    device: torch.device
    rundir: RunDir
    step: TrainStep  # with the model, the optimizer and the batch stream
    valid: np.ndarray
    val_starts: np.ndarray  # the fixed validation windows, (eval_batches, batch_size)
    state: LoopState
    phases: Phases
    clock: WallClock
    recorder: Recorder
    budget: wall.Budget
    amp_dtype: torch.dtype | None
    resumed_at: int | None  # the step a resumed session starts at


def _train_process(
    run: RunConfig,
    train_path,
    valid_path,
    out,
    *,
    dist,
    device,
    t_setup,
    progress,
    fresh,
    sync_timing,
    on_config_change,
) -> dict:
    """Train ``run`` in this process (every rank of a torchrun job runs it)."""
    if run.training.batch_size % dist.world:
        raise LMError(
            f"training.batch_size {run.training.batch_size} is the global batch and must divide "
            f"evenly over the {dist.world} processes; pick a multiple of {dist.world} or another "
            f"process count"
        )
    t = run.training
    batch_schedule.check_batch_warmup(
        t.batch_size, t.batch_warmup_steps, t.batch_warmup_start, dist.world, "training"
    )
    # Bad input fails here, before any training.
    train_data, valid_data = _open_data(run, train_path, valid_path)
    rundir = RunDir(out)
    decision = payload = None
    if dist.main:
        decision, payload = rundir.prepare(
            run.to_dict(), fresh=fresh, on_config_change=on_config_change, device=device
        )
    resume_from, error = dist.broadcast(decision)
    if error:
        raise LMError(error)

    s = _start(run, rundir, resume_from, payload, train_data, valid_data, dist, device, sync_timing)
    setup_s = s.clock.start - t_setup  # the wall clock starts when the setup ends
    try:
        _loop(s, progress)
    finally:
        s.recorder.close()

    n_params = sum(p.numel() for p in s.step.model.parameters())
    result = _result(run, s.state, n_params, device, s.amp_dtype, s.resumed_at, setup_s, dist)
    result = with_provenance(result, "train")
    if dist.main:
        _report(run, s.state, rundir, result)
    dist.barrier("finishing")
    return result


def _open_data(run: RunConfig, train_path, valid_path) -> tuple[np.ndarray, np.ndarray]:
    """The token files, checked against the model's vocabulary and context."""
    splits = (open_tokens(train_path), open_tokens(valid_path))
    for data, path in zip(splits, (train_path, valid_path), strict=True):
        check_tokens(data, run.model.vocab_size, name=f"token file {path}")
        check_length(data, run.model.context_length, name=f"token file {path}")
    return splits


def _start(
    run: RunConfig, rundir: RunDir, resume_from, payload, train_data, valid_data, dist, device,
    sync_timing,
) -> Session:  # fmt: skip
    """The session: the model, the optimizer and the batch stream (as ``resume_from`` left
    them, when given; see :func:`_resume`), the step, the records and their sinks, the
    budget; its wall clock starts last."""
    tcfg, ctx = run.training, run.model.context_length
    torch.manual_seed(tcfg.seed)
    model = run.model.build().to(device)
    optimizer = build_optimizer(model, run.optimizer, device)
    batch_rng = np.random.default_rng(tcfg.seed)
    # fixed validation windows, drawn once from their own stream (identical across resumes)
    val_starts = np.random.default_rng([tcfg.seed, 1]).integers(
        0, len(valid_data) - ctx, size=(tcfg.eval_batches, tcfg.batch_size)
    )
    state = _resume(run, rundir, resume_from, payload, model, optimizer, batch_rng, dist, device)
    ddp = None
    if dist.world > 1:  # one process under torchrun has no gradients to average
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    amp_dtype = autocast_dtype(tcfg.dtype, device)
    loss_of = forward_loss(
        ddp if ddp is not None else model, amp_dtype, device.type, compile=tcfg.compile,
        loss_chunk=tcfg.loss_chunk,
    )  # fmt: skip
    model.train()
    file = MetricsFile(rundir.metrics, state.records) if dist.main else None
    sinks = trackers.open_sinks(
        run, rundir.out, main=dist.main, resumed=resume_from is not None, history=state.records
    )
    phases, clock = Phases(state.timings), WallClock(state.elapsed)
    step = TrainStep(
        model, loss_of, optimizer, train_data, batch_rng, batch_size=tcfg.batch_size,
        context_length=ctx, clip=run.optimizer.grad_clip or math.inf,  # 0: no clipping
        dist=dist, device=device,
        phases=phases, sync_timing=sync_timing,
    )  # fmt: skip
    recorder = Recorder(
        state, dist=dist, device=device, clock=clock,
        divergence_factor=tcfg.divergence_factor, file=file, sinks=sinks,
    )  # fmt: skip
    budget = wall.Budget(
        tcfg.budget_seconds, log_every=tcfg.log_every, clock=clock, dist=dist, device=device
    )
    resumed_at = state.step if resume_from is not None else None
    return Session(
        run, dist, device, rundir, step, valid_data, val_starts, state, phases, clock, recorder,
        budget, amp_dtype, resumed_at,
    )  # fmt: skip


def _resume(run, rundir, resume_from, payload, model, optimizer, batch_rng, dist, device):
    """The loop state to start from: a new one, or the checkpoint's ``resume_from`` (read
    again unless rank 0 passes its ``payload``), whose model, optimizer and random states
    are restored too. Counts the session, and plans the steps of a run without a budget."""
    state = LoopState()
    if resume_from is not None:
        if payload is None:  # the other ranks read what rank 0 chose
            payload = ckpt.read_checkpoint(resume_from, map_location=device)
        ckpt.restore(
            payload, model, optimizer, name=str(resume_from), batch_rng=batch_rng, restore_rng=True
        )
        state = LoopState(**payload["extra"]["loop"])
        del payload
        if run.training.budget_seconds is not None:  # a killed session's time after its
            state.elapsed = dist.broadcast(  # last checkpoint counts
                wall.spent_before(rundir.metrics, state.elapsed) if dist.main else None
            )
    state.sessions += 1
    if state.plan is None and run.training.budget_seconds is None:
        state.plan = wall.plan_schedule(run, run.training.steps)
    return state


def _loop(s: Session, progress) -> None:
    """Train from ``s.state`` to the planned steps, a divergence or the budget's end."""
    run, state, tcfg = s.run, s.state, s.run.training
    if state.step == 0 and not state.records:
        s.recorder.record(0, None, _evaluate(s))
    if state.plan is None:  # a budgeted run, before its first step
        state.plan = s.dist.broadcast(_calibrate(s))  # rank 0's measurement decides
    plan = state.plan
    steps = plan["steps"]
    s.recorder.open_progress(steps, run.name, progress, initial=state.step)
    while state.status == "running" and state.step < steps:
        step = state.step + 1
        lr = scheduled_lr(step, run.schedule, run.optimizer.lr, run.optimizer.min_lr, plan)
        batch = run.batch_size_at(step)  # the full batch but in a batch-size warmup
        s.recorder.add(*s.step(lr, batch))
        state.step = step
        state.tokens += batch * run.model.context_length
        stop = s.budget.out_of_time(
            step, plan, eval_s=s.phases.last["eval"], checkpoint_s=s.phases.last["checkpoint"]
        )
        is_eval = step % tcfg.eval_every == 0 or step == steps or stop
        if is_eval or step % tcfg.log_every == 0:
            val_loss = _evaluate(s) if is_eval else None
            with s.phases.time("log"):
                s.recorder.record(step, lr, val_loss)
        with s.phases.time("log"):
            s.recorder.advance()
        if stop and state.status == "running":
            state.stop_reason = "budget"
            break
        if state.status == "running" and step % tcfg.checkpoint_every == 0 and step < steps:
            _save(s, f"step_{step:08d}.pt")
    s.recorder.close_progress()

    if state.status == "running":
        state.status = "ok"
    state.stop_reason = state.stop_reason or ("diverged" if state.status == "diverged" else "steps")
    if s.recorder.losses:  # a diverged run stops between records; log what it did
        s.recorder.record(state.step, None, None)
    _save(s, "final.pt")
    state.elapsed = s.clock()


def _evaluate(s: Session) -> float:
    """The validation loss, timed as the eval phase."""
    with s.phases.time("eval"):
        return evaluate(
            s.step.model, s.step.loss_of, s.valid, s.val_starts, s.run.model.context_length,
            s.device, s.dist,
        )  # fmt: skip


def _save(s: Session, name: str) -> None:
    """Checkpoint ``name`` of the session (a collective: every rank saves at the same steps;
    rank 0 writes)."""
    with s.phases.time("checkpoint"):
        losses, norms = s.recorder.pending()
        s.state.elapsed = s.clock()
        s.state.pending_losses, s.state.pending_norms = losses, norms
        if s.dist.main:
            s.rundir.save(
                name, s.step.model, s.step.optimizer, s.state.step,
                keep=s.run.training.keep_checkpoints, config=s.run.to_dict(),
                batch_rng=s.step.batch_rng, extra={"loop": asdict(s.state)},
            )  # fmt: skip


def _calibrate(s: Session) -> dict:
    """Time a few steps, then put everything back as it was: the plan of a budget."""
    started = time.perf_counter()
    snapshot, totals = s.step.snapshot(), dict(s.phases.totals)
    timed_steps, timed_s = s.budget.time_steps(s.step.waited)
    _evaluate(s)  # warm: the step-0 evaluation's time included compiling it
    s.recorder.clear()
    s.step.restore(snapshot)
    s.phases.restore(totals)
    # A step-0 checkpoint: its write time is what the plan reserves for each checkpoint,
    # and a run killed before its first planned checkpoint resumes from here, counting
    # the time spent, and plans again (no step of the lost plan survived the kill).
    _save(s, f"step_{0:08d}.pt")
    return s.budget.plan(
        s.run,
        timed_steps=timed_steps,
        timed_s=timed_s,
        eval_s=s.phases.last["eval"],
        checkpoint_s=s.phases.last["checkpoint"],
        started=started,
    )


def _report(run: RunConfig, state: LoopState, rundir: RunDir, result: dict) -> None:
    """Rank 0's last outputs: result.json (with the checkpoints set aside as corrupt) and
    the loss curves."""
    result["checkpoints_set_aside"] = rundir.set_aside()
    write_json(rundir.out / "result.json", result)
    from lm.training.plots import plot_run

    plot_run(
        state.records, rundir.out / "curves.png", title=run.name, diverged_step=state.diverged_step
    )


def _result(
    run: RunConfig, state: LoopState, n_params, device, amp_dtype, resumed_at, setup_s, dist
) -> dict:
    vals = [(r["step"], r["val_loss"]) for r in state.records if r["val_loss"] is not None]
    trains = [r["train_loss"] for r in state.records if r["train_loss"] is not None]
    best = min(vals, key=itemgetter(1)) if vals else (None, None)
    compute = state.timings["compute"]
    loop_total = state.elapsed  # wallclock of the loop itself, all sessions, setup excluded
    return {
        "run": run.name,
        "status": state.status,
        "diverged_step": state.diverged_step,
        "diverged_reason": state.diverged_reason,
        "steps": state.step,
        "steps_planned": state.plan["steps"] if state.plan else run.training.steps,
        "stop_reason": state.stop_reason,
        "max_wallclock_minutes": run.training.max_wallclock_minutes,
        "budget_plan": state.plan if run.training.max_wallclock_minutes else None,
        "tokens": state.tokens,
        "wallclock_s": round(state.elapsed, 3),
        "tokens_per_s": round(state.tokens / state.elapsed, 1) if state.elapsed > 0 else None,
        "params": n_params,
        "initial_val_loss": _finite(state.records[0]["val_loss"]) if state.records else None,
        "final_train_loss": _finite(trains[-1]) if trains else None,
        "final_val_loss": _finite(vals[-1][1]) if vals and vals[-1][0] == state.step else None,
        "best_val_loss": _finite(best[1]),
        "best_val_step": best[0],
        "device": str(device),
        "autocast": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "threads": torch.get_num_threads(),
        "processes": dist.world,
        "sessions": state.sessions,
        "resumed_at_step": resumed_at,
        "time_breakdown_s": {k: round(v, 4) for k, v in state.timings.items()},
        "overhead_share": round(1 - compute / loop_total, 4) if loop_total > 0 else None,
        "setup_s": round(setup_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_gpu_mb": (
            round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            if device.type == "cuda"
            else None
        ),
    }
