# Datasets in: each split of each dataset becomes a checked UTF-8 text file.
# url: and generate: sources are written to results/{dataset}/raw/{split}.txt;
# path: sources are read in place (never copied) wherever the config points.


rule fetch_split:
    """Download (url:) or generate (generate:) one split of a dataset."""
    output:
        "results/{dataset}/raw/{split}.txt",
    log:
        "results/{dataset}/raw/{split}.fetch.log",
    conda:
        "../envs/lm.yaml"
    params:
        source=lambda wc: as_json_arg(fetchable_source(wc)),
        what=lambda wc: f"datasets.{wc.dataset}.{wc.split}",
        code=lambda wc: (
            code_version("fetch")
            if "generate" in split_source(wc.dataset, wc.split)
            else ""
        ),
    shell:
        "lm fetch --source {params.source} --what {params.what} --out {output:q} "
        "--progress log 2>&1 | tee {log:q}"


rule inspect_split:
    """Check a split is readable UTF-8 text; count its bytes, lines and documents."""
    input:
        raw_text,
    output:
        "results/{dataset}/raw/{split}.stats.json",
    log:
        "results/{dataset}/raw/{split}.inspect.log",
    conda:
        "../envs/lm.yaml"
    params:
        what=lambda wc: f"datasets.{wc.dataset}.{wc.split}",
        separator=lambda wc: shlex.quote(
            (special_tokens(wc.dataset) or ["<|endoftext|>"])[0]
        ),
        code=code_version("inspect-text"),
    shell:
        "lm inspect-text {input:q} --what {params.what} --separator {params.separator} "
        "--out {output:q} --progress log 2>&1 | tee {log:q}"


STAGE_TARGETS["data"] = lambda target, datasets: [
    f"results/{d}/raw/{s}.stats.json" for d in datasets for s in SPLITS
]
