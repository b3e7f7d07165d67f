# The entry point of the pipeline: raw text -> BPE -> tokens -> models -> reports.
# Read README.md for the commands; config.yaml for what gets built.

import os

from snakemake.utils import min_version

min_version("8.0")


# The repository's config.yaml, wherever snakemake is run from; `--configfile FILE`
# replaces it, `--config KEY=VALUE` overrides single keys.
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    split="train|valid",


include: "workflow/rules/data.smk"


rule all:
    default_target: True
    """Everything for the datasets in config targets.all (downloads the real corpora)."""
    input:
        targets_for("all"),


rule demo:
    """Everything for the built-in demo corpus, offline, in minutes."""
    input:
        targets_for("demo"),


rule data:
    """Raw text of every split of every configured target dataset, checked."""
    input:
        targets_for("all", stages=["data"]),
