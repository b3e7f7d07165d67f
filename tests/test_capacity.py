"""lm.devices.capacity: sinfo's view of a cluster's nodes, and whether a request fits one.

Parsed on sinfo output captured from the `python3 dev.py slurm` cluster and on the live
cluster when there is one; the gres strings are SLURM's documented forms.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from lm.devices.capacity import (
    SINFO_FORMAT,
    Node,
    Partition,
    Request,
    cap,
    check_fits,
    gres_gpus,
    parse_sinfo,
    pick_partition,
    run_sinfo,
    this_machine,
)
from lm.errors import LMError

#: `sinfo -h -N -o '%N|%P|%c|%m|%G'` on the `python3 dev.py slurm` cluster of a 2-core machine.
CAPTURED_HERE = "vm|main*|2|24105|(null)\n"

#: The same command on a cluster of two partitions, one of them of 4-GPU nodes (the shape
#: sinfo prints: one line per node and partition, `*` after the default partition).
TWO_PARTITIONS = """\
cpu01|cpu*|64|256000|(null)
cpu02|cpu*|32|128000|(null)
gpu01|gpu|48|512000|gpu:a100:4(S:0-1)
gpu02|gpu|48|512000|gpu:a100:2(S:0),gpu:v100:2(S:1)
gpu01|debug|48|512000|gpu:a100:4(S:0-1)
"""


def test_gres_strings_count_their_gpus():
    assert gres_gpus("(null)") == 0
    assert gres_gpus("gpu:4") == 4
    assert gres_gpus("gpu:a100:4(S:0-1)") == 4
    assert gres_gpus("gpu:a100:2(S:0),gpu:v100:2(S:1)") == 4
    assert gres_gpus("gpu:a100:4(IDX:0-3),mps:400") == 4
    assert gres_gpus("shard:8") == 0


def test_partitions_and_the_default_one():
    parts = parse_sinfo(TWO_PARTITIONS)
    assert sorted(parts) == ["cpu", "debug", "gpu"]
    default = pick_partition(parts)
    assert default.where == "SLURM's default partition cpu"
    assert [n.name for n in default.nodes] == ["cpu01", "cpu02"]
    gpu = pick_partition(parts, "gpu")
    assert gpu.largest() == Node("gpu01", 48, 512000, 4)
    assert gpu.most("gpus") == 4 and default.most("cpus") == 64
    with pytest.raises(LMError, match=r"no partition 'big' \(sinfo lists: cpu, debug, gpu\)"):
        pick_partition(parts, "big")
    with pytest.raises(LMError, match="no default partition"):
        pick_partition(parse_sinfo("n1|a|2|1000|(null)\n"))
    with pytest.raises(LMError, match="not a number"):
        parse_sinfo("n1|a*|two|1000|(null)\n")


def test_captured_sinfo_of_the_local_cluster():
    parts = parse_sinfo(CAPTURED_HERE)
    default = pick_partition(parts)
    assert len(default.nodes) == 1
    node = default.nodes[0]
    assert node.gpus == 0 and node.cpus == 2 and node.mem_mb > 1000


def test_live_sinfo_agrees_with_scontrol():
    """On a live cluster: every node's CPUs and memory as scontrol reports them."""
    if not shutil.which("sinfo") or not shutil.which("scontrol"):
        pytest.skip("no SLURM on this machine")
    try:
        parts = parse_sinfo(run_sinfo(timeout=30))
    except LMError as e:
        pytest.skip(f"no SLURM cluster answers: {e}")
    nodes = {n.name: n for _, ns in parts.values() for n in ns}
    for name, node in nodes.items():
        shown = subprocess.run(
            ["scontrol", "show", "node", name], capture_output=True, text=True, timeout=30
        ).stdout
        fields = dict(f.split("=", 1) for f in shown.split() if "=" in f)
        assert node.cpus == int(fields["CPUTot"]), shown
        assert node.mem_mb == int(fields["RealMemory"]), shown


def test_a_request_fits_a_node_or_the_error_names_job_request_and_largest_node():
    gpu = pick_partition(parse_sinfo(TWO_PARTITIONS), "gpu")
    check_fits("job train (run=a)", Request(threads=8, mem_mb=9000, gpus=4), gpu)
    check_fits("job x", Request(threads=48, mem_mb=None, gpus=0), gpu)  # memory unknown yet
    with pytest.raises(LMError) as e:
        check_fits("job train (run=big)", Request(threads=8, mem_mb=9000, gpus=8), gpu, "fix it")
    assert str(e.value) == (
        "job train (run=big) asks for 8 CPUs, 9000 MB, 8 GPU(s), but no node of SLURM "
        "partition gpu has that much: the largest, gpu01 (48 CPUs, 512000 MB, 4 GPU(s)), "
        "lacks 8 GPU(s) (it has 4). It would wait forever; fix it"
    )
    # each of its dimensions fits some node, but no node fits all three
    cpu = Partition("p", (Node("a", 64, 1000, 0), Node("b", 2, 9000, 0)))
    with pytest.raises(LMError, match=r"lacks 5000 MB \(it has 1000\)"):
        check_fits("job y", Request(threads=4, mem_mb=5000), cpu)
    assert cap(4, cpu, "cpus") == 4 and cap(128, cpu, "cpus") == 64
    assert cap(20000, cpu, "mem_mb") == 9000


def test_this_machine_is_one_node_of_its_cpus_memory_and_given_gpus():
    here = this_machine(gpus=3)
    (node,) = here.nodes
    assert node.cpus == len(os.sched_getaffinity(0)) and node.gpus == 3
    assert node.mem_mb == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    assert SINFO_FORMAT == "%N|%P|%c|%m|%G"


def test_a_sinfo_that_never_answers_times_out_naming_it(tmp_path, monkeypatch):
    """A controller that does not answer: the check stops after its timeout, saying which
    command it waited for (a stand-in sinfo that sleeps: a real one hangs only as long as
    its own MessageTimeout)."""
    fake = tmp_path / "sinfo"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    with pytest.raises(LMError) as e:
        run_sinfo(timeout=0.5)
    assert time.monotonic() - started < 10
    assert str(e.value).startswith(
        f"`sinfo -h -N -o {SINFO_FORMAT}` did not answer within 0.5 s while checking what the "
        f"cluster's nodes have"
    )
