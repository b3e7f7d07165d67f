"""The model's building blocks against torch.nn.functional and naive loop implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lm.model import (
    Embedding,
    KVCache,
    Linear,
    MultiHeadSelfAttention,
    RMSNorm,
    RotaryPositionalEmbedding,
    SiLUFFN,
    SwiGLU,
    scaled_dot_product_attention,
    silu,
    softmax,
)
from lm.model.ffn import ReLU2FFN
from lm.model.variants import silu_ffn_width


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------ naive references


def naive_rope(x: torch.Tensor, positions: list[int], theta: float) -> torch.Tensor:
    """Rotate each pair (2i, 2i+1) of x[t] by positions[t] * theta^(-2i/d), one scalar at a time."""
    seq, d = x.shape
    out = torch.empty_like(x)
    for t in range(seq):
        for i in range(d // 2):
            angle = positions[t] * theta ** (-2 * i / d)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[t, 2 * i].item(), x[t, 2 * i + 1].item()
            out[t, 2 * i] = a * c - b * s
            out[t, 2 * i + 1] = a * s + b * c
    return out


def naive_causal_attention(q, k, v):
    """q, k, v: (seq, d_k) of one head. Loops over queries and keys with Python floats."""
    seq, d_k = q.shape
    out = torch.zeros_like(v)
    for t in range(seq):
        scores = [
            sum(q[t, i].item() * k[s, i].item() for i in range(d_k)) / math.sqrt(d_k)
            for s in range(t + 1)
        ]
        m = max(scores)
        w = [math.exp(x - m) for x in scores]
        z = sum(w)
        for s in range(t + 1):
            out[t] += (w[s] / z) * v[s]
    return out


def naive_mhsa(
    attn: MultiHeadSelfAttention, x: torch.Tensor, positions=None, theta=None
) -> torch.Tensor:
    """x: (seq, d_model). Per head: project, rotate (naively), attend (naively), concatenate, project."""
    seq, d_model = x.shape
    h, d_k = attn.num_heads, attn.d_k
    q, k, v = (x @ p.weight.T for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    heads = []
    for i in range(h):
        sl = slice(i * d_k, (i + 1) * d_k)
        qh, kh, vh = q[:, sl], k[:, sl], v[:, sl]
        if theta is not None:
            pos = positions if positions is not None else list(range(seq))
            qh, kh = naive_rope(qh, pos, theta), naive_rope(kh, pos, theta)
        heads.append(naive_causal_attention(qh, kh, vh))
    return torch.cat(heads, dim=-1) @ attn.output_proj.weight.T


# ------------------------------------------------------------------------------ Linear, Embedding


def test_linear_matches_f_linear_and_stores_out_by_in():
    lin = Linear(6, 4)
    assert lin.weight.shape == (4, 6)
    assert list(dict(lin.named_parameters())) == ["weight"]
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight))


def test_linear_and_embedding_init_are_truncated_normals():
    lin = Linear(300, 500)
    std = math.sqrt(2 / 800)
    w = lin.weight.detach()
    assert abs(w.std().item() - std * 0.986) < 0.03 * std  # a ±3σ truncated normal has std 0.986σ
    assert w.abs().max().item() <= 3 * std + 1e-7
    emb = Embedding(1000, 64)
    e = emb.weight.detach()
    assert abs(e.std().item() - 0.986) < 0.02 and e.abs().max().item() <= 3.0
    assert abs(e.mean().item()) < 0.02


def test_embedding_matches_f_embedding():
    emb = Embedding(11, 5)
    ids = torch.randint(0, 11, (3, 7))
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.weight))
    assert emb(ids).shape == (3, 7, 5)
    assert emb(torch.tensor(4)).shape == (5,)  # a scalar id gives one row


def test_embedding_gradient_matches_f_embedding_and_is_deterministic_on_threads():
    # many repeats of few ids: the accumulation order of their gradients is what varies
    # between runs when the backward adds them from several threads in any order
    emb = Embedding(50, 256)
    ids = torch.randint(0, 50, (32, 256), generator=torch.Generator().manual_seed(0))
    upstream = torch.randn(32, 256, 256, generator=torch.Generator().manual_seed(1))
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grads = []
        for _ in range(8):
            emb.weight.grad = None
            emb(ids).backward(upstream)
            grads.append(emb.weight.grad.clone())
    finally:
        torch.set_num_threads(previous)
    w = emb.weight.detach().clone().requires_grad_()
    F.embedding(ids, w).backward(upstream)
    torch.testing.assert_close(grads[0], w.grad)
    for g in grads[1:]:
        assert torch.equal(g, grads[0])  # bit for bit, every time


# ------------------------------------------------------------------------------ RMSNorm, SiLU, FFN


def test_rmsnorm_matches_f_rms_norm():
    norm = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(2, 5, 16) * 3
    torch.testing.assert_close(norm(x), F.rms_norm(x, (16,), norm.weight, eps=1e-5))


def test_rmsnorm_upcasts_low_precision_and_casts_back():
    norm = RMSNorm(64)
    x = (torch.randn(4, 64) * 100).to(torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.bfloat16
    want = F.rms_norm(x.float(), (64,), norm.weight, eps=1e-5).to(torch.bfloat16)
    torch.testing.assert_close(y, want, rtol=0, atol=0)


def test_silu_and_ffns_match_functional():
    x = torch.randn(3, 8) * 4
    torch.testing.assert_close(silu(x), F.silu(x))
    ffn = SwiGLU(8, 12)
    assert (ffn.w1.weight.shape, ffn.w2.weight.shape, ffn.w3.weight.shape) == (
        (12, 8),
        (8, 12),
        (12, 8),
    )
    want = F.linear(F.silu(F.linear(x, ffn.w1.weight)) * F.linear(x, ffn.w3.weight), ffn.w2.weight)
    torch.testing.assert_close(ffn(x), want)
    plain = SiLUFFN(8, silu_ffn_width(12))
    torch.testing.assert_close(
        plain(x), F.linear(F.silu(F.linear(x, plain.w1.weight)), plain.w2.weight)
    )
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(plain) == n(ffn)  # the SiLU ablation keeps the parameter count
    relu2 = ReLU2FFN(8, silu_ffn_width(12))
    hidden = F.linear(x, relu2.w1.weight)
    want = F.linear(torch.where(hidden > 0, hidden * hidden, 0.0), relu2.w2.weight)
    torch.testing.assert_close(relu2(x), want)
    assert n(relu2) == n(ffn) and not hasattr(relu2, "w3")


# ------------------------------------------------------------------------------ softmax, attention


@pytest.mark.parametrize("dim", [0, -1, 1])
def test_softmax_matches_torch_and_is_stable(dim):
    x = torch.randn(4, 5, 6) * 10
    torch.testing.assert_close(softmax(x, dim), torch.softmax(x, dim))
    big = x + 1e4  # exp would overflow without the max shift
    torch.testing.assert_close(softmax(big, dim), torch.softmax(big, dim))
    assert torch.isfinite(softmax(big, dim)).all()


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_sdpa_matches_torch_with_causal_and_arbitrary_masks(lead):
    q, k, v = torch.randn(*lead, 5, 4), torch.randn(*lead, 7, 4), torch.randn(*lead, 7, 3)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)
    )
    mask = torch.rand(*lead, 5, 7) > 0.4
    mask[..., 0] = True  # every query sees at least one key
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, mask),
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
    )
    q, k, v = torch.randn(*lead, 6, 4), torch.randn(*lead, 6, 4), torch.randn(*lead, 6, 4)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, causal),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
    )


# ------------------------------------------------------------------------------ RoPE


def test_rope_matches_naive_loop_and_keeps_no_state():
    rope = RotaryPositionalEmbedding(theta=10000.0, d_k=8, max_seq_len=32)
    assert rope.state_dict() == {} and list(rope.parameters()) == []
    x = torch.randn(2, 6, 8)
    y = rope(x, torch.arange(6))
    for b in range(2):
        torch.testing.assert_close(y[b], naive_rope(x[b], list(range(6)), 10000.0))
    positions = torch.tensor(
        [[3, 1, 30, 0, 7, 7], [0, 1, 2, 3, 4, 5]]
    )  # any positions, per sequence
    y = rope(x, positions)
    for b in range(2):
        torch.testing.assert_close(y[b], naive_rope(x[b], positions[b].tolist(), 10000.0))
    torch.testing.assert_close(rope(x, None), rope(x, torch.arange(6)))
    # relative: <rope(q, m), rope(k, n)> depends on m - n only
    q, k = torch.randn(8), torch.randn(8)

    def dot(m, n):
        return (rope(q[None], torch.tensor([m])) @ rope(k[None], torch.tensor([n])).T).item()

    assert dot(5, 2) == pytest.approx(dot(13, 10), abs=1e-5)


# ------------------------------------------------------------------------------ multi-head attention


@pytest.mark.parametrize("attention", ["reference", "sdpa"])
@pytest.mark.parametrize("with_rope", [True, False])
def test_mhsa_matches_naive_per_head_loops(attention, with_rope):
    rope = RotaryPositionalEmbedding(10000.0, 4, 16) if with_rope else None
    attn = MultiHeadSelfAttention(8, 2, rope, attention=attention)
    x = torch.randn(2, 5, 8)
    y = attn(x)
    for b in range(2):
        want = naive_mhsa(attn, x[b], theta=10000.0 if with_rope else None)
        torch.testing.assert_close(y[b], want, rtol=1e-4, atol=1e-5)
    if with_rope:
        positions = torch.tensor([[4, 5, 6, 7, 8], [0, 2, 4, 6, 8]])
        y = attn(x, positions)
        for b in range(2):
            want = naive_mhsa(attn, x[b], positions[b].tolist(), theta=10000.0)
            torch.testing.assert_close(y[b], want, rtol=1e-4, atol=1e-5)


def test_mhsa_takes_any_leading_dims_and_unbatched_input():
    attn = MultiHeadSelfAttention(8, 2, RotaryPositionalEmbedding(10000.0, 4, 16))
    x = torch.randn(2, 3, 5, 8)
    y = attn(x, torch.arange(5).expand(2, 3, 5))
    assert y.shape == x.shape
    torch.testing.assert_close(y[1, 2], attn(x[1, 2]))


@pytest.mark.parametrize("attention", ["reference", "sdpa"])
def test_kv_cache_decoding_equals_full_forward(attention):
    attn = MultiHeadSelfAttention(
        8, 2, RotaryPositionalEmbedding(10000.0, 4, 16), attention=attention
    )
    x = torch.randn(2, 7, 8)
    full = attn(x)
    cache = KVCache()
    parts = [
        attn(x[:, :3], kv_cache=cache)
    ]  # a prefill of 3, then a chunk of 2, then one at a time
    parts.append(attn(x[:, 3:5], kv_cache=cache))
    parts += [attn(x[:, t : t + 1], kv_cache=cache) for t in (5, 6)]
    assert cache.length == 7
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ gradients


def test_gradcheck_functions_in_float64():
    opts = dict(eps=1e-6, atol=1e-5)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: softmax(t, -1), (x,), **opts)
    assert torch.autograd.gradcheck(silu, (x,), **opts)
    q, k, v = (torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    assert torch.autograd.gradcheck(
        lambda a, b, c: scaled_dot_product_attention(a, b, c, mask), (q, k, v), **opts
    )


def test_gradcheck_modules_in_float64():
    opts = dict(eps=1e-6, atol=1e-5)
    f64 = torch.float64
    x = torch.randn(2, 4, 8, dtype=f64, requires_grad=True)
    norm = RMSNorm(8, dtype=f64)
    assert torch.autograd.gradcheck(lambda t, w: torch.func.functional_call(norm, {"weight": w}, (t,)),
                                    (x, norm.weight.detach().clone().requires_grad_()), **opts)  # fmt: skip
    rope = RotaryPositionalEmbedding(10000.0, 8, 8)
    assert torch.autograd.gradcheck(lambda t: rope(t, torch.arange(4)), (x,), **opts)
    for attention in ("reference", "sdpa"):
        attn = MultiHeadSelfAttention(
            8, 2, RotaryPositionalEmbedding(10000.0, 4, 8), attention=attention, dtype=f64
        )
        params = {n: p.detach().clone().requires_grad_() for n, p in attn.named_parameters()}
        names = list(params)

        def f(t, *ws, attn=attn, names=names):
            return torch.func.functional_call(attn, dict(zip(names, ws, strict=True)), (t,))

        assert torch.autograd.gradcheck(f, (x, *params.values()), **opts)
    ffn = SwiGLU(8, 6, dtype=f64)
    assert torch.autograd.gradcheck(ffn, (x,), **opts)


@pytest.mark.parametrize("attention", ["reference", "sdpa"])
def test_qk_norm_attention_matches_functional(attention):
    """qk_norm: each head's queries and keys RMS-normalised (their own gains) before the
    scores; written with F.rms_norm and F.scaled_dot_product_attention (NoPE)."""
    attn = MultiHeadSelfAttention(8, 2, None, attention=attention, qk_norm=True)
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 1.5)
        attn.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 8)

    def heads(t):
        return t.view(3, 5, 2, 4).transpose(1, 2)

    q = F.rms_norm(heads(F.linear(x, attn.q_proj.weight)), (4,), attn.q_norm.weight, eps=1e-5)
    k = F.rms_norm(heads(F.linear(x, attn.k_proj.weight)), (4,), attn.k_norm.weight, eps=1e-5)
    v = heads(F.linear(x, attn.v_proj.weight))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(3, 5, 8)
    torch.testing.assert_close(attn(x), F.linear(out, attn.output_proj.weight))
    assert {n for n, _ in attn.named_parameters()} >= {"q_norm.weight", "k_norm.weight"}
    assert not hasattr(MultiHeadSelfAttention(8, 2), "q_norm")


@pytest.mark.parametrize("attention", ["reference", "sdpa"])
def test_value_mix_attention_matches_functional(attention):
    """value_mix: the values become (1 - λ)·v + λ·v_first before attention (written with F);
    return_values gives the layer's own values, unmixed; no v_first is an error."""
    from lm.errors import LMError

    attn = MultiHeadSelfAttention(8, 2, None, attention=attention, value_mix=True)
    assert attn.value_mix.lam.item() == 0.5
    with torch.no_grad():
        attn.value_mix.lam.fill_(0.3)
    x, v_first = torch.randn(3, 5, 8), torch.randn(3, 2, 5, 4)

    def heads(t):
        return t.view(3, 5, 2, 4).transpose(1, 2)

    q, k, v = (heads(F.linear(x, w.weight)) for w in (attn.q_proj, attn.k_proj, attn.v_proj))
    mixed = 0.7 * v + 0.3 * v_first
    out = F.scaled_dot_product_attention(q, k, mixed, is_causal=True)
    want = F.linear(out.transpose(1, 2).reshape(3, 5, 8), attn.output_proj.weight)
    got, own = attn(x, v_first=v_first, return_values=True)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(own, v)
    with pytest.raises(LMError, match="needs the first layer's values"):
        attn(x)


def test_a_zero_initialised_linear_draws_then_zeroes():
    """zero_init: the weight is zero, and the random stream advanced as for a plain layer."""
    from lm.model.linear import Linear

    torch.manual_seed(0)
    zero = Linear(6, 4, zero_init=True)
    after_zero = torch.rand(3)
    torch.manual_seed(0)
    Linear(6, 4)
    assert zero.weight.eq(0).all() and torch.equal(after_zero, torch.rand(3))
    zero.reset_parameters()
    assert zero.weight.eq(0).all()
    assert "zero_init=True" in repr(zero)
