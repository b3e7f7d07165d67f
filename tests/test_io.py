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
