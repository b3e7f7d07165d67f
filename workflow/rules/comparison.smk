# Comparisons: evaluated runs side by side, results/comparisons/{comparison}/ (report.md,
# curves.png, report.json), from config `comparisons:`; lm compare-runs writes them.


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


STAGE_TARGETS["comparisons"] = comparison_targets
