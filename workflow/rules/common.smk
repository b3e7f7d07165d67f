# Shared helpers of the workflow: config validation, paths of each dataset split,
# the command that runs the library, and the list of targets per stage.

import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def _validate_config():
    """Validate config against the schema; say which key is wrong and how to fix it."""
    try:
        validate(config, "../schemas/config.schema.yaml")
    except WorkflowError as e:
        detail = e.__cause__ or e.__context__  # the jsonschema ValidationError
        if not hasattr(detail, "absolute_path"):
            raise
        where = ".".join(str(p) for p in detail.absolute_path) or "(top level)"
        raise WorkflowError(
            f"config error at `{where}`: {detail.message}. "
            f"See workflow/schemas/config.schema.yaml for the allowed keys and types."
        ) from None


_validate_config()

# Jobs call the `lm` command. Put the environment that runs snakemake first on PATH,
# so they find it without an activated virtual environment (jobs inherit os.environ).
os.environ.update(
    PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
)
REPO = Path(workflow.basedir)
SPLITS = ["train", "valid"]


def dataset_config(name):
    """The config of dataset ``name``, or a clear error naming the configured ones."""
    datasets = config["datasets"]
    if name not in datasets:
        raise WorkflowError(
            f"unknown dataset '{name}' in a target path. Configured datasets: "
            f"{', '.join(sorted(datasets))}. Add it under `datasets:` in config.yaml "
            f"or fix the path."
        )
    return datasets[name]


def split_source(name, split):
    return dataset_config(name)[split]


def raw_text(wildcards):
    """The text file of a split: the user's own file for `path:`, else results/.../raw."""
    source = split_source(wildcards.dataset, wildcards.split)
    if "path" in source:
        path = Path(os.path.expandvars(os.path.expanduser(source["path"])))
        if not path.exists():
            raise WorkflowError(
                f"datasets.{wildcards.dataset}.{wildcards.split}.path: file {path} does not "
                f"exist. Fix the path in config.yaml (relative paths are relative to the "
                f"directory you run snakemake in), or use url: to download it."
            )
        return str(path)
    return f"results/{wildcards.dataset}/raw/{wildcards.split}.txt"


def code_version(*modules):
    """A hash of library source files, passed as a param so that editing them reruns the rules using them."""
    h = hashlib.sha256()
    for module in modules:
        root = REPO / module
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for f in files:
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def fetchable_source(wildcards):
    """The source of a split that can be fetched (url or generate)."""
    source = split_source(wildcards.dataset, wildcards.split)
    if "path" in source:
        raise WorkflowError(
            f"datasets.{wildcards.dataset}.{wildcards.split} uses path: {source['path']}; "
            f"it is read in place, so results/{wildcards.dataset}/raw/{wildcards.split}.txt "
            f"is never made. Ask for results/{wildcards.dataset}/raw/{wildcards.split}.stats.json."
        )
    return source


def as_json_arg(obj):
    return shlex.quote(json.dumps(obj, sort_keys=True))


# Each rule file registers, per stage, a function datasets -> list of target files.
STAGE_TARGETS = {}


def targets_for(target, stages=None):
    datasets = config["targets"][target].get("datasets", [])
    for name in datasets:
        dataset_config(name)
    files = []
    for stage, fn in STAGE_TARGETS.items():
        if stages is None or stage in stages:
            files.extend(fn(datasets))
    return files
