"""Run config resolution: presets, defaults, alternatives, sweeps, names, errors, resources."""

import json

import pytest
import yaml

from lm.errors import LMError
from lm.training import resolve_runs, run_resources, sweep_members
from lm.training.config import run_from_file
from lm.training.grid import format_value
from lm.training.run_config import ResourcesConfig, resume_differences

CFG = """
datasets:
  tiny: {tokenizer: {vocab_size: 300}}
models:
  small: {d_model: 32, num_layers: 2, num_heads: 4, d_ff: 96, context_length: 16}
training_defaults:
  optimizer: {weight_decay: 0.05, min_lr_ratio: 0.1}
  training: {batch_size: 4, eval_every: 10}
runs:
  base:
    dataset: tiny
    model: {preset: small, num_layers: 3}
    optimizer: {lr: 1e-3}
    training: {total_tokens: 640}
sweeps:
  lr:
    base: base
    grid: {optimizer.lr: [1e-3, 0.003, 1e-1]}
  abl:
    base: base
    variants:
      post: {model.norm: post}
      silu: {model.ffn: silu, model.d_ff: 128}
    grid: {training.steps: [5]}
"""


@pytest.fixture
def cfg():
    return yaml.safe_load(CFG)


def test_resolution_layers_presets_defaults_and_derived_values(cfg):
    run = resolve_runs(cfg)["base"]
    assert run.to_dict()["model"] == {
        "preset": "small",
        "vocab_size": 300,  # from the dataset's tokenizer
        "context_length": 16,
        "d_model": 32,
        "num_layers": 3,  # run override over the preset
        "num_heads": 4,
        "d_ff": 96,
        "rope_theta": 10000.0,
        "norm": "pre",
        "position": "rope",
        "ffn": "swiglu",
        "attention": "sdpa",
    }
    assert run.optimizer.lr == 1e-3  # YAML's string "1e-3" read as a number
    assert run.optimizer.min_lr == pytest.approx(1e-4)
    assert run.optimizer.weight_decay == 0.05  # training_defaults over built-in
    assert run.training.steps == 10  # 640 tokens / (4 x 16)
    assert run.training.eval_every == 10 and run.training.log_every == 10
    assert run.schedule.to_dict() == {"warmup_iters": 0, "cosine_cycle_iters": 10}
    assert run.sweep is None


def test_sweep_members_names_and_overrides(cfg):
    assert sweep_members(cfg, "lr") == ["lr-lr1e-3", "lr-lr3e-3", "lr-lr0.1"]
    runs = resolve_runs(cfg)
    member = runs["lr-lr3e-3"]
    assert member.optimizer.lr == 0.003 and member.optimizer.min_lr == pytest.approx(3e-4)
    assert member.sweep == {
        "name": "lr",
        "base": "base",
        "variant": None,
        "values": {"optimizer.lr": 0.003},
    }
    assert sweep_members(cfg, "abl") == ["abl-post-steps5", "abl-silu-steps5"]
    silu = runs["abl-silu-steps5"]
    assert (silu.model.ffn, silu.model.d_ff, silu.model.num_layers) == (
        "silu",
        128,
        3,
    )
    assert silu.training.steps == 5  # steps in the sweep replaces the base's total_tokens
    assert runs["abl-post-steps5"].model.norm == "post"


@pytest.mark.parametrize(
    "value,text",
    [
        (1e-3, "1e-3"),
        (0.003, "3e-3"),
        (3e-4, "3e-4"),
        (0.1, "0.1"),
        (1.5e-3, "1.5e-3"),
        (64, "64"),
        (2.0, "2"),
        ("none", "none"),
        (True, "true"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda c: c["runs"]["base"]["model"].update(preset="huge"),
            r"no model preset 'huge'.*presets in the config's models: .*small",
        ),
        (
            lambda c: c["runs"]["base"]["optimizer"].update(lrr=1),
            r"runs\.base\.optimizer: unknown key 'lrr' \(did you mean 'lr'\?\)",
        ),
        (
            lambda c: c["runs"]["base"].update(optimiser={}),
            r"unknown key 'optimiser' \(did you mean 'optimizer'\?\)",
        ),
        (
            lambda c: c["runs"]["base"]["model"].update(norm="layer"),
            r"runs\.base\.model\.norm must be one of pre, post, none",
        ),
        (
            lambda c: c["training_defaults"]["training"].update(bs=3),
            r"training_defaults\.training: unknown key 'bs'",
        ),
        (
            lambda c: c["sweeps"]["lr"]["grid"].update({"optimizer.lrate": [1]}),
            r"sweeps\.lr\.grid: unknown key 'optimizer\.lrate'",
        ),
        (lambda c: c["sweeps"]["lr"].update(base="nope"), r"sweeps\.lr\.base: 'nope' is not a run"),
        (lambda c: c["models"]["small"].update(layers=2), r"models\.small: unknown key 'layers'"),
        (lambda c: c["runs"]["base"].update(dataset="other"), r"no dataset 'other'.*tiny"),
        (
            lambda c: c["runs"]["base"]["training"].update(steps=3),
            r"sets both 'steps' and 'total_tokens'",
        ),
        (lambda c: c["runs"]["base"]["optimizer"].update(lr=-1), r"optimizer\.lr must be > 0"),
        (
            lambda c: c["sweeps"]["lr"]["grid"].update({"optimizer.lr": [1e-3, 0.001]}),
            r"same name 'lr-lr1e-3'",
        ),
    ],
)
def test_bad_configs_name_the_key(cfg, edit, match):
    edit(cfg)
    with pytest.raises(LMError, match=match):
        resolve_runs(cfg)


def test_unknown_sweep_lists_choices(cfg):
    with pytest.raises(LMError, match=r"no sweep named 'lrr'.*did you mean 'lr'.*abl, lr"):
        sweep_members(cfg, "lrr")


def test_vocab_size_needed_when_no_dataset():
    with pytest.raises(LMError, match="vocab_size is unknown"):
        resolve_runs(
            {
                "runs": {
                    "r": {
                        "model": {
                            "d_model": 8,
                            "num_layers": 1,
                            "num_heads": 2,
                            "d_ff": 8,
                            "context_length": 4,
                        },
                        "training": {"steps": 1},
                    }
                }
            }
        )


def test_model_vocab_overrides_dataset(cfg):
    cfg["runs"]["base"]["model"]["vocab_size"] = 512
    assert resolve_runs(cfg)["base"].model.vocab_size == 512


def test_run_from_file_pipeline_single_and_resolved(cfg, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    member = run_from_file(tmp_path / "config.yaml", "lr-lr0.1")
    assert member.optimizer.lr == 0.1
    with pytest.raises(LMError, match="several runs; pick one with --run"):
        run_from_file(tmp_path / "config.yaml")
    # a resolved config.json (as lm train writes it) resolves to itself
    (tmp_path / "config.json").write_text(json.dumps(member.to_dict()))
    again = run_from_file(tmp_path / "config.json")
    assert again == member
    # a standalone run file with the architecture inline
    single = {
        "model": {
            "vocab_size": 50,
            "d_model": 8,
            "num_layers": 1,
            "num_heads": 2,
            "d_ff": 8,
            "context_length": 4,
        },
        "training": {"steps": 3},
    }
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(single))
    assert run_from_file(tmp_path / "mine.yaml").name == "mine"


def test_resume_differences_ignore_bookkeeping(cfg):
    runs = resolve_runs(cfg)
    a = runs["lr-lr1e-3"].to_dict()
    b = json.loads(json.dumps(a))
    b["training"]["device"] = "cuda"
    b["threads"] = 16
    b["training"]["log_every"] = 1
    assert resume_differences(a, b) == []
    b["optimizer"]["lr"] = 0.5
    assert resume_differences(a, b) == ["optimizer.lr"]


def test_run_resources(cfg):
    runs = resolve_runs(cfg)
    res = run_resources(runs["base"])
    assert res.gpu == 0 and 500 < res.mem_mb < 2000
    big = runs["base"].replace(resources=ResourcesConfig(), **{"training.batch_size": 4096})
    assert run_resources(big).mem_mb > res.mem_mb
    big = big.replace(**{"training.device": "cuda"})
    assert run_resources(big).gpu == 1
    big = big.replace(resources=ResourcesConfig(mem_mb=1234))
    assert run_resources(big).mem_mb == 1234  # declared wins


@pytest.mark.parametrize(
    "variant",
    [{}, {"ffn": "silu"}, {"norm": "none"}, {"ffn": "silu", "d_ff": 2048, "norm": "post"}],
)
def test_resource_estimate_counts_the_parameters_the_model_has(variant):
    """The memory estimate's parameter count is the built model's (it counted the SiLU FFN
    at 2·d·d_ff while the model builds it 3/2 wider)."""
    from lm.model.config import ModelConfig
    from lm.training.resources import count_params

    model = {"vocab_size": 1000, "context_length": 64, "d_model": 64, "num_layers": 2,
             "num_heads": 4, "d_ff": 176, "rope_theta": 10000.0, "norm": "pre",
             "position": "rope", "attention": "sdpa", "ffn": "swiglu", **variant}  # fmt: skip
    built = ModelConfig.from_dict(model).build(device="meta")
    assert count_params(ModelConfig.from_dict(model)) == sum(p.numel() for p in built.parameters())


def test_schema_variants_are_the_models():
    """The config schema lists each variant's choices once, and they are the model's."""
    import re
    from pathlib import Path

    import yaml

    from lm.model.variants import VARIANTS

    path = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    text = path.read_text()
    defs = yaml.safe_load(text)["$defs"]
    for name, choices in VARIANTS.items():
        assert defs[f"variant_{name}"]["enum"] == list(choices), name
        # every use refers to the one definition (a key named exactly so: qk_norm is not norm)
        assert not re.search(rf"(?<![\w]){name}: {{enum:", text), name


GOOD = {"int+": [3], "int0": [0, 2], "num+": [2.0, "1e-3"], "num0": [0.0, 2.0], "unit": [0.5],
        "str": ["x"], "bool": [True, False], "betas": [[0.9, 0.95]], "device": ["cpu", "cuda:1"]}  # fmt: skip
BAD = {"int+": [0, "x"], "int0": [-1, "x"], "num+": ["abc", True], "num0": ["abc"],
       "unit": ["abc"], "str": [3], "bool": ["yes"], "betas": [[0.9]], "device": ["gpu"]}  # fmt: skip


def _layer_kinds():
    """(layer, kind) for every key a config layer may set, from the typed config."""
    from lm.training.run_config import SPEC, TOP_KEYS

    for key, kind in TOP_KEYS.items():
        if kind != "section":
            yield key, (lambda v, key=key: {key: v}), kind
    for section, keys in SPEC.items():
        for key, kind in keys.items():
            yield f"{section}.{key}", (lambda v, s=section, k=key: {s: {k: v}}), kind


@pytest.mark.parametrize("key,layer,kind", list(_layer_kinds()), ids=lambda x: str(x)[:30])
def test_schema_agrees_with_the_typed_config_on_every_key(key, layer, kind):
    """config.yaml's JSON schema (what Snakemake checks first) and the typed run config
    (lm.training.run_config: what resolution checks) know the same keys of a run layer and
    accept and refuse the same sample values of each key's kind."""
    from pathlib import Path

    import jsonschema

    from lm.training.config import _check_layer

    path = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    schema = yaml.safe_load(path.read_text())
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/$defs/run_layer", "$defs": schema["$defs"]}
    )

    def ours(value) -> bool:
        try:
            _check_layer(layer(value), "r")
            return True
        except LMError:
            return False

    if isinstance(kind, tuple):
        good, bad = list(kind), ["bogus"]
    else:
        base = kind.rstrip("?")
        good = GOOD[base] + ([None] if kind.endswith("?") else [])
        bad = BAD[base] + ([] if kind.endswith("?") else [None])
    for value in good:
        assert ours(value), (key, value)
        assert validator.is_valid(layer(value)), f"the schema refuses {key}: {value!r}"
    for value in bad:
        assert not ours(value), (key, value)
        assert not validator.is_valid(layer(value)), f"the schema accepts {key}: {value!r}"


def test_schema_has_no_key_the_typed_config_lacks():
    from pathlib import Path

    from lm.training.run_config import SPEC, TOP_KEYS

    path = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    layer = yaml.safe_load(path.read_text())["$defs"]["run_layer"]["properties"]
    assert set(layer) == set(TOP_KEYS)
    for section, keys in SPEC.items():
        assert set(layer[section]["properties"]) == set(keys), section


def test_a_resolved_run_round_trips_through_its_dict(cfg):
    """RunConfig.to_dict() is config.json; from_dict reads it back equal, checking values."""
    from lm.training.run_config import RunConfig

    for run in resolve_runs(cfg).values():
        assert RunConfig.from_dict(json.loads(json.dumps(run.to_dict()))) == run
    d = resolve_runs(cfg)["base"].to_dict()
    d["training"]["stepz"] = 3
    with pytest.raises(
        LMError, match=r"run\.training: unknown key 'stepz' \(did you mean 'steps'\?\)"
    ):
        RunConfig.from_dict(d)
    d = resolve_runs(cfg)["base"].to_dict()
    d["optimizer"]["betas"] = [0.9, 1.5]
    with pytest.raises(LMError, match=r"optimizer\.betas values must lie in \[0, 1\)"):
        RunConfig.from_dict(d)


def test_lm_runs_prints_one_run_as_the_run_file_lm_train_loads(cfg, tmp_path, capsys):
    """`lm runs --run NAME` is a run.json; load_run (what lm train reads) takes it back
    equal, and refuses a run that still leaves keys to resolution, naming them."""
    from lm.cli import main
    from lm.training.run_config import load_run

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["runs", "--config", str(tmp_path / "config.yaml"), "--run", "lr-lr0.1"]) == 0
    (tmp_path / "run.json").write_text(capsys.readouterr().out)
    assert load_run(tmp_path / "run.json") == resolve_runs(cfg)["lr-lr0.1"]
    assert main(["runs", "--config", str(tmp_path / "config.yaml"), "--names"]) == 0
    assert sorted(capsys.readouterr().out.split()) == sorted(resolve_runs(cfg))
    assert main(["runs", "--config", str(tmp_path / "config.yaml"), "--run", "lr-lr01"]) == 2
    assert "has no run 'lr-lr01' (did you mean 'lr-lr0.1'?)" in capsys.readouterr().err

    partial = json.loads((tmp_path / "run.json").read_text())
    del partial["schedule"]["warmup_iters"], partial["optimizer"]["min_lr"]
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    with pytest.raises(
        LMError,
        match=r"not a resolved run \(it lacks optimizer.min_lr, schedule.warmup_iters\).*lm runs",
    ):
        load_run(tmp_path / "partial.json")
    with pytest.raises(LMError, match="does not exist.*lm runs --config config.yaml --run NAME"):
        load_run(tmp_path / "none.json")
    (tmp_path / "config.yaml.json").write_text("runs: {}")
    with pytest.raises(LMError, match="is not JSON"):
        load_run(tmp_path / "config.yaml.json")


def test_recipe_settings_default_to_todays_run_and_are_written_only_when_set(cfg, tmp_path):
    """optimizer.name/muon_* and schedule.name/decay_*: a run that leaves them has the
    config.json it had before they existed (so its runs neither rerun nor refuse to
    resume); a run that sets them writes them, reads them back, and resumes only with them."""
    from lm.model.variants import OPTION_DEFAULTS
    from lm.training import muon, schedule
    from lm.training.run_config import (
        DECAY_SHAPES,
        MUON_ADJUST_LR,
        SCHEDULES,
        RunConfig,
        load_run,
    )

    assert MUON_ADJUST_LR == muon.ADJUST_LR
    assert (SCHEDULES, DECAY_SHAPES) == (schedule.SCHEDULES, schedule.DECAY_SHAPES)
    plain = resolve_runs(cfg)["base"]
    assert set(plain.to_dict()["optimizer"]) == {
        "lr", "min_lr", "betas", "eps", "weight_decay", "grad_clip"
    }  # fmt: skip
    assert set(plain.to_dict()["schedule"]) == {"warmup_iters", "cosine_cycle_iters"}
    assert plain.optimizer.name == "adamw" and plain.schedule.name == "cosine"
    assert "qk_norm" not in plain.to_dict()["model"] and plain.model.qk_norm == "none"
    qk = plain.replace(model=plain.model.replace(qk_norm="rms"))
    assert qk.to_dict()["model"]["qk_norm"] == "rms"
    assert RunConfig.from_dict(json.loads(json.dumps(qk.to_dict()))) == qk
    assert resume_differences(plain.to_dict(), qk.to_dict()) == ["model.qk_norm"]
    options = {"zero_init_proj": True, "value_residual": True, "logit_softcap": 30.0,
               "tie_embeddings": True}  # fmt: skip
    assert not set(options) & set(plain.to_dict()["model"])
    assert {k: getattr(plain.model, k) for k in options} == OPTION_DEFAULTS
    recipe_model = plain.replace(model=plain.model.replace(**options))
    assert {k: recipe_model.to_dict()["model"][k] for k in options} == options
    assert RunConfig.from_dict(json.loads(json.dumps(recipe_model.to_dict()))) == recipe_model
    assert resume_differences(plain.to_dict(), recipe_model.to_dict()) == [
        f"model.{k}" for k in sorted(options)
    ]
    layered = json.loads(json.dumps(cfg))
    layered["runs"]["base"]["model"].update(logit_softcap="15", tie_embeddings=True)
    assert resolve_runs(layered)["base"].model.logit_softcap == 15.0
    layered["runs"]["base"]["model"]["logit_softcap"] = -1
    with pytest.raises(LMError, match=r"model\.logit_softcap must be > 0"):
        resolve_runs(layered)

    cfg["runs"]["base"]["optimizer"].update(name="muon", muon_lr=0.03, muon_nesterov=False)
    cfg["runs"]["base"]["schedule"] = {"name": "wsd", "decay_shape": "1-sqrt"}
    recipe = resolve_runs(cfg)["base"]
    d = recipe.to_dict()
    assert d["optimizer"]["name"] == "muon" and d["optimizer"]["muon_lr"] == 0.03
    assert d["optimizer"]["muon_nesterov"] is False and "muon_momentum" not in d["optimizer"]
    assert d["schedule"]["name"] == "wsd" and d["schedule"]["decay_shape"] == "1-sqrt"
    assert RunConfig.from_dict(json.loads(json.dumps(d))) == recipe
    assert resume_differences(plain.to_dict(), d) == [
        "optimizer.muon_lr", "optimizer.muon_nesterov", "optimizer.name",
        "schedule.decay_shape", "schedule.name",
    ]  # fmt: skip
    assert resume_differences(plain.to_dict(), plain.replace().to_dict()) == []
    cfg["runs"]["base"]["optimizer"]["name"] = "lion"
    with pytest.raises(LMError, match=r"optimizer\.name must be one of adamw, muon, got 'lion'"):
        resolve_runs(cfg)
    cfg["runs"]["base"]["optimizer"]["name"] = "muon"
    cfg["runs"]["base"]["schedule"]["decay_fraction"] = 1.5
    with pytest.raises(LMError, match=r"schedule\.decay_fraction must be between 0 and 1"):
        resolve_runs(cfg)
    # a run.json without the new keys (as written before they existed) is a resolved run
    (tmp_path / "run.json").write_text(json.dumps(plain.to_dict()))
    assert load_run(tmp_path / "run.json") == plain
    (tmp_path / "recipe.json").write_text(json.dumps(d))
    assert load_run(tmp_path / "recipe.json") == recipe
