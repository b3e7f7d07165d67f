# BPE training and the encoded datasets: results/{dataset}/tokenizer/ (vocab.json, merges.txt,
# stats.json, report.md), results/{dataset}/tokens/{split}.npy (+ .stats.json), and the
# tokenizer experiments report over a target's datasets.


rule train_tokenizer:
    """Train the dataset's byte-level BPE on its train split (CS336 semantics)."""
    input:
        text=lambda wc: raw_text(wc, split="train"),
        checked="results/{dataset}/raw/train.stats.json",
    output:
        report(
            directory("results/{dataset}/tokenizer"),
            patterns=["{name}.md"],
            caption="../report/tokenizer.rst",
            category="Tokenizers",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "file": "tokenizer report"},
        ),
    log:
        "results/{dataset}/logs/train_tokenizer.log",
    conda:
        "../envs/lm.yaml"
    threads: lambda wc, rulename: data_threads(rulename)
    resources:
        # follows the distinct pre-tokens (estimated from the text's first 8 MB), not the
        # corpus size (lm.tokenizer.training.memory); no more than the largest node has
        mem_mb=lambda wc, input, threads, rulename: estimated_mem_mb(
            rulename, tokenizer_mem_mb(input.text, special_tokens(wc.dataset), threads)
        ),
    params:
        vocab_size=lambda wc: dataset_config(wc.dataset)["tokenizer"]["vocab_size"],
        specials=lambda wc: special_token_args(wc.dataset),
        code=code_version("train-bpe"),
    shell:
        "lm train-bpe {input.text:q} --vocab-size {params.vocab_size} {params.specials} "
        "--out {output:q} --workers {threads} --progress log 2>&1 | tee {log:q}"


rule encode_split:
    """Encode one split with the dataset's tokenizer into one .npy of token ids."""
    input:
        text=raw_text,
        tokenizer="results/{dataset}/tokenizer",
    output:
        tokens="results/{dataset}/tokens/{split}.npy",
        stats="results/{dataset}/tokens/{split}.stats.json",
    log:
        "results/{dataset}/logs/encode_{split}.log",
    conda:
        "../envs/lm.yaml"
    threads: lambda wc, rulename: data_threads(rulename)
    params:
        specials=lambda wc: special_token_args(wc.dataset, none_flag=""),
        code=code_version("encode"),
    shell:
        "lm encode {input.text:q} --tokenizer {input.tokenizer:q} {params.specials} "
        "--out {output.tokens:q} --stats {output.stats:q} --workers {threads} "
        "--progress log 2>&1 | tee {log:q}"


rule tokenizer_experiments:
    """Compression, cross-dataset matrix, throughput and dtype of a target's tokenizers."""
    input:
        texts=lambda wc: [
            raw_text(None, dataset=d, split="train")
            for d in target_datasets(wc.target)
        ],
        tokenizers=lambda wc: [
            f"results/{d}/tokenizer" for d in target_datasets(wc.target)
        ],
    output:
        md=report(
            "results/tokenizer_experiments/{target}/report.md",
            caption="../report/tokenizer_experiments.rst",
            category="Tokenizers",
            subcategory="experiments",
            labels={"target": "{target}", "file": "tokenizer experiments"},
        ),
        json="results/tokenizer_experiments/{target}/report.json",
    log:
        "results/logs/tokenizer_experiments_{target}.log",
    conda:
        "../envs/lm.yaml"
    params:
        datasets=lambda wc, input: " ".join(
            f"--dataset {shlex.quote(f'{d}={text}:{tok}')}"
            for d, text, tok in zip(
                target_datasets(wc.target), input.texts, input.tokenizers
            )
        ),
        settings=cli_options(
            section("tokenizer_experiments"), ["documents", "seed", "throughput_mb"]
        ),
        outdir=lambda wc: f"results/tokenizer_experiments/{wc.target}",
        code=code_version("tokenizer-experiments"),
    shell:
        "lm tokenizer-experiments {params.datasets} {params.settings} "
        "--out {params.outdir:q} 2>&1 | tee {log:q}"


STAGE_TARGETS["tokenizer"] = lambda target, datasets: [
    f"results/{d}/tokenizer" for d in datasets
]
STAGE_TARGETS["tokens"] = lambda target, datasets: [
    f"results/{d}/tokens/{s}.npy" for d in datasets for s in SPLITS
]
STAGE_TARGETS["tokenizer_experiments"] = lambda target, datasets: (
    [f"results/tokenizer_experiments/{target}/report.md"] if datasets else []
)
