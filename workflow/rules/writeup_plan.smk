# Helpers of workflow/rules/writeup.smk: which artifact answers which CS336 problem (the plan
# of `lm writeup`), from config `writeup` and the targets, and the files the rule reads.

WRITEUP_ROLES = (
    "tinystories",
    "owt",
    "learning_rate",
    "batch_size",
    "ablations",
    "main_experiment",
    "leaderboard",
    "race",
)
# the target whose tokenizer experiments each edition reads
WRITEUP_TARGET = {"demo": "demo", "full": "all"}


def writeup_edition():
    """demo when `snakemake demo` is asked for, else the full-scale writeup."""
    settings = getattr(workflow, "dag_settings", None)
    asked = set(getattr(settings, "targets", None) or [])
    return "demo" if "demo" in asked else "full"


def _first(names):
    return names[0] if names else None


def writeup_roles(edition):
    """Role -> dataset, sweep or run name, from config `writeup` (defaults: the targets)."""
    given = section("writeup")
    targets = config["targets"]
    if edition == "demo":
        roles = given.get("demo")
        if roles is None:
            demo = targets.get("demo", {})
            roles = {
                "tinystories": _first(demo.get("datasets")),
                "learning_rate": _first(demo.get("sweeps")),
            }
    else:
        roles = {k: v for k, v in given.items() if k != "demo"}
        if not roles:
            datasets = targets.get("all", {}).get("datasets", [])
            roles = {
                "tinystories": _first(datasets),
                "owt": _first(datasets[1:]),
                "learning_rate": _first(targets.get("train_all", {}).get("sweeps")),
            }
    return {r: roles.get(r) for r in WRITEUP_ROLES}


def _snakemake(*files):
    return "snakemake " + " ".join(shlex.quote(f) for f in files)


def _run_files(run):
    d = f"results/runs/{run}"
    return [
        f"{d}/result.json",
        f"{d}/eval.json",
        f"{d}/samples.json",
        f"{d}/curves.png",
    ]


def _role_plan(role, name):
    """The artifacts of one role, the files the writeup rule may take as input, the command."""
    if role in ("tinystories", "owt"):
        dataset_config(name)
        tok = f"results/{name}/tokenizer"
        return {"tokenizer": tok, "command": _snakemake(tok)}, [tok]
    if role in ("learning_rate", "batch_size", "ablations"):
        d = f"results/sweeps/{name}"
        runs = {r: f"results/runs/{r}" for r in sweep_runs(name)}
        files = [f"{d}/report.json", f"{d}/curves.png"]
        files += [
            f"{r}/{f}" for r in runs.values() for f in ("eval.json", "samples.json")
        ]
        if name in config["targets"].get("train_all", {}).get("sweeps", []):
            command = "snakemake train_all"
        else:
            command = _snakemake(f"{d}/report.md")
        plan = {
            "report": files[0],
            "curves": files[1],
            "runs": runs,
            "command": command,
        }
        return plan, files
    if role == "race":
        sweep_runs(name)
        d = f"results/sweeps/{name}"
        files = [f"{d}/report.json", f"{d}/curves.png"]
        plan = {"report": files[0], "curves": files[1]}
        return {**plan, "command": _snakemake(f"{d}/report.md")}, files
    resolved_run(name)
    d = f"results/runs/{name}"
    command = _snakemake(f"{d}/eval.json", f"{d}/samples.md")
    return {"dir": d, "command": command}, _run_files(name)


def writeup_plan(edition):
    """The plan of `lm writeup` and the files it reads: {"plan": ..., "files": [...]}."""
    mine, full = writeup_roles(edition), writeup_roles("full")
    roles, files = {}, []
    for role in WRITEUP_ROLES:
        name, in_edition = mine[role], True
        if name is None and edition != "full":
            name, in_edition = full[role], False
        if name is None:
            roles[role] = None
            continue
        plan, role_files = _role_plan(role, name)
        roles[role] = {"name": name, "in_edition": in_edition, **plan}
        if in_edition:
            files += role_files
    if roles["leaderboard"] is None and roles["main_experiment"] is not None:
        roles["leaderboard"] = {
            "name": None,
            "command": roles["main_experiment"]["command"],
        }
    target = WRITEUP_TARGET[edition]
    if target_datasets(target):
        d = f"results/tokenizer_experiments/{target}"
        roles["tokenizer_experiments"] = {
            "name": target,
            "report": f"{d}/report.json",
            "command": _snakemake(f"{d}/report.md"),
        }
        files.append(f"{d}/report.json")
    else:
        roles["tokenizer_experiments"] = None
    roles["accounting"] = {
        "name": "accounting",
        "transformer": "results/accounting/transformer.json",
        "adamw": "results/accounting/adamw.json",
        "command": "snakemake accounting",
    }
    roles["lr_tuning"] = {
        "name": "lr_tuning",
        "report": "results/lr_tuning/report.json",
        "curves": "results/lr_tuning/curves.png",
        "command": _snakemake("results/lr_tuning/report.md"),
    }
    files += [roles["accounting"][k] for k in ("transformer", "adamw")]
    files += [roles["lr_tuning"][k] for k in ("report", "curves")]
    return {"plan": {"edition": edition, "roles": roles}, "files": files}


def writeup_inputs(wildcards):
    """The plan's files that the requested targets build, and every other one that exists.

    A file counts as built when a target asks for it or for a sibling made by the same job
    (the sweep's report.md for its report.json, a run's eval.json for its result.json).
    """
    settings = getattr(workflow, "dag_settings", None)
    asked = set(getattr(settings, "targets", None) or [])
    built = {f for t in config["targets"] if t in asked for f in targets_for(t)}
    built_dirs = {os.path.dirname(f) for f in built}
    out = []
    for f in writeup_plan(writeup_edition())["files"]:
        if f in built or os.path.dirname(f) in built_dirs or os.path.exists(f):
            out.append(f)
    return out
