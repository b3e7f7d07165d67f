# Resource accounting (CS336 transformer_accounting, adamwAccounting): parameters, FLOPs and
# memory of the model presets, every number checked against the model itself.


rule accounting:
    """Parameter/FLOP/memory tables of the presets and the AdamW memory and time budget."""
    output:
        transformer=report(
            "results/accounting/transformer.md",
            caption="../report/accounting_transformer.rst",
            category="Accounting",
            subcategory="model presets",
            labels={"file": "transformer.md"},
        ),
        transformer_json="results/accounting/transformer.json",
        adamw=report(
            "results/accounting/adamw.md",
            caption="../report/accounting_adamw.rst",
            category="Accounting",
            subcategory="model presets",
            labels={"file": "adamw.md"},
        ),
        adamw_json="results/accounting/adamw.json",
    log:
        "results/logs/accounting.log",
    conda:
        "../envs/lm.yaml"
    params:
        presets=as_json_arg(config.get("models") or {}),
        models=(
            " ".join(
                ["--models"]
                + [shlex.quote(m) for m in section("accounting")["models"]]
            )
            if section("accounting").get("models")
            else ""
        ),
        options=cli_options(
            section("accounting"),
            [
                "preset",
                "long_context",
                "memory_budget_gb",
                "batch_size",
                "steps",
                "peak_tflops",
                "mfu",
            ],
            rename={"long_context": "context_length"},
        ),
        outdir=lambda wc, output: os.path.dirname(output.transformer),
        code=code_version("accounting"),
    shell:
        "lm accounting --out {params.outdir} --presets {params.presets} {params.models} "
        "{params.options} 2>&1 | tee {log:q}"


STAGE_TARGETS["accounting"] = lambda target, datasets: (
    ["results/accounting/transformer.md", "results/accounting/adamw.md"]
    if config["targets"][target].get("accounting")
    else []
)
