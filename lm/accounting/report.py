"""The accounting reports (CS336 ``transformer_accounting`` and ``adamwAccounting``):
the numbers of each preset in JSON, their Markdown rendering, and generated findings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lm.accounting.checks import (
    check_reports,
    count_forward_flops_with_torch,
    count_parameters_of_model,
    measured_activation_check,
)
from lm.accounting.formulas import (
    ADAMW_FLOPS_PER_PARAMETER,
    BYTES_FP32,
    CONVENTIONS,
    GB,
    GROUPS,
    activation_floats,
    activation_formula,
    activation_terms,
    adamw_memory,
    adamw_step_flops,
    flop_totals,
    forward_matmuls,
    implementation_saved_floats,
    largest_batch,
    parameter_counts,
    training_days,
)
from lm.model.config import ModelConfig, load_presets, preset_config

DEFAULT_MODELS = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl")


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
    report = {"models": entries, "conventions": CONVENTIONS}
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
        + (
            f"of them, the token embeddings and the LM head {_pct(p['token_embeddings'] / p['total'])} each."
            if p["lm_head"]
            else f"of them, the token embeddings (the LM head's too: tied) {_pct(p['token_embeddings'] / p['total'])}."
        )
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
        report["measured"] = measured_activation_check(cfg)
    return report


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


def write_reports(out_dir: str | Path, **settings: Any) -> list[Path]:
    """Write transformer.md/.json and adamw.md/.json under ``out_dir``; return their paths.

    Settings (all optional): ``presets``, a mapping or a YAML file of presets (merged over
    the built-in GPT-2 ones); ``models``, which to tabulate (default: GPT-2 family + every
    complete user preset); ``preset`` at ``context_length``: the long-context row, and the
    model of the AdamW report; ``memory_budget_gb``, ``train_batch``, ``train_steps``,
    ``peak_tflops`` and ``mfu`` for the AdamW report.
    """
    from lm.io import write_json, write_text
    from lm.provenance import with_provenance

    t, a = build_reports(**settings)
    out = Path(out_dir)
    paths = [out / "transformer.json", out / "transformer.md", out / "adamw.json", out / "adamw.md"]
    write_json(paths[0], with_provenance(t, "accounting"))
    write_text(paths[1], render_transformer_md(t))
    write_json(paths[2], with_provenance(a, "accounting"))
    write_text(paths[3], render_adamw_md(a))
    check_reports(t, str(paths[1]))
    return paths
