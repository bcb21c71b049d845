"""atomic_write: whole file or nothing, no temp file left behind."""

from __future__ import annotations

import os
import stat

import pytest

from regops import fsutil
from regops.fsutil import atomic_write


def test_writes_text_and_bytes(tmp_path):
    target = tmp_path / "report.csv"
    assert atomic_write(target, "a,b\n1,2\n") == target
    assert target.read_bytes() == b"a,b\n1,2\n"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["report.csv"]


def test_no_newline_translation(tmp_path):
    target = tmp_path / "x.txt"
    atomic_write(target, "a\r\nb\n")
    assert target.read_bytes() == b"a\r\nb\n"


def test_replaces_existing_and_keeps_its_mode(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_new_file_mode_default_and_explicit(tmp_path):
    atomic_write(tmp_path / "a", "x")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == fsutil.DEFAULT_MODE
    atomic_write(tmp_path / "b", "x", mode=0o600)
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError("disk full")])
def test_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch, error):
    target = tmp_path / "report.csv"
    target.write_text("previous complete report")

    def failing_fsync(fd):
        raise error

    monkeypatch.setattr(fsutil.os, "fsync", failing_fsync)
    with pytest.raises(type(error)):
        atomic_write(target, "new report")
    assert target.read_text() == "previous complete report"
    assert os.listdir(tmp_path) == ["report.csv"]


def test_interrupt_before_first_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(fsutil.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "report.csv", "data")
    assert os.listdir(tmp_path) == []


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "nope" / "report.csv", "x")


def test_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atomic_write("plain.txt", "ok")
    assert (tmp_path / "plain.txt").read_text() == "ok"
