#!/usr/bin/env python3
"""Set everything up and run the pipeline or the tests: the README's two commands.

    python3 dev.py demo   # venv + install, the whole pipeline on the built-in demo corpus,
                          # then its HTML report (results/report.html)
    python3 dev.py test   # venv + install with the dev extra, then the test suite
    python3 dev.py slurm  # a single-node SLURM cluster on this machine (Debian packages,
                          # as root), for `snakemake --workflow-profile
                          # workflow/profiles/slurm`
    python3 dev.py lock   # refresh requirements/lock-*.txt and workflow/envs/lm.yaml
                          # from pyproject.toml (uv); `lock --upgrade` moves every pin

Extra arguments go to snakemake, pytest or uv. The virtual environment is .venv/ in the
repository; it gets exactly the versions of the lock (requirements/lock-cpu.txt, or with
LM_TORCH=cuda requirements/lock-cuda.txt; LM_TORCH=own keeps the torch already in .venv),
and the install is redone only when the lock, pyproject.toml or the C sources change.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


# ---- the locked environment ----

LOCK_DIR = ROOT / "requirements"
#: LM_TORCH: which torch the locked install brings. cpu: the PyTorch CPU build (default:
#: small, what CI tests); cuda: PyPI's CUDA build and its nvidia-* libraries (GBs); own:
#: none, the torch already installed in .venv is kept (install yours there first).
TORCH_VARIANTS = ("cpu", "cuda", "own")
#: where the CPU build of torch is published (a page of wheel links, for pip/uv --find-links)
TORCH_CPU_WHEELS = "https://download.pytorch.org/whl/cpu/torch/"
#: the interpreter and platform the locks are resolved for (what CI and the GPU machines run)
LOCK_PYTHON, LOCK_PLATFORM = "3.11", "x86_64-manylinux_2_28"


def lock_fits() -> bool:
    """Whether this interpreter and machine are those the locks were resolved for."""
    return sys.version_info[:2] == tuple(map(int, LOCK_PYTHON.split("."))) and (
        sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
    )


def lock_file(variant: str) -> Path:
    """The lock of a torch variant ("own" installs the CPU lock without its torch)."""
    return LOCK_DIR / ("lock-cuda.txt" if variant == "cuda" else "lock-cpu.txt")


def lock_blocks(text: str) -> dict[str, tuple[str, str]]:
    """A hashed requirements file -> {normalized name: (version, its lines)}.

    Each pin is ``name==version \\`` followed by its indented ``--hash`` and ``# via``
    lines; a marker (``; sys_platform == ...``) is not used by our locks and is refused.
    """
    blocks: dict[str, tuple[str, str]] = {}
    name = None
    for line in text.splitlines(keepends=True):
        if line[:1].isalnum():
            pin = line.split("\\")[0].strip()
            if ";" in pin or "==" not in pin:
                raise ValueError(f"lock line {line.strip()!r}: expected name==version")
            raw, version = pin.split("==", 1)
            name = raw.strip().lower().replace("_", "-").replace(".", "-")
            blocks[name] = (version.strip(), line)
        elif name is not None and line[:1] in (" ", "\t"):
            version, lines = blocks[name]
            blocks[name] = (version, lines + line)
        else:
            name = None
    return blocks


def torch_variant() -> str:
    variant = os.environ.get("LM_TORCH", "cpu")
    if variant not in TORCH_VARIANTS:
        sys.exit(f"dev.py: LM_TORCH={variant!r}; use one of {', '.join(TORCH_VARIANTS)}.")
    return variant


def _pip_install(*args: str) -> int:
    cmd = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    return subprocess.run([*cmd, *args], cwd=ROOT).returncode


def _install_lock(variant: str) -> None:
    lock = lock_file(variant)
    if variant == "own":
        found = subprocess.run(
            [
                str(BIN / "python"),
                "-c",
                "import importlib.metadata as m; print(m.version('torch'))",
            ],
            capture_output=True,
            text=True,
        )
        if found.returncode != 0:
            sys.exit(
                "dev.py: LM_TORCH=own keeps the torch of .venv, and it has none: install "
                "yours first, e.g. .venv/bin/pip install torch --index-url "
                "https://download.pytorch.org/whl/cu130"
            )
        print(f"dev.py: keeping torch {found.stdout.strip()} (LM_TORCH=own)", flush=True)
        blocks = lock_blocks(lock.read_text())
        blocks.pop("torch")
        lock = VENV / "lock-without-torch.txt"
        lock.write_text("".join(lines for _, lines in blocks.values()))
    print(f"dev.py: pip install --require-hashes -r {lock.relative_to(ROOT)}", flush=True)
    if _pip_install("--require-hashes", "-r", str(lock)) == 0:
        return
    if variant != "cpu":
        sys.exit(f"dev.py: installing {lock.relative_to(ROOT)} failed (above)")
    # the CPU build of torch is not on PyPI; look on PyTorch's page only when it is needed
    # (a machine that has the wheel locally, or cannot reach that host, skips its retries)
    print(f"dev.py: again, with --find-links {TORCH_CPU_WHEELS}", flush=True)
    if _pip_install("--require-hashes", "-r", str(lock), "--find-links", TORCH_CPU_WHEELS):
        sys.exit(f"dev.py: installing {lock.relative_to(ROOT)} failed (above)")


def ensure_env(extra: str) -> None:
    """.venv/ with exactly the locked versions, and this checkout installed into it."""
    if sys.version_info < (3, 11):  # noqa: UP036 -- dev.py runs under any python3 on PATH
        sys.exit(f"dev.py: Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")
    if not (BIN / "python").exists():
        print(f"dev.py: creating {VENV.relative_to(ROOT)}/", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    variant = torch_variant()
    spec = f".[{extra}]" if extra else "."
    stamp = VENV / f".installed{('-' + extra) if extra else ''}"
    # reinstall (and so recompile the native extension) when the build inputs change
    build_inputs = [
        "pyproject.toml",
        "setup.py",
        "lm/tokenizer/native/_native.c",
        "lm/tokenizer/native/_unicode_tables.h",
        "lm/tokenizer/native/_scan.h",
        "lm/tokenizer/native/_scan_path.h",
        str(lock_file(variant).relative_to(ROOT)),
    ]
    digest = hashlib.sha256(f"{spec} {variant}".encode())
    for name in build_inputs:
        path = ROOT / name
        digest.update(path.read_bytes() if path.exists() else b"")
    want = digest.hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    if not lock_fits():
        # the locks pin wheels of one interpreter and platform: elsewhere, the ranges
        print(
            f"dev.py: the lock is for CPython {LOCK_PYTHON} on Linux x86_64, this is "
            f"{platform.python_implementation()} {platform.python_version()} on {sys.platform} "
            f"{platform.machine()}: installing from pyproject.toml's ranges (versions not locked)",
            flush=True,
        )
        print(f"dev.py: pip install -e '{spec}'", flush=True)
        if _pip_install("-e", spec):
            sys.exit(f"dev.py: installing this checkout ({spec}) failed (above)")
        stamp.write_text(want)
        return
    # every dependency (those of the dev extra too: one locked set for the demo, the tests
    # and CI) from the lock, hash-checked; then this checkout alone, built with the locked
    # setuptools instead of whatever an isolated build environment would download
    _install_lock(variant)
    print(f"dev.py: pip install --no-deps --no-build-isolation -e '{spec}'", flush=True)
    if _pip_install("--no-deps", "--no-build-isolation", "-e", spec):
        sys.exit(f"dev.py: installing this checkout ({spec}) failed (above)")
    stamp.write_text(want)


def refresh_lock(uv_args: list[str]) -> int:
    """Resolve pyproject.toml (with the dev extra) into the two hashed locks, and write the
    CPU lock's pins into workflow/envs/lm.yaml. Existing pins are kept where they still
    satisfy pyproject.toml; `--upgrade` (passed to uv) moves every pin to the newest."""
    uv = BIN / "uv"
    if not uv.exists():
        if not (BIN / "python").exists():
            venv.EnvBuilder(with_pip=True).create(VENV)
        if _pip_install("uv"):
            return 1
    common = [
        str(uv),
        "pip",
        "compile",
        "pyproject.toml",
        "--extra",
        "dev",
        "--generate-hashes",
        "--python-version",
        LOCK_PYTHON,
        "--python-platform",
        LOCK_PLATFORM,
        "--custom-compile-command",
        "python3 dev.py lock",
        "--quiet",
        *uv_args,
    ]
    # LM_TORCH_CPU_WHEELS: another place with the CPU wheels (a mirror, a local folder)
    wheels = os.environ.get("LM_TORCH_CPU_WHEELS", TORCH_CPU_WHEELS)
    runs = {
        "cpu": ["--override", "requirements/torch-cpu.txt", "--find-links", wheels],
        "cuda": [],
    }
    for variant, args in runs.items():
        out = lock_file(variant).relative_to(ROOT)
        print(f"dev.py: {out}", flush=True)
        if subprocess.run([*common, *args, "-o", str(out)], cwd=ROOT).returncode:
            return 1
    write_conda_env()
    return 0


CONDA_ENV = ROOT / "workflow" / "envs" / "lm.yaml"


def write_conda_env() -> None:
    """workflow/envs/lm.yaml: the CPU lock's pins, for `snakemake --sdm conda`."""
    pins = lock_blocks(lock_file("cpu").read_text())
    lines = [
        "# Software environment of every rule, for `snakemake --sdm conda` (e.g. on a cluster",
        "# whose nodes lack the project's virtual environment): the versions of",
        "# requirements/lock-cpu.txt, written by `python3 dev.py lock` (do not edit by hand;",
        "# tests/test_lock.py holds them equal). Installs this repository.",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={LOCK_PYTHON}",
        "  - pip",
        "  - pip:",
        f"      - --find-links {TORCH_CPU_WHEELS}",
        *(f"      - {name}=={version}" for name, (version, _) in sorted(pins.items())),
        "      - -e ../..",
    ]
    _write_if_changed(CONDA_ENV, "\n".join(lines) + "\n", 0o644)


# ---- python3 dev.py slurm: a single-node SLURM cluster from the distribution's packages ----

# munge authenticates the daemons to each other; slurmdbd (with MariaDB behind it) keeps the
# accounting that `sacct` reads, which the Snakemake SLURM executor polls for job status.
SLURM_PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server"]
SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURMDBD_CONF = Path("/etc/slurm/slurmdbd.conf")
SLURM_LOGS = Path("/var/log/slurm")
SLURM_STATE = Path("/var/lib/slurm")
SLURM_DB = "slurm_acct_db"


def _ok(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _run(*cmd: str) -> str:
    print("dev.py: " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(
            f"dev.py: `{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def _slurm_up() -> bool:
    """The node answers (idle, mixed or allocated) and the accounting database answers."""
    if not shutil.which("sinfo"):
        return False
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    live = states.returncode == 0 and any(
        s.strip().rstrip("*") in ("idle", "mixed", "allocated", "completing")
        for s in states.stdout.split()
    )
    return live and _ok("sacct", "-n", "-X", "-S", "now")


def _install_slurm_packages() -> None:
    missing = [
        p
        for p in SLURM_PACKAGES
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
        ).stdout
        != "install ok installed"
    ]
    if not missing:
        return
    if not shutil.which("apt-get"):
        sys.exit(f"dev.py slurm: needs the Debian/Ubuntu packages {' '.join(missing)} (apt-get).")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
    ):
        print("dev.py: " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def _node_line() -> str:
    """`NodeName=... CPUs=... RealMemory=...` of this machine, as slurmd itself measures it."""
    out = _run("slurmd", "-C")
    line = next((ln for ln in out.splitlines() if ln.startswith("NodeName=")), None)
    if line is None:
        sys.exit(f"dev.py slurm: `slurmd -C` printed no NodeName line:\n{out}")
    return line


def _write_if_changed(path: Path, text: str, mode: int) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def _slurm_configs() -> bool:
    """Write slurm.conf and slurmdbd.conf; True when either changed."""
    host = socket.gethostname()
    node = _node_line()
    slurm_conf = f"""\
# Written by `python3 dev.py slurm` (lm): a single-node cluster on this machine.
ClusterName=lm
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
# no cgroups here: track processes through /proc, no task confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
StateSaveLocation={SLURM_STATE}/slurmctld
SlurmdSpoolDir={SLURM_STATE}/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile={SLURM_LOGS}/slurmctld.log
SlurmdLogFile={SLURM_LOGS}/slurmd.log
# accounting through slurmdbd, so that sacct (the executor plugin's status poll) answers
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# keep the --comment of each job (the executor plugin puts the rule name there) for sacct
AccountingStoreFlags=job_comment
# a finished job leaves squeue quickly and shows in sacct
MinJobAge=30
{node} State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    # slurmdbd runs as root and reaches MariaDB through its socket as root (unix_socket
    # authentication, Debian's default), so no database password is stored anywhere.
    dbd_conf = f"""\
# Written by `python3 dev.py slurm` (lm).
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile={SLURM_LOGS}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc={SLURM_DB}
"""
    for d in (SLURM_LOGS, SLURM_STATE / "slurmctld", SLURM_STATE / "slurmd"):
        d.mkdir(parents=True, exist_ok=True)
    changed = _write_if_changed(SLURM_CONF, slurm_conf, 0o644)
    return _write_if_changed(SLURMDBD_CONF, dbd_conf, 0o600) or changed


def _pid_alive(pidfile: str) -> bool:
    try:
        pid = int(Path(pidfile).read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _wait(what: str, check, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"dev.py slurm: {what} did not come up in {seconds:.0f} s; see {SLURM_LOGS}/")
        time.sleep(1)


def _start(service: str, pidfile: str, restart: bool) -> None:
    """Start (or, after a config change, restart) a daemon through its init script."""
    if _pid_alive(pidfile) and not restart:
        return
    _run("service", service, "restart" if _pid_alive(pidfile) else "start")
    _wait(service, lambda: _pid_alive(pidfile))


def slurm_cluster() -> int:
    """Install, configure and start what is missing; a cluster that is up with this
    configuration is left as it is, a changed configuration restarts the daemons."""
    if os.geteuid() != 0:
        if _slurm_up():
            return subprocess.run(["sinfo"]).returncode
        sys.exit("dev.py slurm: run it as root (it installs packages and starts system daemons).")
    _install_slurm_packages()
    changed = _slurm_configs()
    if not changed and _slurm_up():
        print("dev.py slurm: the cluster is up", flush=True)
        return subprocess.run(["sinfo"]).returncode
    if not _ok("sh", "-c", "munge -n | unmunge"):
        _run("service", "munge", "start")
        _wait("munged", lambda: _ok("sh", "-c", "munge -n | unmunge"))
    if not _ok("mariadb-admin", "ping"):
        _run("service", "mariadb", "start")
        _wait("mariadb", lambda: _ok("mariadb-admin", "ping"))
    _run("mariadb", "-e", f"CREATE DATABASE IF NOT EXISTS {SLURM_DB}")
    _start("slurmdbd", "/run/slurmdbd.pid", changed)
    _wait("slurmdbd", lambda: _ok("sacctmgr", "-n", "list", "cluster"))
    _start("slurmctld", "/run/slurmctld.pid", changed)
    _start("slurmd", "/run/slurmd.pid", changed)
    # a node that was down (a past unclean stop) returns to service
    _wait("slurmctld", lambda: _ok("scontrol", "ping"))
    if not _slurm_up():
        subprocess.run(["scontrol", "update", "NodeName=ALL", "State=RESUME"], capture_output=True)
    _wait("the node and sacct", _slurm_up)
    return subprocess.run(["sinfo"]).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "slurm", "lock"):
        print(__doc__.strip())
        return 2
    command, rest = argv[0], argv[1:]
    if command == "lock":
        return refresh_lock(rest)
    if command == "slurm":
        ensure_env("slurm")
        return slurm_cluster()
    if command == "demo":
        ensure_env("")
        cmd = [str(BIN / "snakemake"), "--cores", "all", "demo", *rest]
        print("dev.py: " + " ".join(cmd), flush=True)
        code = subprocess.run(cmd, cwd=ROOT).returncode
        if code != 0 or {"-n", "--dry-run", "--dryrun"} & set(rest):
            return code
        cmd = [str(BIN / "snakemake"), "demo", "--report", "results/report.html"]
    else:
        ensure_env("dev")
        # pytest-xdist: one worker per core, and one more for the whole suite: its longest
        # tests mostly wait (a SLURM cluster's status polls, torchrun's timeouts, killed
        # runs), and the extra worker fills that idle time (2 cores: 11m54s with 3 workers,
        # 13m54s with 2). The quick loop (-m "not slow") computes throughout: one a core.
        # loadscope keeps the tests of a module on one worker, so a module-scoped fixture (a
        # whole pipeline run) is built once, not once per worker; --no-loadscope-reorder hands
        # the modules out in the order tests/conftest.py sets (the longest first), not
        # pytest-xdist's own (most tests first, which left the SLURM module for last).
        # --durations: the slowest tests in every run's log, to keep the suite's time in view.
        quick = any(a == "-m" and "not slow" in b for a, b in zip(rest, rest[1:], strict=False))
        workers = str((os.cpu_count() or 1) + (0 if quick else 1))
        cmd = [
            str(BIN / "pytest"), "-n", workers, "--dist", "loadscope", "--no-loadscope-reorder",
            "--durations=25", *rest,
        ]  # fmt: skip
    print("dev.py: " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
