# The entry point of the pipeline: raw text -> BPE -> tokens -> models -> reports.
# Read README.md for the commands; config.yaml for what gets built.

import os

from snakemake.utils import min_version

from lm.provenance import flatten, provenance

min_version("8.0")


# The repository's config.yaml, wherever snakemake is run from; `--configfile FILE`
# replaces it, `--config KEY=VALUE` overrides single keys.
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    split="train|valid",
    run=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    sweep=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    target="all|demo|train_all",


# `snakemake --report results/report.html`: every table, curve and sample in one page.
report: "workflow/report/workflow.rst"


# ... and once, in its description, the provenance of what made it (lm, commit, versions,
# device): the key is set after the config was validated, and no rule reads it
config["_provenance"] = flatten(provenance())


include: "workflow/rules/data.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/accounting.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/comparison.smk"
include: "workflow/rules/writeup.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/index.smk"


# Before anything runs or is submitted: every job fits a node of its partition (or this
# machine), else one error naming each job that would wait forever (common.smk).
onstart:
    check_requests_fit(workflow.dag.needrun_jobs())


rule all:
    """Everything for the datasets in config targets.all (downloads the real corpora)."""
    default_target: True
    input:
        targets_for("all"),
        "results/README.md",


rule demo:
    """Everything for the built-in demo corpus, offline, in minutes."""
    input:
        targets_for("demo"),
        "results/README.md",


rule train_all:
    """The training sweeps of config targets.train_all (the CS336 learning-rate sweep)."""
    input:
        targets_for("train_all"),
        "results/README.md",


rule writeup:
    """The CS336 writeup (results/writeup.md) from whatever full-scale artifacts exist."""
    input:
        "results/writeup.md",


rule data:
    """Raw text of every split of every configured target dataset, checked."""
    input:
        targets_for("all", stages=["data"]),


rule tokenizers:
    """The tokenizer of every dataset of config targets.all."""
    input:
        targets_for("all", stages=["tokenizer"]),
