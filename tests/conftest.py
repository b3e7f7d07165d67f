"""Shared test helpers: run the real `snakemake` on the repository's Snakefile in a temp dir."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
#: The snakemake of the environment running the tests.
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
#: The smallest model the workflow tests train (a preset for `models:`).
MICRO_MODEL = {
    "d_model": 16,
    "num_layers": 1,
    "num_heads": 2,
    "d_ff": 32,
    "context_length": 16,
    "rope_theta": 10000,
}


def add_micro_runs(cfg: dict, runs: tuple[str, ...] = ("micro",), **training) -> dict:
    """``cfg`` (a pipeline config) with the MICRO_MODEL preset, training defaults of one
    thread, batch 4, 20 steps (``training`` overrides and adds), and the runs ``runs`` of it
    on the dataset demo (lr 1e-2)."""
    cfg["models"] = {"micro": MICRO_MODEL}
    cfg["training_defaults"] = {
        "threads": 1,
        "training": {
            "batch_size": 4,
            "steps": 20,
            "eval_every": 10,
            "eval_batches": 2,
            "log_every": 5,
            **training,
        },
    }
    cfg["runs"] = {
        name: {"dataset": "demo", "model": {"preset": "micro"}, "optimizer": {"lr": 1e-2}}
        for name in runs
    }
    return cfg


#: A run of the micro model (resolve it with write_run) for lm train on tokens from micro_tokens():
#: milliseconds a step on a CPU core (tests/test_distributed.py, tests/test_budget.py).
MICRO_RUN = {
    "name": "micro",
    "model": {**MICRO_MODEL, "d_model": 32, "num_layers": 2, "d_ff": 64, "vocab_size": 128},
    "optimizer": {"lr": 0.01},
    "threads": 1,
    "training": {"batch_size": 8, "eval_batches": 2, "device": "cpu"},
}


def micro_run(name: str, **training) -> dict:
    """A deep copy of MICRO_RUN named ``name``, with ``training`` keys set."""
    import json

    run = json.loads(json.dumps(MICRO_RUN))
    run["name"] = name
    run["training"].update(training)
    return run


def write_run(path: Path, run: dict) -> Path:
    """``run`` (a run's dict, which may leave keys to the defaults) resolved and written to
    ``path`` as the run.json that ``lm train`` takes; returns ``path``."""
    import json

    from lm.training.config import run_from_file

    path.write_text(json.dumps(run))
    path.write_text(json.dumps(run_from_file(path).to_dict()))
    return path


def micro_tokens(directory: Path) -> tuple[Path, Path]:
    """train.npy and valid.npy of learnable ids below 128 (a periodic pattern plus noise)."""
    import numpy as np

    rng = np.random.default_rng(0)
    ids = (np.arange(60_000) * 7 % 97 + rng.integers(0, 3, 60_000)).astype(np.uint16)
    np.save(directory / "train.npy", ids[:50_000])
    np.save(directory / "valid.npy", ids[50_000:])
    return directory / "train.npy", directory / "valid.npy"


def snakemake(
    root: Path, *args: str, check: bool = False, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`snakemake ARGS` run in ``root`` as a user types it (no --cores: the default profile),
    with ``env`` added to the environment."""
    proc = subprocess.run(
        [str(SNAKEMAKE), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


#: The documentation users read: the front door, README.md, and every page of docs/.
DOC_PAGES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))

#: The files of a checkout that `snakemake` reads (lm/ for the code versions of the rules).
CHECKOUT_FILES = ("Snakefile", "config.yaml", "README.md")
CHECKOUT_DIRS = ("workflow", "profiles", "lm")


def copy_checkout(root: Path) -> Path:
    """A copy of the repository's workflow files in ``root``, to run `snakemake` in as a
    user does in a clone (from its root, no flags), without touching the real checkout."""
    root.mkdir(parents=True, exist_ok=True)
    for name in CHECKOUT_FILES:
        shutil.copy2(REPO / name, root / name)
    for name in CHECKOUT_DIRS:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


class Workflow:
    """A working directory with its own config.yaml, where snakemake runs for real."""

    def __init__(self, root: Path):
        self.root = root

    def write_config(self, config: dict) -> Path:
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def run(
        self, *targets: str, check: bool = True, extra: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess:
        cmd = [
            sys.executable, "-m", "snakemake",
            "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(self.root),
            "--cores", "2",
            "--configfile", str(self.root / "config.yaml"),
            "--replace-workflow-config",
            *extra,
            *targets,
        ]  # fmt: skip
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"snakemake failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def jobs_run(self, proc: subprocess.CompletedProcess) -> list[str]:
        """Names of the rules that ran, from snakemake's log ("rule X:" / "localrule X:")."""
        out = proc.stdout + proc.stderr
        names = []
        for line in out.splitlines():
            line = line.strip()
            for prefix in ("rule ", "localrule "):
                if line.startswith(prefix) and line.endswith(":"):
                    names.append(line[len(prefix) : -1])
        return names


@pytest.fixture
def workflow(tmp_path) -> Workflow:
    return Workflow(tmp_path)


def tiny_config(**datasets) -> dict:
    """A config with tiny demo datasets (name -> number of training documents)."""
    datasets = datasets or {"demo": 30}
    return {
        "datasets": {
            name: {
                "train": {"generate": {"documents": n, "seed": 0}},
                "valid": {"generate": {"documents": 5, "seed": 1}},
                "tokenizer": {"vocab_size": 300, "special_tokens": ["<|endoftext|>"]},
            }
            for name, n in datasets.items()
        },
        "targets": {"all": {"datasets": list(datasets)}, "demo": {"datasets": list(datasets)}},
    }


def write_readme_local_yaml(root: Path, data: Path) -> Path:
    """The documentation's `local.yaml` example (README.md and docs/*.md hold exactly one;
    docs/data.md today), written into ``root`` as typed there, its /data/ files made real
    (small demo corpora under ``data``)."""
    from lm.data.demo import write_corpus

    blocks = [
        b
        for page in DOC_PAGES
        for b in re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
        if "# local.yaml" in b
    ]
    assert len(blocks) == 1, "README.md and docs/*.md have no (or several) `# local.yaml` example"
    text = blocks[0]
    for name in re.findall(r"/data/([\w.]+)", text):
        write_corpus(data / name, documents=40 if "train" in name else 5, seed=0)
    path = root / "local.yaml"
    path.write_text(text.replace("/data/", f"{data}/"))
    return path


def _use_engine(engine: str, monkeypatch, scan: str = "") -> str:
    """Switch to a tokenization engine (``LM_NATIVE=1`` / ``0``; see :mod:`lm.tokenizer.native`),
    and for the native one to the scanner path ``scan`` (``LM_NATIVE_SIMD``) if given.
    Without the extension built, a native run is skipped, unless the environment asks for it
    (``LM_NATIVE=1``, as CI does): then it fails. A path this CPU lacks is skipped."""
    from lm.tokenizer import native

    if engine == "native" and native._native is None:
        if native.os.environ.get("LM_NATIVE") == "1":
            pytest.fail(
                f"LM_NATIVE=1 but the native extension is not built: {native._IMPORT_ERROR}"
            )
        pytest.skip(f"native extension not built: {native._IMPORT_ERROR}")
    if scan and scan not in native._native.simd_paths():
        pytest.skip(f"this CPU does not run the {scan} scanner path")
    monkeypatch.setenv("LM_NATIVE", "1" if engine == "native" else "0")
    if scan:
        monkeypatch.setenv("LM_NATIVE_SIMD", scan)
    native.module()  # sets the path now, for tests that call the extension directly
    return engine


def _restore_scan_path(before: str) -> None:
    """After a test that chose a scanner path: back to the path that ``LM_NATIVE_SIMD`` had
    chosen before it (``before``; the fastest when unset), for the extension's direct users."""
    from lm.tokenizer import native

    if native._native is not None:
        paths = native._native.simd_paths()
        native._native.set_simd(before if before in paths else paths[0])


@pytest.fixture(params=["native", "python"])
def engine(request, monkeypatch):
    """Run a test once per tokenization engine (the native one on its fastest scanner path)."""
    return _use_engine(request.param, monkeypatch)


#: The native scanner's paths (lm.tokenizer.native): each gives the same pre-tokens.
SCAN_PATHS = ("avx2", "sse2", "portable")


@pytest.fixture(params=SCAN_PATHS)
def scan_path(request, monkeypatch):
    """Run a test once per path of the native scanner (the native engine, LM_NATIVE_SIMD set);
    the fastest path is restored after it."""
    before = os.environ.get("LM_NATIVE_SIMD", "")
    _use_engine("native", monkeypatch, request.param)
    yield request.param
    _restore_scan_path(before)


@pytest.fixture(params=[*(f"native-{p}" for p in SCAN_PATHS), "python"])
def engine_scan(request, monkeypatch):
    """Like ``engine``, with the native engine once per scanner path."""
    engine, _, scan = request.param.partition("-")
    before = os.environ.get("LM_NATIVE_SIMD", "")
    yield _use_engine(engine, monkeypatch, scan)
    _restore_scan_path(before)


#: The longest modules, longest first, as a whole-suite run's --durations ranked them (minutes
#: each: whole pipelines of real snakemake jobs, a SLURM cluster's status polls, trainings
#: under torchrun, killed and resumed runs).
LONGEST_MODULES = (
    "test_workflow_writeup_full",
    "test_workflow_pipeline",
    "test_readme_commands",
    "test_slurm",
    "test_slurm_timelimit",
    "test_workflow_data",
    "test_trackers",
    "test_training_stop",
    "test_workflow_crash",
    "test_distributed",
    "test_faults",
    "test_comparison",
    "test_race",
    "test_training_loop",
    "test_workflow_caching",
    "test_config_layers",
    "test_scheduler_resources",
    "test_benchmarks",
)


def pytest_collection_modifyitems(config, items):
    """The longest modules first (in LONGEST_MODULES' order), then the other modules with
    slow tests, then the rest.

    ``pytest -n N --dist loadscope --no-loadscope-reorder`` (dev.py test) hands whole
    modules to the workers in collection order; a long module reached last leaves the other
    workers idle while one finishes it, so starting the long ones first makes the suite end
    sooner. (Without --no-loadscope-reorder, pytest-xdist orders the modules by their number
    of tests instead: the SLURM module's two tests came last, and the suite ran minutes longer.)
    """
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    longest = {name: i for i, name in enumerate(LONGEST_MODULES)}

    def rank(item) -> tuple[int, int]:
        name = item.module.__name__.rpartition(".")[2]
        if name in longest:
            return 0, longest[name]
        return (1 if item.module.__name__ in slow else 2), 0

    items.sort(key=rank)  # stable: the order inside each group is kept


def pytest_configure(config):
    """Under pytest-xdist, each worker's torch gets its share of the cores. Two workers
    each running torch's default thread pool (every core) oversubscribe a 2-core machine,
    and a tiny model's every op then waits on a descheduled thread: 27 greedy tokens of a
    32-wide model took 4 s instead of 0.05 s. Subprocesses (snakemake, lm train) set
    their own threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
