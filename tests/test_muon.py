"""Muon (lm.training.muon) against torch.optim.Muon step by step, and its Newton-Schulz
iteration against the SVD."""

import copy

import pytest
import torch

from lm.errors import LMError
from lm.model.config import ModelConfig
from lm.training.muon import MuonAdamW, muon_param_groups, orthogonalize


@pytest.fixture(autouse=True)
def _one_thread():
    # bfloat16 products of tiny matrices on a busy CPU: two threads take seconds, one
    # milliseconds (the numbers are the same)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(seed=0):
    # a wide and a tall matrix (the iteration transposes the tall one), then a biased head
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(7, 13, bias=False),
        torch.nn.Tanh(),
        torch.nn.Linear(13, 9, bias=False),
        torch.nn.Tanh(),
        torch.nn.Linear(9, 5),
    )


def _loss(model, g):
    x = torch.randn(16, 7, generator=g)
    y = torch.randn(16, 5, generator=g)
    return ((model(x) - y) ** 2).mean()


def _hidden(model):
    return [model[0].weight, model[2].weight]


def _rest(model):
    return [model[4].weight, model[4].bias]


def _assert_same(a, b):
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0),
        dict(lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.1),
        dict(lr=0.01, momentum=0.0, nesterov=True, weight_decay=0.01, adjust_lr="match_rms_adamw"),
        dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0, ns_steps=3),
    ],
)
def test_matches_torch_muon_step_for_step(kw):
    """Every Muon parameter equals torch.optim.Muon's within 1e-6 after every step (float32)."""
    ours, ref = _model(), _model()
    torch_kw = {("adjust_lr_fn" if k == "adjust_lr" else k): v for k, v in kw.items()}
    opt = MuonAdamW([{"params": _hidden(ours), "muon": True}], **kw)
    ref_opt = torch.optim.Muon(_hidden(ref), **torch_kw)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    moved = 0.0
    for _ in range(25):
        for model, o, g in ((ours, opt, g1), (ref, ref_opt, g2)):
            o.zero_grad()
            _loss(model, g).backward()
            o.step()
        _assert_same(ours, ref)
        moved = max(moved, (ours[0].weight - _model()[0].weight).abs().max().item())
    assert moved > 0.02  # the weights really moved (the comparison is not of two idle models)


def test_muon_and_adamw_groups_match_torch_pair_with_changing_lr():
    """Hidden matrices by Muon, the head by AdamW, in one optimizer, at a changing lr with
    the Muon group's lr_scale: equal to torch.optim.Muon + torch.optim.AdamW side by side."""
    ours, ref = _model(), _model()
    opt = MuonAdamW(
        [
            {"params": _hidden(ours), "muon": True, "lr_scale": 20.0},
            {"params": _rest(ours), "weight_decay": 0.1},
        ],
        betas=(0.9, 0.95),
        weight_decay=0.0,
    )
    ref_muon = torch.optim.Muon(_hidden(ref), weight_decay=0.0)
    ref_adamw = torch.optim.AdamW(_rest(ref), betas=(0.9, 0.95), weight_decay=0.1)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for t in range(30):
        lr = 1e-3 * (t + 1) / 30
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        ref_muon.param_groups[0]["lr"] = 20.0 * lr
        ref_adamw.param_groups[0]["lr"] = lr
        opt.zero_grad()
        _loss(ours, g1).backward()
        opt.step()
        ref_muon.zero_grad()
        ref_adamw.zero_grad()
        _loss(ref, g2).backward()
        ref_muon.step()
        ref_adamw.step()
        _assert_same(ours, ref)


def test_state_dict_round_trip_continues_identically():
    def make(model):
        return MuonAdamW(
            [{"params": _hidden(model), "muon": True}, {"params": _rest(model)}], lr=0.02
        )

    model = _model()
    opt = make(model)
    g = torch.Generator().manual_seed(5)
    for _ in range(4):
        opt.zero_grad()
        _loss(model, g).backward()
        opt.step()
    clone = copy.deepcopy(model)
    opt2 = make(clone)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert "momentum_buffer" in opt2.state[clone[0].weight]
    assert "exp_avg" in opt2.state[clone[4].weight]
    for m, o in ((model, opt), (clone, opt2)):
        gg = torch.Generator().manual_seed(6)
        for _ in range(3):
            o.zero_grad()
            _loss(m, gg).backward()
            o.step()
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (8, 8)])
def test_cubic_newton_schulz_converges_to_the_polar_factor(shape):
    """With the classic cubic coefficients (1.5, -0.5, 0), in float32, the iteration
    converges to U·Vᵀ of the SVD; Muon's quintic leaves the singular values near 1."""
    g = torch.Generator().manual_seed(0)
    q1, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=g))
    q2, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=g))
    k = min(shape)
    s = torch.linspace(1.0, 0.3, k)  # well conditioned: the cubic converges in ~40 steps
    m = q1[:, :k] @ torch.diag(s) @ q2[:, :k].T
    u, _, vh = torch.linalg.svd(m, full_matrices=False)
    polar = orthogonalize(m, steps=60, coefficients=(1.5, -0.5, 0.0), dtype=torch.float32)
    torch.testing.assert_close(polar, u @ vh, rtol=0, atol=1e-5)

    quintic = orthogonalize(m, dtype=torch.float32)
    sv = torch.linalg.svdvals(quintic)
    assert sv.min() > 0.6 and sv.max() < 1.25
    # the same singular vectors: O = U·S'·Vᵀ with S' diagonal
    inner = u.T @ quintic @ vh.T
    torch.testing.assert_close(inner, torch.diag(torch.diagonal(inner)), rtol=0, atol=1e-4)


def test_refuses_what_muon_cannot_take():
    bias = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(LMError, match=r"matrices only.*shape \(3,\)"):
        MuonAdamW([{"params": [bias], "muon": True}])
    with pytest.raises(LMError, match="adjust_lr must be one of original, match_rms_adamw"):
        MuonAdamW([{"params": [bias]}], adjust_lr="rms")
    with pytest.raises(LMError, match="momentum"):
        MuonAdamW([{"params": [bias]}], momentum=1.0)


def test_param_groups_of_the_transformer():
    """Muon gets exactly the blocks' matrices; embedding and head take AdamW with decay,
    the gains AdamW without."""
    model = ModelConfig(
        vocab_size=50, context_length=8, d_model=16, num_layers=2, num_heads=2, d_ff=24
    ).build()
    groups = muon_param_groups(model, lr_scale=20.0, weight_decay=0.0, adamw_weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    muon, decay, no_decay = ({names[id(p)] for p in g["params"]} for g in groups)
    assert muon == {
        n for n, p in model.named_parameters() if n.startswith("layers.") and p.dim() == 2
    }
    assert decay == {"token_embeddings.weight", "lm_head.weight"}
    assert no_decay == {n for n, p in model.named_parameters() if p.dim() == 1}
    assert len(muon) == 2 * (4 + 3)  # q, k, v, output; w1, w2, w3 per block
    assert groups[0]["muon"] and groups[0]["lr_scale"] == 20.0
    assert groups[1]["weight_decay"] == 0.1 and groups[2]["weight_decay"] == 0.0
    with pytest.raises(LMError, match=r"\.layers"):
        muon_param_groups(torch.nn.Linear(2, 2), lr_scale=1, weight_decay=0, adamw_weight_decay=0)
