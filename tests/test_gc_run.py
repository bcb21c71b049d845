"""``regops gc run`` on the sandbox's real registry (a plain registry run from its config.yml,
restarted through the sandbox's restart hook): read-only is proved, the real collector
runs, read-write comes back, also when SIGINT or SIGTERM arrive mid-run; refusals leave
everything as it was.

Oracles: the registry's files (os.walk), its config.yml bytes, its HTTP answers (a
blob upload must work afterwards), /proc (no collector left running).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regops.errors import RegistryUnsupported
from regops.ops.audit import AuditRecord, AuditWriter, default_audit_path
from regops.registry.reference import Digest

pytestmark = [pytest.mark.registry, pytest.mark.slow]

RUN_TIMEOUT = 120


def regops(sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **sandbox.env("admin")}
    return subprocess.run(
        [sys.executable, "-m", "regops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def blob_bytes(root: Path) -> dict[str, int]:
    """digest -> size of every blob data file, read with os.walk."""
    base = root / "docker/registry/v2/blobs/sha256"
    found = {}
    for folder, _dirs, files in os.walk(base):
        if "data" in files:
            found[f"sha256:{Path(folder).name}"] = (Path(folder) / "data").stat().st_size
    return found


def upload_works(sandbox) -> bool:
    data = os.urandom(64)
    return sandbox.registry.upload_blob("apps/web/backend", data) == Digest.of(data)


def run_records(state: Path) -> list[dict]:
    runs = state / "gc" / "runs"
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]


def state_dir() -> Path:
    return Path(os.environ["REGOPS_STATE_DIR"])


def delete_a_tag(sandbox) -> str:
    """Delete backend:v2.0 by digest through regops' registry client: its blobs become garbage."""
    registry = sandbox.registry
    digest = registry.manifest_digest("apps/web/backend", "v2.0")
    registry.delete_manifest("apps/web/backend", digest)
    return digest


def test_gc_run_collects_in_read_only_mode_and_restores_read_write(fresh_sandbox):
    sandbox = fresh_sandbox
    config = sandbox.registry_config_path
    original = config.read_bytes()
    delete_a_tag(sandbox)
    before = blob_bytes(sandbox.storage_path)
    done = regops(
        sandbox, "gc", "run", "-m", "--force", "--hold", "0",
        "--restart-command", sandbox.restart_command,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    after = blob_bytes(sandbox.storage_path)
    (record,) = run_records(state_dir())
    assert record["status"] == "ok"
    assert record["readonly_switched"] and record["readonly_proved"] and record["restored"]
    freed = sum(before.values()) - sum(after.values())
    assert freed > 0
    assert record["bytes_freed"] == freed
    assert record["bytes_before"] == sum(before.values())
    assert record["plan"]["bytes_eligible"] == freed
    assert record["collector"]["blobs_eligible"] == len(set(before) - set(after))
    assert record["differences"] == []
    assert Path(record["log"]).read_text().count("blob eligible for deletion") == len(
        set(before) - set(after)
    )
    # read-write again, with the admin's config byte for byte; restarted twice (on, off)
    assert config.read_bytes() == original
    assert upload_works(sandbox)
    assert sandbox.control.restarts == 2
    assert not (state_dir() / "gc" / "readonly.json").exists()


def test_gc_run_refuses_while_young_cleanup_deletes_exist(fresh_sandbox):
    sandbox = fresh_sandbox
    config = sandbox.registry_config_path
    original = config.read_bytes()
    young = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    with AuditWriter(default_audit_path()) as audit:
        audit.write(
            AuditRecord(
                "result",
                "run-1",
                "apps/web/backend",
                "v1",
                "sha256:" + "a" * 64,
                time=young.isoformat(),
                result="deleted",
            )
        )
    done = regops(sandbox, "gc", "run", "--restart-command", sandbox.restart_command)
    assert done.returncode == 1, done.stderr
    assert "younger than the restore hold" in done.stderr
    assert config.read_bytes() == original
    assert sandbox.control.restarts == 0
    # a shorter hold lets it through: the delete is 2 hours old
    done = regops(
        sandbox, "gc", "run", "--hold", "1h", "--restart-command", sandbox.restart_command
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sandbox.control.restarts == 2


def test_gc_run_refuses_m_while_it_would_break_multi_arch_images(fresh_sandbox):
    sandbox = fresh_sandbox
    original = sandbox.registry_config_path.read_bytes()
    before = blob_bytes(sandbox.storage_path)
    done = regops(
        sandbox, "gc", "run", "-m", "--hold", "0", "--restart-command", sandbox.restart_command
    )
    assert done.returncode == 1
    assert "-m would break 2 multi-arch images (platform/tools/ci:1.0" in done.stderr
    assert blob_bytes(sandbox.storage_path) == before
    assert sandbox.registry_config_path.read_bytes() == original
    assert sandbox.control.restarts == 0


def _collector_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def start_slow_gc_run(sandbox, folder: Path, delay: int) -> tuple[subprocess.Popen, Path]:
    """``regops gc run`` whose collector (a script) sleeps ``delay`` s before the real one."""
    slow = folder / "slow-collector"
    slow.write_text(f'#!/bin/sh\nsleep {delay}\nexec docker-registry "$@"\n')
    slow.chmod(0o755)
    env = {**os.environ, **sandbox.env("admin")}
    process = subprocess.Popen(
        [sys.executable, "-m", "regops.cli", "gc", "run", "--hold", "0", "--collector",
         str(slow), "--restart-command", sandbox.restart_command],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return process, slow


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_stops_the_collector_and_restores_read_write(
    fresh_sandbox, tmp_path, signum
):
    sandbox = fresh_sandbox
    config = sandbox.registry_config_path
    original = config.read_bytes()
    delete_a_tag(sandbox)
    before = blob_bytes(sandbox.storage_path)
    # the real collector, started late so the signal lands while it "runs"
    process, slow = start_slow_gc_run(sandbox, tmp_path, 60)
    lines = []
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if line.startswith("gc: plan;"):
            break
    deadline = time.monotonic() + 10
    while not _collector_processes(str(slow)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _collector_processes(str(slow)), "".join(lines)
    assert not upload_works_quietly(sandbox)  # read-only while GC runs
    process.send_signal(signum)
    rest = process.stderr.read()
    code = process.wait(timeout=RUN_TIMEOUT)
    assert code == 130, "".join(lines) + rest
    assert _collector_processes(str(slow)) == []
    assert config.read_bytes() == original
    assert blob_bytes(sandbox.storage_path) == before  # the sweep never started
    assert upload_works(sandbox)
    (record,) = run_records(state_dir())
    assert record["status"] == "interrupted" and record["restored"]
    assert not (state_dir() / "gc" / "readonly.json").exists()


def _group_members(pgid: int) -> list[int]:
    """Processes in process group ``pgid``, read from /proc/<pid>/stat (field 5)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def test_a_sigkill_mid_collect_takes_the_collector_down_and_recover_restores(
    fresh_sandbox, tmp_path
):
    """SIGKILL while the collector runs: the collector dies with regops; what it left in its
    process group keeps the registry read-only (recover refuses) until it ends; then gc
    recover restores the config byte for byte and uploads work again."""
    sandbox = fresh_sandbox
    config = sandbox.registry_config_path
    original = config.read_bytes()
    delete_a_tag(sandbox)
    before = blob_bytes(sandbox.storage_path)
    process, slow = start_slow_gc_run(sandbox, tmp_path, 600)
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("gc: plan;"):
            break
    marker = state_dir() / "gc" / "collector.json"
    deadline = time.monotonic() + 10
    collector = None
    while time.monotonic() < deadline:
        shells = [pid for pid in _collector_processes(str(slow)) if pid != process.pid]
        if shells and marker.exists() and len(_group_members(shells[0])) == 2:  # sh + sleep
            collector = shells[0]
            break
        time.sleep(0.05)
    assert collector is not None
    pgid = os.getpgid(collector)
    assert pgid == collector != os.getpgid(process.pid)  # its own group, led by it
    try:
        process.kill()
        process.wait(timeout=RUN_TIMEOUT)
        deadline = time.monotonic() + 10
        while _collector_processes(str(slow)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _collector_processes(str(slow)) == []  # the collector died with regops
        leftover = _group_members(pgid)
        assert leftover, "the collector's child (sleep) outlives it in the group"
        assert not upload_works_quietly(sandbox)  # still read-only
        assert config.read_bytes() != original

        refused = regops(sandbox, "gc", "recover", "--restart-command", sandbox.restart_command)
        assert refused.returncode == 1, refused.stderr
        assert f"process group {pgid}) is still running" in refused.stderr
        assert not upload_works_quietly(sandbox) and config.read_bytes() != original
        again = regops(sandbox, "gc", "run", "--hold", "0", "--restart-command", "true")
        assert again.returncode == 1 and f"process group {pgid}" in again.stderr

        os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:  # whatever failed, no sleep of the collector's group outlives the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    done = regops(sandbox, "gc", "recover", "--restart-command", sandbox.restart_command)
    assert done.returncode == 0, done.stderr
    assert "restored read-write mode" in done.stdout + done.stderr
    assert config.read_bytes() == original
    assert blob_bytes(sandbox.storage_path) == before  # nothing was swept
    assert upload_works(sandbox)
    assert not (state_dir() / "gc" / "readonly.json").exists()
    assert not (state_dir() / "gc" / "collector.json").exists()


def upload_works_quietly(sandbox) -> bool:
    try:
        return upload_works(sandbox)
    except RegistryUnsupported:
        return False


def test_gc_run_does_not_collect_when_the_registry_stays_writable(fresh_sandbox):
    """A restart command that restarts nothing: the upload probe is accepted, so no GC."""
    sandbox = fresh_sandbox
    config = sandbox.registry_config_path
    original = config.read_bytes()
    delete_a_tag(sandbox)
    before = blob_bytes(sandbox.storage_path)
    done = regops(sandbox, "gc", "run", "--hold", "0", "--restart-command", "true")
    assert done.returncode == 1
    assert "still accepts uploads" in done.stderr
    assert blob_bytes(sandbox.storage_path) == before
    assert config.read_bytes() == original
    (record,) = run_records(state_dir())
    assert record["status"] == "failed" and not record["readonly_proved"] and record["restored"]
