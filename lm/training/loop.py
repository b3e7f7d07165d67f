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

The loop times its own phases (data, compute = forward/backward/clip/step, log, eval,
checkpoint) and reports them in result.json, which is how ``benchmarks/bench_train.py``
measures the share of wallclock spent outside compute.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from lm.errors import LMError
from lm.io import atomic_open, peak_rss_mb, write_json
from lm.progress import progress_bar
from lm.provenance import with_provenance
from lm.runtime import autocast_dtype, pick_device
from lm.training import budget as wall
from lm.training import checkpoint as ckpt
from lm.training import distributed
from lm.training.config import resume_differences
from lm.training.data import check_length, check_tokens, gather_windows, open_tokens
from lm.training.functional import cross_entropy, gradient_clipping
from lm.training.optim import AdamW
from lm.training.run_config import RunConfig
from lm.training.schedule import get_lr_cosine_schedule

PHASES = ("data", "compute", "log", "eval", "checkpoint")


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


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


@dataclass
class LoopState:
    """Everything besides model/optimizer/RNG that a resumed run needs; saved in checkpoints."""

    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # wallclock seconds of training so far, over all sessions
    records: list = field(default_factory=list)  # metrics.jsonl lines so far
    pending_losses: list = field(default_factory=list)  # train losses since the last record
    pending_norms: list = field(default_factory=list)
    status: str = "running"  # running | ok | diverged
    diverged_step: int | None = None
    diverged_reason: str | None = None
    timings: dict = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    sessions: int = 0
    plan: dict | None = None  # steps, warmup_iters, cosine_cycle_iters (+ calibration of a budget)
    stop_reason: str | None = None  # steps | budget | diverged


class Metrics:
    """metrics.jsonl, appended a line at a time and flushed (a killed run loses nothing logged).
    Written by rank 0 only (``enabled``)."""

    def __init__(self, path: Path, records: list[dict], enabled: bool = True):
        self.path = path
        self.file = None
        if not enabled:
            return
        with atomic_open(path, "w", encoding="utf-8") as f:  # exactly the checkpoint's records
            for r in records:
                f.write(json.dumps(r) + "\n")
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _wandb_start(run: RunConfig, out: Path):
    cfg = run.wandb
    if not cfg.enabled:
        return None
    try:
        import wandb  # optional; never a requirement
    except ImportError:
        warnings.warn(
            "wandb.enabled is true but wandb is not installed; logging to metrics.jsonl only",
            stacklevel=2,
        )
        return None
    sweep = run.sweep or {}
    return wandb.init(
        project=cfg.project,
        entity=cfg.entity,
        group=cfg.group or sweep.get("name"),
        name=run.name,
        id=f"{run.name}-{abs(hash(str(out.resolve()))) % 10**8:08d}",
        resume="allow",
        config=run.to_dict(),
        dir=str(out),
        mode=cfg.mode,
    )


# ---------------------------------------------------------------------------- checkpoints on disk


def _step_checkpoints(ckpt_dir: Path) -> list[Path]:
    return sorted(ckpt_dir.glob("step_*.pt"))


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """final.pt if the run finished, else the newest step checkpoint, else None."""
    final = ckpt_dir / "final.pt"
    if final.is_file():
        return final
    steps = _step_checkpoints(ckpt_dir)
    return steps[-1] if steps else None


# ---------------------------------------------------------------------------- evaluation


def forward_loss(module, amp_dtype: torch.dtype | None, device_type: str, compile: bool):
    """The run's loss of a batch, ``loss_of(x, y)``: the forward under autocast (when
    ``amp_dtype``), then the float32 cross-entropy; compiled together when asked, so the
    loss over all the logits (a small model's largest tensors) is fused with the forward.
    The one definition of a training step's forward, used by the loop and bench_gpu.py."""
    if amp_dtype is None:

        def loss_of(x, y):
            return cross_entropy(module(x), y)

    else:

        def loss_of(x, y):
            with torch.autocast(device_type=device_type, dtype=amp_dtype):
                logits = module(x)
            return cross_entropy(logits, y)

    return torch.compile(loss_of) if compile else loss_of


@torch.no_grad()
def evaluate(
    model, loss_of, valid, starts: np.ndarray, context_length: int, device, dist=distributed.SINGLE
) -> float:
    """Mean loss (``loss_of``, see :func:`forward_loss`) over the fixed validation batches
    (rows of ``starts``) of ``model`` in eval mode; under DDP each rank takes its slice of
    every row and the means are averaged over ranks."""
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


def _prepare_directory(config: dict, out: Path, *, fresh: bool, on_config_change: str, device):
    """Rank 0's part before training, for the run whose ``config.json`` is ``config``:
    clear temporaries, apply --fresh, pick the checkpoint to resume from (or refuse one of
    another config). Returns ``(decision, payload)``: the
    decision, (checkpoint path or None, error message or None), is what every rank acts on;
    the payload is the checkpoint read onto ``device`` (None without one), which rank 0
    restores from instead of reading it again."""
    ckpt_dir = out / "checkpoints"
    if ckpt_dir.is_dir():
        for p in ckpt_dir.glob(".*.tmp"):  # half-written by a killed run; never complete
            p.unlink(missing_ok=True)
    if fresh and ckpt_dir.is_dir():
        for p in ckpt_dir.glob("*.pt"):
            p.unlink()
    resume_from = latest_checkpoint(ckpt_dir) if ckpt_dir.is_dir() else None
    payload = None
    if resume_from is not None:
        payload = ckpt.read_checkpoint(resume_from, map_location=device)
        diffs = resume_differences(payload.get("config") or {}, config)
        shown = ", ".join(diffs[:5]) + (" ..." if len(diffs) > 5 else "")
        if diffs and on_config_change == "restart":
            warnings.warn(
                f"{ckpt_dir}: checkpoints of a run with a different config ({shown} differ) discarded; starting over",
                stacklevel=4,
            )
            for p in ckpt_dir.glob("*.pt"):
                p.unlink()
            resume_from, payload = None, None
        elif diffs:
            error = (
                f"{resume_from} was written by a run with a different config ({shown} differ), so "
                f"continuing it would mix two runs. Restore the old config to resume, or discard the old "
                f"run: delete {ckpt_dir} (or pass --fresh to lm train)"
            )
            return (None, error), None
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir.mkdir(exist_ok=True)
    write_json(out / "config.json", config)
    return (resume_from, None), payload


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
    ocfg, tcfg = run.optimizer, run.training
    config = run.to_dict()  # as config.json and every checkpoint record it
    amp_dtype = autocast_dtype(tcfg.dtype, device)

    def sync():
        if sync_timing and device.type == "cuda":
            torch.cuda.synchronize(device)

    vocab, ctx, bs = run.model.vocab_size, run.model.context_length, tcfg.batch_size
    if bs % dist.world:
        raise LMError(
            f"training.batch_size {bs} is the global batch and must divide evenly over the "
            f"{dist.world} processes; pick a multiple of {dist.world} or another process count"
        )
    budget_s = tcfg.budget_seconds

    # Bad input fails here, before any training.
    train_data = open_tokens(train_path)
    valid_data = open_tokens(valid_path)
    for data, path in ((train_data, train_path), (valid_data, valid_path)):
        check_tokens(data, vocab, name=f"token file {path}")
        check_length(data, ctx, name=f"token file {path}")

    ckpt_dir = out / "checkpoints"
    decision = payload = None
    if dist.main:
        decision, payload = _prepare_directory(
            config, out, fresh=fresh, on_config_change=on_config_change, device=device
        )
    resume_from, error = dist.broadcast(decision)
    if error:
        raise LMError(error)

    torch.manual_seed(tcfg.seed)
    model = run.model.build().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = AdamW(
        param_groups(model, ocfg.weight_decay),
        lr=ocfg.lr,
        betas=ocfg.betas,
        eps=ocfg.eps,
    )
    batch_rng = np.random.default_rng(tcfg.seed)
    # fixed validation windows, drawn once from their own stream (identical across resumes)
    val_starts = np.random.default_rng([tcfg.seed, 1]).integers(
        0, len(valid_data) - ctx, size=(tcfg.eval_batches, bs)
    )

    state = LoopState()
    if resume_from is not None:
        if payload is None:  # the other ranks read what rank 0 chose
            payload = ckpt.read_checkpoint(resume_from, map_location=device)
        ckpt.restore(
            payload, model, optimizer, name=str(resume_from), batch_rng=batch_rng, restore_rng=True
        )
        state = LoopState(**payload["extra"]["loop"])
        del payload
        if budget_s is not None:  # a killed session's time after its last checkpoint counts
            state.elapsed = dist.broadcast(
                wall.spent_before(out / "metrics.jsonl", state.elapsed) if dist.main else None
            )
    state.sessions += 1
    resumed_at = state.step if resume_from is not None else None
    if state.plan is None and budget_s is None:
        state.plan = wall.plan_schedule(run, tcfg.steps)

    ddp = None
    if dist.world > 1:  # one process under torchrun has no gradients to average
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    loss_of = forward_loss(
        ddp if ddp is not None else model, amp_dtype, device.type, compile=tcfg.compile
    )
    model.train()
    metrics = Metrics(out / "metrics.jsonl", state.records, enabled=dist.main)
    wandb_run = _wandb_start(run, out) if dist.main else None
    pending_losses = [
        torch.tensor(v, dtype=torch.float32, device=device) for v in state.pending_losses
    ]
    pending_norms = [
        torch.tensor(v, dtype=torch.float32, device=device) for v in state.pending_norms
    ]
    timings = state.timings
    setup_s = time.perf_counter() - t_setup
    session_t0 = time.perf_counter()
    elapsed0 = state.elapsed
    clip = ocfg.grad_clip if ocfg.grad_clip > 0 else math.inf
    factor = tcfg.divergence_factor
    shard = dist.shard(bs)
    measured = {"eval_s": 0.0, "checkpoint_s": 0.0}

    def wallclock() -> float:
        return elapsed0 + (time.perf_counter() - session_t0)

    last_mark = {"t": wallclock(), "tokens": state.tokens}

    def global_pending() -> tuple[list, list]:
        """The pending train losses and grad norms averaged over ranks (each rank's are of
        its own slice of the batch), as floats."""
        if not pending_losses:
            return [], []
        both = dist.mean(torch.stack([torch.stack(pending_losses), torch.stack(pending_norms)]))
        losses, norms = both.tolist()
        return losses, norms

    def record(step: int, lr: float | None, val_loss: float | None) -> dict:
        losses, norms = global_pending()
        pending_losses.clear()
        pending_norms.clear()
        train_loss = sum(losses) / len(losses) if losses else None
        grad_norm = sum(norms) / len(norms) if norms else None
        now = wallclock()
        dt = now - last_mark["t"]
        rate = (
            (state.tokens - last_mark["tokens"]) / dt
            if dt > 0 and state.tokens > last_mark["tokens"]
            else None
        )
        last_mark.update(t=now, tokens=state.tokens)
        rec = {
            "step": step,
            "tokens": state.tokens,
            "wallclock_s": round(now, 4),
            "lr": lr,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "grad_norm": grad_norm,
            "tokens_per_s": round(rate, 1) if rate else None,
        }
        # divergence: a non-finite loss, or one far above where the run started
        start = state.records[0]["val_loss"] if state.records else val_loss
        for what, value in (("train loss", train_loss), ("val loss", val_loss)):
            if value is None or state.status == "diverged":
                continue
            if not math.isfinite(value):
                state.status, state.diverged_step = "diverged", step
                state.diverged_reason = f"{what} is {value} at step {step}"
            elif factor is not None and start is not None and value > factor * start:
                state.status, state.diverged_step = "diverged", step
                state.diverged_reason = f"{what} {value:.4g} at step {step} is above {factor:g} x the initial val loss {start:.4g}"
        for k in ("train_loss", "val_loss", "grad_norm"):
            if rec[k] is not None and not math.isfinite(rec[k]):
                rec[k] = None  # strict JSON; the reason is in result.json
        state.records.append(rec)
        metrics.write(rec)
        if wandb_run is not None:
            wandb_run.log(
                {k: v for k, v in rec.items() if v is not None and k != "step"}, step=step
            )
        return rec

    def do_eval() -> float:
        t = time.perf_counter()
        loss = evaluate(model, loss_of, valid_data, val_starts, ctx, device, dist)
        measured["eval_s"] = time.perf_counter() - t
        timings["eval"] += measured["eval_s"]
        return loss

    def save(name: str) -> None:
        t = time.perf_counter()
        losses, norms = global_pending()  # a collective: every rank saves at the same steps
        state.elapsed = wallclock()
        state.pending_losses, state.pending_norms = losses, norms
        if dist.main:
            ckpt.save_checkpoint(
                model,
                optimizer,
                state.step,
                ckpt_dir / name,
                config=config,
                batch_rng=batch_rng,
                extra={"loop": asdict(state)},
            )
            # keep the newest keep_checkpoints step files; none once final.pt exists
            keep = tcfg.keep_checkpoints if name != "final.pt" else 0
            for old in _step_checkpoints(ckpt_dir)[: -keep or None]:
                old.unlink(missing_ok=True)
        measured["checkpoint_s"] = time.perf_counter() - t
        timings["checkpoint"] += measured["checkpoint_s"]

    def train_step(lr: float) -> None:
        t0 = time.perf_counter()
        x, y = _next_batch(train_data, bs, ctx, device, batch_rng, shard)
        sync()
        t1 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr
        with dist.guard("averaging gradients"):
            loss = loss_of(x, y)
            loss.backward()
        norm = gradient_clipping(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pending_losses.append(loss.detach().float())
        pending_norms.append(norm.detach().float())
        sync()
        t2 = time.perf_counter()
        timings["data"] += t1 - t0
        timings["compute"] += t2 - t1

    def calibrate() -> dict:
        """Time a few steps, then put everything back as it was: the plan of a budget."""
        t_start = time.perf_counter()
        saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saved_opt = copy.deepcopy(optimizer.state_dict())
        saved_batch = copy.deepcopy(batch_rng.bit_generator.state)
        saved_rng = ckpt.rng_state()
        saved_timings = dict(timings)
        cap = wall.MAX_CALIBRATION_SHARE * budget_s  # of timed steps; compiling comes before
        timed_steps, timed_s = 0, 0.0
        for i in itertools.count():
            t = time.perf_counter()
            train_step(0.0)
            pending_losses[-1].item()  # wait for the device
            if i < wall.WARMUP_STEPS:
                continue
            timed_steps, timed_s = timed_steps + 1, timed_s + time.perf_counter() - t
            enough = timed_steps >= wall.MIN_TIMED_STEPS and timed_s >= wall.MIN_TIMED_S
            if dist.any(dist.main and (enough or timed_s >= cap), device):
                break
        do_eval()  # warm: the step-0 evaluation's time included compiling it
        pending_losses.clear()
        pending_norms.clear()
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_opt)
        batch_rng.bit_generator.state = saved_batch
        ckpt.set_rng_state(saved_rng)
        timings.clear()
        timings.update(saved_timings)
        # A step-0 checkpoint: its write time is what the plan reserves for each checkpoint,
        # and a run killed before its first planned checkpoint resumes from here, counting
        # the time spent, and plans again (no step of the lost plan survived the kill).
        save(f"step_{0:08d}.pt")
        step_s = timed_s / timed_steps
        steps = wall.plan_steps(
            budget_s=budget_s,
            spent_s=wallclock(),
            step_s=step_s,
            eval_s=measured["eval_s"],
            checkpoint_s=measured["checkpoint_s"],
            eval_every=tcfg.eval_every,
            checkpoint_every=tcfg.checkpoint_every,
            max_steps=tcfg.steps,
        )
        return {
            **wall.plan_schedule(run, steps),
            "seconds_per_step": round(step_s, 6),
            "eval_s": round(measured["eval_s"], 4),
            "calibration_s": round(time.perf_counter() - t_start, 3),
            "calibration_steps": wall.WARMUP_STEPS + timed_steps,
        }

    def out_of_time(step: int) -> bool:
        """Would the next steps up to the next check, and the final eval and checkpoint, cross
        the budget? Decided by rank 0's clock at logging steps, so all ranks stop together."""
        if budget_s is None or step % tcfg.log_every:
            return False
        ahead = tcfg.log_every * state.plan["seconds_per_step"]
        final = max(measured["eval_s"], state.plan["eval_s"]) + measured["checkpoint_s"]
        late = wallclock() + ahead + final > budget_s
        return dist.any(late and dist.main, device)

    try:
        if state.step == 0 and not state.records:
            record(0, None, do_eval())
        if state.plan is None:  # a budgeted run, before its first step
            state.plan = dist.broadcast(calibrate())  # rank 0's measurement decides
        plan = state.plan
        steps = plan["steps"]

        bar = progress_bar(steps, run.name, "steps", progress, initial=state.step)
        while state.status == "running" and state.step < steps:
            step = state.step + 1
            lr = get_lr_cosine_schedule(
                step, ocfg.lr, ocfg.min_lr, plan["warmup_iters"], plan["cosine_cycle_iters"]
            )
            train_step(lr)
            state.step = step
            state.tokens += bs * ctx
            stop = out_of_time(step)
            is_eval = step % tcfg.eval_every == 0 or step == steps or stop
            if is_eval or step % tcfg.log_every == 0:
                val_loss = do_eval() if is_eval else None
                t3 = time.perf_counter()
                rec = record(step, lr, val_loss)
                bar.set_postfix(
                    loss=f"{rec['train_loss']:.3f}" if rec["train_loss"] is not None else "nan",
                    **({"val_loss": f"{val_loss:.3f}"} if val_loss is not None else {}),
                    **{"tokens/s": f"{rec['tokens_per_s']:,.0f}" if rec["tokens_per_s"] else "-"},
                    refresh=False,
                )
                timings["log"] += time.perf_counter() - t3
            t4 = time.perf_counter()
            bar.update(1)
            timings["log"] += time.perf_counter() - t4
            if stop and state.status == "running":
                state.stop_reason = "budget"
                break
            if state.status == "running" and step % tcfg.checkpoint_every == 0 and step < steps:
                save(f"step_{step:08d}.pt")
        bar.close()

        if state.status == "running":
            state.status = "ok"
        state.stop_reason = state.stop_reason or (
            "diverged" if state.status == "diverged" else "steps"
        )
        if pending_losses:  # a diverged run stops between records; log what it did
            record(state.step, None, None)
        save("final.pt")
        state.elapsed = wallclock()
    finally:
        metrics.close()
        if wandb_run is not None:
            wandb_run.finish()

    result = _result(run, state, n_params, device, amp_dtype, resumed_at, setup_s, dist)
    result = with_provenance(result, "train")
    if dist.main:
        write_json(out / "result.json", result)
        from lm.training.plots import plot_run

        plot_run(
            state.records,
            out / "curves.png",
            title=run.name,
            diverged_step=state.diverged_step,
        )
    dist.barrier("finishing")
    return result


def _next_batch(data, batch_size, context_length, device, rng, shard=slice(None)):
    """The global batch's window starts, drawn from the run's stream; this rank's slice of them."""
    starts = rng.integers(0, len(data) - context_length, size=batch_size)
    return gather_windows(data, starts[shard], context_length, device)


def _result(
    run: RunConfig, state: LoopState, n_params, device, amp_dtype, resumed_at, setup_s, dist
) -> dict:
    vals = [(r["step"], r["val_loss"]) for r in state.records if r["val_loss"] is not None]
    trains = [r["train_loss"] for r in state.records if r["train_loss"] is not None]
    best = min(vals, key=lambda sv: sv[1]) if vals else (None, None)
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
