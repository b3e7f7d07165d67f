# results/README.md: a generated index of what is under results/, one line an artifact.
# It is rebuilt after the target being run (all, demo, train_all) when its inputs change.


rule results_index:
    """Index of the results: one line and a link per report, run, sweep and tokenizer."""
    input:
        lambda wc: [f for t in requested_targets() for f in targets_for(t)],
    output:
        "results/README.md",
    log:
        "results/logs/results_index.log",
    localrule: True
    conda:
        "../envs/lm.yaml"
    params:
        code=code_version("results-index"),
    shell:
        "lm results-index --results results --out {output:q} 2>&1 | tee {log:q}"
