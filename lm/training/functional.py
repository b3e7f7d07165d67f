"""Loss and gradient utilities: ``cross_entropy`` and ``gradient_clipping``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

CLIP_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits)``.

    ``logits`` is ``(..., vocab)`` and ``targets`` the matching ``(...)`` integer ids;
    any leading dimensions are averaged over. Computed in float32 with the
    log-sum-exp shift (subtract the row max), so large logits neither overflow nor lose
    precision under bf16 autocast. Equals ``torch.nn.functional.cross_entropy``.
    """
    logits = logits.float()
    shift = logits.amax(dim=-1, keepdim=True).detach()
    shifted = logits - shift
    log_normalizer = torch.logsumexp(shifted, dim=-1)  # log Σ exp(x - max)
    target_logit = shifted.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return (log_normalizer - target_logit).mean()


@torch.no_grad()
def gradient_clipping(parameters: Iterable[torch.nn.Parameter], max_l2_norm: float) -> torch.Tensor:
    """Scale all gradients together so their global L2 norm is at most ``max_l2_norm``.

    The norm is taken over every gradient as one vector. When it exceeds the limit,
    each gradient is multiplied by ``max_l2_norm / (norm + 1e-6)``, as
    ``torch.nn.utils.clip_grad_norm_`` does. Returns the norm before clipping (a
    0-d tensor, on the gradients' device, so logging it does not force a sync).
    ``max_l2_norm=math.inf`` only measures the norm.
    """
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    # Each list operation is one kernel per device and dtype (not one per gradient): the
    # per-gradient norms, then the norm of those norms.
    norms = torch.stack([n.float() for n in torch._foreach_norm(grads, 2.0)])
    total = torch.linalg.vector_norm(norms, 2.0)
    if math.isinf(max_l2_norm):  # measure only
        return total
    coef = torch.clamp(max_l2_norm / (total + CLIP_EPS), max=1.0)
    torch._foreach_mul_(grads, coef)
    return total
