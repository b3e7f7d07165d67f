"""Resource accounting of ``TransformerLM``: parameters, FLOPs, memory and training time.

The CS336 assignment-1 problems ``transformer_accounting`` and ``adamwAccounting``, worked
out in code for any model preset, checked against the model itself:

- parameter counts against ``sum(p.numel())`` of the model built on the ``meta`` device,
- forward matmul FLOPs against ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors,
- activation memory against what autograd actually keeps for backward (a saved-tensor
  hook summing unique storages) on a small shape.

``write_reports(out_dir, presets)`` writes ``transformer.md``/``.json`` and ``adamw.md``/
``.json``; ``lm accounting`` is its command line. Counting conventions: a matmul of an
``m×n`` by an ``n×p`` matrix costs ``2mnp`` FLOPs; only matmuls are counted (norms,
softmax, RoPE and the like are O(tokens·d) or O(tokens·T) elementwise work, a few percent
at most); memory is float32 (4 bytes); GB is 10⁹ bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lm.errors import LMError
from lm.model.config import ModelConfig, load_presets, preset_config
from lm.model.variants import silu_ffn_width

BYTES_FP32 = 4
GB = 1e9
DEFAULT_MODELS = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl")
ADAMW_FLOPS_PER_PARAMETER = 14  # see adamw_step_flops
GROUPS = ("attention projections", "attention scores", "FFN", "LM head")


# ============================================================================ parameters


def ffn_width(cfg: ModelConfig) -> int:
    """The FFN's hidden width as built (SiLU uses 3/2·d_ff to match SwiGLU's size)."""
    return cfg.d_ff if cfg.ffn == "swiglu" else silu_ffn_width(cfg.d_ff)


def parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Trainable parameters by component (per layer and in total)."""
    d, f, V, L = cfg.d_model, ffn_width(cfg), cfg.vocab_size, cfg.num_layers
    attention = 4 * d * d  # q, k, v, output projections
    ffn = (3 if cfg.ffn == "swiglu" else 2) * d * f
    norms = 2 * d if cfg.norm != "none" else 0
    counts = {
        "token_embeddings": V * d,
        "attention_per_layer": attention,
        "ffn_per_layer": ffn,
        "norms_per_layer": norms,
        "attention": L * attention,
        "ffn": L * ffn,
        "norms": L * norms,
        "final_norm": d if cfg.norm != "none" else 0,
        "lm_head": V * d,
    }
    counts["total"] = sum(
        counts[k]
        for k in ("token_embeddings", "attention", "ffn", "norms", "final_norm", "lm_head")
    )
    return counts


def count_parameters_of_model(cfg: ModelConfig) -> int:
    """``sum(p.numel())`` of the ``TransformerLM`` built on the meta device (allocates nothing)."""
    return sum(p.numel() for p in cfg.build(device="meta").parameters())


# ============================================================================ FLOPs


def forward_matmuls(
    cfg: ModelConfig, batch: int = 1, seq_len: int | None = None
) -> list[dict[str, Any]]:
    """Every matrix multiply of one forward pass: ``(m×n)·(n×p)`` done ``instances`` times
    per layer (or once), FLOPs ``2·m·n·p·instances·count``."""
    T = seq_len or cfg.context_length
    B, d, h, dk, f, V, L = (
        batch,
        cfg.d_model,
        cfg.num_heads,
        cfg.d_head,
        ffn_width(cfg),
        cfg.vocab_size,
        cfg.num_layers,
    )
    BT = B * T

    def mm(name, group, m, n, p, instances=1, per="layer", what=""):
        count = L if per == "layer" else 1
        return {
            "name": name,
            "group": group,
            "per": per,
            "m": m,
            "n": n,
            "p": p,
            "instances": instances,
            "count": count,
            "shape": f"({m}×{n})·({n}×{p})" + (f" ×{instances}" if instances > 1 else ""),
            "what": what,
            "flops": 2 * m * n * p * instances * count,
        }

    rows = [
        mm("Q projection", "attention projections", BT, d, d, what="x W_Qᵀ"),
        mm("K projection", "attention projections", BT, d, d, what="x W_Kᵀ"),
        mm("V projection", "attention projections", BT, d, d, what="x W_Vᵀ"),
        mm("QKᵀ scores", "attention scores", T, dk, T, B * h, what="per head, Q Kᵀ"),
        mm("weighted sum of V", "attention scores", T, T, dk, B * h, what="per head, softmax(·) V"),
        mm("output projection", "attention projections", BT, d, d, what="heads W_Oᵀ"),
        mm("FFN W1", "FFN", BT, d, f, what="x W1ᵀ"),
    ]
    if cfg.ffn == "swiglu":
        rows.append(mm("FFN W3", "FFN", BT, d, f, what="x W3ᵀ"))
    rows.append(mm("FFN W2", "FFN", BT, f, d, what="(·) W2ᵀ"))
    rows.append(mm("LM head", "LM head", BT, d, V, per="model", what="x W_headᵀ"))
    return rows


def flop_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    total = sum(r["flops"] for r in rows)
    groups = {g: sum(r["flops"] for r in rows if r["group"] == g) for g in GROUPS}
    return {
        "total": total,
        "by_group": groups,
        "share_by_group": {g: v / total for g, v in groups.items()},
        "share_by_matmul": {r["name"]: r["flops"] / total for r in rows},
    }


def count_forward_flops_with_torch(
    cfg: ModelConfig, batch: int = 1, seq_len: int | None = None
) -> int:
    """FLOPs that ``FlopCounterMode`` counts for a forward pass of the model on meta tensors."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    T = seq_len or cfg.context_length
    model = cfg.build(device="meta")
    token_ids = torch.zeros(batch, T, dtype=torch.long, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(token_ids)
    return int(counter.get_total_flops())


# ============================================================================ activations


def activation_terms(
    cfg: ModelConfig, batch: int = 1, seq_len: int | None = None
) -> list[dict[str, Any]]:
    """The CS336 handout's activation list: each op keeps its output (floats), for ``batch``
    sequences of ``seq_len`` tokens. ``per`` is ``layer`` (times num_layers) or ``model``."""
    T = seq_len or cfg.context_length
    B, d, h, f, V = batch, cfg.d_model, cfg.num_heads, ffn_width(cfg), cfg.vocab_size
    norms = cfg.norm != "none"
    terms = []

    def term(item, symbol, floats, per="layer"):
        terms.append({"item": item, "symbol": symbol, "floats": floats, "per": per})

    if norms:
        term("RMSNorms (2)", "2·B·T·d", 2 * B * T * d)
    term("Q, K, V projections", "3·B·T·d", 3 * B * T * d)
    term("QKᵀ scores", "B·h·T²", B * h * T * T)
    term("softmax", "B·h·T²", B * h * T * T)
    term("weighted sum of values", "B·T·d", B * T * d)
    term("output projection", "B·T·d", B * T * d)
    if cfg.ffn == "swiglu":
        term("W1 and W3 matmuls", "2·B·T·d_ff", 2 * B * T * f)
        term("SiLU", "B·T·d_ff", B * T * f)
        term("elementwise product", "B·T·d_ff", B * T * f)
    else:
        term("W1 matmul", "B·T·d_ff'", B * T * f)
        term("SiLU", "B·T·d_ff'", B * T * f)
    term("W2 matmul", "B·T·d", B * T * d)
    if norms:
        term("final RMSNorm", "B·T·d", B * T * d, "model")
    term("output embedding (logits)", "B·T·V", B * T * V, "model")
    term("cross-entropy (softmax of logits)", "B·T·V", B * T * V, "model")
    return terms


def activation_floats(cfg: ModelConfig, batch: int = 1, seq_len: int | None = None) -> int:
    """Handout convention, whole model: Σ per-layer terms · num_layers + model terms."""
    terms = activation_terms(cfg, batch, seq_len)
    return sum(t["floats"] * (cfg.num_layers if t["per"] == "layer" else 1) for t in terms)


def activation_formula(cfg: ModelConfig) -> str:
    """The handout activation count as a symbolic formula (floats) for this variant."""
    c_d = (2 if cfg.norm != "none" else 0) + 3 + 1 + 1 + 1
    c_f = 4 if cfg.ffn == "swiglu" else 2
    f = "d_ff" if cfg.ffn == "swiglu" else "d_ff'"
    final = "T·d + " if cfg.norm != "none" else ""
    return f"B · [ L · ({c_d}·T·d + {c_f}·T·{f} + 2·h·T²) + {final}2·T·V ]"


def implementation_saved_floats(
    cfg: ModelConfig, batch: int, seq_len: int | None = None
) -> dict[str, int] | None:
    """Floats this implementation keeps for backward (forward + F.cross_entropy), derived by
    hand from the code for pre-norm models; ``None`` for other norms (measure those).

    Per layer: each RMSNorm keeps its input, 1/rms, x/rms and (via the next matmul) its
    output: 3·T·d + T. Attention keeps Q and K (after RoPE) and V; the reference path
    also keeps exp(scores − max) (h·T²), its row sums (h·T) and the probabilities (h·T²);
    the sdpa path keeps its output and a log-sum-exp (h·T) instead. The re-joined heads
    (T·d) feed the output projection. SwiGLU keeps W1's output, its sigmoid, the SiLU,
    W3's output and the product (5·T·d_ff); the SiLU FFN keeps W1's output, its sigmoid
    and the SiLU (3·T·d_ff'). Outside the layers: the final norm (3·T·d + T) and the
    log-softmax of the logits (T·V) plus a scalar.
    """
    if cfg.norm != "pre":
        return None
    T = seq_len or cfg.context_length
    B, d, h, f, V = batch, cfg.d_model, cfg.num_heads, ffn_width(cfg), cfg.vocab_size
    norms = 2 * (3 * T * d + T)
    ffn = (5 if cfg.ffn == "swiglu" else 3) * T * f
    qkv_heads = 3 * T * d + T * d
    if cfg.attention == "reference":
        attention = qkv_heads + 2 * h * T * T + h * T
    else:
        attention = qkv_heads + T * d + h * T  # + output of sdpa, log-sum-exp
    per_layer = B * (norms + attention + ffn)
    rest = B * (3 * T * d + T + T * V) + 1
    return {"per_layer": per_layer, "rest": rest, "total": cfg.num_layers * per_layer + rest}


def measure_saved_tensors(model, batch: int, seq_len: int) -> dict[str, int]:
    """Bytes autograd keeps for backward in ``cross_entropy(model(ids), targets)``: the unique
    storages packed by ``saved_tensors_hooks`` that are still alive after the forward pass,
    parameters and buffers excluded. Floating-point and other (ids, masks) apart."""
    import weakref

    import torch
    import torch.nn.functional as F

    skip = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    packed: list[tuple[weakref.ref, int, int, bool]] = []

    def pack(t):
        storage = t.untyped_storage()
        packed.append(
            (weakref.ref(t), storage.data_ptr(), storage.nbytes(), t.dtype.is_floating_point)
        )
        return t

    vocab = model.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=gen)
    targets = torch.randint(0, vocab, (batch, seq_len), generator=gen)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(ids).flatten(0, -2), targets.flatten())
    storages: dict[int, tuple[int, bool]] = {}
    for ref, ptr, nbytes, is_float in packed:
        if ref() is not None and ptr not in skip:  # dead: kept by a node that was freed at once
            storages[ptr] = (nbytes, is_float)
    del loss
    return {
        "float_bytes": sum(n for n, fl in storages.values() if fl),
        "other_bytes": sum(n for n, fl in storages.values() if not fl),
    }


def measure_activation_floats(cfg: ModelConfig, batch: int, seq_len: int) -> dict[str, int]:
    """Saved floats of the model with 1 and 2 layers: their difference is one layer, the
    rest is what lies outside the layers (embedding, final norm, head, loss)."""
    import torch

    out = {}
    for layers in (1, 2):
        torch.manual_seed(0)
        model = cfg.replace(num_layers=layers, context_length=max(seq_len, 1)).build()
        out[layers] = measure_saved_tensors(model, batch, seq_len)
    one, two = (out[n]["float_bytes"] // BYTES_FP32 for n in (1, 2))
    return {
        "per_layer": two - one,
        "rest": one - (two - one),
        "other_bytes_per_layer": out[2]["other_bytes"] - out[1]["other_bytes"],
    }


# ============================================================================ AdamW


def adamw_step_flops(cfg: ModelConfig, batch: int, seq_len: int | None = None) -> dict[str, int]:
    """FLOPs of one training step: forward (matmuls), backward = 2x forward, and the AdamW
    update at 14 FLOPs per parameter: m ← β1·m + (1−β1)·g (3), v ← β2·v + (1−β2)·g² (4),
    p ← p − α·m/(√v + ε) (5: sqrt, add, div, mul, sub), p ← p − α·λ·p (2)."""
    forward = flop_totals(forward_matmuls(cfg, batch, seq_len))["total"]
    optimizer = ADAMW_FLOPS_PER_PARAMETER * parameter_counts(cfg)["total"]
    return {
        "forward": forward,
        "backward": 2 * forward,
        "optimizer": optimizer,
        "total": 3 * forward + optimizer,
    }


def adamw_memory(cfg: ModelConfig, batch: int) -> dict[str, float]:
    """Peak float32 bytes of AdamW training: parameters, gradients, optimizer state (m, v),
    activations (handout convention)."""
    P = parameter_counts(cfg)["total"]
    acts = activation_floats(cfg, batch)
    parts = {
        "parameters": BYTES_FP32 * P,
        "gradients": BYTES_FP32 * P,
        "optimizer_state": 2 * BYTES_FP32 * P,
        "activations": BYTES_FP32 * acts,
    }
    parts["total"] = sum(parts.values())
    return parts


def largest_batch(static_bytes: float, per_example_bytes: float, budget_bytes: float) -> int:
    return max(0, math.floor((budget_bytes - static_bytes) / per_example_bytes))


def training_days(total_flops: float, peak_flops_per_s: float, mfu: float) -> float:
    return total_flops / (peak_flops_per_s * mfu) / 86400


# ============================================================================ reports


def _model_entry(name: str, cfg: ModelConfig, check: bool) -> dict[str, Any]:
    params = parameter_counts(cfg)
    rows = forward_matmuls(cfg)
    totals = flop_totals(rows)
    entry = {
        "name": name,
        "config": cfg.to_dict(),
        "parameters": params,
        "fp32_bytes": BYTES_FP32 * params["total"],
        "matmuls": rows,
        "flops": totals,
    }
    if check:
        counted = count_parameters_of_model(cfg)
        torch_flops = count_forward_flops_with_torch(cfg)
        entry["checks"] = {
            "parameters_of_built_model": counted,
            "parameters_match": counted == params["total"],
            "flop_counter_mode_flops": torch_flops,
            "flops_match": torch_flops == totals["total"],
        }
    return entry


def transformer_report(
    presets: Mapping[str, Mapping] | None = None,
    models: Sequence[str] | None = None,
    long_context: tuple[str, int] | None = ("gpt2-xl", 16384),
    check: bool = True,
) -> dict[str, Any]:
    """Parameters, fp32 memory and forward FLOPs of each named preset (default: the GPT-2
    family plus every other complete preset), plus ``long_context = (preset, length)``.
    ``presets`` is what ``load_presets`` returns (default: the built-in ones)."""
    presets = load_presets() if presets is None else presets
    if models is None:
        models = [m for m in DEFAULT_MODELS if m in presets]
        models += [m for m in presets if m not in models and "vocab_size" in presets[m]]
    entries = [_model_entry(m, preset_config(presets, m), check) for m in models]
    if long_context:
        name, length = long_context
        cfg = preset_config(presets, name, context_length=int(length))
        entries.append(_model_entry(f"{name} @ context {length}", cfg, check))
    report = {"models": entries, "conventions": __doc__.split("Counting conventions: ")[1].strip()}
    report["findings"] = _transformer_findings(entries, long_context)
    return report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if x == 0 or abs(x) >= 0.001 else f"{100 * x:.3f}%"


def _num(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def _flops(n: float) -> str:
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g} FLOP"


def _transformer_findings(entries: list[dict], long_context) -> list[str]:
    """Prose written from the computed numbers: what dominates, and how shares move."""
    out = []
    by_name = {e["name"]: e for e in entries}
    base = [e for e in entries if "@ context" not in e["name"]]
    if long_context and long_context[0] in by_name:
        ref = by_name[long_context[0]]
    else:
        ref = max(base, key=lambda e: e["parameters"]["total"])
    p, cfg = ref["parameters"], ref["config"]
    shares = ref["flops"]["share_by_group"]
    top = max(shares, key=shares.get)
    out.append(
        f"{ref['name']} has {p['total']:,} trainable parameters ({_num(p['total'])}); in float32 they take "
        f"{ref['fp32_bytes'] / GB:.2f} GB. The {cfg['num_layers']} layers hold {_pct((p['attention'] + p['ffn'] + p['norms']) / p['total'])} "
        f"of them, the token embeddings and the LM head {_pct(p['token_embeddings'] / p['total'])} each."
    )
    out.append(
        f"One forward pass of a {cfg['context_length']}-token sequence through {ref['name']} costs "
        f"{_flops(ref['flops']['total'])} in matrix multiplies. The {top} matmuls take the most, {_pct(shares[top])}; "
        + "then "
        + ", ".join(
            f"{g} {_pct(s)}" for g, s in sorted(shares.items(), key=lambda kv: -kv[1]) if g != top
        )
        + "."
    )
    family = sorted(
        (
            e
            for e in base
            if e["config"]["vocab_size"] == cfg["vocab_size"]
            and e["config"]["context_length"] == cfg["context_length"]
        ),
        key=lambda e: e["parameters"]["total"],
    )
    if len(family) >= 2:
        small, large = family[0], family[-1]
        moves = []
        for g in GROUPS:
            a, b = small["flops"]["share_by_group"][g], large["flops"]["share_by_group"][g]
            verb = "grows" if b > a + 0.005 else "shrinks" if b < a - 0.005 else "stays"
            moves.append(f"the {g} share {verb} from {_pct(a)} to {_pct(b)}")
        why = ""
        s0, s1 = small["flops"]["share_by_group"], large["flops"]["share_by_group"]
        if s1["LM head"] < s0["LM head"] and s1["attention scores"] < s0["attention scores"]:
            why = (
                " Per layer, the projections and the FFN grow as d_model² while the score matmuls grow as "
                "context²·d_model and the LM head only as d_model (times a fixed vocabulary), so the bigger the "
                "model, the more the FFN and the projections dominate."
            )
        out.append(
            f"From {small['name']} to {large['name']} (same vocabulary and context): "
            + "; ".join(moves)
            + "."
            + why
        )
    long = next((e for e in entries if "@ context" in e["name"]), None)
    if long is not None and long_context and long_context[0] in by_name:
        short = by_name[long_context[0]]
        ratio = long["flops"]["total"] / short["flops"]["total"]
        tokens = long["config"]["context_length"] / short["config"]["context_length"]
        s0, s1 = short["flops"]["share_by_group"], long["flops"]["share_by_group"]
        out.append(
            f"At context {long['config']['context_length']} instead of {short['config']['context_length']} "
            f"({tokens:g}x the tokens), a forward pass of {long_context[0]} costs {_flops(long['flops']['total'])}, "
            f"{ratio:.1f}x as much: the attention scores (QKᵀ and the weighted sum, quadratic in context) go from "
            f"{_pct(s0['attention scores'])} to {_pct(s1['attention scores'])} of the FLOPs, while the FFN falls from "
            f"{_pct(s0['FFN'])} to {_pct(s1['FFN'])} and the projections from {_pct(s0['attention projections'])} to "
            f"{_pct(s1['attention projections'])}. The parameter count does not change (RoPE has no parameters)."
        )
    return out


def render_transformer_md(report: dict[str, Any]) -> str:
    lines = ["# Transformer accounting", ""]
    lines += [
        "Parameters, float32 memory and forward-pass FLOPs of each model (CS336 `transformer_accounting`). "
        "Conventions: " + " ".join(report["conventions"].replace("``", "`").split()),
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {f}" for f in report["findings"]] + [""]
    lines += ["## Parameters", ""]
    head = "| model | embedding | attention / layer | FFN / layer | norms / layer | layers (all) | final norm | LM head | total | fp32 memory |"
    lines += [head, "| --- " + "| ---: " * 9 + "|"]
    for e in report["models"]:
        p = e["parameters"]
        layers = p["attention"] + p["ffn"] + p["norms"]
        lines.append(
            f"| {e['name']} | {p['token_embeddings']:,} | {p['attention_per_layer']:,} | {p['ffn_per_layer']:,} | "
            f"{p['norms_per_layer']:,} | {layers:,} | {p['final_norm']:,} | {p['lm_head']:,} | **{p['total']:,}** | "
            f"{e['fp32_bytes'] / GB:.2f} GB |"
        )
    lines += [
        "",
        "Shares of the parameters:",
        "",
        "| model | embedding | attention | FFN | norms | LM head |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in report["models"]:
        p, t = e["parameters"], e["parameters"]["total"]
        lines.append(
            f"| {e['name']} | {_pct(p['token_embeddings'] / t)} | {_pct(p['attention'] / t)} | {_pct(p['ffn'] / t)} | "
            f"{_pct((p['norms'] + p['final_norm']) / t)} | {_pct(p['lm_head'] / t)} |"
        )
    lines += [
        "",
        "## Forward FLOPs by group",
        "",
        "One sequence of the model's context length (batch 1).",
        "",
    ]
    lines += [
        "| model | context | total | " + " | ".join(GROUPS) + " |",
        "| --- | ---: | ---: |" + " ---: |" * len(GROUPS),
    ]
    for e in report["models"]:
        s = e["flops"]["share_by_group"]
        lines.append(
            f"| {e['name']} | {e['config']['context_length']} | {_flops(e['flops']['total'])} | "
            + " | ".join(f"{_flops(e['flops']['by_group'][g])} ({_pct(s[g])})" for g in GROUPS)
            + " |"
        )
    for e in report["models"]:
        cfg = e["config"]
        lines += [
            "",
            f"## Matrix multiplies of {e['name']}",
            "",
            f"d_model={cfg['d_model']}, layers={cfg['num_layers']}, heads={cfg['num_heads']} (d_k={cfg['d_model'] // cfg['num_heads']}), "
            f"d_ff={cfg['d_ff']}, vocab={cfg['vocab_size']}, context={cfg['context_length']}, FFN {cfg['ffn']}. "
            "Shapes are (m×n)·(n×p) for one instance; ×h is once per head.",
            "",
            "| matmul | computes | shape | times | FLOPs | share |",
            "| --- | --- | --- | ---: | ---: | ---: |",
        ]
        for r in e["matmuls"]:
            times = f"{r['count']} layers" if r["per"] == "layer" else "once"
            lines.append(
                f"| {r['name']} | {r['what']} | {r['shape']} | {times} | {r['flops']:,} | {_pct(e['flops']['share_by_matmul'][r['name']])} |"
            )
        lines.append(f"| **total** | | | | **{e['flops']['total']:,}** | 100% |")
    lines += ["", "## Checked against the code", ""]
    if all("checks" in e for e in report["models"]):
        lines += [
            "Parameters: `sum(p.numel())` of `TransformerLM` built on the meta device. FLOPs: "
            "`torch.utils.flop_counter.FlopCounterMode` over a forward pass on meta tensors.",
            "",
            "| model | parameters (built model) | match | FLOPs (FlopCounterMode) | match |",
            "| --- | ---: | :---: | ---: | :---: |",
        ]
        for e in report["models"]:
            c = e["checks"]
            lines.append(
                f"| {e['name']} | {c['parameters_of_built_model']:,} | {'yes' if c['parameters_match'] else '**NO**'} | "
                f"{c['flop_counter_mode_flops']:,} | {'yes' if c['flops_match'] else '**NO**'} |"
            )
    else:
        lines.append("(not checked in this run)")
    return "\n".join(lines) + "\n"


def adamw_report(
    cfg: ModelConfig,
    name: str = "gpt2-xl",
    memory_budget_gb: float = 80.0,
    train_batch: int = 1024,
    train_steps: int = 400_000,
    peak_tflops: float = 19.5,
    mfu: float = 0.5,
    measure: bool = True,
) -> dict[str, Any]:
    """Peak AdamW memory (formula in batch size), the largest batch in the budget, FLOPs per
    step and days to train, for ``cfg``; activations checked against autograd."""
    P = parameter_counts(cfg)["total"]
    static = 4 * BYTES_FP32 * P
    per_example = BYTES_FP32 * activation_floats(cfg, 1)
    budget = memory_budget_gb * GB
    impl = {
        a: implementation_saved_floats(cfg.replace(attention=a), 1) for a in ("reference", "sdpa")
    }
    step = adamw_step_flops(cfg, train_batch)
    total_train = step["total"] * train_steps
    report: dict[str, Any] = {
        "model": name,
        "config": cfg.to_dict(),
        "parameters": P,
        "memory_formula": {
            "symbolic_bytes": f"4 · (4·P + A(B)),  A(B) = {activation_formula(cfg)}",
            "parameters_bytes": BYTES_FP32 * P,
            "gradients_bytes": BYTES_FP32 * P,
            "optimizer_state_bytes": 2 * BYTES_FP32 * P,
            "static_bytes": static,
            "activation_bytes_per_example": per_example,
            "evaluated": f"{static / GB:.2f} GB + {per_example / GB:.2f} GB · B",
        },
        "activation_terms_batch1": activation_terms(cfg, 1),
        "memory_at_batch": {str(b): adamw_memory(cfg, b) for b in (1, 2, 4, 8)},
        "memory_budget_gb": memory_budget_gb,
        "largest_batch": largest_batch(static, per_example, budget),
        "implementation": {
            a: None
            if v is None
            else {
                "activation_bytes_per_example": BYTES_FP32 * v["total"],
                "largest_batch": largest_batch(static, BYTES_FP32 * v["total"], budget),
            }
            for a, v in impl.items()
        },
        "step_flops": {
            "batch": train_batch,
            **step,
            "formula": "3 · F_fwd(B) + 14 · P,  F_fwd(B) = B · Σ 2mnp over the forward matmuls",
        },
        "training": {
            "steps": train_steps,
            "batch": train_batch,
            "total_flops": total_train,
            "peak_flops_per_s": peak_tflops * 1e12,
            "mfu": mfu,
            "days": training_days(total_train, peak_tflops * 1e12, mfu),
        },
    }
    if measure:
        report["measured"] = _measured_activation_check(cfg)
    return report


# a small shape where every symbol differs, so each term is told apart
MEASURE_SHAPE = dict(batch=2, seq_len=16, d_model=32, num_heads=4, d_ff=48, vocab_size=97)


def _measured_activation_check(cfg: ModelConfig) -> dict[str, Any]:
    s = MEASURE_SHAPE
    small = cfg.replace(
        d_model=s["d_model"],
        num_heads=s["num_heads"],
        d_ff=s["d_ff"],
        vocab_size=s["vocab_size"],
        context_length=s["seq_len"],
    )
    one_layer = small.replace(num_layers=1)
    handout_layer = sum(
        t["floats"] for t in activation_terms(one_layer, s["batch"]) if t["per"] == "layer"
    )
    handout_rest = sum(
        t["floats"] for t in activation_terms(one_layer, s["batch"]) if t["per"] == "model"
    )
    out = {"shape": {**s, "num_layers": "1 and 2"}, "paths": {}}
    for attention in ("reference", "sdpa"):
        c = small.replace(attention=attention)
        measured = measure_activation_floats(c, s["batch"], s["seq_len"])
        derived = implementation_saved_floats(c, s["batch"])
        out["paths"][attention] = {
            "measured_per_layer": measured["per_layer"],
            "measured_rest": measured["rest"],
            "measured_other_bytes_per_layer": measured["other_bytes_per_layer"],
            "derived_per_layer": None if derived is None else derived["per_layer"],
            "derived_rest": None if derived is None else derived["rest"],
            "handout_per_layer": handout_layer,
            "handout_rest": handout_rest,
        }
    return out


def render_adamw_md(r: dict[str, Any]) -> str:
    cfg, mf = r["config"], r["memory_formula"]
    d, h, f, V, T, L = (
        cfg["d_model"],
        cfg["num_heads"],
        cfg["d_ff"],
        cfg["vocab_size"],
        cfg["context_length"],
        cfg["num_layers"],
    )
    tr, st = r["training"], r["step_flops"]
    lines = [
        f"# AdamW accounting: {r['model']}",
        "",
        f"Float32 training with AdamW (CS336 `adamwAccounting`). {r['model']}: L={L} layers, d={d}, h={h} heads, "
        f"d_ff={f}, V={V}, T={T} (context), P={r['parameters']:,} parameters. GB = 10⁹ bytes.",
        "",
        "## Peak memory",
        "",
        "Parameters, gradients and AdamW's two moment estimates take 4 bytes per parameter each; "
        "activations follow the handout's list, each op keeping its output:",
        "",
        "```",
        f"memory(B) = {mf['symbolic_bytes']}",
        f"          = {mf['evaluated']}",
        "```",
        "",
        "| part | bytes | GB |",
        "| --- | ---: | ---: |",
        f"| parameters (4·P) | {mf['parameters_bytes']:,} | {mf['parameters_bytes'] / GB:.2f} |",
        f"| gradients (4·P) | {mf['gradients_bytes']:,} | {mf['gradients_bytes'] / GB:.2f} |",
        f"| optimizer state m, v (8·P) | {mf['optimizer_state_bytes']:,} | {mf['optimizer_state_bytes'] / GB:.2f} |",
        f"| activations per sequence (4·A(1)) | {mf['activation_bytes_per_example']:,} | {mf['activation_bytes_per_example'] / GB:.2f} |",
        "",
        "Activations of one sequence, by item (floats):",
        "",
        "| item | floats | per | × | total floats |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for t in r["activation_terms_batch1"]:
        times = L if t["per"] == "layer" else 1
        lines.append(
            f"| {t['item']} ({t['symbol']}) | {t['floats']:,} | {t['per']} | {times} | {t['floats'] * times:,} |"
        )
    lines += ["", "| batch | total |", "| ---: | ---: |"]
    for b, m in r["memory_at_batch"].items():
        lines.append(f"| {b} | {m['total'] / GB:.1f} GB |")
    budget = r["memory_budget_gb"]
    lines += [
        "",
        f"**Largest batch in {budget:g} GB: {r['largest_batch']}** "
        f"(floor(({budget:g} − {mf['static_bytes'] / GB:.2f}) / {mf['activation_bytes_per_example'] / GB:.2f})).",
    ]
    impl = r["implementation"]
    if impl.get("reference") and impl.get("sdpa"):
        lines += [
            "",
            "What this implementation keeps is a little different (next section): per sequence "
            f"{impl['reference']['activation_bytes_per_example'] / GB:.2f} GB with `attention: reference` "
            f"(largest batch {impl['reference']['largest_batch']}) and "
            f"{impl['sdpa']['activation_bytes_per_example'] / GB:.2f} GB with `attention: sdpa`, whose fused kernel "
            f"keeps no T×T matrices (largest batch {impl['sdpa']['largest_batch']}).",
        ]
    lines += [
        "",
        "## FLOPs and time",
        "",
        f"One AdamW step at batch {st['batch']}: forward {_flops(st['forward'])} (matmuls), backward "
        f"{_flops(st['backward'])} (2x forward), optimizer {_flops(st['optimizer'])} ({ADAMW_FLOPS_PER_PARAMETER} FLOPs "
        f"per parameter: 3 for m, 4 for v, 5 for the update, 2 for weight decay), total {_flops(st['total'])}.",
        "",
        "```",
        f"FLOPs per step = {st['formula']}",
        "```",
        "",
        f"Training {tr['steps']:,} steps at batch {tr['batch']} takes {tr['total_flops']:.3e} FLOPs. On one A100 "
        f"at {tr['peak_flops_per_s'] / 1e12:g} TFLOP/s (float32) and {_pct(tr['mfu'])} MFU, that is "
        f"{tr['total_flops'] / (tr['peak_flops_per_s'] * tr['mfu']):.3e} s = **{tr['days']:,.0f} days** "
        f"({tr['days'] / 365.25:.1f} years).",
    ]
    if "measured" in r:
        scale = ""
        if impl.get("reference") and impl.get("sdpa"):
            handout = mf["activation_bytes_per_example"]
            ref, fast = (impl[a]["activation_bytes_per_example"] for a in ("reference", "sdpa"))
            scale = (
                f"At {r['model']} scale (one sequence) the handout formula gives {handout / GB:.2f} GB of activations; "
                f"this implementation keeps {ref / GB:.2f} GB on the reference path ({ref / handout - 1:+.0%}) and "
                f"{fast / GB:.2f} GB on the sdpa path ({fast / handout - 1:+.0%}): the T² terms dominate there, so "
                "the fused attention kernel matters far more than the norm and SiLU intermediates."
            )
        lines += _render_measured(r["measured"], scale)
    return "\n".join(lines) + "\n"


def _maybe(n: int | None) -> str:
    return "n/a (pre-norm only)" if n is None else f"{n:,}"


def _render_measured(m: dict[str, Any], scale: str = "") -> list[str]:
    s = m["shape"]
    lines = [
        "",
        "## Checked against autograd",
        "",
        f"The same architecture at B={s['batch']}, T={s['seq_len']}, d={s['d_model']}, h={s['num_heads']}, "
        f"d_ff={s['d_ff']}, V={s['vocab_size']}, with 1 and 2 layers: the floats autograd keeps for backward "
        "(unique storages packed by `torch.autograd.graph.saved_tensors_hooks`, parameters and buffers "
        "excluded, forward + `F.cross_entropy`). Two layers minus one is a layer; the rest lies outside the layers.",
        "",
        "| attention path | per layer: measured | derived from the code | handout formula | outside layers: measured | derived | handout |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path, p in m["paths"].items():
        lines.append(
            f"| {path} | {p['measured_per_layer']:,} | {_maybe(p['derived_per_layer'])} | "
            f"{p['handout_per_layer']:,} | {p['measured_rest']:,} | {_maybe(p['derived_rest'])} | "
            f"{p['handout_rest']:,} |"
        )
    lines += [
        "",
        "Why the measured numbers differ from the handout's (per layer, B·T tokens):",
        "",
        "- **RMSNorm** (handout 2·BTd): our RMSNorm is written out, so autograd keeps for each norm its input, "
        "1/rms (BT), x/rms before the gain, and the output (kept by the next matmul): 3·BTd + BT per norm. "
        "A fused `F.rms_norm` would keep only the input and 1/rms.",
        "- **QKᵀ and softmax** (handout 2·BhT²): the scores themselves are not kept (the mask, subtraction and "
        "exp need no inputs for backward); the reference softmax keeps exp(scores − max) (BhT²) and its row "
        "sums (BhT), and the weighted sum keeps the probabilities (BhT²): 2·BhT² + BhT. The sdpa path keeps no "
        "T×T matrix at all, only its output (BTd) and a log-sum-exp per row (BhT), and recomputes the scores "
        "in backward.",
        "- **Output projection and W2 outputs** (handout BTd each): not kept; they are added to the residual "
        "stream, which is counted as the next norm's input.",
        "- **SwiGLU** (handout 4·BTd_ff): silu(a) is written as a·sigmoid(a), so sigmoid(a) is kept too: 5·BTd_ff.",
        "- **Outside the layers** (handout BTd + 2·BTV): the final norm keeps 3·BTd + BT as above; the logits "
        "are not kept (log-softmax keeps only its output, BTV), so the loss adds BTV rather than 2·BTV. "
        "Token ids, targets and the causal mask are integers/booleans, not counted as floats.",
        "",
        "The derived column is that accounting written as a formula (`implementation_saved_floats`): "
        + (
            "it equals the measurement exactly on both paths."
            if all(
                p["derived_per_layer"] == p["measured_per_layer"]
                and p["derived_rest"] == p["measured_rest"]
                for p in m["paths"].values()
            )
            else "**it does not equal the measurement** (the code changed since the formula was written)."
        ),
    ]
    if scale:
        lines += ["", scale]
    return lines


def build_reports(
    presets: Mapping[str, Mapping] | str | Path | None = None,
    models: Sequence[str] | None = None,
    preset: str = "gpt2-xl",
    context_length: int = 16384,
    memory_budget_gb: float = 80.0,
    train_batch: int = 1024,
    train_steps: int = 400_000,
    peak_tflops: float = 19.5,
    mfu: float = 0.5,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The transformer and AdamW reports (dicts; see :func:`write_reports` for the arguments)."""
    loaded = load_presets(presets)
    if preset not in loaded:
        preset_config(loaded, preset)  # raises with a suggestion
    cfg = preset_config(loaded, preset)
    t = transformer_report(loaded, models, (preset, context_length) if context_length else None)
    a = adamw_report(cfg, preset, memory_budget_gb, train_batch, train_steps, peak_tflops, mfu)
    return t, a


def check_reports(transformer: dict[str, Any], where: str) -> None:
    """Raise if a model's counted parameters or FLOPs disagree with the built model."""
    bad = [
        e["name"]
        for e in transformer["models"]
        if "checks" in e and not (e["checks"]["parameters_match"] and e["checks"]["flops_match"])
    ]
    if bad:
        raise LMError(
            f"accounting disagrees with the model for {', '.join(bad)}; see {where} (a bug: please report it)"
        )


def write_reports(out_dir: str | Path, **settings: Any) -> list[Path]:
    """Write transformer.md/.json and adamw.md/.json under ``out_dir``; return their paths.

    Settings (all optional): ``presets``, a mapping or a YAML file of presets (merged over
    the built-in GPT-2 ones); ``models``, which to tabulate (default: GPT-2 family + every
    complete user preset); ``preset`` at ``context_length``: the long-context row, and the
    model of the AdamW report; ``memory_budget_gb``, ``train_batch``, ``train_steps``,
    ``peak_tflops`` and ``mfu`` for the AdamW report.
    """
    from lm.io import write_json, write_text

    t, a = build_reports(**settings)
    out = Path(out_dir)
    paths = [out / "transformer.json", out / "transformer.md", out / "adamw.json", out / "adamw.md"]
    write_json(paths[0], t)
    write_text(paths[1], render_transformer_md(t))
    write_json(paths[2], a)
    write_text(paths[3], render_adamw_md(a))
    check_reports(t, str(paths[1]))
    return paths
