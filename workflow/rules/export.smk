# Trained models in the formats the ecosystem reads: results/runs/{run}/hf/ and
# results/sweeps/{sweep}/hf/ (the sweep's best run), each a Hugging Face LlamaForCausalLM
# directory (model.safetensors, config.json, generation_config.json, tokenizer.json,
# tokenizer_config.json, README.md) that transformers, vLLM and llama.cpp load.


rule export_hf:
    """One run as a Hugging Face LlamaForCausalLM directory; refuses a diverged run."""
    input:
        result="results/runs/{run}/result.json",
        tokenizer=lambda wc: run_tokenizer(wc.run),
    output:
        directory("results/runs/{run}/hf"),
    log:
        "results/runs/{run}/export_hf.log",
    conda:
        "../envs/lm.yaml"
    threads: 1
    params:
        rundir=lambda wc: f"results/runs/{wc.run}",
        settings=cli_options(generation_config(), ["temperature", "top_p"]),
        code=code_version("export-hf"),
    shell:
        "lm export-hf --run {params.rundir:q} --tokenizer {input.tokenizer:q} "
        "{params.settings} --out {output:q} 2>&1 | tee {log:q}"


rule export_best_hf:
    """The best run of a sweep (finished, lowest final validation loss, of the runs Llama
    can express) as a Hugging Face LlamaForCausalLM directory."""
    input:
        results=lambda wc: [
            f"results/runs/{r}/result.json" for r in exportable_sweep_runs(wc.sweep)
        ],
        tokenizers=lambda wc: sorted(
            {run_tokenizer(r) for r in exportable_sweep_runs(wc.sweep)}
        ),
    output:
        directory("results/sweeps/{sweep}/hf"),
    log:
        "results/logs/export_hf_{sweep}.log",
    conda:
        "../envs/lm.yaml"
    threads: 1
    params:
        rundirs=lambda wc: " ".join(
            shlex.quote(f"results/runs/{r}") for r in exportable_sweep_runs(wc.sweep)
        ),
        settings=cli_options(generation_config(), ["temperature", "top_p"]),
        code=code_version("export-hf"),
    shell:
        "lm export-hf --run {params.rundirs} {params.settings} --out {output:q} "
        "2>&1 | tee {log:q}"


STAGE_TARGETS["export"] = export_targets
