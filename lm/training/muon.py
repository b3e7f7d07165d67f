"""Muon for the hidden matrices, AdamW for everything else, as one optimizer.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers") keeps a momentum of the
gradient of each 2-D weight and steps along that momentum *orthogonalised*: the matrix
with the same singular vectors and all singular values near 1, so that every direction
the momentum spans moves at the same rate, however small its singular value. For a weight
W (rows × cols) with gradient G, at learning rate lr::

    B ← μ·B + (1-μ)·G                      # momentum, an exponential average
    D ← (1-μ)·G + μ·B   (nesterov)  or  B   # the direction
    O ← NS_k(D)                             # ≈ U·Vᵀ of D = U·S·Vᵀ (below)
    W ← W - lr·λ·W                          # decoupled weight decay
    W ← W - lr·s·O                          # s = sqrt(max(1, rows/cols)) ("original"),
                                            #  or 0.2·sqrt(max(rows, cols)) ("match_rms_adamw")

NS_k is k steps of a quintic Newton-Schulz iteration on X = D/‖D‖_F (so that every
singular value is at most 1): with A = X·Xᵀ, ``X ← a·X + (b·A + c·A²)·X``, i.e. each
singular value σ ↦ a·σ + b·σ³ + c·σ⁵. The coefficients (3.4445, -4.7750, 2.0315) push
small singular values up fast and leave all of them in about [0.7, 1.2] after five steps
(not exactly 1: it is cheaper, and no worse for training). (1.5, -0.5, 0) is the classic
cubic iteration, which converges to U·Vᵀ itself (the tests check both). The iteration
works on the wide orientation (rows ≤ cols, transposing a tall matrix), where A is the
smaller Gram matrix, and in bfloat16 by default, as ``torch.optim.Muon`` does: the result
needs no more precision than that, and a GPU multiplies bfloat16 matrices fastest.

These are ``torch.optim.Muon``'s conventions (torch >= 2.9), so the two agree step for
step (tested): the exponential momentum, nesterov as a lerp, the weight decay at the
unscaled lr, the shape scaling of the update only.

Muon is for the hidden layers' matrices only: the embedding (a lookup, not a linear map
of its input), the output head, and the norms' gains and biases take AdamW
(:func:`muon_param_groups` splits a model's parameters so). :class:`MuonAdamW` is one
``torch.optim.Optimizer`` holding both kinds of group (a group with ``muon: True`` takes
Muon), so that the training loop, its checkpoints and its resumes see a single optimizer.
A group's ``lr_scale`` is its learning rate relative to the schedule's: the loop sets each
group's ``lr`` to the schedule's value times it (Muon's peak lr is ~20× AdamW's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from lm.errors import LMError
from lm.training.optim import AdamW

#: Newton-Schulz coefficients (a, b, c) of torch.optim.Muon (Keller Jordan's).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7
ADJUST_LR = ("original", "match_rms_adamw")


def orthogonalize(
    m: torch.Tensor,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = NS_EPS,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """``steps`` Newton-Schulz steps on the 2-D ``m`` (see the module's doc), in ``dtype``."""
    if m.dim() != 2:
        raise LMError(f"Muon orthogonalises matrices; got a tensor of shape {tuple(m.shape)}")
    a, b, c = coefficients
    x = m.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b·A + c·A·A
        x = torch.addmm(x, poly, x, beta=a)  # a·X + poly·X
    return x.T if tall else x


def lr_scale_for_shape(shape: torch.Size, adjust_lr: str) -> float:
    """The factor of a ``rows × cols`` matrix's update (see the module's doc)."""
    rows, cols = shape
    if adjust_lr == "original":
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    raise LMError(f"Muon: adjust_lr must be one of {', '.join(ADJUST_LR)}, got {adjust_lr!r}")


class MuonAdamW(AdamW):
    """Muon for the groups with ``muon: True``, AdamW (:class:`lm.training.optim.AdamW`)
    for the others. Muon's settings: ``momentum`` μ, ``nesterov``, ``ns_steps``,
    ``ns_coefficients``, ``ns_eps``, ``adjust_lr`` (and ``ns_dtype``, of all groups); AdamW's: ``betas``,
    ``eps``; both: ``lr``, ``weight_decay``. Each may be set per group."""

    def __init__(
        self,
        params: Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = NS_STEPS,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        ns_eps: float = NS_EPS,
        ns_dtype: torch.dtype = torch.bfloat16,
        adjust_lr: str = "original",
        foreach: bool = True,
    ):
        if not 0 <= momentum < 1:
            raise LMError(f"Muon: momentum must lie in [0, 1), got {momentum}")
        if not 1 <= ns_steps < 100:
            raise LMError(f"Muon: ns_steps must be between 1 and 99, got {ns_steps}")
        lr_scale_for_shape(torch.Size((1, 1)), adjust_lr)  # checks the name
        super().__init__(params, lr, betas, eps, weight_decay, foreach=foreach)
        muon = dict(
            momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
            ns_coefficients=tuple(ns_coefficients), ns_eps=ns_eps, adjust_lr=adjust_lr,
            muon=False,
        )  # fmt: skip
        self.ns_dtype = ns_dtype  # of the optimizer, not of its state: checkpoints hold no dtype
        self.defaults.update(muon)
        for group in self.param_groups:
            for key, value in muon.items():
                group.setdefault(key, value)
            if group["muon"]:
                for p in group["params"]:
                    if p.dim() != 2:
                        raise LMError(
                            f"Muon takes matrices only; a Muon group holds a parameter of shape "
                            f"{tuple(p.shape)}: give it to an AdamW group (muon: False)"
                        )

    def _step_group(self, group: dict, params: list[torch.nn.Parameter]) -> None:
        if not group["muon"]:
            return super()._step_group(group, params)
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        for p in params:
            grad = p.grad
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(grad)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1 - mu)  # μ·B + (1-μ)·G
            direction = grad.lerp(buf, mu) if group["nesterov"] else buf
            update = orthogonalize(
                direction, group["ns_steps"], group["ns_coefficients"], group["ns_eps"],
                self.ns_dtype,
            )  # fmt: skip
            if wd != 0:
                p.mul_(1 - lr * wd)
            p.add_(update, alpha=-lr * lr_scale_for_shape(p.shape, group["adjust_lr"]))


def muon_param_groups(
    model: torch.nn.Module, *, lr_scale: float, weight_decay: float, adamw_weight_decay: float
) -> list[dict]:
    """The parameters of a :class:`lm.model.transformer.TransformerLM` for
    :class:`MuonAdamW`: the matrices of its blocks (attention and FFN projections) in a
    Muon group at ``lr_scale`` times the schedule's lr; the embedding and the head in an
    AdamW group with ``adamw_weight_decay``; gains and biases in an AdamW group without."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise LMError(
            f"Muon needs a model whose hidden blocks are its .layers; {type(model).__name__} has none"
        )
    hidden = {id(p) for p in layers.parameters() if p.dim() == 2}
    muon, decay, no_decay = [], [], []
    for p in model.parameters():
        if p.requires_grad:
            if id(p) in hidden:
                muon.append(p)
            else:
                (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": muon, "muon": True, "lr_scale": lr_scale, "weight_decay": weight_decay},
        {"params": decay, "weight_decay": adamw_weight_decay},
    ]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
