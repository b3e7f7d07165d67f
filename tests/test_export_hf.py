"""`lm export-hf`: the export read back by `transformers` computes our logits, generates our
greedy tokens and tokenizes as we do; variants Llama cannot express, diverged and broken
runs are refused; the weights file carries the metadata transformers reads."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_checks import LOGIT_TOLERANCE, logit_difference
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm.cli import main
from lm.data.demo import write_corpus
from lm.errors import LMError
from lm.export.hf import (
    FILES,
    UnsupportedVariantError,
    half_split_order,
    hf_state_dict,
    write_hf_dir,
)
from lm.inference.generate import generate
from lm.inference.run import load_run
from lm.model import ModelConfig, RotaryPositionalEmbedding
from lm.tokenizer import Tokenizer
from lm.tokenizer.training.directory import train_to_dir
from lm.training.config import resolve_run
from lm.training.loop import train

EOT = "<|endoftext|>"

# Text that exercises every part of the pre-tokenizer: special tokens (alone, adjacent,
# inside words), contractions, numbers, punctuation runs, whitespace runs of every kind
# (tabs, newlines, trailing, Unicode spaces), accented letters, CJK, emoji, combining marks.
TRICKY = [
    "Once upon a time, there was a little dog.<|endoftext|>The end.",
    "<|endoftext|><|endoftext|>x<|endoftext|>",
    "word<|endoftext|>word <|endoftext|> word",
    "I'm sure you'll see they've, we're, she'd, it's DON'T 'S 'LL",
    "123 4567 89,000.5 3.14159 x2y3",
    "  leading and trailing spaces   ",
    "tabs\tand\t\tnewlines\n\n\nand \n \n mixed\r\n",
    "a    b\u00a0c\u3000d\u2003e\x0bf\x0cg\x85h\x1ci\x1dj\x1ek\x1fl",
    "café naïve Ünïcödé déjà vu — “quotes” ‘single’ …",
    "日本語のテキスト 中文 한국어",
    "emoji 🙂🙃 👩‍👩‍👧 flags 🇫🇷",
    "e\u0301 combining a\u0308 marks",
    "!!!??? ... --- ((())) @#$%^&*",
    "",
    " ",
    "\n",
]


def _corpus_text() -> str:
    rng = random.Random(0)
    lines = TRICKY * 20
    rng.shuffle(lines)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A tokenizer trained on demo stories plus the tricky text (so merges span multi-byte
    characters and whitespace runs)."""
    root = tmp_path_factory.mktemp("tok")
    write_corpus(root / "stories.txt", 80, seed=0)
    text = (root / "stories.txt").read_text(encoding="utf-8") + _corpus_text()
    (root / "train.txt").write_text(text, encoding="utf-8")
    train_to_dir(root / "train.txt", root / "tokenizer", 600, [EOT])
    return root / "tokenizer"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return Tokenizer.from_dir(tokenizer_dir)


def _random_model(config: ModelConfig, seed: int = 0):
    """A model with every weight random, norm gains included (so a swapped norm shows)."""
    torch.manual_seed(seed)
    model = config.build().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "ln_final.weight")):
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model


# ---------------------------------------------------------------------------- the pieces


def test_interleaved_rope_equals_half_split_rope_after_the_reordering():
    """Our RoPE on x, reordered, is the rotate-half RoPE (as transformers computes it) on
    the reordered x: the identity the Q/K row permutation rests on."""
    d, n, theta = 16, 10, 10000.0
    x = torch.randn(3, n, d)
    ours = RotaryPositionalEmbedding(theta, d, n)(x)
    order = half_split_order(d)
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    angles = torch.outer(torch.arange(n).float(), inv_freq)
    cos, sin = torch.cat((angles.cos(),) * 2, -1), torch.cat((angles.sin(),) * 2, -1)
    y = x[..., order]
    rotate_half = torch.cat((-y[..., d // 2 :], y[..., : d // 2]), -1)
    theirs = y * cos + rotate_half * sin
    torch.testing.assert_close(ours[..., order], theirs, atol=1e-5, rtol=1e-5)
    assert order.tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15]


def test_state_dict_names_are_llamas_and_every_tensor_is_used():
    config = ModelConfig(50, 16, 32, 2, 4, 48)
    sd = hf_state_dict(_random_model(config).state_dict(), config)
    assert len(sd) == 2 + 9 * 2 + 1
    assert "model.layers.1.mlp.gate_proj.weight" in sd and "model.norm.weight" in sd
    with pytest.raises(LMError, match="does not know: extra"):
        hf_state_dict({**config.build().state_dict(), "extra": torch.zeros(1)}, config)


# ---------------------------------------------------------------------------- the model

SHAPES = {
    # vocab, context, d_model, layers, heads, d_ff, theta
    "4 heads of 16": (ModelConfig(700, 64, 64, 2, 4, 176, 10000.0)),
    "2 heads of 48, theta 500": (ModelConfig(700, 128, 96, 3, 2, 256, 500.0)),
    "6 heads of 8, theta 1e6": (ModelConfig(700, 48, 48, 1, 6, 128, 1e6)),
    "sdpa attention": (ModelConfig(700, 64, 64, 2, 8, 160, attention="sdpa")),
    # how the weights start is no part of what they compute: zero_init_proj exports
    "zero-initialised projections": (ModelConfig(700, 64, 64, 2, 4, 176, zero_init_proj=True)),
    "tied head": (ModelConfig(700, 64, 64, 2, 4, 176, tie_embeddings=True)),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_random_weights_give_our_logits_in_transformers(name, tokenizer, tmp_path):
    config = SHAPES[name]
    model = _random_model(config)
    out = write_hf_dir(tmp_path / "hf", model, config, tokenizer)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (2, config.context_length), generator=g)
    diff = logit_difference(model, out, ids)
    print(f"{name}: max |logit difference| {diff:.3g}")
    assert diff < LOGIT_TOLERANCE


def test_a_tied_head_exports_as_tie_word_embeddings(tokenizer, tmp_path):
    """tie_embeddings: Llama's tie_word_embeddings, the matrix written once (safetensors
    refuses a shared tensor twice); transformers ties its head to it (the logits above)."""
    config = SHAPES["tied head"]
    model = _random_model(config)
    out = write_hf_dir(tmp_path / "hf", model, config, tokenizer)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    weights = load_file(out / "model.safetensors")
    assert "lm_head.weight" not in weights
    assert torch.equal(weights["model.embed_tokens.weight"], model.lm_head.weight.detach())
    theirs = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert theirs.lm_head.weight.data_ptr() == theirs.model.embed_tokens.weight.data_ptr()
    untied = ModelConfig(700, 64, 64, 2, 4, 176)
    with pytest.raises(LMError, match="differs from its token_embeddings"):
        hf_state_dict(_random_model(untied).state_dict(), config)


def test_without_the_row_permutation_the_logits_differ(tokenizer, tmp_path, monkeypatch):
    """The equality above is earned by the Q/K reordering (RoPE is in play), not vacuous."""
    import lm.export.hf

    monkeypatch.setattr(lm.export.hf, "half_split_order", lambda d: torch.arange(d))
    config = SHAPES["4 heads of 16"]
    model = _random_model(config)
    out = write_hf_dir(tmp_path / "hf", model, config, tokenizer)
    ids = torch.randint(0, config.vocab_size, (1, config.context_length))
    assert logit_difference(model, out, ids) > 1e-2


def _hf_greedy(hf_dir: Path, prompt: list[int], n: int) -> list[int]:
    theirs = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    out = theirs.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)
    new = out[0, len(prompt) :].tolist()
    eos = theirs.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or ())
    if new and new[-1] in eos:  # transformers keeps the stop token; ours does not
        new = new[:-1]
    return new


def test_greedy_generation_of_32_tokens_is_identical(tokenizer, tmp_path):
    config = SHAPES["4 heads of 16"]
    model = _random_model(config, seed=3)
    out = write_hf_dir(tmp_path / "hf", model, config, tokenizer)
    for prompt_text in ("Once upon a time", "The little dog"):
        prompt = tokenizer.encode(prompt_text)
        ours = generate(model, prompt, 32, temperature=0)
        assert len(ours) == 32
        assert _hf_greedy(out, prompt, 32) == ours


def test_bfloat16_export_loads_with_bf16_weights(tokenizer, tmp_path):
    config = SHAPES["4 heads of 16"]
    model = _random_model(config)
    out = write_hf_dir(tmp_path / "hf", model, config, tokenizer, dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    weights = load_file(out / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    with safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "lm_run": "model"}
    theirs = AutoModelForCausalLM.from_pretrained(out)
    assert theirs.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("variant", "named"),
    [
        ({"norm": "post"}, "norm='post'"),
        ({"norm": "none"}, "norm='none'"),
        ({"position": "nope"}, "position='nope'"),
        ({"ffn": "silu"}, "ffn='silu'"),
        ({"ffn": "relu2"}, "ffn='relu2'"),
        ({"qk_norm": "rms"}, "qk_norm='rms'"),
        ({"value_residual": True}, "value_residual=True: value residuals"),
        ({"logit_softcap": 30.0}, "logit_softcap=30.0: a soft-capped head"),
    ],
)
def test_variants_llama_cannot_express_are_refused_by_name(variant, named, tokenizer, tmp_path):
    config = ModelConfig(700, 16, 32, 1, 2, 48, **variant)
    with pytest.raises(UnsupportedVariantError, match=named) as e:
        write_hf_dir(tmp_path / "hf", config.build(), config, tokenizer)
    assert "Llama" in str(e.value)
    assert not (tmp_path / "hf").exists() and not list(tmp_path.iterdir())


def test_several_unsupported_variants_are_all_named(tokenizer, tmp_path):
    config = ModelConfig(700, 16, 32, 1, 2, 48, norm="post", position="nope", ffn="silu")
    with pytest.raises(UnsupportedVariantError) as e:
        write_hf_dir(tmp_path / "hf", config.build(), config, tokenizer)
    for named in ("norm='post'", "position='nope'", "ffn='silu'"):
        assert named in str(e.value)


def test_the_workflow_reads_exportability_from_a_run_config_without_torch():
    """The Snakefile decides at start-up which runs a target exports: torch-free."""
    import subprocess
    import sys

    code = (
        "import sys; from lm.export.variants import llama_can_express as ok;"
        "assert ok({'norm': 'pre', 'position': 'rope', 'ffn': 'swiglu', 'attention': 'sdpa'});"
        "assert not ok({'norm': 'pre', 'position': 'nope'}) and not ok({'ffn': 'silu'});"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- the tokenizer


def _texts(tokenizer_dir: Path) -> list[str]:
    stories = (tokenizer_dir.parent / "stories.txt").read_text(encoding="utf-8")
    rng = random.Random(1)
    alphabet = list("ab Z9'\n\t.!é日🙂\u00a0\x85\x1c\u3000") + [EOT, "'s", "  ", "\r\n"]
    fuzz = ["".join(rng.choices(alphabet, k=rng.randint(1, 30))) for _ in range(400)]
    return [*TRICKY, stories, stories[:1000] + EOT + stories[1000:2000], *fuzz]


def test_auto_tokenizer_gives_our_ids_and_text(tokenizer, tokenizer_dir, tmp_path):
    config = ModelConfig(tokenizer.vocab_size, 16, 32, 1, 2, 48)
    out = write_hf_dir(tmp_path / "hf", config.build(), config, tokenizer)
    theirs = AutoTokenizer.from_pretrained(out)
    assert theirs.eos_token == EOT and theirs.bos_token == EOT
    assert theirs.convert_tokens_to_ids(EOT) == tokenizer.special_ids[EOT]
    assert len(theirs) == tokenizer.vocab_size
    for text in _texts(tokenizer_dir):
        ids = tokenizer.encode(text)
        assert theirs(text)["input_ids"] == ids, repr(text)
        assert theirs.encode(text) == ids, repr(text)
        assert theirs.decode(ids) == tokenizer.decode(ids), repr(text)


def test_tokenizer_json_loads_in_tokenizers_alone(tokenizer, tokenizer_dir, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    config = ModelConfig(tokenizer.vocab_size, 16, 32, 1, 2, 48)
    out = write_hf_dir(tmp_path / "hf", config.build(), config, tokenizer)
    theirs = HFTokenizer.from_file(str(out / "tokenizer.json"))
    for text in _texts(tokenizer_dir)[:40]:
        assert theirs.encode(text).ids == tokenizer.encode(text), repr(text)


# ---------------------------------------------------------------------------- a trained run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer_dir):
    """results/demo/{tokenizer,tokens}/ and results/runs/{good,other}/ as the pipeline lays
    them out, trained for real (a few hundred steps of a tiny model)."""
    res = tmp_path_factory.mktemp("pipeline") / "results"
    shutil.copytree(tokenizer_dir, res / "demo" / "tokenizer")
    tok = Tokenizer.from_dir(res / "demo" / "tokenizer", [EOT])
    tokens = res / "demo" / "tokens"
    tokens.mkdir(parents=True)
    write_corpus(res / "valid.txt", 10, seed=1)
    for split, path in (
        ("train", tokenizer_dir.parent / "stories.txt"),
        ("valid", res / "valid.txt"),
    ):
        ids = tok.encode(path.read_text(encoding="utf-8"))
        np.save(tokens / f"{split}.npy", np.array(ids, dtype=np.uint16))
    for name, lr in (("good", 1e-2), ("other", 1e-3)):
        spec = {
            "dataset": "demo",
            "model": {
                "vocab_size": tok.vocab_size,
                "context_length": 64,
                "d_model": 64,
                "num_layers": 2,
                "num_heads": 4,
                "d_ff": 176,
            },
            "optimizer": {"lr": lr},
            "training": {
                "steps": 120,
                "batch_size": 8,
                "eval_every": 60,
                "eval_batches": 2,
                "log_every": 20,
                "device": "cpu",
            },
            "threads": 1,
        }
        train(
            resolve_run(name, spec),
            tokens / "train.npy",
            tokens / "valid.npy",
            res / "runs" / name,
            progress=False,
        )
    return res


def test_cli_exports_a_trained_run_that_transformers_reproduces(trained, tmp_path, capsys):
    run, out = trained / "runs" / "good", tmp_path / "hf"
    assert main(["export-hf", "--run", str(run), "--out", str(out)]) == 0
    assert f"-> {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    config = json.loads((out / "config.json").read_text())
    assert config["num_key_value_heads"] == config["num_attention_heads"] == 4
    assert config["max_position_embeddings"] == 64 and config["tie_word_embeddings"] is False
    assert config["rms_norm_eps"] == 1e-5 and config["rope_theta"] == 10000.0
    model, _, _ = load_run(run)
    tok = Tokenizer.from_dir(trained / "demo" / "tokenizer")
    text = (trained / "valid.txt").read_text(encoding="utf-8")
    ids = torch.tensor([tok.encode(text)[:64], tok.encode(text)[64:128]])
    diff = logit_difference(model, out, ids)
    print(f"trained run: max |logit difference| {diff:.3g}")
    assert diff < LOGIT_TOLERANCE
    prompt = tok.encode("Once upon a time")
    ours = generate(model, prompt, 32, temperature=0, eot_id=sorted(tok.special_ids.values()))
    assert _hf_greedy(out, prompt, 32) == ours
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok(text)["input_ids"] == tok.encode(text)


def test_cli_with_several_runs_exports_the_best_finished_one(trained, tmp_path, capsys):
    runs = trained / "runs"
    boom = tmp_path / "runs" / "boom"
    shutil.copytree(runs / "good", boom)
    result = json.loads((boom / "result.json").read_text())
    result.update(status="diverged", diverged_step=7, final_val_loss=0.01)
    (boom / "result.json").write_text(json.dumps(result))
    losses = {
        r: json.loads((runs / r / "result.json").read_text())["final_val_loss"]
        for r in ("good", "other")
    }
    best = min(losses, key=losses.get)
    out = tmp_path / "hf"
    argv = ["export-hf", "--run", str(runs / "other"), str(boom), str(runs / "good")]
    assert main([*argv, "--tokenizer", str(trained / "demo" / "tokenizer"), "--out", str(out)]) == 0
    assert f"best of 3 runs: {best} " in capsys.readouterr().out
    assert f"# {best}" in (out / "README.md").read_text()


def _copy_run(trained, tmp_path, name="copy") -> Path:
    run = tmp_path / "results" / "runs" / name
    shutil.copytree(trained / "runs" / "good", run)
    shutil.copytree(trained / "demo", tmp_path / "results" / "demo")
    return run


def test_a_diverged_run_is_refused(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    result = json.loads((run / "result.json").read_text())
    result.update(status="diverged", diverged_step=7, diverged_reason="loss is NaN at step 7")
    (run / "result.json").write_text(json.dumps(result))
    assert main(["export-hf", "--run", str(run), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "diverged (loss is NaN at step 7)" in err and "not exported" in err
    assert not (tmp_path / "hf").exists()


def test_nan_weights_are_refused_naming_the_tensors(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    final = run / "checkpoints" / "final.pt"
    payload = torch.load(final, weights_only=True)
    payload["model"]["layers.1.ffn.w2.weight"][0, 0] = float("nan")
    torch.save(payload, final)
    assert main(["export-hf", "--run", str(run), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "NaN or inf weights (layers.1.ffn.w2.weight)" in err
    assert not (tmp_path / "hf").exists()


def test_an_unfinished_run_needs_a_named_checkpoint(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    (run / "result.json").unlink()
    out = tmp_path / "hf"
    assert main(["export-hf", "--run", str(run), "--out", str(out)]) == 2
    assert "has not finished" in capsys.readouterr().err
    ckpt = run / "checkpoints" / "final.pt"
    assert main(["export-hf", "--run", str(run), "--out", str(out), "--checkpoint", str(ckpt)]) == 0


def test_an_unsupported_variant_run_fails_before_loading_weights(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["model"]["norm"] = "post"
    (run / "config.json").write_text(json.dumps(config))
    (run / "checkpoints" / "final.pt").unlink()  # never read: the variant is refused first
    assert main(["export-hf", "--run", str(run), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "run copy cannot be exported as a Llama checkpoint" in err or "cannot be exported" in err
    assert "norm='post'" in err


def test_a_new_export_replaces_an_old_one_whole(trained, tmp_path):
    run, out = trained / "runs" / "good", tmp_path / "hf"
    out.mkdir()
    (out / "stale.bin").write_text("old")
    assert main(["export-hf", "--run", str(run), "--out", str(out)]) == 0
    assert not (out / "stale.bin").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporaries left
