"""The tiny pipeline config shared by the modules that build the demo DAG with the real
`snakemake` (tests/test_workflow_pipeline.py, tests/test_workflow_writeup_full.py)."""

from __future__ import annotations

from conftest import MICRO_MODEL, tiny_config

#: The handout problems the demo writeup answers from its own artifacts.
DEMO_ANSWERS = {
    "train_bpe_tinystories",
    "tokenizer_experiments",
    "transformer_accounting",
    "learning_rate_tuning",
    "adamwAccounting",
    "learning_rate",
    "generate",
}


def pipeline_config() -> dict:
    cfg = tiny_config(demo=40)
    cfg["models"] = {"micro": MICRO_MODEL}
    cfg["training_defaults"] = {
        "threads": 1,
        "training": {
            "batch_size": 4,
            "steps": 6,
            "eval_every": 3,
            "eval_batches": 2,
            "log_every": 2,
            "checkpoint_every": 3,
        },
    }
    micro = {"dataset": "demo", "model": {"preset": "micro"}, "optimizer": {"lr": 1e-2}}
    # micro-post: a variant Llama cannot express, which the export leaves out
    cfg["runs"] = {
        "micro": micro,
        "micro-post": {**micro, "model": {"preset": "micro", "norm": "post"}},
    }
    cfg["sweeps"] = {"micro-lr": {"base": "micro", "grid": {"optimizer.lr": [1e-3, 1e-2]}}}
    cfg["generation"] = {
        "prompts": ["Once upon a time", "The dog"],
        "max_new_tokens": 8,
        "temperature": 0.8,
        "top_p": 0.9,
        "seed": 0,
    }
    cfg["evaluation"] = {"batch_size": 4}
    cfg["accounting"] = {"models": ["gpt2-small"], "preset": "gpt2-small", "long_context": 2048}
    cfg["tokenizer_experiments"] = {"documents": 3, "throughput_mb": 0.01}
    cfg["targets"]["demo"].update(
        sweeps=["micro-lr"], runs=["micro-post"], accounting=True, lr_tuning=True, export_hf=True
    )
    # full-scale stand-ins outside every target: the writeup points at them, never builds them
    cfg["datasets"]["web"] = {
        **cfg["datasets"]["demo"],
        "train": {"generate": {"documents": 20, "seed": 2}},
    }
    cfg["sweeps"]["micro-bs"] = {"base": "micro", "grid": {"training.batch_size": [2, 4]}}
    cfg["sweeps"]["micro-abl"] = {
        "base": "micro",
        "variants": {
            "baseline": {},
            "no-norm": {"model.norm": "none"},
            "post-norm": {"model.norm": "post"},
            "nope": {"model.position": "nope"},
            "silu": {"model.ffn": "silu"},
        },
    }
    cfg["runs"]["web-main"] = {**cfg["runs"]["micro"], "dataset": "web"}
    cfg["targets"]["all"]["datasets"] = ["demo", "web"]  # tokenizer experiments of the full writeup
    cfg["writeup"] = {
        "tinystories": "demo",
        "owt": "web",
        "learning_rate": "micro-lr",
        "batch_size": "micro-bs",
        "ablations": "micro-abl",
        "main_experiment": "web-main",
        "demo": {"tinystories": "demo", "learning_rate": "micro-lr"},
    }
    return cfg
