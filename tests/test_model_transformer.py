"""TransformerLM: state-dict names, variants, the logits path against torch built-ins,
causality, context length, state-dict errors, KV cache, autocast, meta and torch.compile."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
import yaml

from lm import TransformerLM
from lm.errors import LMError
from lm.model import (
    VARIANTS,
    ContextLengthError,
    ModelConfig,
    RotaryPositionalEmbedding,
    TransformerBlock,
    load_presets,
    preset_config,
)

SHAPE = dict(
    vocab_size=37,
    context_length=12,
    d_model=16,
    num_layers=2,
    num_heads=4,
    d_ff=24,
    rope_theta=100.0,
)
ALL_VARIANTS = [
    dict(norm=n, position=p, ffn=f)
    for n, p, f in itertools.product(VARIANTS["norm"], VARIANTS["position"], VARIANTS["ffn"])
]


def make(seed=0, **kw):
    torch.manual_seed(seed)
    return TransformerLM(**{**SHAPE, **kw})


def ids(batch=2, seq=SHAPE["context_length"], seed=1):
    return torch.randint(
        0, SHAPE["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(seed)
    )


# ------------------------------------------------------------------------------ names


def test_state_dict_names_are_the_designs():
    names = list(make().state_dict())
    want = ["token_embeddings.weight"]
    for i in range(SHAPE["num_layers"]):
        want += [
            f"layers.{i}.attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "output_proj")
        ]
        want += [f"layers.{i}.ln1.weight"] + [
            f"layers.{i}.ffn.{w}.weight" for w in ("w1", "w2", "w3")
        ]
        want += [f"layers.{i}.ln2.weight"]
    want += ["ln_final.weight", "lm_head.weight"]
    assert names == want
    m = make()
    assert m.lm_head.weight.shape == (SHAPE["vocab_size"], SHAPE["d_model"])
    assert m.layers[0].ffn.w1.weight.shape == (SHAPE["d_ff"], SHAPE["d_model"])
    assert m.layers[0].attn.q_proj.weight.shape == (SHAPE["d_model"], SHAPE["d_model"])


def test_variant_state_dicts():
    no_norm = set(make(norm="none").state_dict())
    assert not any(".ln" in n or n.startswith("ln_") for n in no_norm)
    assert set(make(norm="post").state_dict()) == set(make().state_dict())
    assert set(make(position="nope").state_dict()) == set(make().state_dict())
    silu = make(ffn="silu")
    assert not any("w3" in n for n in silu.state_dict())
    assert silu.layers[0].ffn.w1.weight.shape == (3 * SHAPE["d_ff"] // 2, SHAPE["d_model"])
    assert silu.num_parameters() == make().num_parameters()
    relu2 = make(ffn="relu2")
    assert set(relu2.state_dict()) == set(silu.state_dict())
    assert type(relu2.layers[0].ffn).__name__ == "ReLU2FFN"
    x = ids()
    torch.testing.assert_close(  # the squared ReLU, written with F: only the FFN differs
        relu2.layers[0].ffn(relu2.token_embeddings(x)),
        F.linear(
            F.relu(F.linear(relu2.token_embeddings(x), relu2.layers[0].ffn.w1.weight)) ** 2,
            relu2.layers[0].ffn.w2.weight,
        ),
    )
    with pytest.raises(LMError, match="norm='layer'.*pre, post, none"):
        make(norm="layer")


# ------------------------------------------------------------------------------ against torch built-ins


def complex_rope(x, theta):
    """RoPE as complex multiplication of (x[2i] + i·x[2i+1]) by e^{i·pos·theta^(-2i/d)}."""
    *_, seq, d = x.shape
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = torch.polar(
        torch.ones(seq, d // 2, dtype=torch.float64),
        torch.outer(torch.arange(seq, dtype=torch.float64), freqs),
    )
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * rot).reshape(x.shape).to(x.dtype)


def builtin_forward(
    sd, ids, *, num_layers, num_heads, rope_theta,
    value_residual=False, logit_softcap=None, tie_embeddings=False, **_,
):  # fmt: skip
    """The default TransformerLM written with F.embedding, F.rms_norm, F.linear, F.silu, F.sdpa;
    and the recipe's options as their papers write them: value residual (the values of
    layer i > 0 are (1 - λ_i)·v_i + λ_i·v_0), the soft-cap c·tanh(logits/c), the tied head
    (the embedding matrix as the head)."""
    x = F.embedding(ids, sd["token_embeddings.weight"])
    b, n, d = x.shape
    v0 = None
    for i in range(num_layers):
        p = f"layers.{i}."
        h = F.rms_norm(x, (d,), sd[p + "ln1.weight"], eps=1e-5)
        q, k, v = (
            F.linear(h, sd[p + f"attn.{w}.weight"]).view(b, n, num_heads, -1).transpose(1, 2)
            for w in ("q_proj", "k_proj", "v_proj")
        )
        if value_residual and i == 0:
            v0 = v
        elif value_residual:
            lam = sd[p + "attn.value_mix.lam"]
            v = (1 - lam) * v + lam * v0
        a = F.scaled_dot_product_attention(
            complex_rope(q, rope_theta), complex_rope(k, rope_theta), v, is_causal=True
        )
        x = x + F.linear(a.transpose(1, 2).reshape(b, n, d), sd[p + "attn.output_proj.weight"])
        h = F.rms_norm(x, (d,), sd[p + "ln2.weight"], eps=1e-5)
        x = x + F.linear(
            F.silu(F.linear(h, sd[p + "ffn.w1.weight"])) * F.linear(h, sd[p + "ffn.w3.weight"]),
            sd[p + "ffn.w2.weight"],
        )
    head = sd["token_embeddings.weight" if tie_embeddings else "lm_head.weight"]
    logits = F.linear(F.rms_norm(x, (d,), sd["ln_final.weight"], eps=1e-5), head)
    return logits if logit_softcap is None else logit_softcap * torch.tanh(logits / logit_softcap)


#: The recipe's model options, alone and together (zero_init_proj is how the weights start:
#: its forward is the default's, tested in test_zero_init_projections_...)
OPTIONS = [
    {},
    {"value_residual": True},
    {"logit_softcap": 2.0},
    {"tie_embeddings": True},
    {"value_residual": True, "logit_softcap": 3.0, "tie_embeddings": True, "num_layers": 3},
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("attention", ["reference", "sdpa"])
def test_logits_loss_and_gradients_match_torch_builtins(attention, options):
    model = make(attention=attention, **options)
    with torch.no_grad():  # λ away from its initial 1/2, one per layer after the first
        for i, layer in enumerate(model.layers[1:]):
            if hasattr(layer.attn, "value_mix"):
                layer.attn.value_mix.lam.fill_(0.2 + 0.5 * i)
    x, y = ids(seed=1), ids(seed=2)
    sd = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    want = builtin_forward(sd, x, **{**SHAPE, **options})
    logits = model(x)
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-5)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    want_loss = F.cross_entropy(want.flatten(0, 1), y.flatten())
    torch.testing.assert_close(loss, want_loss)
    loss.backward()
    want_loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, sd[n].grad, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("variant", ALL_VARIANTS, ids=lambda v: "-".join(v.values()))
def test_reference_and_sdpa_paths_agree_and_are_causal(variant):
    ref, fast = make(**variant, attention="reference"), make(**variant, attention="sdpa")
    fast.load_state_dict(ref.state_dict())
    x = ids()
    out = ref(x)
    torch.testing.assert_close(fast(x), out, rtol=1e-4, atol=1e-5)
    # changing the token at t changes nothing before t (float64, so rounding cannot hide a leak)
    t = 7
    x2 = x.clone()
    x2[:, t] = (x2[:, t] + 1) % SHAPE["vocab_size"]
    for attention in VARIANTS["attention"]:
        m = make(**variant, attention=attention, dtype=torch.float64)
        before, after = m(x), m(x2)
        torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=1e-12)
        assert not torch.allclose(after[:, t:], before[:, t:])
    # a shorter sequence gives the logits of the prefix
    torch.testing.assert_close(ref(x[:, :5]), out[:, :5], rtol=1e-5, atol=1e-6)


def test_post_norm_and_no_norm_blocks_compose_as_documented():
    x = torch.randn(2, 5, 16)
    post = TransformerBlock(16, 4, 24, 8, 100.0, norm="post")
    h = post.ln1(x + post.attn(x))
    torch.testing.assert_close(post(x), post.ln2(h + post.ffn(h)))
    bare = TransformerBlock(16, 4, 24, 8, 100.0, norm="none", position="nope")
    assert bare.attn.rope is None
    h = x + bare.attn(x)
    torch.testing.assert_close(bare(x), h + bare.ffn(h))


# ------------------------------------------------------------------------------ input errors


def test_longer_than_context_is_rejected_naming_both_lengths():
    model = make()
    with pytest.raises(ContextLengthError, match=r"13 tokens.*context_length=12") as e:
        model(ids(seq=13))
    assert isinstance(e.value, LMError) and isinstance(e.value, ValueError)
    assert model(ids(seq=1)).shape == (2, 1, SHAPE["vocab_size"])


def test_loading_a_differently_shaped_state_dict_names_the_tensor():
    small = make()
    wider = make(d_ff=32)
    with pytest.raises(
        LMError,
        match=r"layers\.0\.ffn\.w1\.weight: \(32, 16\) in the state dict, \(24, 16\) in the model",
    ) as e:
        small.load_state_dict(wider.state_dict())
    assert isinstance(e.value, RuntimeError)  # as nn.Module's own error is
    deeper = make(num_layers=3)
    with pytest.raises(LMError, match=r"(?s)unexpected: layers\.2\..*num_layers=3"):
        small.load_state_dict(deeper.state_dict())
    compiled_names = {f"_orig_mod.{k}": v for k, v in small.state_dict().items()}
    with pytest.raises(LMError, match="_orig_mod"):
        small.load_state_dict(compiled_names)


# ------------------------------------------------------------------------------ generation, devices, dtypes


@pytest.mark.parametrize("attention", ["reference", "sdpa"])
def test_kv_cache_generation_matches_full_forward(attention):
    model = make(attention=attention)
    x = ids(batch=1)
    full = model(x)
    cache = model.new_kv_cache()
    steps = [model(x[:, :4], kv_cache=cache)] + [
        model(x[:, t : t + 1], kv_cache=cache) for t in range(4, 12)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)
    with pytest.raises(ContextLengthError, match="12 cached"):
        model(x[:, :1], kv_cache=cache)


def test_bf16_autocast_on_cpu_runs_and_stays_close():
    model = make(attention="sdpa")
    x = ids()
    want = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.1 * want.abs().max()
    got.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_meta_device_and_dtype():
    m = TransformerLM(**SHAPE, device="meta")
    assert all(p.is_meta for p in m.parameters())
    assert m(ids().to("meta")).shape == (2, 12, 37)
    m.to_empty(device="cpu").reset_parameters()  # materialise, then initialise
    rope = m.layers[0].attn.rope
    torch.testing.assert_close(rope.cos, RotaryPositionalEmbedding(100.0, 4, 12).cos)
    assert torch.isfinite(m(ids())).all() and m.ln_final.weight.eq(1).all()
    m64 = TransformerLM(**SHAPE, dtype=torch.float64)
    assert m64(ids()).dtype == torch.float64


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # torch.jit internals, inside torch.compile
@pytest.mark.slow
def test_torch_compile_fullgraph_forward_and_backward():
    """Inductor on the sdpa path (a ~20 s cold compile); the reference path traced whole."""
    torch._dynamo.reset()
    fast = make(attention="sdpa", num_layers=1)
    x = ids()
    compiled = torch.compile(fast, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, fast(x), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in fast.parameters())
    ref = make(num_layers=1, norm="post", ffn="silu")
    out = torch.compile(ref, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ config and presets


def test_model_config_builds_and_names_bad_keys():
    cfg = ModelConfig.from_dict(SHAPE)
    assert cfg.build().num_parameters() == make().num_parameters()
    with pytest.raises(LMError, match=r"unknown model key 'd_mdoel' \(did you mean 'd_model'\?\)"):
        ModelConfig.from_dict({**SHAPE, "d_mdoel": 3})
    with pytest.raises(LMError, match="missing model key.*vocab_size"):
        ModelConfig.from_dict({k: v for k, v in SHAPE.items() if k != "vocab_size"})
    with pytest.raises(LMError, match="not divisible by num_heads=5"):
        ModelConfig.from_dict({**SHAPE, "num_heads": 5})
    with pytest.raises(LMError, match="ffn='gelu'"):
        ModelConfig.from_dict({**SHAPE, "ffn": "gelu"})


def test_presets_from_yaml_models_section(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "datasets": {},
                "models": {
                    "tiny": {**SHAPE, "norm": "post", "description": "a tiny one"},
                    "partial": {"d_model": 8},
                },
            }
        )
    )
    presets = load_presets(path)
    assert {"gpt2-small", "gpt2-xl", "tiny", "partial"} <= set(presets)
    assert preset_config(presets, "tiny").norm == "post"
    assert preset_config(presets, "gpt2-xl", context_length=16384).context_length == 16384
    with pytest.raises(LMError, match="did you mean 'gpt2-xl'"):
        preset_config(presets, "gpt2-xxl")
    with pytest.raises(LMError, match="preset partial: missing model key"):
        preset_config(presets, "partial")
    path.write_text(
        yaml.safe_dump({"datasets": {"demo": {}}, "targets": {}})
    )  # a config without models
    assert load_presets(path).keys() == load_presets().keys()
    path.write_text(yaml.safe_dump({"models": {"bad": {"layers": 2}}}))
    with pytest.raises(LMError, match=r"models\.bad: unknown model key 'layers'"):
        load_presets(path)


# ------------------------------------------------------------------------------ the recipe's options


def _projection(name: str) -> bool:
    return name.endswith(("attn.output_proj.weight", "ffn.w2.weight"))


@pytest.mark.parametrize("ffn", VARIANTS["ffn"])
def test_zero_init_projections_start_every_block_as_the_identity(ffn):
    """zero_init_proj: the output projections (attention's and the FFN's w2) are zero, every
    other weight is the plain model's of the same seed, so the logits are the head of the
    normalised embeddings (written with F), and the projections still learn."""
    plain, zero = make(seed=5, ffn=ffn), make(seed=5, ffn=ffn, zero_init_proj=True)
    named = dict(plain.named_parameters())
    for name, p in zero.named_parameters():
        if _projection(name):
            assert p.eq(0).all() and named[name].ne(0).any(), name
        else:
            assert torch.equal(p, named[name]), name
    x, d = ids(), SHAPE["d_model"]
    h = F.rms_norm(
        F.embedding(x, zero.token_embeddings.weight), (d,), zero.ln_final.weight, eps=1e-5
    )
    torch.testing.assert_close(zero(x), F.linear(h, zero.lm_head.weight))
    F.cross_entropy(zero(x).flatten(0, 1), ids(seed=2).flatten()).backward()
    assert zero.layers[0].attn.output_proj.weight.grad.abs().sum() > 0
    assert zero.layers[1].ffn.w2.weight.grad.abs().sum() > 0
    # materialised from the meta device and reset: zero again
    m = TransformerLM(**SHAPE, ffn=ffn, zero_init_proj=True, device="meta")
    m.to_empty(device="cpu").reset_parameters()
    for name, p in m.named_parameters():
        assert p.eq(0).all() == _projection(name), name


def test_a_tied_head_is_the_embedding_matrix_one_parameter():
    """tie_embeddings: lm_head.weight is token_embeddings.weight (drawn as the head: the
    plain model's head of the same seed; its layers too); one matrix fewer; the
    state dict names both, one tensor; save, load, reset from meta and an optimizer step
    keep them one."""
    import io

    plain, tied = make(seed=5), make(seed=5, tie_embeddings=True)
    assert tied.lm_head.weight is tied.token_embeddings.weight
    assert torch.equal(tied.lm_head.weight, plain.lm_head.weight)
    assert torch.equal(tied.layers[1].ffn.w2.weight, plain.layers[1].ffn.w2.weight)
    V, d = SHAPE["vocab_size"], SHAPE["d_model"]
    assert tied.num_parameters() == plain.num_parameters() - V * d
    sd = tied.state_dict()
    assert list(sd) == list(plain.state_dict())
    assert sd["lm_head.weight"].data_ptr() == sd["token_embeddings.weight"].data_ptr()
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    other = make(seed=9, tie_embeddings=True)
    other.load_state_dict(torch.load(buffer))
    assert other.lm_head.weight is other.token_embeddings.weight
    torch.testing.assert_close(other(ids()), tied(ids()), rtol=0, atol=0)
    opt = torch.optim.AdamW(other.parameters(), lr=0.1)
    F.cross_entropy(other(ids()).flatten(0, 1), ids(seed=2).flatten()).backward()
    opt.step()
    assert other.lm_head.weight is other.token_embeddings.weight
    assert not torch.equal(other.lm_head.weight, tied.lm_head.weight)
    with pytest.raises(LMError, match="differ in the state dict, but this model ties them"):
        other.load_state_dict(plain.state_dict())
    m = TransformerLM(**SHAPE, tie_embeddings=True, device="meta")
    m.to_empty(device="cpu").reset_parameters()
    assert m.lm_head.weight is m.token_embeddings.weight
    assert m.lm_head.weight.std() < 0.5  # the head's initialisation, not the embedding's std 1


def test_value_residual_and_soft_cap_state_and_bounds():
    """value_residual: a λ (initially 1/2) in each layer after the first, no other new
    tensor; logit_softcap c: every logit within (-c, c)."""
    vr = make(num_layers=3, value_residual=True)
    extra = set(vr.state_dict()) - set(make(num_layers=3).state_dict())
    assert extra == {"layers.1.attn.value_mix.lam", "layers.2.attn.value_mix.lam"}
    assert all(vr.state_dict()[n].item() == 0.5 for n in extra)
    capped = make(logit_softcap=1.5)
    with torch.no_grad():
        capped.lm_head.weight.mul_(100)
    logits = capped(ids())
    assert 1.4 < logits.abs().max() <= 1.5  # float32's tanh reaches 1 exactly
    for bad in (0, -1.0, float("nan"), "x", True):
        with pytest.raises(LMError, match="logit_softcap must be a positive number"):
            ModelConfig(**SHAPE, logit_softcap=bad)
    with pytest.raises(LMError, match="tie_embeddings must be true or false"):
        ModelConfig(**SHAPE, tie_embeddings="yes")


@pytest.mark.parametrize("attention", ["reference", "sdpa"])
def test_kv_cache_generation_with_the_recipe_options_matches_full_forward(attention):
    """Value residual through the cache: each new token mixes its own first-layer values."""
    opts = dict(value_residual=True, logit_softcap=2.0, tie_embeddings=True, num_layers=3)
    model = make(attention=attention, **opts)
    x = ids()
    full = model(x)
    cache = model.new_kv_cache()
    steps = [model(x[:, :4], kv_cache=cache)] + [
        model(x[:, t : t + 1], kv_cache=cache) for t in range(4, 12)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)
