# Comparisons: evaluated runs side by side, results/comparisons/{comparison}/ (report.md,
# curves.png, report.json), from config `comparisons:`; lm compare-runs writes them.


def comparison_runs(name):
    """The runs of comparison ``name``, or a clear error naming the configured ones."""
    comparisons = section("comparisons")
    if name not in comparisons:
        raise WorkflowError(
            f"unknown comparison '{name}'. Configured comparisons: "
            f"{', '.join(sorted(comparisons)) or '(none)'}. Add it under `comparisons:` "
            f"in config.yaml."
        )
    return comparisons[name]["runs"]


def _check_comparisons():
    for name, spec in section("comparisons").items():
        for run in spec["runs"]:
            try:
                resolved_run(run)
            except WorkflowError as e:
                raise WorkflowError(
                    f"config error at `comparisons.{name}.runs`: {e}"
                ) from None
    for target, wanted in config["targets"].items():
        for name in wanted.get("comparisons", []):
            try:
                comparison_runs(name)
            except WorkflowError as e:
                raise WorkflowError(
                    f"config error at `targets.{target}.comparisons`: {e}"
                ) from None


_check_comparisons()


rule comparison_report:
    """Runs of different datasets or tokenizers side by side, per token and per byte."""
    input:
        lambda wc: [
            f"results/runs/{r}/{f}"
            for r in comparison_runs(wc.comparison)
            for f in ("result.json", "eval.json", "samples.json")
        ],
    output:
        md=report(
            "results/comparisons/{comparison}/report.md",
            caption="../report/comparison.rst",
            category="Comparisons",
            subcategory="{comparison}",
            labels={"comparison": "{comparison}", "file": "report"},
        ),
        curves=report(
            "results/comparisons/{comparison}/curves.png",
            caption="../report/comparison.rst",
            category="Comparisons",
            subcategory="{comparison}",
            labels={"comparison": "{comparison}", "file": "curves"},
        ),
        json="results/comparisons/{comparison}/report.json",
    log:
        "results/logs/comparison_{comparison}.log",
    wildcard_constraints:
        comparison=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    conda:
        "../envs/lm.yaml"
    params:
        rundirs=lambda wc: " ".join(
            shlex.quote(f"results/runs/{r}") for r in comparison_runs(wc.comparison)
        ),
        title=lambda wc: shlex.quote(
            section("comparisons")[wc.comparison].get("title") or wc.comparison
        ),
        outdir=lambda wc: f"results/comparisons/{wc.comparison}",
        code=code_version("compare-runs"),
    shell:
        "lm compare-runs --runs {params.rundirs} --out {params.outdir:q} "
        "--title {params.title} 2>&1 | tee {log:q}"


def comparison_targets(target, datasets):
    """The report of each comparison a target names, and what its runs need."""
    files = []
    for name in config["targets"][target].get("comparisons", []):
        files.append(f"results/comparisons/{name}/report.md")
        for run in comparison_runs(name):
            files.extend(run_outputs(run))
    return files


STAGE_TARGETS["comparisons"] = comparison_targets
