"""Accounting against the model itself: parameters (meta model), FLOPs (FlopCounterMode),
activations (autograd's saved tensors), and the reports and CLI."""

from __future__ import annotations

import json

import pytest
import yaml

from lm import accounting as acc
from lm.cli import main as lm_main
from lm.model import ModelConfig, load_presets, preset_config

PRESETS = load_presets()
TINY = ModelConfig(vocab_size=97, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=48)
VARIANTS = [
    {},
    {"ffn": "silu"},
    {"norm": "none"},
    {"norm": "post", "position": "nope"},
    {"d_ff": 47, "ffn": "silu"},
    {"ffn": "relu2"},
    {"qk_norm": "rms"},
    {"qk_norm": "rms", "norm": "none", "position": "nope"},
    {"d_ff": 47, "ffn": "relu2", "norm": "post"},
    {"zero_init_proj": True},
    {"value_residual": True},
    {"logit_softcap": 30.0},
    {"tie_embeddings": True},
    {"value_residual": True, "tie_embeddings": True, "logit_softcap": 15.0, "qk_norm": "rms"},
]
RECIPE = {"zero_init_proj": True, "value_residual": True, "logit_softcap": 15.0,
          "tie_embeddings": True, "qk_norm": "rms", "ffn": "relu2"}  # fmt: skip


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_count_equals_the_built_model(name):
    cfg = preset_config(PRESETS, name)
    assert acc.parameter_counts(cfg)["total"] == acc.count_parameters_of_model(cfg)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_parameter_count_of_variants(variant):
    cfg = TINY.replace(**variant)
    counts = acc.parameter_counts(cfg)
    assert counts["total"] == acc.count_parameters_of_model(cfg)


def test_gpt2_xl_numbers_of_the_handout():
    xl = preset_config(PRESETS, "gpt2-xl")
    assert acc.parameter_counts(xl)["total"] == 2_127_057_600
    mem = acc.adamw_memory(xl, 1)
    assert mem["parameters"] == mem["gradients"] == mem["optimizer_state"] / 2 == 4 * 2_127_057_600
    # A(1) = L(8Td + 4Tf + 2hT²) + Td + 2TV with T=1024, d=1600, f=6400, h=25, L=48, V=50257
    T, d, f, h, L, V = 1024, 1600, 6400, 25, 48, 50257
    assert acc.activation_floats(xl, 3) == 3 * (
        L * (8 * T * d + 4 * T * f + 2 * h * T * T) + T * d + 2 * T * V
    )
    r = acc.adamw_report(xl, measure=False)
    assert r["largest_batch"] == 2
    flops = acc.flop_totals(acc.forward_matmuls(xl))["total"]
    assert flops == L * (8 * T * d * d + 4 * T * T * d + 6 * T * d * f) + 2 * T * d * V
    days = (3 * 1024 * flops + 14 * 2_127_057_600) * 400_000 / (19.5e12 * 0.5) / 86400
    assert r["training"]["days"] == pytest.approx(days)


@pytest.mark.parametrize(
    "name,overrides,batch",
    [
        ("gpt2-small", {}, 1),
        ("gpt2-medium", {}, 1),
        ("gpt2-large", {}, 1),
        ("gpt2-xl", {}, 1),
        ("gpt2-xl", {"context_length": 16384}, 1),
        ("gpt2-small", {"attention": "sdpa"}, 1),
        ("gpt2-small", {"ffn": "silu", "norm": "none"}, 3),
        ("tinystories-17m", {"ffn": "relu2"}, 2),
        ("tinystories-17m", {"position": "nope"}, 2),
        ("tinystories-17m", RECIPE, 2),
        ("gpt2-small", {"tie_embeddings": True, "value_residual": True}, 1),
    ],
)
def test_forward_flops_equal_flop_counter_mode(name, overrides, batch):
    cfg = preset_config(PRESETS, name, **overrides)
    ours = acc.flop_totals(acc.forward_matmuls(cfg, batch))["total"]
    assert ours == acc.count_forward_flops_with_torch(cfg, batch)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"norm": "post", "ffn": "silu"},
        {"position": "nope"},
        {"ffn": "relu2"},
        {"qk_norm": "rms"},
        RECIPE,
    ],
)
def test_flops_from_two_small_copies_equal_counting_the_whole_model(variant):
    from lm.accounting.checks import _counted_forward_flops

    cfg = TINY.replace(num_layers=5, **variant)
    assert acc.count_forward_flops_with_torch(cfg, 2) == _counted_forward_flops(cfg, 2, None)


@pytest.mark.parametrize("attention", ["reference", "sdpa"])
@pytest.mark.parametrize("ffn", ["swiglu", "silu", "relu2"])
def test_saved_activations_equal_the_derived_formula(attention, ffn):
    cfg = TINY.replace(attention=attention, ffn=ffn)
    measured = acc.measure_activation_floats(cfg, batch=2, seq_len=16)
    derived = acc.implementation_saved_floats(cfg, batch=2, seq_len=16)
    assert (measured["per_layer"], measured["rest"]) == (derived["per_layer"], derived["rest"])
    # a shorter sequence than the context scales the T terms accordingly
    measured = acc.measure_activation_floats(cfg.replace(context_length=16), batch=1, seq_len=8)
    assert (
        measured["per_layer"]
        == acc.implementation_saved_floats(cfg, batch=1, seq_len=8)["per_layer"]
    )


@pytest.mark.parametrize("option", [{"zero_init_proj": True}, {"tie_embeddings": True}], ids=str)
def test_saved_activations_of_the_options_that_keep_the_formula(option):
    """Zero-initialised projections and a tied head keep what autograd saves."""
    cfg = TINY.replace(attention="sdpa", **option)
    measured = acc.measure_activation_floats(cfg, batch=2, seq_len=16)
    derived = acc.implementation_saved_floats(cfg, batch=2, seq_len=16)
    assert (measured["per_layer"], measured["rest"]) == (derived["per_layer"], derived["rest"])


def test_the_recipe_options_in_the_counts():
    """A tied head is no matrix of its own; value residual adds one λ per layer after the
    first; the soft-cap and zero-init add nothing; the AdamW step counts what remains."""
    three = TINY.replace(num_layers=3)
    plain = acc.parameter_counts(three)
    for options, change in (
        ({"tie_embeddings": True}, -97 * 32),
        ({"value_residual": True}, 2),
        ({"logit_softcap": 30.0, "zero_init_proj": True}, 0),
        ({"tie_embeddings": True, "value_residual": True}, -97 * 32 + 2),
    ):
        cfg = three.replace(**options)
        counts = acc.parameter_counts(cfg)
        assert counts["total"] == plain["total"] + change == acc.count_parameters_of_model(cfg)
        assert counts["lm_head"] == (0 if cfg.tie_embeddings else 97 * 32)
        assert counts["value_residual"] == (2 if cfg.value_residual else 0)
        step = acc.adamw_step_flops(cfg, 2)
        assert step["forward"] == acc.adamw_step_flops(three, 2)["forward"]
        assert step["optimizer"] == 14 * counts["total"]
        assert acc.adamw_memory(cfg, 2)["parameters"] == 4 * counts["total"]


def test_handout_formula_symbols_match_its_terms():
    assert acc.activation_formula(TINY) == "B · [ L · (8·T·d + 4·T·d_ff + 2·h·T²) + T·d + 2·T·V ]"
    assert (
        acc.activation_formula(TINY.replace(ffn="silu", norm="none"))
        == "B · [ L · (6·T·d + 2·T·d_ff' + 2·h·T²) + 2·T·V ]"
    )
    B, T, d, f, h, L, V = 2, 16, 32, 48, 4, 2, 97
    assert acc.activation_floats(TINY, B) == B * (
        L * (8 * T * d + 4 * T * f + 2 * h * T * T) + T * d + 2 * T * V
    )


@pytest.mark.slow
def test_cli_writes_the_four_reports(tmp_path, capsys):
    presets = tmp_path / "config.yaml"
    presets.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "tiny": {**TINY.to_dict(), "norm": "post"},
                    "from-dataset": {
                        "d_model": 64,
                        "num_layers": 2,
                        "num_heads": 4,
                        "d_ff": 128,
                        "context_length": 32,
                    },
                }
            }
        )
    )
    out = tmp_path / "acct"
    args = ["accounting", "--out", str(out), "--presets", str(presets), "--memory-budget-gb", "40"]
    assert lm_main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "adamw.json",
        "adamw.md",
        "transformer.json",
        "transformer.md",
    ]
    t = json.loads((out / "transformer.json").read_text())
    names = [m["name"] for m in t["models"]]
    assert names == [
        "gpt2-small",
        "gpt2-medium",
        "gpt2-large",
        "gpt2-xl",
        "tinystories-17m",
        "tiny",
        "gpt2-xl @ context 16384",
    ]
    assert all(m["checks"]["parameters_match"] and m["checks"]["flops_match"] for m in t["models"])
    md = (out / "transformer.md").read_text()
    assert "2,127,057,600" in md and "16384" in md and "## Findings" in md
    a = json.loads((out / "adamw.json").read_text())
    assert (
        a["largest_batch"] == 0 and a["memory_budget_gb"] == 40
    )  # 34 GB static + 18 GB a sequence
    for path in a["measured"]["paths"].values():
        assert path["measured_per_layer"] == path["derived_per_layer"]
    adamw_md = (out / "adamw.md").read_text()
    assert "Largest batch in 40 GB: 0" in adamw_md and "equals the measurement exactly" in adamw_md

    assert lm_main(["accounting", "--out", str(out), "--preset", "from-dataset"]) == 2
    assert "no model preset 'from-dataset'" in capsys.readouterr().err  # not in the built-ins
    assert (
        lm_main(
            ["accounting", "--out", str(out), "--presets", str(presets), "--preset", "from-dataset"]
        )
        == 2
    )
    assert "missing model key(s) vocab_size" in capsys.readouterr().err


def test_cli_long_context_of_a_user_preset_given_as_json(tmp_path):
    out = tmp_path / "acct"
    presets = json.dumps(
        {"mine": {**TINY.to_dict(), "num_layers": 3}}
    )  # as a Snakemake rule passes config
    args = [
        "accounting",
        "--out",
        str(out),
        "--presets",
        presets,
        "--models",
        "mine",
        "tinystories-17m",
    ]
    args += ["--preset", "tinystories-17m", "--context-length", "1024"]
    assert lm_main(args) == 0
    t = json.loads((out / "transformer.json").read_text())
    assert [m["name"] for m in t["models"]] == [
        "mine",
        "tinystories-17m",
        "tinystories-17m @ context 1024",
    ]
    assert t["models"][0]["parameters"]["total"] == acc.count_parameters_of_model(
        TINY.replace(num_layers=3)
    )
    assert any("At context 1024 instead of 256" in f for f in t["findings"])
    assert json.loads((out / "adamw.json").read_text())["model"] == "tinystories-17m"


def test_cli_without_out_prints_both_reports(tmp_path, capsys):
    """`lm accounting` with no --out answers on stdout: the two Markdown reports, the same
    text that --out writes, and no files."""
    presets = json.dumps({"mine": {**TINY.to_dict(), "num_layers": 3}})
    args = ["accounting", "--presets", presets, "--models", "mine", "--preset", "mine"]
    args += ["--context-length", "64"]
    assert lm_main(args) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "acct"
    assert lm_main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    transformer, adamw = (out / "transformer.md").read_text(), (out / "adamw.md").read_text()
    assert printed == transformer + "\n" + adamw
    assert printed.startswith("# Transformer accounting") and "# AdamW accounting: mine" in printed
    assert "mine @ context 64" in printed
