"""AdamW against torch.optim.AdamW, step by step."""

import copy

import pytest
import torch

from lm.errors import LMError
from lm.training import AdamW


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.Tanh(), torch.nn.Linear(13, 5))


def _train(opt_cls, steps=60, lr_schedule=None, **kw):
    model = _model()
    opt = opt_cls(model.parameters(), **kw)
    g = torch.Generator().manual_seed(1)
    for t in range(steps):
        if lr_schedule:
            for group in opt.param_groups:
                group["lr"] = lr_schedule(t)
        x = torch.randn(16, 7, generator=g)
        y = torch.randn(16, 5, generator=g)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
        dict(lr=3e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1),
        dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-8, weight_decay=0.0),
    ],
)
def test_matches_torch_adamw(kw):
    ours, _ = _train(AdamW, **kw)
    ref, _ = _train(torch.optim.AdamW, **kw)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_matches_torch_adamw_with_changing_lr():
    sched = lambda t: 1e-2 * (t + 1) / 60  # noqa: E731
    ours, _ = _train(AdamW, lr_schedule=sched, lr=0.0, weight_decay=0.1)
    ref, _ = _train(torch.optim.AdamW, lr_schedule=sched, lr=0.0, weight_decay=0.1)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_continues_identically():
    model, opt = _train(AdamW, steps=5, lr=1e-2)
    clone = _model()
    clone.load_state_dict(model.state_dict())
    opt2 = AdamW(clone.parameters(), lr=1e-2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # a fresh copy, as from disk
    x = torch.randn(4, 7)
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_param_without_grad_is_skipped():
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = AdamW([p, q], lr=0.1, weight_decay=0.5)
    p.sum().backward()
    opt.step()
    assert torch.equal(q, torch.ones(3)) and not torch.equal(p, torch.ones(3))


@pytest.mark.parametrize(
    "kw", [dict(lr=-1.0), dict(betas=(1.0, 0.9)), dict(eps=-1.0), dict(weight_decay=-0.1)]
)
def test_bad_hyperparameters(kw):
    with pytest.raises(LMError):
        AdamW([torch.nn.Parameter(torch.ones(2))], **kw)


def _random_params(seed):
    """Tensors of several shapes, two dtypes (so the foreach path splits its lists) and
    two param groups, one without weight decay."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(13, 7), (7,), (5, 3, 2), (1,), (64, 33)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    params.append(torch.nn.Parameter(torch.randn(9, 4, generator=g, dtype=torch.float64)))
    return params


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_foreach_step_equals_the_per_parameter_reference(wd):
    runs = {}
    for foreach in (False, True):
        params = _random_params(0)
        groups = [{"params": params[:4]}, {"params": params[4:], "weight_decay": 0.0}]
        opt = AdamW(groups, lr=3e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=wd, foreach=foreach)
        g = torch.Generator().manual_seed(1)
        for t in range(7):
            for group in opt.param_groups:
                group["lr"] = 3e-2 * (t + 1) / 7
            for i, p in enumerate(params):
                # parameter 1 sits out steps 2 and 5, so its step count lags the others'
                skip = i == 1 and t in (2, 5)
                p.grad = None if skip else torch.randn(p.shape, generator=g, dtype=p.dtype)
            opt.step()
        runs[foreach] = (params, opt)
    (ref, ref_opt), (fast, fast_opt) = runs[False], runs[True]
    assert ref_opt.state[ref[1]]["step"] == fast_opt.state[fast[1]]["step"] == 5
    for a, b, start in zip(ref, fast, _random_params(0), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
        assert not torch.equal(a, start)  # the steps did move it
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(
                fast_opt.state[b][key], ref_opt.state[a][key], rtol=0, atol=1e-6
            )
