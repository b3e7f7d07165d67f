# Shared helpers of the workflow: config validation, paths of each dataset split,
# the command that runs the library, and the list of targets per stage.

import functools
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import available_cpu_count, validate

from lm.codeversion import command_version
from lm.config_layers import merge_layers, typed_command_line_config
from lm.devices import machine_gpus
from lm.devices.capacity import (
    Request,
    cap,
    check_fits,
    parse_sinfo,
    pick_partition,
    run_sinfo,
    this_machine,
)
from lm.errors import LMError
from lm.export.variants import llama_can_express
from lm.io import write_json, write_text
from lm.tokenizer.training.memory import tokenizer_mem_mb
from lm.training.config import resolve_runs, sweep_members
from lm.training.grid import is_race, race_ablations, race_lr_members
from lm.training.launch import job_gpus, train_launcher
from lm.training.resources import run_runtime, stop_signal_option


def _layered_config():
    """config.yaml, each --configfile, then --config, merged by lm.config_layers.

    Snakemake merges them key by key; merged again here so that alternatives given in a
    later layer (a split's `path:` over the shipped `url:`, `steps` over `total_tokens`)
    replace those of the layers below instead of sitting beside them.
    """
    settings = workflow.config_settings
    layers = CONFIG_LAYERS
    if not settings.replace_workflow_config:
        layers.append(
            ("config.yaml", load_configfile(Path(workflow.basedir) / "config.yaml"))
        )
    layers.extend((_as_typed(f), load_configfile(f)) for f in settings.configfiles)
    layers.append(("--config", typed_command_line_config(settings.config)))
    merged = merge_layers(layer for _, layer in layers)
    config.clear()
    config.update(merged)


# (name, content) of each config layer, lowest first: config.yaml, --configfile's, --config
CONFIG_LAYERS = []


def _as_typed(configfile):
    """A --configfile as the user would write it: relative to the working directory when it
    is inside it (Snakemake hands over absolute paths)."""
    path = Path(configfile)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def config_origin(*keys):
    """The name of the last config layer that sets the key path ``keys`` (None if none)."""
    origin = None
    for name, layer in CONFIG_LAYERS:
        node = layer
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            origin = name
    return origin


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
            f"config error at `{where}`: {_schema_message(detail)}. "
            f"See workflow/schemas/config.schema.yaml for the allowed keys and types."
        ) from None


def _schema_message(error):
    """jsonschema's message, but for a choice between keys (oneOf/anyOf of `required:`
    alternatives, such as a split's url, path and generate) a sentence naming the keys:
    "give exactly one of url, path, generate (it gives url and path)"."""
    options = error.validator_value if error.validator in ("oneOf", "anyOf") else None
    keys = [o.get("required", [None])[0] for o in options or [] if isinstance(o, dict)]
    if not keys or None in keys or not isinstance(error.instance, dict):
        return error.message
    given = [k for k in keys if k in error.instance]
    how = "exactly one" if error.validator == "oneOf" else "at least one"
    if len(given) == 1:  # the one chosen forbids a key it was given (`not: {required}`)
        chosen = options[keys.index(given[0])]
        extra = [
            k for k in chosen.get("not", {}).get("required", []) if k in error.instance
        ]
        if extra:
            return f"`{given[0]}` takes no `{', '.join(extra)}`; remove it"
        return error.message
    said = " and ".join(given) if given else "none of them"
    return f"give {how} of {', '.join(keys)} (it gives {said})"


_layered_config()
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


def raw_text(wildcards, dataset=None, split=None):
    """The text file of a split: the user's own file for `path:`, else results/.../raw.

    Dataset and split come from the wildcards unless given."""
    dataset = dataset or wildcards.dataset
    split = split or wildcards.split
    source = split_source(dataset, split)
    if "path" in source:
        path = Path(os.path.expandvars(os.path.expanduser(source["path"])))
        if not path.exists():
            raise WorkflowError(
                f"datasets.{dataset}.{split}.path: file {path} does not "
                f"exist. Fix the path in config.yaml (relative paths are relative to the "
                f"directory you run snakemake in), or use url: to download it."
            )
        return str(path)
    return f"results/{dataset}/raw/{split}.txt"


def special_tokens(dataset):
    return dataset_config(dataset)["tokenizer"].get("special_tokens", ["<|endoftext|>"])


def special_token_args(dataset, none_flag="--no-special-tokens"):
    """`--special-token T` for each of the dataset's special tokens (or none_flag)."""
    tokens = special_tokens(dataset)
    if not tokens:
        return none_flag
    return " ".join(f"--special-token {shlex.quote(t)}" for t in tokens)


def section(name):
    """A top-level config section that may be absent."""
    return config.get(name) or {}


def target_datasets(target):
    return config["targets"][target].get("datasets", [])


def code_version(command):
    """The version of the code `lm COMMAND` runs (lm.codeversion: its modules found from the
    import graph, hashed without comments and docstrings), a param of the rule running it,
    so that a code change reruns exactly the steps whose code it touched."""
    return command_version(command, root=REPO / "lm")


def fetchable_source(wildcards):
    """The source of a split that can be fetched (url or generate)."""
    source = split_source(wildcards.dataset, wildcards.split)
    if "path" in source:
        raise WorkflowError(
            f"datasets.{wildcards.dataset}.{wildcards.split} uses path: {source['path']}; "
            f"it is read in place, so results/{wildcards.dataset}/raw/{wildcards.split}.txt "
            f"is never made. Ask for results/{wildcards.dataset}/raw/{wildcards.split}.stats.json."
        )
    origin = config_origin("datasets", wildcards.dataset, wildcards.split, "sha256")
    if origin not in (
        None,
        "config.yaml",
    ):  # a checksum mismatch names the file to edit
        source = {**source, "sha256_from": origin}
    return source


def as_json_arg(obj):
    return shlex.quote(json.dumps(obj, sort_keys=True))


# ---- training runs: resolved once from config by the library ----------------------------


def _resolve_runs():
    try:
        return resolve_runs(config)
    except LMError as e:
        raise WorkflowError(f"config error: {e}") from None


RUNS = _resolve_runs()


def resolved_run(name):
    """The resolved config (a lm.training.run_config.RunConfig) of run ``name`` (a base
    run or a sweep member)."""
    if name not in RUNS:
        raise WorkflowError(
            f"unknown run '{name}' in a target path. Configured runs: "
            f"{', '.join(sorted(RUNS)) or '(none)'}. Add it under `runs:` or `sweeps:` "
            f"in config.yaml, or list them with `lm runs --config config.yaml --names`."
        )
    return RUNS[name]


# GPUs: the local executor counts a `gpu` resource but never says which GPU a job got; each
# GPU job takes its own from this machine's lock-file pool (`lm with-gpus`, lm.devices).
# Run at most as many GPU jobs at once as there are GPUs here, unless --resources gpu=G.
# A cluster executor counts GPUs itself (and the submitting host may have none).
# While the Snakefile is read the executor is not known yet (workflow.local_exec is True even
# under --executor slurm); a cluster executor has a number of jobs to submit at once (--jobs,
# the profile's `jobs:`), which Snakemake keeps as `nodes`, and so do the jobs on the nodes.
# (A local run given --jobs beside --cores counts as a cluster run here; its jobs still get
# this machine's GPUs from jobs_run_here, asked once the executor is known.)
ON_CLUSTER = workflow.remote_exec or workflow.resource_settings.nodes is not None
LOCAL_JOBS = workflow.is_main_process and not ON_CLUSTER
MACHINE_GPUS = functools.cache(lambda: len(machine_gpus()))
if LOCAL_JOBS:
    workflow.global_resources.setdefault("gpu", MACHINE_GPUS())


@functools.cache
def jobs_run_here():
    """Whether the jobs run on this machine. Asked while the DAG is built, when the
    executor is known (so a local run given --jobs counts too); a dry run goes by ON_CLUSTER.
    """
    plugin = workflow.executor_plugin
    if not workflow.is_main_process:
        return False
    if plugin is None or plugin.common_settings.dryrun_exec:
        return not ON_CLUSTER
    here = plugin.common_settings.local_exec
    if here and MACHINE_GPUS() and workflow.global_resources.get("gpu").value is None:
        # the scheduler is set up by now: too late to cap GPU jobs; the pool still keeps
        # them apart (a job that finds its GPUs taken waits for them)
        logger.warning(
            f"this machine has {MACHINE_GPUS()} GPU(s), which a run with --jobs does not "
            f"tell Snakemake: add --resources gpu={MACHINE_GPUS()}, or GPU jobs beyond that "
            f"start and wait in `lm with-gpus` for a free GPU."
        )
    return here


# ---- requests that fit: what the nodes a job goes to have (lm.devices.capacity) -----------
# A job asking for more CPUs, memory or GPUs than every node of its partition has would wait
# forever (SLURM: PENDING, reason PartitionConfig). Under the SLURM executor the nodes are
# sinfo's (once, cached); run here, this machine's memory and GPUs (Snakemake itself scales
# threads down to --cores). Estimates of ours (a data step's threads, the tokenizer's memory)
# are capped to the largest node; what is left must fit a node, or the run stops before
# anything is submitted (check_requests_fit, at start-up; a dry run does not ask SLURM).


def submits_to_slurm():
    """Whether this snakemake submits its jobs with sbatch (the SLURM executor, not a dry
    run, not a job already on its node)."""
    plugin = workflow.executor_plugin
    return (
        workflow.is_main_process
        and plugin is not None
        and not plugin.common_settings.dryrun_exec
        and plugin.cli_prefix == "slurm"
    )


@functools.cache
def _sinfo_partitions():
    return parse_sinfo(run_sinfo())


@functools.cache
def job_nodes(partition=None):
    """The nodes a job of ``partition`` (None: the default one) goes to, as a
    lm.devices.capacity.Partition; None where they are not known (another cluster executor,
    a dry run of a cluster profile, a job already running on its node)."""
    try:
        if submits_to_slurm():
            return pick_partition(_sinfo_partitions(), partition)
        if jobs_run_here():
            return this_machine(MACHINE_GPUS())
    except LMError as e:
        raise WorkflowError(f"checking what jobs may ask for: {e}") from None
    return None


def rule_partition(rulename):
    """The slurm_partition a rule's jobs ask for (None: the cluster's default)."""
    value = workflow.get_rule(rulename).resources.get("slurm_partition")
    if value is None or value.is_evaluable() or not value.value:
        return None
    return str(value.value).strip("'\"")


# Threads of the parallel data steps (BPE pre-tokenization, encoding): scheduler.data_threads,
# else, run here, all that --cores allows (`--cores all`: this machine's); on a cluster,
# where the submitting host's cores say nothing about a node's, DATA_THREADS_ON_CLUSTER;
# either way no more than the largest node of the job's partition has. A cluster job's
# snakemake on its node must reach the number the submitting one asked sbatch for (the job's
# command asks srun for that many CPUs of the allocation): it reads it back from SLURM.
DATA_THREADS_ON_CLUSTER = 4


def _data_threads():
    configured = section("scheduler").get("data_threads")
    if configured:
        return configured
    if ON_CLUSTER:
        return DATA_THREADS_ON_CLUSTER
    # no --cores (e.g. --workflow-profile none -n): this machine's
    try:
        return workflow.cores
    except WorkflowError:
        return os.cpu_count() or 1


DATA_THREADS = _data_threads()


def data_threads(rulename):
    """DATA_THREADS, capped to the largest node of the rule's partition."""
    # on its node, the job reads back what the submitting side asked for
    asked = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if workflow.remote_exec and asked.isdigit():
        return int(asked)
    if not submits_to_slurm():  # run here, --cores caps threads (as for every rule)
        return DATA_THREADS
    return cap(DATA_THREADS, job_nodes(rule_partition(rulename)), "cpus")


def estimated_mem_mb(rulename, mem_mb):
    """An estimate of ours (not a user's demand), capped to the largest node's memory."""
    nodes = job_nodes(rule_partition(rulename))
    if nodes is None or mem_mb <= nodes.most("mem_mb"):
        return mem_mb
    capped = cap(mem_mb, nodes, "mem_mb")
    logger.warning(
        f"{rulename} jobs: the memory estimate, {mem_mb} MB, is more than any node of "
        f"{nodes.where} has; asking for {capped} MB (--set-resources {rulename}:mem_mb=N "
        f"to choose)."
    )
    return capped


def check_requests_fit(jobs):
    """Every job to run fits some node of its partition, else one error naming each job that
    does not (its request and the largest node). Called before anything is submitted."""
    problems = []
    for job in jobs:
        if job.is_local:
            continue
        res = job.resources
        mem = res.get("mem_mb")
        slurm = submits_to_slurm()
        request = Request(
            # run here, Snakemake scales threads down to --cores itself
            threads=job.threads if slurm else 1,
            mem_mb=mem if isinstance(mem, int) else None,  # TBD until its input exists
            gpus=res.get("gpu") or 0,
        )
        partition = res.get("slurm_partition") if slurm else None
        nodes = job_nodes(partition or None)
        if nodes is None:
            return
        try:
            check_fits(f"job {_job_name(job)}", request, nodes, _fit_hint(job))
        except LMError as e:
            problems.append(str(e))
    if problems:
        raise WorkflowError("\n".join(problems))


def _job_name(job):
    """``train (run=demo)``: the rule and its wildcards."""
    wildcards = ", ".join(f"{k}={v}" for k, v in job.wildcards_dict.items())
    return f"{job.rule.name} ({wildcards})" if wildcards else job.rule.name


def _fit_hint(job):
    if job.rule.name == "train":
        return (
            "lower the run's threads, resources.mem_mb, training.processes or resources.gpu, "
            "or set slurm_partition to a partition with larger nodes"
        )
    return (
        f"lower it with --set-threads {job.rule.name}=N or --set-resources "
        f"{job.rule.name}:mem_mb=N, or set slurm_partition to a partition with larger nodes"
    )


def _warn_cluster_cores():
    """Under a cluster executor --cores caps every job's threads and is passed to the jobs;
    profiles/default's `cores: all` (this host's cores) is meant for runs here."""
    if not (ON_CLUSTER and workflow.is_main_process):
        return
    try:
        cores = workflow.cores
    except WorkflowError:
        return
    if cores == available_cpu_count():
        logger.warning(
            f"--cores {cores} (this host's cores; profiles/default sets cores: all) caps "
            f"each cluster job's threads. Give the cluster profile as the workflow profile "
            f"(snakemake --workflow-profile workflow/profiles/slurm ...), which replaces "
            f"profiles/default, or set --cores to what jobs may use."
        )


_warn_cluster_cores()


def _launch(how, name):
    try:
        return how(resolved_run(name))
    except LMError as e:
        raise WorkflowError(f"config error: {e}") from None


def run_gpus(name):
    """The GPUs run ``name``'s job holds (lm.training.launch.job_gpus), checked against
    what this machine can give when jobs run here."""
    # a cluster's jobs get their GPUs from its scheduler
    here = MACHINE_GPUS() if jobs_run_here() else 0
    gpus = _launch(lambda run: job_gpus(run, here), name)
    limit = workflow.global_resources.get("gpu").value
    if jobs_run_here() and limit is not None and gpus > limit:
        raise WorkflowError(
            f"run {name} needs {gpus} GPU(s) (training.device, training.processes, "
            f"resources.gpu) but this machine has {here} and --resources gpu is "
            f"{limit}. Allow more with --resources gpu=N (up to the GPUs here), ask for "
            f"fewer (training.processes, resources.gpu), use training.device: cpu, or run "
            f"where there are more GPUs (a cluster profile)."
        )
    return gpus


def train_command(name):
    """`lm train`, or `torchrun ... -m lm train` for a multi-process run."""
    return _launch(train_launcher, name)


def run_tokens(run, split):
    return f"results/{resolved_run(run).dataset}/tokens/{split}.npy"


def sweep_runs(sweep):
    """The runs a sweep trains; of a race, its two LR sweeps (the ablations follow the
    recipe's best point: race_runs)."""
    if sweep not in section("sweeps"):
        raise WorkflowError(
            f"unknown sweep '{sweep}'. Configured sweeps: "
            f"{', '.join(sorted(section('sweeps'))) or '(none)'}. Add it under `sweeps:` "
            f"in config.yaml."
        )
    if is_race(section("sweeps")[sweep]):
        return race_lr_members(config, sweep)
    return sweep_members(config, sweep)


def run_dirs_of(results):
    """The run directories of result.json files, quoted for the shell; before a race's
    checkpoint has run (a dry run), Snakemake's placeholder for the files not known yet.
    """
    if isinstance(results, str):
        return results
    return " ".join(shlex.quote(os.path.dirname(r)) for r in results)


def is_race_sweep(sweep):
    return is_race(section("sweeps").get(sweep))


def report_runs(sweep):
    """The runs of a sweep's report: a race's LR sweeps, then the recipe minus each part at
    the recipe's best point, once the race_choice checkpoint has picked it."""
    runs = sweep_runs(sweep)
    if is_race_sweep(sweep):
        with checkpoints.race_choice.get(sweep=sweep).output[0].open() as f:
            recipe = json.load(f)["recipe"]
        runs = runs + race_ablations(config, sweep, recipe)
    return runs


def _check_target_names():
    runs_and_sweeps = {"sweeps": sweep_runs, "runs": resolved_run}
    for target, wanted in config["targets"].items():
        for key, check in runs_and_sweeps.items():
            for name in wanted.get(key, []):
                try:
                    check(name)
                except WorkflowError as e:
                    raise WorkflowError(
                        f"config error at `targets.{target}.{key}`: {e}"
                    ) from None


_check_target_names()


# What samples.md uses where `generation:` is silent and the `lm samples` defaults differ.
GENERATION_DEFAULTS = {"prompts": ["Once upon a time"], "max_new_tokens": 128}


def generation_config():
    return {**GENERATION_DEFAULTS, **section("generation")}


def cli_options(values, keys, rename=None):
    """`--key value` for each of ``keys`` set in ``values`` (a config section); a key
    left out keeps the CLI's default. ``rename`` maps a config key to its option name.
    """
    rename = rename or {}
    return " ".join(
        f"--{rename.get(key, key).replace('_', '-')} {shlex.quote(str(values[key]))}"
        for key in keys
        if key in values
    )


# ---- targets ---------------------------------------------------------------------------

# Each rule file registers, per stage, a function (target, datasets) -> list of files.
STAGE_TARGETS = {}


def targets_for(target, stages=None):
    """The files a target rule asks for, from config `targets.{target}`."""
    if target not in config["targets"]:
        return []
    datasets = target_datasets(target)
    for name in datasets:
        dataset_config(name)
    files = []
    for stage, fn in STAGE_TARGETS.items():
        if stages is None or stage in stages:
            files.extend(fn(target, datasets))
    return list(dict.fromkeys(files))


def run_outputs(run):
    return [f"results/runs/{run}/{f}" for f in ("eval.json", "samples.md")]


def training_targets(target, datasets):
    """Sweep reports, and eval.json + samples.md of every run a target names."""
    wanted = config["targets"][target]
    files = []
    for sweep in wanted.get("sweeps", []):
        files.append(f"results/sweeps/{sweep}/report.md")
        for run in sweep_runs(sweep):
            files.extend(run_outputs(run))
    for run in wanted.get("runs", []):
        files.extend(run_outputs(run))
    if wanted.get("lr_tuning"):
        files.append("results/lr_tuning/report.md")
    return files


# ---- comparisons (workflow/rules/comparison.smk) -----------------------------------------


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


def comparison_targets(target, datasets):
    """The report of each comparison a target names, and what its runs need."""
    files = []
    for name in config["targets"][target].get("comparisons", []):
        files.append(f"results/comparisons/{name}/report.md")
        for run in comparison_runs(name):
            files.extend(run_outputs(run))
    return files


# ---- export (workflow/rules/export.smk) --------------------------------------------------


def exportable(run):
    """Whether Llama can express the run's model (post-norm, no-norm, NoPE, SiLU cannot)."""
    return llama_can_express(resolved_run(run).model)


def exportable_sweep_runs(sweep):
    return [r for r in sweep_runs(sweep) if exportable(r)]


def run_tokenizer(run):
    return f"results/{resolved_run(run).dataset}/tokenizer"


def export_targets(target, datasets):
    """With `export_hf: true`, the best exportable run of each sweep of the target, and
    each listed run Llama can express (a listed run that diverges fails its export)."""
    wanted = config["targets"][target]
    if not wanted.get("export_hf"):
        return []
    files = [
        f"results/sweeps/{s}/hf"
        for s in wanted.get("sweeps", [])
        if exportable_sweep_runs(s)
    ]
    files += [f"results/runs/{r}/hf" for r in wanted.get("runs", []) if exportable(r)]
    return files


def requested_targets():
    """The target rules named on the command line (`all` when none is)."""
    settings = getattr(workflow, "dag_settings", None)
    asked = set(getattr(settings, "targets", None) or ["all"])
    return [t for t in config["targets"] if t in asked] or ["demo"]
