"""What the machines a job can be sent to have, and whether a job's request fits one of them.

A scheduler keeps a job that asks for more CPUs, memory or GPUs than every node of its
partition has waiting forever (SLURM: ``PENDING`` with reason ``PartitionConfig``), without
a word to the user. The workflow asks here first: the nodes of a SLURM partition as
``sinfo`` lists them (:func:`slurm_nodes`), or this machine (:func:`this_machine`), and
:func:`check_fits` turns a request no node can hold into an error naming the job, the
request and the largest node.

Torch-free and quick: the Snakefile imports it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from lm.errors import LMError

#: Seconds ``sinfo`` may take before the check gives up with an error naming it.
SINFO_TIMEOUT_S = 60.0

#: One line per node and partition: name, partition (``*`` marks the default one), CPUs,
#: memory (MB) and generic resources (``gpu:4``, ``gpu:a100:4(S:0-1)``, ``(null)``).
SINFO_FORMAT = "%N|%P|%c|%m|%G"


@dataclass(frozen=True)
class Node:
    """A machine a job may run on: its CPUs, memory (MB) and GPUs."""

    name: str
    cpus: int
    mem_mb: int
    gpus: int

    def describe(self) -> str:
        return f"{self.name} ({self.cpus} CPUs, {self.mem_mb} MB, {self.gpus} GPU(s))"


@dataclass(frozen=True)
class Request:
    """What a job asks for: threads (CPUs), memory in MB (None: unknown yet) and GPUs."""

    threads: int
    mem_mb: int | None = None
    gpus: int = 0

    def describe(self) -> str:
        mem = "" if self.mem_mb is None else f", {self.mem_mb} MB"
        return f"{self.threads} CPUs{mem}, {self.gpus} GPU(s)"

    def short_of(self, node: Node) -> list[str]:
        """What ``node`` lacks for this request (empty when it fits)."""
        lacks = []
        if self.threads > node.cpus:
            lacks.append(f"{self.threads} CPUs (it has {node.cpus})")
        if self.mem_mb is not None and self.mem_mb > node.mem_mb:
            lacks.append(f"{self.mem_mb} MB (it has {node.mem_mb})")
        if self.gpus > node.gpus:
            lacks.append(f"{self.gpus} GPU(s) (it has {node.gpus})")
        return lacks


@dataclass(frozen=True)
class Partition:
    """The nodes a job may go to, and where they were found (for messages)."""

    where: str
    nodes: tuple[Node, ...]

    def largest(self) -> Node:
        """The node with the most GPUs, then CPUs, then memory."""
        return max(self.nodes, key=lambda n: (n.gpus, n.cpus, n.mem_mb))

    def most(self, field: str) -> int:
        """The largest ``cpus``, ``mem_mb`` or ``gpus`` of any node."""
        return max(getattr(n, field) for n in self.nodes)


def gres_gpus(gres: str) -> int:
    """The GPUs in a SLURM gres string: ``gpu:4``, ``gpu:a100:2(S:0-1),gpu:v100:2``,
    ``gpu:a100:4(IDX:0-3)``; 0 for ``(null)`` or a gres without GPUs."""
    total = 0
    for entry in re.split(r",(?![^(]*\))", gres):
        entry = re.sub(r"\(.*?\)", "", entry).strip()
        parts = entry.split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        count = parts[-1]
        total += int(count) if count.isdigit() else 1
    return total


def _number(text: str, what: str, line: str) -> int:
    digits = text.strip().rstrip("+")
    if not digits.isdigit():
        raise LMError(f"sinfo printed {what} {text!r}, not a number, in the line {line!r}")
    return int(digits)


def parse_sinfo(text: str) -> dict[str, tuple[bool, list[Node]]]:
    """Each partition of ``sinfo -h -N -o SINFO_FORMAT`` output: (is it the default, its
    nodes)."""
    partitions: dict[str, tuple[bool, list[Node]]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) != 5:
            raise LMError(f"sinfo printed {line!r}; expected {SINFO_FORMAT!r}")
        name, partition, cpus, mem, gres = fields
        default = partition.endswith("*")
        node = Node(
            name=name,
            cpus=_number(cpus, "CPUs", line),
            mem_mb=_number(mem, "memory", line),
            gpus=gres_gpus(gres),
        )
        was_default, nodes = partitions.setdefault(partition.rstrip("*"), (default, []))
        partitions[partition.rstrip("*")] = (was_default or default, nodes + [node])
    return partitions


def pick_partition(
    partitions: dict[str, tuple[bool, list[Node]]], name: str | None = None
) -> Partition:
    """The nodes of partition ``name``, or of the default partition when ``name`` is None."""
    if not partitions:
        raise LMError("sinfo lists no nodes: this SLURM cluster has none configured")
    if name is None:
        default = [p for p, (is_default, _) in partitions.items() if is_default]
        if not default:
            raise LMError(
                f"this SLURM cluster has no default partition (partitions: "
                f"{', '.join(sorted(partitions))}); set slurm_partition under "
                f"default-resources in workflow/profiles/slurm/config.yaml"
            )
        name = default[0]
        where = f"SLURM's default partition {name}"
    else:
        where = f"SLURM partition {name}"
    if name not in partitions:
        raise LMError(
            f"SLURM has no partition {name!r} (sinfo lists: {', '.join(sorted(partitions))}); "
            f"fix slurm_partition in workflow/profiles/slurm/config.yaml or --set-resources"
        )
    return Partition(where=where, nodes=tuple(partitions[name][1]))


def run_sinfo(timeout: float = SINFO_TIMEOUT_S) -> str:
    """The output of ``sinfo -h -N -o SINFO_FORMAT``, or an error naming what failed."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        raise LMError("sinfo is not on PATH: the SLURM profile needs SLURM's commands here")
    cmd = [sinfo, "-h", "-N", "-o", SINFO_FORMAT]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LMError(
            f"`sinfo {' '.join(cmd[1:])}` did not answer within {timeout:g} s "
            f"while checking what the cluster's nodes have; is slurmctld up (scontrol ping)?"
        ) from None
    if done.returncode != 0:
        raise LMError(
            f"sinfo failed ({done.returncode}) while checking what the cluster's nodes have: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def this_machine(gpus: int, name: str = "this machine") -> Partition:
    """This machine as the one node jobs run on: the CPUs this process may use, its
    memory, and ``gpus`` GPUs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return Partition(where=name, nodes=(Node("this machine", cpus, mem_mb, gpus),))


def check_fits(job: str, request: Request, partition: Partition, fix: str = "") -> None:
    """An LMError naming ``job``, its request and the largest node unless a node of
    ``partition`` holds the request."""
    if any(not request.short_of(n) for n in partition.nodes):
        return
    largest = partition.largest()
    raise LMError(
        f"{job} asks for {request.describe()}, but no node of {partition.where} has that "
        f"much: the largest, {largest.describe()}, lacks {'; '.join(request.short_of(largest))}. "
        f"It would wait forever; {fix or 'ask for less or send it to a larger partition'}"
    )


def cap(wanted: int, partition: Partition, field: str) -> int:
    """``wanted`` CPUs or MB, but no more than the largest node of ``partition`` has."""
    return min(wanted, partition.most(field))
