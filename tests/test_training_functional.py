"""cross_entropy, gradient_clipping and the schedules (cosine, wsd) against independent references."""

import math

import pytest
import torch
import torch.nn.functional as F

from lm.errors import LMError
from lm.training import cross_entropy, get_lr_cosine_schedule, gradient_clipping
from lm.training.functional import chunked_cross_entropy
from lm.training.run_config import ScheduleConfig
from lm.training.schedule import get_lr_wsd_schedule, scheduled_lr


def test_cross_entropy_matches_torch_any_leading_dims():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 11, generator=g)
    targets = torch.randint(0, 11, (2, 3, 5), generator=g)
    expected = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1))
    torch.testing.assert_close(cross_entropy(logits, targets), expected)
    torch.testing.assert_close(
        cross_entropy(logits[0, 0], targets[0, 0]), F.cross_entropy(logits[0, 0], targets[0, 0])
    )


def test_cross_entropy_is_stable_for_large_logits():
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [5e4, 5e4, 0.0]])
    targets = torch.tensor([1, 0])
    out = cross_entropy(logits, targets)
    assert torch.isfinite(out)
    torch.testing.assert_close(out, F.cross_entropy(logits, targets))


def test_cross_entropy_gradient_matches_torch():
    logits = torch.randn(4, 6, 9, requires_grad=True)
    targets = torch.randint(0, 9, (4, 6))
    cross_entropy(logits, targets).backward()
    ref = logits.detach().clone().requires_grad_(True)
    F.cross_entropy(ref.reshape(-1, 9), targets.reshape(-1)).backward()
    torch.testing.assert_close(logits.grad, ref.grad)


def _params_with_grads(scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(3, 4), (5,), (2, 2, 2)]]
    for p in params[:2]:
        p.grad = scale * torch.randn(p.shape, generator=g)
    return params  # the last has no grad


@pytest.mark.parametrize("scale,max_norm", [(10.0, 1.0), (0.01, 1.0), (1.0, 0.5)])
def test_gradient_clipping_matches_torch(scale, max_norm):
    ours, ref = _params_with_grads(scale), _params_with_grads(scale)
    norm = gradient_clipping(ours, max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    torch.testing.assert_close(norm, ref_norm)
    for a, b in zip(ours, ref, strict=True):
        if b.grad is None:
            assert a.grad is None
        else:
            torch.testing.assert_close(a.grad, b.grad)


def test_gradient_clipping_inf_only_measures():
    params = _params_with_grads(10.0)
    before = [p.grad.clone() for p in params[:2]]
    norm = gradient_clipping(params, math.inf)
    assert norm > 1
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before, strict=False))


def test_cosine_schedule_points():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_iters=7, cosine_cycle_iters=21)
    lrs = [get_lr_cosine_schedule(it, **kw) for it in range(25)]
    assert lrs[0] == 0.0
    assert lrs[3] == pytest.approx(3 / 7)
    assert lrs[7] == pytest.approx(1.0)  # warmup ends at max
    assert lrs[14] == pytest.approx(0.55)  # halfway through the cosine: the midpoint
    assert lrs[21] == pytest.approx(0.1)
    assert lrs[22:] == [0.1] * 3  # flat after the cycle
    assert all(a >= b for a, b in zip(lrs[7:], lrs[8:], strict=False))  # monotone decay


def test_cosine_schedule_without_warmup_and_degenerate_cycle():
    assert get_lr_cosine_schedule(0, 1.0, 0.0, 0, 10) == 1.0
    assert get_lr_cosine_schedule(5, 1.0, 0.0, 5, 5) == 1.0
    assert get_lr_cosine_schedule(6, 1.0, 0.0, 5, 5) == 0.0


def test_gradient_clipping_of_mixed_dtypes_matches_torch():
    # the list operations split by dtype; the result is still one global norm
    ours, ref = _params_with_grads(10.0), _params_with_grads(10.0)
    for params in (ours, ref):
        grad = params[1].grad.double()
        params[1] = torch.nn.Parameter(params[1].detach().double())
        params[1].grad = grad
    norm = gradient_clipping(ours, 1.0)
    torch.testing.assert_close(norm, torch.nn.utils.clip_grad_norm_(ref, 1.0).float())
    for a, b in zip(ours[:2], ref[:2], strict=True):
        assert a.grad.dtype == b.grad.dtype
        torch.testing.assert_close(a.grad, b.grad)


def _wsd_reference(it, max_lr, min_lr, warmup, end, fraction, shape):
    # written out again from the definition: warmup line, plateau, decay to the floor
    decay_start = max(warmup, end - fraction * end)
    if it < warmup:
        return max_lr * it / warmup
    if it <= decay_start:
        return max_lr if it < end else min_lr
    if it >= end:
        return min_lr
    done = (it - decay_start) / (end - decay_start)
    left = 1 - done if shape == "linear" else 1 - done**0.5
    return min_lr + (max_lr - min_lr) * left


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
@pytest.mark.parametrize(
    "warmup, end, fraction",
    [(10, 200, 0.2), (0, 97, 0.35), (30, 50, 0.9), (5, 40, 0.0), (0, 7, 1.0)],
)
def test_wsd_schedule_matches_a_plain_reimplementation(shape, warmup, end, fraction):
    for it in range(end + 20):
        got = get_lr_wsd_schedule(it, 3e-3, 3e-4, warmup, end, fraction, shape)
        want = _wsd_reference(it, 3e-3, 3e-4, warmup, end, fraction, shape)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), it


def test_wsd_schedule_points():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_iters=10, decay_end_iters=100, decay_fraction=0.2)
    lrs = [get_lr_wsd_schedule(it, **kw) for it in range(110)]
    assert lrs[5] == pytest.approx(0.5)
    assert lrs[10:81] == [1.0] * 71  # stable from the warmup's end to the decay's start (80)
    assert lrs[90] == pytest.approx(0.55)  # halfway through a linear decay
    assert lrs[100:] == [0.1] * 10
    sqrt = get_lr_wsd_schedule(90, **kw, decay_shape="1-sqrt")
    assert sqrt == pytest.approx(0.1 + 0.9 * (1 - 0.5**0.5))
    with pytest.raises(LMError, match="decay_shape must be one of linear, 1-sqrt"):
        get_lr_wsd_schedule(90, **kw, decay_shape="cosine")


def test_scheduled_lr_follows_the_schedule_name():
    plan = {"warmup_iters": 5, "cosine_cycle_iters": 50}
    cosine, wsd = ScheduleConfig(), ScheduleConfig(name="wsd", decay_fraction=0.4)
    for it in range(0, 60, 3):
        assert scheduled_lr(it, cosine, 1.0, 0.1, plan) == get_lr_cosine_schedule(
            it, 1.0, 0.1, 5, 50
        )
        assert scheduled_lr(it, wsd, 1.0, 0.1, plan) == get_lr_wsd_schedule(
            it, 1.0, 0.1, 5, 50, 0.4
        )


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_cross_entropy_equals_the_plain_loss_and_its_gradients(chunk):
    """float32: the loss and its gradients w.r.t. the hidden states and the head weight
    equal those of F.cross_entropy on the whole logits, within 1e-6."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 50, 16, generator=g, requires_grad=True)
    weight = (0.5 * torch.randn(97, 16, generator=g)).requires_grad_()
    targets = torch.randint(0, 97, (3, 50), generator=g)
    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()

    loss = chunked_cross_entropy(hidden, weight, targets, chunk)
    (3.0 * loss).backward()  # an upstream gradient other than 1
    plain = F.cross_entropy((h2 @ w2.T).reshape(-1, 97), targets.reshape(-1))
    (3.0 * plain).backward()
    torch.testing.assert_close(loss, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(hidden.grad, h2.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(weight.grad, w2.grad, rtol=0, atol=1e-6)
    with pytest.raises(LMError, match="loss chunk must be >= 1"):
        chunked_cross_entropy(hidden, weight, targets, 0)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
@pytest.mark.parametrize("cap", [0.5, 2.0, 10.0])
def test_chunked_cross_entropy_with_a_soft_cap_equals_the_plain_loss(chunk, cap):
    """model.logit_softcap inside the chunked loss: equal, with its gradients, to
    F.cross_entropy of cap·tanh(logits/cap) made whole, within 1e-6 in float32 (logits of
    std 2, so the small caps saturate many of them)."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 40, 16, generator=g, requires_grad=True)
    weight = (0.5 * torch.randn(97, 16, generator=g)).requires_grad_()
    targets = torch.randint(0, 97, (2, 40), generator=g)
    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()

    loss = chunked_cross_entropy(hidden, weight, targets, chunk, logit_softcap=cap)
    (2.0 * loss).backward()
    logits = h2 @ w2.T
    plain = F.cross_entropy((cap * torch.tanh(logits / cap)).reshape(-1, 97), targets.reshape(-1))
    (2.0 * plain).backward()
    torch.testing.assert_close(loss, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(hidden.grad, h2.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(weight.grad, w2.grad, rtol=0, atol=1e-6)
    uncapped = chunked_cross_entropy(hidden, weight, targets, chunk)
    assert abs(uncapped.item() - loss.item()) > 1e-3  # the cap is in play


def _largest_allocation(fn) -> int:
    """The largest single CPU allocation (bytes) an op makes while ``fn`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.self_cpu_memory_usage for e in prof.events())


def test_chunked_cross_entropy_never_allocates_the_whole_logits():
    """Forward and backward: the plain loss allocates the N×V float32 logits (the measure
    sees them); the chunked one nothing near their size."""
    n, vocab, d, chunk = 2048, 1024, 16, 128
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    weight = torch.randn(vocab, d, generator=g, requires_grad=True)
    targets = torch.randint(0, vocab, (n,), generator=g)
    logits_bytes = n * vocab * 4

    def plain():
        F.cross_entropy(hidden @ weight.T, targets).backward()

    def chunked():
        chunked_cross_entropy(hidden, weight, targets, chunk).backward()

    assert _largest_allocation(plain) >= logits_bytes
    largest = _largest_allocation(chunked)
    assert largest <= 2 * chunk * vocab * 4 < logits_bytes / 4, largest
