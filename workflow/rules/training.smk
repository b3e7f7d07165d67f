# Training runs and sweeps, evaluation and samples: results/runs/{run}/ (config.json,
# checkpoints/, metrics.jsonl, curves.png, result.json, eval.json, samples.md),
# results/sweeps/{sweep}/ (report.md, curves.png, summary.csv) and results/lr_tuning/.
# Runs and sweeps are data in config.yaml, resolved by lm.training.config (RUNS).


localrules:
    run_config,


rule run_config:
    """The fully resolved config of one run; changes only when that run's settings change."""
    output:
        "results/runs/{run}/run.json",
    log:
        "results/runs/{run}/run_config.log",
    params:
        run=lambda wc: resolved_run(wc.run).to_dict(),
    run:
        write_json(output[0], params.run)
        write_text(log[0], f"resolved run {wildcards.run} -> {output[0]}\n")


rule train:
    """Train one run; resumes from its checkpoints; a diverged run is a result, not a failure.
    One job per run, on its own GPU(s) of this machine's pool (lm with-gpus); a multi-process
    run is one job that starts torchrun."""
    input:
        run="results/runs/{run}/run.json",
        train=lambda wc: run_tokens(wc.run, "train"),
        valid=lambda wc: run_tokens(wc.run, "valid"),
    output:
        result="results/runs/{run}/result.json",
        config="results/runs/{run}/config.json",
        metrics="results/runs/{run}/metrics.jsonl",
        curves=report(
            "results/runs/{run}/curves.png",
            caption="../report/run_curves.rst",
            category="Training",
            subcategory="{run}",
            labels={"run": "{run}", "file": "loss curves"},
        ),
    log:
        "results/runs/{run}/train.log",
    conda:
        "../envs/lm.yaml"
    threads: lambda wc: resolved_run(wc.run).threads
    resources:
        mem_mb=lambda wc: resolved_run(wc.run).resources.mem_mb,
        gpu=lambda wc: run_gpus(wc.run),
        # minutes, from the token budget and scheduler.throughput (lm.training.config)
        runtime=lambda wc: run_runtime(resolved_run(wc.run), section("scheduler")),
        # SLURM: SIGTERM to the job's steps ahead of the time limit; lm train saves and exits
        # 75 and the SLURM profile resubmits the job, which resumes (docs/cluster.md)
        slurm_extra=lambda wc: stop_signal_option(
            run_runtime(resolved_run(wc.run), section("scheduler"))
        ),
    params:
        outdir=lambda wc: f"results/runs/{wc.run}",
        launch=lambda wc: train_command(wc.run),
        code=code_version("train"),
    shell:
        # SIGTERM (a scheduler's warning) is for lm train alone, which installs its own
        # handler: the shell and tee ignore it, so the log and the exit status survive
        "trap '' TERM; lm with-gpus {resources.gpu} -- "
        "{params.launch} --config {input.run:q} --train-tokens {input.train:q} "
        "--valid-tokens {input.valid:q} --out {params.outdir:q} --threads {threads} "
        "--on-config-change restart --progress log 2>&1 | tee {log:q}"


rule evaluate:
    """Validation loss, perplexity and bits per byte over the whole validation split."""
    input:
        result="results/runs/{run}/result.json",
        valid=lambda wc: run_tokens(wc.run, "valid"),
        # bytes and tokens of the split, for bits per byte
        stats=lambda wc: f"results/{resolved_run(wc.run).dataset}/tokens/valid.stats.json",
    output:
        "results/runs/{run}/eval.json",
    log:
        "results/runs/{run}/evaluate.log",
    conda:
        "../envs/lm.yaml"
    threads: lambda wc: resolved_run(wc.run).threads
    params:
        rundir=lambda wc: f"results/runs/{wc.run}",
        settings=cli_options(section("evaluation"), ["batch_size"]),
        code=code_version("evaluate"),
    shell:
        "lm evaluate --run {params.rundir:q} --valid-tokens {input.valid:q} "
        "--valid-stats {input.stats:q} {params.settings} --threads {threads} --out {output:q} "
        "--progress log 2>&1 | tee {log:q}"


rule samples:
    """Completions of the configured prompts by the trained model."""
    input:
        result="results/runs/{run}/result.json",
        tokenizer=lambda wc: f"results/{resolved_run(wc.run).dataset}/tokenizer",
    output:
        md=report(
            "results/runs/{run}/samples.md",
            caption="../report/samples.rst",
            category="Samples",
            subcategory="{run}",
            labels={"run": "{run}", "file": "samples"},
        ),
        json="results/runs/{run}/samples.json",
    log:
        "results/runs/{run}/samples.log",
    conda:
        "../envs/lm.yaml"
    threads: 1
    params:
        rundir=lambda wc: f"results/runs/{wc.run}",
        prompts=as_json_arg(generation_config()["prompts"]),
        settings=cli_options(
            generation_config(), ["max_new_tokens", "temperature", "top_p", "seed"]
        ),
        code=code_version("samples"),
    shell:
        "lm samples --run {params.rundir:q} --tokenizer {input.tokenizer:q} "
        "--prompts {params.prompts} {params.settings} --out {output.md:q} "
        "--json {output.json:q} 2>&1 | tee {log:q}"


checkpoint race_choice:
    """A race's tuned baseline and recipe: the best of each one's LR sweep (eval.json). A
    checkpoint: which ablations the report needs is known once this has run."""
    input:
        results=lambda wc: [
            f"results/runs/{r}/result.json" for r in sweep_runs(wc.sweep)
        ],
        evals=lambda wc: [f"results/runs/{r}/eval.json" for r in sweep_runs(wc.sweep)],
    output:
        "results/sweeps/{sweep}/choice.json",
    log:
        "results/logs/race_choice_{sweep}.log",
    conda:
        "../envs/lm.yaml"
    params:
        rundirs=lambda wc: " ".join(
            shlex.quote(f"results/runs/{r}") for r in sweep_runs(wc.sweep)
        ),
        code=code_version("race-choice"),
    shell:
        "lm race-choice --runs {params.rundirs} --out {output:q} 2>&1 | tee {log:q}"


rule sweep_report:
    """All runs of a sweep on one plot, with a table of final losses; a race's report."""
    input:
        results=lambda wc: [
            f"results/runs/{r}/result.json" for r in report_runs(wc.sweep)
        ],
        # whole-split losses and bits per byte (lm evaluate)
        evals=lambda wc: [f"results/runs/{r}/eval.json" for r in report_runs(wc.sweep)],
    output:
        md=report(
            "results/sweeps/{sweep}/report.md",
            caption="../report/sweep_report.rst",
            category="Sweeps",
            subcategory="{sweep}",
            labels={"sweep": "{sweep}", "file": "report"},
        ),
        curves=report(
            "results/sweeps/{sweep}/curves.png",
            caption="../report/sweep_curves.rst",
            category="Sweeps",
            subcategory="{sweep}",
            labels={"sweep": "{sweep}", "file": "curves"},
        ),
        csv=report(
            "results/sweeps/{sweep}/summary.csv",
            caption="../report/sweep_summary.rst",
            category="Sweeps",
            subcategory="{sweep}",
            labels={"sweep": "{sweep}", "file": "summary.csv"},
        ),
        json="results/sweeps/{sweep}/report.json",
    log:
        "results/logs/sweep_{sweep}.log",
    conda:
        "../envs/lm.yaml"
    params:
        rundirs=lambda wc, input: run_dirs_of(input.results),
        outdir=lambda wc: f"results/sweeps/{wc.sweep}",
        code=code_version("sweep-report"),
    shell:
        "lm sweep-report --runs {params.rundirs} --out {params.outdir:q} "
        "--title {wildcards.sweep:q} 2>&1 | tee {log:q}"


rule lr_tuning:
    """The CS336 learning-rate toy: SGD at lr 1e1, 1e2, 1e3 on mean(w^2)."""
    output:
        md=report(
            "results/lr_tuning/report.md",
            caption="../report/lr_tuning.rst",
            category="Training",
            subcategory="lr_tuning",
            labels={"run": "lr_tuning", "file": "report"},
        ),
        curves=report(
            "results/lr_tuning/curves.png",
            caption="../report/lr_tuning.rst",
            category="Training",
            subcategory="lr_tuning",
            labels={"run": "lr_tuning", "file": "curves"},
        ),
        json="results/lr_tuning/report.json",
    log:
        "results/logs/lr_tuning.log",
    conda:
        "../envs/lm.yaml"
    params:
        code=code_version("lr-tuning"),
    shell:
        "lm lr-tuning --out results/lr_tuning 2>&1 | tee {log:q}"


STAGE_TARGETS["training"] = training_targets
