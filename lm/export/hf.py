"""A trained run as a Hugging Face ``LlamaForCausalLM`` checkpoint and a ``tokenizer.json``.

The CS336 model (pre-norm RMSNorm, SwiGLU, RoPE, no biases, untied LM head) is the Llama
architecture, so its weights only need new names, and the queries' and keys' rows a new
order:

=====================================  ====================================================
ours                                   ``transformers`` (``LlamaForCausalLM``)
=====================================  ====================================================
``token_embeddings.weight``            ``model.embed_tokens.weight``
``layers.{i}.attn.q_proj.weight``      ``model.layers.{i}.self_attn.q_proj.weight`` (rows permuted)
``layers.{i}.attn.k_proj.weight``      ``model.layers.{i}.self_attn.k_proj.weight`` (rows permuted)
``layers.{i}.attn.v_proj.weight``      ``model.layers.{i}.self_attn.v_proj.weight``
``layers.{i}.attn.output_proj.weight`` ``model.layers.{i}.self_attn.o_proj.weight``
``layers.{i}.ln1.weight``              ``model.layers.{i}.input_layernorm.weight``
``layers.{i}.ffn.w1.weight``           ``model.layers.{i}.mlp.gate_proj.weight``
``layers.{i}.ffn.w3.weight``           ``model.layers.{i}.mlp.up_proj.weight``
``layers.{i}.ffn.w2.weight``           ``model.layers.{i}.mlp.down_proj.weight``
``layers.{i}.ln2.weight``              ``model.layers.{i}.post_attention_layernorm.weight``
``ln_final.weight``                    ``model.norm.weight``
``lm_head.weight``                     ``lm_head.weight`` (none when tied: see below)
=====================================  ====================================================

A model with ``tie_embeddings`` (its head's weight is its embedding's) exports with
``tie_word_embeddings: true`` and the one matrix once, as ``model.embed_tokens.weight``;
``transformers`` ties ``lm_head.weight`` to it on loading.

**The RoPE layout.** Our RoPE rotates the interleaved pairs of a head's features,
``(2i, 2i+1)`` by the angle ``pos · θ^(-2i/d)``; ``transformers`` rotates the half-split
pairs ``(i, i + d/2)`` by the same angle (its ``rotate_half``). Both compute
``(a cos - b sin, a sin + b cos)`` for a pair ``(a, b)``. So if each head's query and key
features are reordered ``0, 2, 4, ..., d-2, 1, 3, ..., d-1`` (our feature ``2i`` becomes
feature ``i``, ``2i+1`` becomes ``i + d/2``), Llama's rotation of the reordered features
is our rotation, reordered. Attention only uses the dot products of a query and a key,
which one reordering of both leaves unchanged; the values and the output projection are
untouched. Reordering the features a projection outputs is reordering the rows of its
weight, head by head: that is all the export does to ``q_proj`` and ``k_proj``.

Variants Llama cannot express (``norm`` ``post`` or ``none``, ``position`` ``nope``,
``ffn`` ``silu`` or ``relu2``, ``qk_norm``, ``value_residual``, ``logit_softcap``) raise
:class:`UnsupportedVariantError` naming them: a checkpoint that loads but computes another
function is worse than none. ``attention`` (reference or sdpa) is how attention is
computed, not what, and ``zero_init_proj`` how the weights started, so both export.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from lm.errors import LMError
from lm.export.variants import unsupported_variants
from lm.io import atomic_directory, write_json, write_text
from lm.model.config import ModelConfig
from lm.tokenizer.serialization import token_to_str

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EOT = "<|endoftext|>"

WEIGHTS_FILE = "model.safetensors"
FILES = (
    "config.json",
    "generation_config.json",
    WEIGHTS_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
)


class UnsupportedVariantError(LMError):
    """A model variant that ``LlamaForCausalLM`` cannot express (named in the message)."""


def check_exportable(config: ModelConfig, what: str = "the model") -> None:
    """Raise :class:`UnsupportedVariantError` naming each variant Llama cannot express."""
    wrong = unsupported_variants(config)
    if wrong:
        raise UnsupportedVariantError(
            f"{what} cannot be exported as a Llama checkpoint; it uses\n  "
            + "\n  ".join(wrong)
            + "\nLoaded as LlamaForCausalLM it would compute a different function, so no "
            "checkpoint is written. Only norm=pre, position=rope, ffn=swiglu models without "
            "qk_norm, value_residual or logit_softcap export."
        )


def half_split_order(d_head: int) -> torch.Tensor:
    """The feature order ``0, 2, ..., d-2, 1, 3, ..., d-1``: position ``j`` of the half-split
    (transformers) layout takes our interleaved feature ``order[j]``."""
    return torch.cat((torch.arange(0, d_head, 2), torch.arange(1, d_head, 2)))


def interleaved_to_half_split(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder the rows of a query or key projection ``(num_heads·d_head, d_in)`` head by
    head from our interleaved RoPE pairs to the half-split pairs of ``transformers``."""
    out_features, d_in = weight.shape
    d_head = out_features // num_heads
    heads = weight.reshape(num_heads, d_head, d_in)
    return heads[:, half_split_order(d_head), :].reshape(out_features, d_in)


def hf_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: ModelConfig, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Our ``TransformerLM`` state dict under the ``LlamaForCausalLM`` names (see the table
    in the module docstring), queries and keys in the half-split RoPE layout, cast to
    ``dtype`` (default: as they are). Every tensor must be used exactly once."""
    check_exportable(config)
    left = dict(state_dict)
    out: dict[str, torch.Tensor] = {}

    def take(ours: str, theirs: str, permute: bool = False) -> None:
        if ours not in left:
            raise LMError(f"the state dict has no {ours}; is it a TransformerLM's?")
        t = left.pop(ours).detach()
        if permute:
            t = interleaved_to_half_split(t, config.num_heads)
        out[theirs] = (t if dtype is None else t.to(dtype)).contiguous()

    take("token_embeddings.weight", "model.embed_tokens.weight")
    for i in range(config.num_layers):
        ours, theirs = f"layers.{i}.", f"model.layers.{i}."
        take(ours + "attn.q_proj.weight", theirs + "self_attn.q_proj.weight", permute=True)
        take(ours + "attn.k_proj.weight", theirs + "self_attn.k_proj.weight", permute=True)
        take(ours + "attn.v_proj.weight", theirs + "self_attn.v_proj.weight")
        take(ours + "attn.output_proj.weight", theirs + "self_attn.o_proj.weight")
        take(ours + "ln1.weight", theirs + "input_layernorm.weight")
        take(ours + "ffn.w1.weight", theirs + "mlp.gate_proj.weight")
        take(ours + "ffn.w3.weight", theirs + "mlp.up_proj.weight")
        take(ours + "ffn.w2.weight", theirs + "mlp.down_proj.weight")
        take(ours + "ln2.weight", theirs + "post_attention_layernorm.weight")
    take("ln_final.weight", "model.norm.weight")
    if config.tie_embeddings:  # one matrix, written once; transformers ties the head to it
        head = left.pop("lm_head.weight", None)
        if head is not None and not torch.equal(head, state_dict["token_embeddings.weight"]):
            raise LMError(
                "the model is tie_embeddings but the state dict's lm_head.weight differs from "
                "its token_embeddings.weight; was it saved from an untied model?"
            )
    else:
        take("lm_head.weight", "lm_head.weight")
    if left:
        raise LMError(f"the state dict has tensors the export does not know: {', '.join(left)}")
    return out


def special_token_ids(tokenizer) -> tuple[int | None, list[int]]:
    """``(bos, eos ids)``: ``<|endoftext|>`` (else the first special token) begins and ends a
    document; every special token stops generation, as ``lm generate`` stops."""
    ids = tokenizer.special_ids
    if not ids:
        return None, []
    bos = ids.get(EOT, next(iter(ids.values())))
    return bos, [bos, *(i for i in ids.values() if i != bos)]


def hf_config(
    config: ModelConfig,
    *,
    eps: float = 1e-5,
    dtype: str = "float32",
    bos_token_id: int | None = None,
    eos_token_ids: Sequence[int] = (),
) -> dict:
    """The ``config.json`` of the ``LlamaForCausalLM`` that computes ``config``'s model."""
    check_exportable(config)
    eos = list(eos_token_ids)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_heads,
        "head_dim": config.d_head,
        "hidden_act": "silu",
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": eps,
        "rope_theta": float(config.rope_theta),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(config.rope_theta)},
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "initializer_range": 0.02,
        "use_cache": True,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": bos_token_id,
        "eos_token_id": (eos[0] if len(eos) == 1 else eos) if eos else None,
        "dtype": dtype,
        "torch_dtype": dtype,
    }


def hf_generation_config(
    config: ModelConfig,
    bos_token_id: int | None,
    eos_token_ids: Sequence[int],
    temperature: float = 0.8,
    top_p: float = 0.9,
) -> dict:
    """``generation_config.json``: ``model.generate()`` samples as ``lm generate`` does (its
    temperature and top-p, stopping at a special token)."""
    eos = list(eos_token_ids)
    gen = {
        "bos_token_id": bos_token_id,
        "eos_token_id": (eos[0] if len(eos) == 1 else eos) if eos else None,
        "pad_token_id": eos[0] if eos else None,
    }
    if temperature > 0:
        gen.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        gen.update(do_sample=False)
    return gen


def hf_tokenizer_json(tokenizer) -> dict:
    """The HF ``tokenizers`` file of a :class:`lm.tokenizer.Tokenizer`: byte-level BPE with
    the GPT-2 pre-tokenizer (the pattern ours uses), the vocabulary and merges in GPT-2
    mapped form, and the special tokens as added tokens, matched before pre-tokenization
    (as ours splits on them first). ``ignore_merges`` is off: a pre-token is merged pair
    by pair, lowest rank first, exactly as ours."""
    vocab: dict[str, int] = {}
    for token_id in sorted(tokenizer.vocab):
        vocab.setdefault(token_to_str(tokenizer.vocab[token_id]), token_id)
    added = [
        {
            "id": token_id,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for text, token_id in sorted(tokenizer.special_ids.items(), key=lambda kv: kv[1])
    ]
    byte_level = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": True,
    }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": {**byte_level, "trim_offsets": False},
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[token_to_str(a), token_to_str(b)] for a, b in tokenizer.merges],
        },
    }


def hf_tokenizer_config(tokenizer, context_length: int) -> dict:
    """``tokenizer_config.json``: a plain fast tokenizer that adds no BOS/EOS of its own
    (ours adds none), and decodes without touching spaces."""
    bos, eos = special_token_ids(tokenizer)
    names = {i: s for s, i in tokenizer.special_ids.items()}
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names.get(bos),
        "eos_token": names.get(eos[0]) if eos else None,
        "pad_token": names.get(eos[0]) if eos else None,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length,
        "added_tokens_decoder": {
            str(i): {
                "content": s,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, s in sorted(names.items())
        },
    }


# ---------------------------------------------------------------------------- a run


def check_finite(state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise ``LMError`` naming the tensors that hold NaN or inf (a diverged model)."""
    bad = [name for name, t in state_dict.items() if not torch.isfinite(t).all()]
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise LMError(
            f"{what} has NaN or inf weights ({shown}): it is no usable model, so nothing is "
            "exported; export a run that trained normally"
        )


def check_run_status(run_dir, result: dict | None, explicit_checkpoint: bool) -> None:
    """A diverged run is never exported; an unfinished one only from a named checkpoint."""
    if result is None:
        if not explicit_checkpoint:
            raise LMError(
                f"{run_dir} has no result.json: the run has not finished. Train it first, or "
                "pass --checkpoint PATH to export one of its checkpoints"
            )
        return
    if result.get("status") == "diverged":
        reason = result.get("diverged_reason") or f"at step {result.get('diverged_step')}"
        raise LMError(
            f"{run_dir} diverged ({reason}); its weights are no usable model, so it is not "
            "exported. Export a run that trained normally (e.g. the best of its sweep: "
            "lm export-hf --run RUN1 RUN2 ... picks it)"
        )


def best_run(run_dirs: Sequence[str | os.PathLike]) -> Path:
    """Of several runs, the finished (status ok) one with the lowest final validation
    loss (the loss of final.pt, the weights that are exported)."""
    from lm.inference.run import read_run

    scored, skipped = [], []
    for run_dir in run_dirs:
        _, result = read_run(run_dir)
        status = (result or {}).get("status", "unfinished")
        loss = (result or {}).get("final_val_loss")
        if status == "ok" and loss is not None:
            scored.append((loss, str(run_dir)))
        else:
            skipped.append(f"{run_dir} ({status})")
    if not scored:
        raise LMError(
            "none of the runs finished normally with a validation loss: "
            + ", ".join(skipped)
            + "; there is no model worth exporting"
        )
    return Path(min(scored)[1])


def _model_card(summary: dict) -> str:
    loss = summary["final_val_loss"]
    return (
        f"# {summary['run']}\n\n"
        "A decoder-only Transformer language model trained with the `lm` pipeline "
        "(CS336 assignment 1: pre-norm RMSNorm, SwiGLU, RoPE, no biases), "
        f"exported by `lm export-hf` as a `LlamaForCausalLM` in {summary['dtype']}.\n\n"
        f"- checkpoint: step {summary['checkpoint_step']}"
        + (f", final validation loss {loss:.4f}" if loss is not None else "")
        + "\n"
        f"- {summary['parameters']:,} parameters, context {summary['context_length']} tokens, "
        f"vocabulary {summary['vocab_size']} ids\n"
        f"- tokenizer: byte-level BPE, special tokens {', '.join(summary['special_tokens']) or 'none'}\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")\n'
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/directory")\n'
        "```\n"
    )


def write_hf_dir(
    out_dir: str | os.PathLike,
    model: torch.nn.Module,
    config: ModelConfig,
    tokenizer,
    *,
    dtype: str = "float32",
    temperature: float = 0.8,
    top_p: float = 0.9,
    summary: dict | None = None,
) -> Path:
    """Write the Hugging Face directory of ``model`` (a ``TransformerLM`` of ``config``)
    and ``tokenizer``, atomically: built under a temporary name beside ``out_dir`` and
    renamed onto it (replacing an older one) only when complete."""
    if dtype not in DTYPES:
        raise LMError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    check_exportable(config)
    if tokenizer.vocab_size > config.vocab_size:
        raise LMError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size is "
            f"{config.vocab_size}: they do not belong together; pass the run's tokenizer"
        )
    from safetensors.torch import save_file

    eps = model.ln_final.eps
    weights = hf_state_dict(model.state_dict(), config, DTYPES[dtype])
    bos, eos = special_token_ids(tokenizer)
    summary = {
        **(summary or {}),
        "dtype": dtype,
        "parameters": sum(t.numel() for t in weights.values()),
        "context_length": config.context_length,
        "vocab_size": config.vocab_size,
        "special_tokens": list(tokenizer.special_ids),
    }
    summary.setdefault("run", "model")
    summary.setdefault("checkpoint_step", None)
    summary.setdefault("final_val_loss", None)

    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        save_file(
            {name: t.contiguous() for name, t in weights.items()},
            tmp / WEIGHTS_FILE,
            metadata={"format": "pt", "lm_run": str(summary["run"])},
        )
        write_json(
            tmp / "config.json",
            hf_config(config, eps=eps, dtype=dtype, bos_token_id=bos, eos_token_ids=eos),
        )
        write_json(
            tmp / "generation_config.json",
            hf_generation_config(config, bos, eos, temperature=temperature, top_p=top_p),
        )
        with open(tmp / "tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(hf_tokenizer_json(tokenizer), f, ensure_ascii=False)
        write_json(
            tmp / "tokenizer_config.json", hf_tokenizer_config(tokenizer, config.context_length)
        )
        write_text(tmp / "README.md", _model_card(summary))
    return out_dir


def export_hf(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    dtype: str = "float32",
    temperature: float = 0.8,
    top_p: float = 0.9,
) -> dict:
    """Export a run directory (written by ``lm train``) to ``out_dir`` as a Hugging Face
    ``LlamaForCausalLM`` directory; returns a summary. Refuses (``LMError``) a variant
    Llama cannot express, a diverged run, an unfinished one without ``checkpoint``, and
    weights with NaN or inf."""
    from lm.inference.run import (
        default_checkpoint,
        load_run,
        read_run,
        tokenizer_dir_for_run,
    )
    from lm.tokenizer import Tokenizer

    run_config, result = read_run(run_dir)
    name = run_config.get("name") or Path(run_dir).resolve().name
    config = ModelConfig.from_dict(run_config["model"], where=f"{run_dir}/config.json model")
    check_exportable(config, f"run {name}")
    check_run_status(run_dir, result, checkpoint is not None)
    ckpt = Path(checkpoint) if checkpoint is not None else default_checkpoint(run_dir)
    if not ckpt.is_file():
        raise LMError(f"checkpoint {ckpt} does not exist; train the run first or pass --checkpoint")
    model, _, step = load_run(run_dir, ckpt, "cpu")
    check_finite(model.state_dict(), f"run {name} ({ckpt})")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else tokenizer_dir_for_run(run_dir, run_config)
    tokenizer = Tokenizer.from_dir(tok_dir)
    summary = {
        "run": name,
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt),
        "checkpoint_step": step,
        "final_val_loss": (result or {}).get("final_val_loss"),
        "tokenizer": str(tok_dir),
    }
    write_hf_dir(
        out_dir,
        model,
        config,
        tokenizer,
        dtype=dtype,
        temperature=temperature,
        top_p=top_p,
        summary=summary,
    )
    return {**summary, "out": str(out_dir), "dtype": dtype}
