#!/usr/bin/env bash
# The GPU checks of docs/benchmarks.md ("GPU throughput and MFU") in one go, on one CUDA machine, from the
# repository root, in about 7-11 minutes (an H100/H200); no install needed beyond torch,
# numpy, pyyaml and regex (lm runs from the checkout through PYTHONPATH):
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR]        # default results/gpu_suite
#   SUITE_PARTS=1 bash benchmarks/gpu_suite.sh    # part 1 only
#
# 1. benchmarks/bench_gpu.py --profile on SUITE_CONFIGS: the best config measured so far
#    (BEST_CONFIG, the 17M model in bf16, forward+loss compiled, batch 1024), the same compiled
#    with torch.compile mode max-autotune-no-cudagraphs, then max-autotune (CUDA graphs too):
#    tokens/s, MFU, peak memory, and per config where the device time goes (kernel categories,
#    top 10 kernels). About 4-6 minutes, most of it compiling: ~30 s for the plain compile,
#    1-3 minutes for the first max-autotune (its GEMM autotuning), less for the second (the
#    autotuning results are cached). No config starts after BENCH_SECONDS (default 300), and
#    the bench is killed at BENCH_SECONDS + 180 s whatever runs (its JSON and table are
#    rewritten after every config, so what was measured stays). SUITE_CONFIGS= (empty) runs
#    bench_gpu's built-in CUDA list instead (the table in docs/benchmarks.md; about 3-4 minutes at
#    BENCH_SECONDS=170).
# 2. the same lm train run (17M model, synthetic tokens) as a plain process and under
#    torchrun (NCCL, DDP), steady-state tokens/s of each (about 1.5 minutes);
# 3. a wall-clock-budgeted lm train run of the owt-leaderboard shape (GPT-2-small, bf16,
#    torch.compile, batch 128) on synthetic tokens: the plan, where it stopped, tokens/s,
#    peak GPU memory (BUDGET_MINUTES, default 1.5, plus start-up and the final evaluation).
# SUITE_DEVICE=cpu runs a miniature of all three on the CPU (a dry run of this script, about
# 3 minutes on 2 cores); SUITE_PARTS=1 runs part 1 only, SUITE_PARTS="2 3" parts 2 and 3.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-results/gpu_suite}
DEVICE=${SUITE_DEVICE:-cuda}
BENCH_SECONDS=${BENCH_SECONDS:-300}
BEST=${BEST_CONFIG:-tinystories-17m:bf16:model+loss:1024}  # MODEL:DTYPE:COMPILE:BATCH
BUDGET_MINUTES=${BUDGET_MINUTES:-1.5}
PARTS=${SUITE_PARTS:-1 2 3}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ "$DEVICE" = cpu ]; then
    # the GPU list's settings on the CPU's default model, compiled once (on a CPU, max-autotune
    # has no CUDA graphs, so it stands for both variants)
    CONFIGS=${SUITE_CONFIGS-tinystories-17m:fp32:model+loss:2,tinystories-17m:fp32:model+loss:max-autotune:2}
    BENCH_SECONDS=60
    BENCH_ARGS=(--device cpu --steps 2 --warmup 1 --max-seconds "$BENCH_SECONDS" --profile 2)
    SHAPE='{"d_model": 32, "num_layers": 2, "num_heads": 2, "d_ff": 64, "context_length": 16}'
    BIG="$SHAPE"
    BATCH=8 STEPS=40 BIG_BATCH=8 VOCAB_SMALL=128 VOCAB_BIG=128 COMPILE=false DTYPE=float32
    BUDGET_MINUTES=0.3
else
    CONFIGS=${SUITE_CONFIGS-$BEST,${BEST%:*}:max-autotune-no-cudagraphs:${BEST##*:},${BEST%:*}:max-autotune:${BEST##*:}}
    BENCH_ARGS=(--device cuda --max-seconds "$BENCH_SECONDS" --profile 5)
    SHAPE='{"d_model": 512, "num_layers": 4, "num_heads": 16, "d_ff": 1344, "context_length": 256}'
    BIG='{"d_model": 768, "num_layers": 12, "num_heads": 12, "d_ff": 2048, "context_length": 512}'
    BATCH=128 STEPS=400 BIG_BATCH=128 VOCAB_SMALL=10000 VOCAB_BIG=32000 COMPILE=true DTYPE=bfloat16
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/nvidia-smi.txt"
fi
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT_DIR/versions.txt"

if [[ " $PARTS " == *" 1 "* ]]; then
    echo "== 1. bench_gpu: ${CONFIGS:-its built-in list}"
    [ -n "$CONFIGS" ] && BENCH_ARGS+=(--configs "$CONFIGS")
    timeout -k 10 $((${BENCH_SECONDS%.*} + 180)) "$PY" benchmarks/bench_gpu.py "${BENCH_ARGS[@]}" \
        --out "$OUT_DIR/bench_gpu.json" 2>&1 | tee "$OUT_DIR/bench_gpu.log" ||
        echo "== bench_gpu exited with $? (124: stopped at the time bound); what it measured is in $OUT_DIR/bench_gpu.md"
fi
[[ " $PARTS " == *" 2 "* || " $PARTS " == *" 3 "* ]] || exit 0

echo "== 2. plain process vs torchrun (DDP)"
"$PY" - "$OUT_DIR" "$SHAPE" "$BIG" "$VOCAB_SMALL" "$VOCAB_BIG" "$BATCH" "$STEPS" "$BIG_BATCH" "$COMPILE" "$DTYPE" "$BUDGET_MINUTES" "$DEVICE" <<'EOF'
import json, sys
import numpy as np
out, shape, big, v_small, v_big, batch, steps, big_batch, compile_, dtype, minutes, device = sys.argv[1:]
rng = np.random.default_rng(0)
for name, vocab in (("small", int(v_small)), ("big", int(v_big))):
    np.save(f"{out}/{name}_train.npy", rng.integers(0, vocab, 20_000_000 if device == "cuda" else 200_000, dtype=np.uint16))
    np.save(f"{out}/{name}_valid.npy", rng.integers(0, vocab, 1_000_000 if device == "cuda" else 20_000, dtype=np.uint16))
common = {"optimizer": {"lr": 3e-3}, "threads": 4}
train = {"eval_batches": 4, "log_every": 10, "device": device, "compile": compile_ == "true", "dtype": dtype}
ddp = {"name": "ddp-check", **common, "model": {**json.loads(shape), "rope_theta": 10000, "vocab_size": int(v_small)},
       "training": {**train, "batch_size": int(batch), "steps": int(steps), "eval_every": int(steps), "checkpoint_every": int(steps)}}
budget = {"name": "budget-check", **common, "schedule": {"warmup_ratio": 0.02},
          "model": {**json.loads(big), "rope_theta": 10000, "vocab_size": int(v_big)},
          "training": {**train, "batch_size": int(big_batch), "max_wallclock_minutes": float(minutes),
                       "eval_every": 200, "checkpoint_every": 400}}
from lm.training.config import resolve_run  # lm train takes a resolved run
for run in (ddp, budget):
    body = {k: v for k, v in run.items() if k != "name"}
    json.dump(resolve_run(run["name"], body).to_dict(), open(f"{out}/{run['name']}.json", "w"))
EOF
LM_TRAIN=(-m lm train --config "$OUT_DIR/ddp-check.json" --train-tokens "$OUT_DIR/small_train.npy" --valid-tokens "$OUT_DIR/small_valid.npy" --progress log)
"$PY" "${LM_TRAIN[@]}" --out "$OUT_DIR/plain" 2>&1 | tail -n 3
"$PY" -m torch.distributed.run --standalone --nproc-per-node 1 "${LM_TRAIN[@]}" --out "$OUT_DIR/torchrun" 2>&1 | tail -n 3

echo "== 3. wall-clock budget, owt-leaderboard shape"
"$PY" -m lm train --config "$OUT_DIR/budget-check.json" --train-tokens "$OUT_DIR/big_train.npy" \
    --valid-tokens "$OUT_DIR/big_valid.npy" --out "$OUT_DIR/budget" --progress log 2>&1 | tail -n 4

echo "== summary"
"$PY" - "$OUT_DIR" <<'EOF' | tee "$OUT_DIR/summary.md"
import json, statistics, sys
out = sys.argv[1]
def steady(run):
    recs = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    rates = [r["tokens_per_s"] for r in recs[len(recs) // 2:] if r.get("tokens_per_s")]
    return statistics.median(rates) if rates else float("nan")
plain, ddp = steady("plain"), steady("torchrun")
rp, rd = (json.load(open(f"{out}/{r}/result.json")) for r in ("plain", "torchrun"))
print("| launch | processes | steady tokens/s | final val loss | peak GPU MB |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, r, rate in (("plain lm train", rp, plain), ("torchrun (DDP)", rd, ddp)):
    print(f"| {name} | {r['processes']} | {rate:,.0f} | {r['final_val_loss']:.4f} | {r['peak_gpu_mb']} |")
print(f"\ntorchrun / plain tokens/s: {ddp / plain:.3f}\n")
b = json.load(open(f"{out}/budget/result.json"))
keys = ("max_wallclock_minutes", "steps_planned", "steps", "stop_reason", "wallclock_s", "tokens_per_s", "final_val_loss", "peak_gpu_mb", "budget_plan")
print("budget run: " + json.dumps({k: b.get(k) for k in keys}))
print(f"budget run steady tokens/s: {steady('budget'):,.0f}")
EOF
rm -f "$OUT_DIR"/*_train.npy "$OUT_DIR"/*_valid.npy "$OUT_DIR"/*/checkpoints/*.pt
