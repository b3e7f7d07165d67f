"""Forward+backward speed of ``TransformerLM`` against the same model built from torch built-ins.

    python benchmarks/bench_model.py                 # TinyStories 17M shape, CPU, eager + compiled
    python benchmarks/bench_model.py --no-compile --reps 5 --batch-size 2
    python benchmarks/bench_model.py --threads 1      # on a machine other jobs share

On a machine whose cores other processes also use, give ``--threads 1``: with more threads
than free cores, each parallel region waits for a descheduled thread and step times swing
by several times (seen here: 2 threads on 2 busy cores ran 3-8x slower than 1 thread).

Candidates (same weights, same inputs, same cores, one process):

- ``lm reference``: our modules with the written-out attention (``attention="reference"``)
- ``lm sdpa``: our modules with ``attention="sdpa"`` (torch's fused attention kernel)
- ``torch built-ins``: ``nn.Linear``, ``nn.Embedding``, ``F.rms_norm``, ``F.silu``,
  ``F.scaled_dot_product_attention(is_causal=True)``; RoPE has no built-in, so it uses
  ours (the same code in both, so it cancels out of the ratio)

each eager and under ``torch.compile``. Repetitions are interleaved (one step of each
candidate per round, the order reversed every other round, ``--reps`` rounds) so that load
from other processes hits all alike; the ratio is taken within each round and its median
reported, next to the medians of the step times. Prints a Markdown table; writes JSON to benchmarks/out/bench_model.json.
The bar: ``lm sdpa`` >= 0.95x the built-ins.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lm.model import RotaryPositionalEmbedding
from lm.model.config import DEFAULT_PRESETS, ModelConfig

SHAPE = dict(DEFAULT_PRESETS["tinystories-17m"])  # the CS336 TinyStories 17M model


class BuiltinBlock(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, rope):
        super().__init__()
        self.num_heads = num_heads
        self.rope = rope
        self.attn = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
            setattr(self.attn, name, nn.Linear(d_model, d_model, bias=False))
        self.ln1 = nn.Module()
        self.ln1.weight = nn.Parameter(torch.ones(d_model))
        self.ffn = nn.Module()
        self.ffn.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.ffn.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.ffn.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.ln2 = nn.Module()
        self.ln2.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x):
        b, n, d = x.shape
        h = F.rms_norm(x, (d,), self.ln1.weight, eps=1e-5)
        q, k, v = (
            getattr(self.attn, p)(h).view(b, n, self.num_heads, -1).transpose(1, 2)
            for p in ("q_proj", "k_proj", "v_proj")
        )
        q, k = self.rope(q), self.rope(k)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.output_proj(a.transpose(1, 2).reshape(b, n, d))
        h = F.rms_norm(x, (d,), self.ln2.weight, eps=1e-5)
        return x + self.ffn.w2(F.silu(self.ffn.w1(h)) * self.ffn.w3(h))


class BuiltinLM(nn.Module):
    """The same architecture and state-dict names as TransformerLM, from torch built-ins."""

    def __init__(
        self, vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta
    ):
        super().__init__()
        rope = RotaryPositionalEmbedding(rope_theta, d_model // num_heads, context_length)
        self.token_embeddings = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(
            BuiltinBlock(d_model, num_heads, d_ff, rope) for _ in range(num_layers)
        )
        self.ln_final = nn.Module()
        self.ln_final.weight = nn.Parameter(torch.ones(d_model))
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids):
        x = self.token_embeddings(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(F.rms_norm(x, (x.shape[-1],), self.ln_final.weight, eps=1e-5))


def step(model, ids, targets):
    logits = model(ids)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    for p in model.parameters():
        p.grad = None
    return loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--context-length", type=int, default=SHAPE["context_length"])
    ap.add_argument("--reps", type=int, default=7, help="timed steps per candidate (interleaved)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per candidate first")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument(
        "--no-compile", action="store_true", help="eager only (compiling takes a minute or more)"
    )
    ap.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "out" / "bench_model.json")
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    shape = dict(SHAPE, context_length=args.context_length)
    ref = ModelConfig(**shape, attention="reference").build()
    fast = ModelConfig(**shape, attention="sdpa").build()
    fast.load_state_dict(ref.state_dict())
    builtin = BuiltinLM(**shape)
    builtin.load_state_dict(ref.state_dict())

    ids = torch.randint(0, shape["vocab_size"], (args.batch_size, args.context_length))
    targets = torch.randint(0, shape["vocab_size"], (args.batch_size, args.context_length))
    with torch.no_grad():
        want = builtin(ids)
        agree = {
            name: (m(ids) - want).abs().max().item()
            for name, m in (("lm reference", ref), ("lm sdpa", fast))
        }

    candidates = {"lm reference": ref, "lm sdpa": fast, "torch built-ins": builtin}
    if not args.no_compile:
        for name, m in list(candidates.items()):
            candidates[f"{name}, compiled"] = torch.compile(m)
    compile_s = {}
    for name, m in candidates.items():
        t = time.perf_counter()
        for _ in range(args.warmup):
            step(m, ids, targets)
        compile_s[name] = time.perf_counter() - t
        print(f"warmed up {name} ({compile_s[name]:.1f} s)", file=sys.stderr, flush=True)

    # One step of each candidate per round, in forward order on even rounds and backward on
    # odd ones, so a load change from other processes lands on all candidates alike.
    times: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates)
    for rep in range(args.reps):
        for name in order if rep % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            step(candidates[name], ids, targets)
            times[name].append(time.perf_counter() - t)
        print(f"rep {rep + 1}/{args.reps}", file=sys.stderr, flush=True)

    tokens = args.batch_size * args.context_length
    rows = []
    for name, ts in times.items():
        base = "torch built-ins" + (", compiled" if name.endswith(", compiled") else "")
        med = statistics.median(ts)
        # the ratio within each round (same load), then the median over rounds
        paired = statistics.median(b / t for b, t in zip(times[base], ts, strict=True))
        rows.append(
            {
                "candidate": name,
                "median_s": med,
                "min_s": min(ts),
                "tokens_per_s": tokens / med,
                "vs_builtins": paired,
                "vs_builtins_best": min(times[base]) / min(ts),
                "compared_with": base,
            }
        )

    print(
        f"\nForward+backward, TinyStories 17M shape (vocab {shape['vocab_size']}, d_model {shape['d_model']}, "
        f"{shape['num_layers']} layers, {shape['num_heads']} heads, d_ff {shape['d_ff']}), batch {args.batch_size} x "
        f"{args.context_length} tokens, float32, CPU {args.threads} threads, torch {torch.__version__}, "
        f"median of {args.reps} interleaved steps\n"
    )
    print("| model | tokens/s | step (ms) | vs torch built-ins | best step vs best |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['candidate']} | {r['tokens_per_s']:,.0f} | {1000 * r['median_s']:.0f} | "
            f"{r['vs_builtins']:.2f}x | {r['vs_builtins_best']:.2f}x |"
        )
    print(
        "\ntokens/s, step: medians. vs torch built-ins: the median over rounds of (built-ins' step / this "
        "step) within a round, eager against eager and compiled against compiled. best: fastest step "
        "against fastest step."
    )
    print("\nmax |logits - built-ins|: " + ", ".join(f"{k} {v:.1e}" for k, v in agree.items()))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "shape": shape,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "reps": args.reps,
                "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
                "rows": rows,
                "times_s": times,
                "warmup_s": compile_s,
                "max_abs_logit_difference": agree,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
