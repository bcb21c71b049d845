"""The audit log: records, durability rules, torn lines, no secrets; and run locks."""

from __future__ import annotations

import base64
import dataclasses
import errno
import json
import multiprocessing
import os
import stat

import pytest

from regops.errors import StateError, ValidationError
from regops.locks import LockHeldError, RunLock, ensure_private_dir, state_dir
from regops.ops.audit import (
    EVENT_INTENT,
    RESULT_DELETED,
    AuditRecord,
    AuditWriter,
    default_audit_path,
    encode_manifest,
    read_audit_log,
)
from regops.secrets import Secret
from tests.leaks import assert_hidden

DIGEST = "sha256:" + "ab" * 32
RAW = b'{"schemaVersion":2}'


def intent(tag: str = "v1", run_id: str = "run-1", **fields) -> AuditRecord:
    return AuditRecord(
        event=EVENT_INTENT,
        run_id=run_id,
        repository="group/app",
        tag=tag,
        digest=DIGEST,
        project_id=7,
        project_path="group/app",
        media_type="application/vnd.docker.distribution.manifest.v2+json",
        manifest=encode_manifest(RAW),
        actor="ops@host",
        gitlab_url="https://gitlab.example.com",
        **fields,
    )


def test_round_trip_keeps_every_field(tmp_path):
    path = tmp_path / "audit.jsonl"
    first = intent()
    with AuditWriter(path) as writer:
        writer.write(first)
        writer.write(first.with_result(RESULT_DELETED, method="dummy_manifest"))
    log = read_audit_log(path)
    assert log.warnings == []
    assert [r.event for r in log] == ["intent", "result"]
    got_intent, got_result = log.records
    assert got_intent.raw_manifest == RAW
    assert got_intent.project_id == 7 and got_intent.media_type == first.media_type
    assert got_result.result == "deleted" and got_result.manifest is None
    assert got_result.method == "dummy_manifest"
    assert got_intent.time and got_intent.time.endswith("+00:00")
    assert log.pending() == []


def test_every_line_is_a_json_object_with_the_documented_fields(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditWriter(path) as writer:
        writer.write(intent())
    line = json.loads(path.read_text().splitlines()[0])
    for name in (
        "time",
        "gitlab_url",
        "project_id",
        "project_path",
        "repository",
        "tag",
        "digest",
        "media_type",
        "manifest",
        "actor",
        "result",
        "run_id",
        "event",
    ):
        assert name in line, name
    assert base64.b64decode(line["manifest"]) == RAW


def test_file_and_directory_are_private(tmp_path):
    path = tmp_path / "deep" / "audit.jsonl"
    with AuditWriter(path) as writer:
        writer.write(intent())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_no_secret_reaches_the_file(tmp_path):
    token = Secret("glpat-audit-secret-123")
    path = tmp_path / "audit.jsonl"
    secret = token.reveal()
    record = dataclasses.replace(
        intent(),
        gitlab_url=f"https://root:{secret}@gitlab.example.com/?private_token={secret}",
        error=f"PUT failed: Authorization: Bearer {secret}",
    )
    with AuditWriter(path) as writer:
        writer.write(record)
    text = path.read_text()
    assert_hidden(token, text)
    assert "gitlab.example.com" in text


def test_pending_intents_are_found(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditWriter(path) as writer:
        writer.write(intent("a"))
        writer.write(intent("a").with_result(RESULT_DELETED))
        writer.write(intent("b"))
    pending = read_audit_log(path).pending()
    assert [(h.tag, h.pending) for h in pending] == [("b", True)]


def test_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "audit.jsonl"
    with AuditWriter(path) as writer:
        writer.write(intent("a"))
    full = intent("b").to_json()
    with path.open("ab") as handle:
        handle.write(full[: len(full) // 2].encode())  # killed mid-write
    log = read_audit_log(path)
    assert [r.tag for r in log] == ["a"]
    assert len(log.warnings) == 1 and "torn last line" in log.warnings[0]
    assert ":2:" in log.warnings[0]
    assert "torn last line" in caplog.text


def test_appending_after_a_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(intent("a").to_json().encode() + b"\n" + b'{"event":"inte')
    with AuditWriter(path) as writer:
        writer.write(intent("c"))
    log = read_audit_log(path)
    assert [r.tag for r in log] == ["a", "c"]
    assert len(log.warnings) == 1 and "unreadable line" in log.warnings[0]


def test_newer_format_and_bad_records_are_reported(tmp_path):
    path = tmp_path / "audit.jsonl"
    newer = {**json.loads(intent().to_json()), "v": 99}
    path.write_text(json.dumps(newer) + "\n" + json.dumps({"event": "intent"}) + "\n[1]\n")
    log = read_audit_log(path)
    assert log.records == []
    assert len(log.warnings) == 3
    assert "newer" in log.warnings[0] and "missing" in log.warnings[1]


def test_record_validation():
    with pytest.raises(ValidationError, match="result"):
        AuditRecord(event="result", run_id="r", repository="g/a", tag="t", digest=DIGEST)
    with pytest.raises(ValidationError, match="event"):
        AuditRecord(event="nope", run_id="r", repository="g/a", tag="t", digest=DIGEST)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        read_audit_log(tmp_path / "nope.jsonl")


def test_default_path_is_under_the_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REGOPS_STATE_DIR", str(tmp_path))
    import datetime as dt

    when = dt.datetime(2024, 1, 2, 23, 30, tzinfo=dt.timezone.utc)
    assert default_audit_path(when) == tmp_path / "audit" / "cleanup-20240102.jsonl"
    assert state_dir() == tmp_path


# ---------------------------------------------------------------------- locks


def _hold_lock(directory: str, ready, release) -> None:  # runs in a child process
    with RunLock("job", directory=__import__("pathlib").Path(directory)):
        ready.set()
        release.wait(10)


def test_lock_refuses_a_second_holder_and_names_the_pid(tmp_path):
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    child = context.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    child.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockHeldError) as caught:
            RunLock("job", directory=tmp_path).acquire()
        assert caught.value.pid == child.pid
        assert f"pid {child.pid}" in str(caught.value)
    finally:
        release.set()
        child.join(10)
    with RunLock("job", directory=tmp_path) as lock:  # free again once the holder exits
        assert lock.held


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    child = context.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    child.start()
    assert ready.wait(10)
    os.kill(child.pid, 9)
    child.join(10)
    with RunLock("job", directory=tmp_path) as lock:
        assert lock.held


def test_lock_name_must_be_a_file_name(tmp_path):
    with pytest.raises(ValidationError):
        RunLock("../etc/passwd", directory=tmp_path)


# ---------------------------------------------------------------------- unwritable state


def _failing(real, errno_value: int, when):
    """``real`` (os.open or os.write) raising OSError(errno_value) when ``when(arg)`` holds."""

    def call(target, *args, **kwargs):
        if when(target):
            raise OSError(errno_value, os.strerror(errno_value))
        return real(target, *args, **kwargs)

    return call


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def test_private_dirs_are_created_0700_at_every_level(tmp_path):
    existing = tmp_path / "home" / ".local"
    existing.mkdir(parents=True)
    existing.chmod(0o755)
    old_umask = os.umask(0o022)
    try:
        target = existing / "state" / "regops" / "locks"
        assert ensure_private_dir(target) == target
    finally:
        os.umask(old_umask)
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in (existing, target.parent.parent, target.parent, target)
    }
    assert modes == {".local": 0o755, "state": 0o700, "regops": 0o700, "locks": 0o700}


def test_a_file_in_the_way_of_a_state_folder_is_one_line(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("not a folder")
    with pytest.raises(StateError) as info:
        ensure_private_dir(blocker / "audit")
    assert str(info.value) == f"cannot create the folder {blocker}: Not a directory"
    with pytest.raises(StateError) as info:
        ensure_private_dir(blocker)
    assert str(info.value) == f"cannot create the folder {blocker}: Not a directory"


def test_audit_log_on_a_read_only_file_system_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "audit" / "cleanup.jsonl"
    monkeypatch.setattr(os, "open", _failing(os.open, errno.EROFS, lambda p: str(p) == str(path)))
    with pytest.raises(StateError) as info:
        AuditWriter(path).open()
    assert str(info.value) == f"cannot open the audit log {path}: Read-only file system"


def test_audit_log_full_disk_while_writing_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "cleanup.jsonl"
    writer = AuditWriter(path).open()
    monkeypatch.setattr(
        os, "write", _failing(os.write, errno.ENOSPC, lambda fd: _fd_path(fd) == str(path))
    )
    with pytest.raises(StateError) as info:
        writer.write(intent())
    writer.close()
    assert str(info.value) == f"cannot write to the audit log {path}: No space left on device"
    assert writer.written == 0


def test_lock_in_an_unusable_state_dir_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "state"
    blocker.write_text("")
    with pytest.raises(StateError) as info:
        RunLock("job", directory=blocker / "locks").acquire()
    assert str(info.value) == f"cannot create the folder {blocker}: Not a directory"

    lock_file = tmp_path / "locks" / "job.lock"
    is_lock = lambda p: str(p) == str(lock_file)  # noqa: E731
    monkeypatch.setattr(os, "open", _failing(os.open, errno.EROFS, is_lock))
    with pytest.raises(StateError) as info:
        RunLock("job", directory=lock_file.parent).acquire()
    assert str(info.value) == f"cannot open the lock file {lock_file}: Read-only file system"


def test_lock_holder_not_written_is_one_line_and_the_lock_is_released(tmp_path, monkeypatch):
    lock_file = tmp_path / "job.lock"
    with monkeypatch.context() as patch:
        full = _failing(os.write, errno.ENOSPC, lambda fd: _fd_path(fd) == str(lock_file))
        patch.setattr(os, "write", full)
        with pytest.raises(StateError) as info:
            RunLock("job", directory=tmp_path).acquire()
    assert str(info.value) == f"cannot write the lock file {lock_file}: No space left on device"
    with RunLock("job", directory=tmp_path) as lock:  # not left held
        assert lock.held
