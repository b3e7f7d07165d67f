"""The accounting checked against the model itself, not a second formula:

- parameter counts against ``sum(p.numel())`` of the model built on the ``meta`` device,
- forward matmul FLOPs against ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors,
- activation memory against what autograd actually keeps for backward (a saved-tensor
  hook summing unique storages) on a small shape.
"""

from __future__ import annotations

from typing import Any

from lm.accounting.formulas import BYTES_FP32, activation_terms, implementation_saved_floats
from lm.errors import LMError
from lm.model.config import ModelConfig


def count_parameters_of_model(cfg: ModelConfig) -> int:
    """``sum(p.numel())`` of the ``TransformerLM`` built on the meta device (allocates nothing)."""
    return sum(p.numel() for p in cfg.build(device="meta").parameters())


def count_forward_flops_with_torch(
    cfg: ModelConfig, batch: int = 1, seq_len: int | None = None
) -> int:
    """FLOPs that ``FlopCounterMode`` counts for a forward pass of the model on meta tensors.

    The layers of the model are identical, so its cost is that of a 1-layer copy plus
    ``num_layers - 1`` times what a second layer adds: two small models are counted instead
    of the whole one (48 layers of GPT-2 XL at 16,384 tokens took seconds), with the same
    result to the FLOP (tested against counting the whole model).
    """
    one = _counted_forward_flops(cfg.replace(num_layers=1), batch, seq_len)
    if cfg.num_layers == 1:
        return one
    two = _counted_forward_flops(cfg.replace(num_layers=2), batch, seq_len)
    return one + (cfg.num_layers - 1) * (two - one)


def _counted_forward_flops(cfg: ModelConfig, batch: int, seq_len: int | None) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    T = seq_len or cfg.context_length
    model = cfg.build(device="meta")
    token_ids = torch.zeros(batch, T, dtype=torch.long, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(token_ids)
    return int(counter.get_total_flops())


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


MEASURE_SHAPE = dict(batch=2, seq_len=16, d_model=32, num_heads=4, d_ff=48, vocab_size=97)


def measured_activation_check(cfg: ModelConfig) -> dict[str, Any]:
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
