"""Atomic writes: the artifact appears whole or not at all, with ordinary permissions."""

import os
import stat

import pytest

from lm.io import atomic_open, write_json


def test_written_file_has_umask_permissions_not_private_tempfile_ones(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "b.txt") as f:
        f.write("half")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_replaces_existing_file_only_on_success(tmp_path):
    target = tmp_path / "c.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("new")
        raise RuntimeError
    assert target.read_text() == "old"
    with atomic_open(target) as f:
        f.write("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_temporaries_of_dead_writers_are_removed_by_the_next_writer(tmp_path):
    import subprocess
    import sys

    from lm.io import remove_stale_temporaries, write_text

    target = tmp_path / "train.npy"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    stale_file = tmp_path / f".train.npy.{dead_pid}.abc.npy.tmp"
    stale_dir = tmp_path / f".train.npy.{dead_pid}.def.tmp"
    mine = tmp_path / f".train.npy.{os.getpid()}.ghi.tmp"  # a live writer's: kept
    other = tmp_path / f".other.npy.{dead_pid}.jkl.tmp"  # another artifact's: kept
    stale_file.write_text("half")
    stale_dir.mkdir()
    (stale_dir / "vocab.json").write_text("{")
    mine.write_text("busy")
    other.write_text("x")
    assert sorted(remove_stale_temporaries(target)) == sorted([stale_file, stale_dir])
    assert mine.exists() and other.exists() and not stale_file.exists()
    stale_file.write_text("half")
    write_text(target, "done")  # every atomic write cleans up first
    assert target.read_text() == "done" and not stale_file.exists() and mine.exists()
