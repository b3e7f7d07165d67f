"""How much of a training run's wallclock goes to anything but forward/backward/step?

Runs ``lm.training.train`` for a short run at the CS336 TinyStories 17M shape (d_model
512, 4 layers, 16 heads, d_ff 1344, context 256, vocab 10000) on random token files, and
reads the loop's own phase timings from result.json: data (batch sampling + copy),
compute (forward, backward, clipping, optimizer step), log (metrics line, progress), eval
(validation batches), checkpoint (atomic torch.save + pruning).

Two shares are printed:

- measured: phase time / loop wallclock in this short run, which evaluates and
  checkpoints far more often per step than a real run (step 0 and the last step
  evaluate; a checkpoint mid-run and final.pt at the end).
- at cadence: the same per-event costs spread over a real run's cadence
  (``--cadence-eval-every``, ``--cadence-checkpoint-every``; defaults 500 and 1000 steps
  as in the shipped config), i.e. data+log per step plus eval/checkpoint cost per event
  divided by their interval.

It also checks the data path's memory: opening, scanning (max id) and sampling the token
file as the loop does adds no private memory (the file is memory-mapped and read by
windows; the scan reads it in chunks), only shared page-cache pages the kernel maps.

    .venv/bin/python benchmarks/bench_train.py                  # 30 steps, batch 8
    .venv/bin/python benchmarks/bench_train.py --steps 300 --eval-every 100 --checkpoint-every 150
                                   # a measured run at a real run's eval cost per step
    .venv/bin/python benchmarks/bench_train.py --steps 10 --tokens 2000000   # quicker
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lm.io import peak_rss_mb, write_json
from lm.model.config import DEFAULT_PRESETS
from lm.training.config import resolve_run
from lm.training.loop import train

SHAPE = dict(DEFAULT_PRESETS["tinystories-17m"])  # the CS336 TinyStories 17M model


def mapping_rss_mb(path: Path) -> float | None:
    """Resident MiB of this process's memory maps of ``path`` (Linux /proc/self/smaps)."""
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return None
    target, inside, kb = str(path.resolve()), False, 0
    for line in text.splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping header line
            inside = line.rstrip().endswith(target)
        elif inside and first == "Rss:":
            kb += int(line.split()[1])
    return kb / 1024


def rss_anon_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def data_path_memory(path: Path, vocab: int, steps: int, batch_size: int, context: int) -> dict:
    """Open, check and sample the token file as the loop does; what it costs in memory.

    ``anon_growth_mb``: private memory the data path added (a copy of the file would show
    here). ``mapped_resident_mb``: clean page-cache pages of the file mapped into the
    process by the kernel around the sampled windows (shared, reclaimable; the kernel
    maps whole cached folios, so this is larger than the windows themselves).
    """
    from lm.training.data import check_tokens, get_batch, open_tokens

    before = rss_anon_mb()
    tokens = open_tokens(path)
    check_tokens(tokens, vocab)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        get_batch(tokens, batch_size, context, "cpu", rng=rng)
    after = rss_anon_mb()
    return {
        "anon_growth_mb": round(after - before, 2)
        if before is not None and after is not None
        else None,
        "mapped_resident_mb": mapping_rss_mb(path),
    }


def make_tokens(path: Path, n: int, vocab: int, seed: int) -> None:
    if path.is_file() and np.load(path, mmap_mode="r").shape == (n,):
        return
    rng = np.random.default_rng(seed)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(n,))
    for start in range(0, n, 1 << 22):  # written in pieces: the benchmark holds no corpus either
        stop = min(n, start + (1 << 22))
        arr[start:stop] = rng.integers(0, vocab, stop - start, dtype=np.uint16)
    arr.flush()
    del arr


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument(
        "--tokens", type=int, default=20_000_000, help="training tokens in the random token file"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "reference"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="validate every N steps in the timed run (default: only at step 0 and the last step)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="step checkpoints every N steps in the timed run (default: one mid-run), plus final.pt",
    )
    p.add_argument("--cadence-eval-every", type=int, default=500)
    p.add_argument("--cadence-eval-batches", type=int, default=20)
    p.add_argument("--cadence-checkpoint-every", type=int, default=1000)
    p.add_argument("--out", default="benchmarks/out/bench_train")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    make_tokens(out / "train.npy", args.tokens, SHAPE["vocab_size"], 0)
    make_tokens(out / "valid.npy", 1_000_000, SHAPE["vocab_size"], 1)
    print(f"token files ready in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    checkpoint_every = args.checkpoint_every or max(1, args.steps // 2)  # default: one mid-run
    run = resolve_run(
        "bench-17m",
        {
            "model": {**SHAPE, "attention": args.attention},
            "optimizer": {"lr": 1e-3},
            "training": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "log_every": 10,
                "eval_every": args.eval_every or args.steps,  # default: step 0 and the last
                "eval_batches": args.eval_batches,
                "checkpoint_every": checkpoint_every,
                "device": args.device,
                "compile": args.compile,
            },
            "threads": args.threads or torch.get_num_threads(),
        },
    )
    result = train(
        run,
        out / "train.npy",
        out / "valid.npy",
        out / "run",
        progress=False,
        fresh=True,
        sync_timing=True,
    )
    data_mem = data_path_memory(
        out / "train.npy", SHAPE["vocab_size"], args.steps, args.batch_size, SHAPE["context_length"]
    )

    tb = result["time_breakdown_s"]
    wall = result["wallclock_s"]
    steps = result["steps"]
    n_evals = sum(
        1
        for r in map(json.loads, (out / "run" / "metrics.jsonl").read_text().splitlines())
        if r["val_loss"] is not None
    )
    n_ckpts = len(range(checkpoint_every, steps, checkpoint_every)) + 1  # step files + final.pt
    per_step = {k: tb[k] / steps for k in ("data", "compute", "log")}
    eval_cost, ckpt_cost = tb["eval"] / n_evals, tb["checkpoint"] / n_ckpts
    eval_at_cadence = eval_cost * args.cadence_eval_batches / args.eval_batches
    cadence_overhead = (
        per_step["data"]
        + per_step["log"]
        + eval_at_cadence / args.cadence_eval_every
        + ckpt_cost / args.cadence_checkpoint_every
    )
    cadence_share = cadence_overhead / (per_step["compute"] + cadence_overhead)
    other = wall - sum(tb.values())

    file_mb = (out / "train.npy").stat().st_size / 2**20
    report = {
        "shape": SHAPE,
        "attention": args.attention,
        "steps": steps,
        "batch_size": args.batch_size,
        "threads": result["threads"],
        "device": result["device"],
        "wallclock_s": wall,
        "tokens_per_s": result["tokens_per_s"],
        "time_breakdown_s": {**tb, "other": round(other, 4)},
        "measured_overhead_share": result["overhead_share"],
        "per_step_s": {k: round(v, 5) for k, v in per_step.items()},
        "eval_s_each": round(eval_cost, 4),
        "checkpoint_s_each": round(ckpt_cost, 4),
        "cadence": {
            "eval_every": args.cadence_eval_every,
            "eval_batches": args.cadence_eval_batches,
            "checkpoint_every": args.cadence_checkpoint_every,
        },
        "overhead_share_at_cadence": round(cadence_share, 5),
        "token_file_mb": round(file_mb, 1),
        "token_file_memory": data_mem,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    write_json(out / "bench_train.json", report)

    print(
        f"17M shape, batch {args.batch_size} x context 256, {steps} steps on {result['device']} ({result['threads']} threads), attention={args.attention}"
    )
    print(f"loop wallclock {wall:.2f} s, {result['tokens_per_s']:.0f} tokens/s")
    print(f"{'phase':<12}{'seconds':>10}{'share':>9}")
    for k in ("compute", "data", "log", "eval", "checkpoint"):
        print(f"{k:<12}{tb[k]:>10.3f}{tb[k] / wall:>9.2%}")
    print(f"{'(untimed)':<12}{other:>10.3f}{other / wall:>9.2%}")
    print(
        f"outside forward/backward/step, measured in this run ({n_evals} evals, {n_ckpts} checkpoints"
        f" in {steps} steps): {result['overhead_share']:.2%}"
    )
    print(
        f"  per step: data {per_step['data'] * 1e3:.2f} ms, log {per_step['log'] * 1e3:.2f} ms vs compute {per_step['compute'] * 1e3:.0f} ms;"
        f" one eval ({args.eval_batches} batches) {eval_cost:.2f} s, one checkpoint {ckpt_cost:.2f} s"
    )
    print(
        f"outside forward/backward/step at a real cadence (eval of {args.cadence_eval_batches} batches every "
        f"{args.cadence_eval_every} steps, checkpoint every {args.cadence_checkpoint_every}): {cadence_share:.2%}"
    )
    if data_mem["anon_growth_mb"] is not None:
        print(
            f"token file {file_mb:.0f} MiB; checking it and sampling {args.steps} batches as the loop does added "
            f"{data_mem['anon_growth_mb']:.1f} MiB of private memory ({data_mem['mapped_resident_mb']:.0f} MiB of "
            f"shared page cache mapped around the windows)"
        )
    print(f"peak RSS {report['peak_rss_mb']:.0f} MiB; written {out / 'bench_train.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
