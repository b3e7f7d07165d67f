"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2).

For each parameter θ with gradient g, at step t (counting from 1)::

    θ ← θ - lr·λ·θ                         # decoupled weight decay, on θ_{t-1}
    m ← β1·m + (1-β1)·g                    # first moment
    v ← β2·v + (1-β2)·g²                   # second moment
    θ ← θ - lr/(1-β1^t) · m / (sqrt(v/(1-β2^t)) + ε)

This is the paper's update with its schedule multiplier folded into ``lr`` (the
training loop sets ``param_group["lr"]`` every step), and it is the update
``torch.optim.AdamW`` makes, so the two agree to float rounding (tested). The CS336
handout writes the same step with ε added before the bias correction of v; the two
differ by a factor sqrt(1-β2^t) on ε, i.e. not at all at the default ε=1e-8.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from lm.errors import LMError


class AdamW(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        if not lr >= 0:
            raise LMError(f"AdamW: lr must be >= 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise LMError(f"AdamW: betas must lie in [0, 1), got {tuple(betas)}")
        if not eps >= 0:
            raise LMError(f"AdamW: eps must be >= 0, got {eps}")
        if not weight_decay >= 0:
            raise LMError(f"AdamW: weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise LMError("AdamW does not support sparse gradients; use dense embeddings")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]

                if wd != 0:
                    p.mul_(1 - lr * wd)
                m.lerp_(grad, 1 - beta1)  # m = β1·m + (1-β1)·g
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

                bias1 = 1 - beta1**t
                bias2 = 1 - beta2**t
                denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / bias1)
        return loss
