"""Loss and gradient utilities: ``cross_entropy``, ``chunked_cross_entropy`` (the head and
the loss a chunk of tokens at a time) and ``gradient_clipping``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from lm.errors import LMError
from lm.model.softcap import softcap

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


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``, ``chunk`` rows at a
    time, forward and backward: the logits of a chunk are made, used and dropped, and the
    backward makes them again from the saved inputs and per-row log-normalisers. With a
    ``cap``, the logits are ``cap·tanh(z/cap)`` of the head's ``z``, and the backward
    multiplies d loss/d logits by their derivative ``1 − tanh²(z/cap)``."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, cap):
        w = weight.to(hidden.dtype)  # autocast's cast, made explicit for the backward
        log_norms = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = (hidden[rows] @ w.T).float()
            if cap is not None:
                logits = softcap(logits, cap)
            log_norms[rows] = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1)
            total += (log_norms[rows] - picked).sum()
        ctx.save_for_backward(hidden, weight, targets, log_norms)
        ctx.chunk, ctx.cap = chunk, cap
        return total / hidden.shape[0]

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, targets, log_norms = ctx.saved_tensors
        w = weight.to(hidden.dtype)
        scale = grad_out.float() / hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for start in range(0, hidden.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            h = hidden[rows]
            # d loss / d logits = (softmax - onehot(target)) / N, per row
            logits = (h @ w.T).float()
            if ctx.cap is not None:
                tanh = torch.tanh(logits / ctx.cap)
                logits = ctx.cap * tanh
            probs = (logits - log_norms[rows].unsqueeze(-1)).exp_()
            probs.scatter_add_(-1, targets[rows].unsqueeze(-1), torch.full_like(probs[:, :1], -1.0))
            probs.mul_(scale)
            if ctx.cap is not None:  # d logits / d z = 1 - tanh²(z / cap)
                probs.mul_(1 - tanh.square_())
            d_logits = probs.to(hidden.dtype)
            grad_hidden[rows] = d_logits @ w
            grad_weight += (d_logits.T @ h).float()
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int,
    logit_softcap: float | None = None,
) -> torch.Tensor:
    """``cross_entropy(hidden @ weight.T, targets)`` without the logits of the whole batch
    (with ``logit_softcap`` c: of the soft-capped logits ``c·tanh(hidden @ weight.T / c)``, as
    the model's head computes them).

    ``hidden`` is ``(..., d_model)`` (the model's last hidden states), ``weight`` the head's
    ``(vocab, d_model)``, ``targets`` the matching ``(...)`` ids. The head and the float32
    log-softmax run over ``chunk`` tokens at a time, in the forward and (recomputing the
    chunk's logits) in the backward, so the largest tensor is ``chunk × vocab`` float32
    instead of ``tokens × vocab``: at 32 × 256 tokens and a 32k vocabulary, 1 GiB of
    logits (and as much again for their gradient) becomes 4 MiB per 32 tokens of chunk.
    The price is the head's matmul made twice in the backward's place of once. Equal to
    the plain loss and its gradients (float32: within 1e-6; tested).
    """
    if chunk < 1:
        raise LMError(f"the loss chunk must be >= 1 tokens, got {chunk}")
    flat = hidden.reshape(-1, hidden.shape[-1])
    return _ChunkedCrossEntropy.apply(
        flat, weight, targets.reshape(-1).long(), chunk, logit_softcap
    )
