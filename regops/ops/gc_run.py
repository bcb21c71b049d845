"""``gc run``: the admin guide's zero-downtime garbage collection as one guarded procedure.

The registry stays up for pulls: it is switched to read-only mode
(``storage.maintenance.readonly.enabled``), the real collector runs, and it
is switched back. Step by step (:func:`run_gc`):

1. preflight: no cleanup audit record younger than the restore hold (deletes
   can be undone by ``regops restore`` only until GC frees their blobs); a
   plan (``-m``: refused while it would break multi-arch images, unless
   forced; refused when the collector would stop with an error);
2. read-only on (:class:`PlainRegistrySwitch`: edit config.yml, run the
   admin's restart command; :class:`OmnibusSwitch`: a marked block in
   gitlab.rb, ``gitlab-ctl reconfigure``), then *proved*: an upload attempt
   the registry must refuse with 405;
3. a plan taken now (nothing can change any more), bytes before;
4. the collector (``registry garbage-collect [-m] config.yml``), its output
   streamed to the run's log, its counts parsed and compared with the plan;
5. bytes after; read-write again; a JSON record of the run.

Whatever happens after step 2 — a failure, Ctrl-C, SIGTERM — the collector is
stopped first (it must never sweep while writes are on), then read-write
mode is restored and the registry restarted: it is never left read-only or
stopped by regops. A run killed with SIGKILL leaves a marker
(``<state>/gc/readonly.json``) from which the next ``gc run`` or ``gc
recover`` restores the original config before anything else. The collector
is killed with regops (``PR_SET_PDEATHSIG``); should anything of it still run
(``<state>/gc/collector.json`` names its process group), recovery refuses to
switch writes back on under a sweep.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from regops.errors import (
    ConfigError,
    RegistryUnsupported,
    RegopsError,
    StateError,
    TransportError,
    UsageError,
    ValidationError,
)
from regops.fsutil import atomic_write
from regops.locks import ensure_private_dir, state_dir
from regops.ops.audit import EVENT_RESULT, RESULT_DELETED, audit_files, read_audit_log
from regops.ops.gc import (
    CollectorCounts,
    GCPlan,
    differences,
    parse_collector_output,
    plan,
    repositories,
)
from regops.registry.backends import StorageBackend
from regops.registry.client import RegistryClient
from regops.registry.configfile import OMNIBUS_REGISTRY_CONFIG, RegistryConfig
from regops.registry.layout import BLOBS_ROOT
from regops.registry.reference import Digest
from regops.secrets import redact
from regops.times import utc_now, utc_time

log = logging.getLogger("regops.gc")

GC_SUBDIR = "gc"
MARKER_NAME = "readonly.json"  # present while regops holds the registry read-only
COLLECTOR_MARKER_NAME = "collector.json"  # present while a collector regops started may run
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # a process group id means nothing after reboot
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent dies
RUNS_SUBDIR = "runs"
DEFAULT_HOLD = dt.timedelta(hours=24)  # how long cleanup deletes stay restorable by default
OMNIBUS_COLLECTOR = "/opt/gitlab/embedded/bin/registry"  # the guide's binary
COLLECTORS = ("docker-registry", "registry")  # names of the binary on PATH otherwise
OMNIBUS_GITLAB_RB = Path("/etc/gitlab/gitlab.rb")
RECONFIGURE = ("gitlab-ctl", "reconfigure")
RESTART_TIMEOUT = 300.0  # seconds a restart/reconfigure command may take
READY_TIMEOUT = 60.0  # seconds to wait for /v2/ after a restart
READY_POLL = 0.25
COLLECTOR_STOP_TIMEOUT = 30.0  # seconds after SIGTERM before SIGKILL
# The upload probe asks to mount this digest: no registry holds it, so a writable
# registry starts an upload (cancelled at once) and a read-only one answers 405.
PROBE_DIGEST = Digest.of(b"regops read-only probe: this blob is never stored")
PROBE_REPOSITORY = "regops-gc-probe/readonly"  # when the storage has no repository yet
RB_BEGIN = "# BEGIN regops gc read-only (regops removes this block when GC ends)"
RB_END = "# END regops gc read-only"
SECRET_PARAMETERS = re.compile(r"(secret|password|key|token|credential)", re.I)


class GCRefused(RegopsError):
    """``gc run`` would not start: young audit records, an unsafe -m, a failing collector."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) arrived while GC ran; the registry was restored first."""


# --------------------------------------------------------------------------- switches


class ReadOnlySwitch(Protocol):
    """Turns the registry's read-only mode on, and back to how it was."""

    def describe(self) -> str: ...

    def enable(self) -> bool:
        """Switch read-only on; False when it already was (nothing to restore)."""
        ...

    def restore(self) -> None:
        """Back to the config as it was before :meth:`enable`, registry restarted."""
        ...


def run_command(command: str | list[str], what: str, timeout: float = RESTART_TIMEOUT) -> None:
    """Run an admin-given command (a shell line or argv); RegopsError when it fails."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(f"{what}: {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise RegopsError(f"{what} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        tail = redact(lines[-1]) if lines else "no output"
        raise RegopsError(f"{what} failed with exit {done.returncode}: {tail}")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PlainRegistrySwitch:
    """A registry run from its own config.yml: edit ``storage.maintenance.readonly``, then
    the admin's restart command. The original bytes go back exactly (comments too)."""

    def __init__(self, config_path: Path, restart_command: str, marker: Path) -> None:
        self.config_path = Path(config_path)
        self.restart_command = restart_command
        self.marker = marker
        self._written: bytes | None = None
        self._original: bytes | None = None

    def describe(self) -> str:
        return f"{self.config_path} + `{self.restart_command}`"

    def enable(self) -> bool:
        config = RegistryConfig.load(self.config_path)
        if config.readonly:
            return False
        self._original = config.raw
        self._written = config.with_readonly(True)
        write_marker(self.marker, self._marker_data())
        atomic_write(self.config_path, self._written)
        run_command(self.restart_command, "the restart command")
        return True

    def _marker_data(self) -> dict[str, Any]:
        return {
            "kind": "plain",
            "config": str(self.config_path),
            "original": base64.b64encode(self._original or b"").decode(),
            "written_sha256": _sha(self._written or b""),
            "restart_command": self.restart_command,
            "pid": os.getpid(),
            "time": utc_now().isoformat(timespec="seconds"),
        }

    def restore(self) -> None:
        if self._original is None:
            return
        current = self.config_path.read_bytes()
        if _sha(current) == _sha(self._written or b""):
            atomic_write(self.config_path, self._original)
        else:  # edited by someone meanwhile: keep their edit, only switch read-only off
            log.warning("%s changed during GC; turning read-only off in it", self.config_path)
            atomic_write(self.config_path, RegistryConfig.parse(current).with_readonly(False))
        run_command(self.restart_command, "the restart command")
        self._original = None
        remove_marker(self.marker)

    @classmethod
    def from_marker(cls, data: dict[str, Any], marker: Path, restart: str | None) -> Any:
        switch = cls(Path(data["config"]), restart or data["restart_command"], marker)
        switch._original = base64.b64decode(data["original"])
        current = switch.config_path.read_bytes()
        switch._written = current if _sha(current) == data["written_sha256"] else b""
        return switch


class OmnibusSwitch:
    """Omnibus GitLab: a marked ``registry['storage']`` block appended to gitlab.rb (the
    effective storage section of the generated config.yml plus read-only), then
    ``gitlab-ctl reconfigure``; removed again and reconfigured at the end."""

    def __init__(
        self,
        marker: Path,
        gitlab_rb: Path = OMNIBUS_GITLAB_RB,
        config_path: Path = OMNIBUS_REGISTRY_CONFIG,
        reconfigure: tuple[str, ...] = RECONFIGURE,
    ) -> None:
        self.marker = marker
        self.gitlab_rb = Path(gitlab_rb)
        self.config_path = Path(config_path)
        self.reconfigure = reconfigure
        self._original: bytes | None = None

    def describe(self) -> str:
        return f"{self.gitlab_rb} + `{' '.join(self.reconfigure)}`"

    def enable(self) -> bool:
        config = RegistryConfig.load(self.config_path)
        if config.readonly:
            return False
        try:
            self._original = self.gitlab_rb.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.gitlab_rb}: {exc.strerror}") from None
        if RB_BEGIN.encode() in self._original:
            raise ConfigError(f"{self.gitlab_rb} already holds a regops block: run gc recover")
        block = omnibus_block(config, mask=False)
        write_marker(
            self.marker,
            {
                "kind": "omnibus",
                "gitlab_rb": str(self.gitlab_rb),
                "config": str(self.config_path),
                "pid": os.getpid(),
                "time": utc_now().isoformat(timespec="seconds"),
            },
        )
        separator = b"" if self._original.endswith(b"\n") or not self._original else b"\n"
        atomic_write(self.gitlab_rb, self._original + separator + block.encode())
        run_command(list(self.reconfigure), "gitlab-ctl reconfigure")
        return True

    def restore(self) -> None:
        current = self.gitlab_rb.read_bytes()
        atomic_write(self.gitlab_rb, strip_block(current))
        run_command(list(self.reconfigure), "gitlab-ctl reconfigure")
        self._original = None
        remove_marker(self.marker)


def omnibus_block(config: RegistryConfig, *, mask: bool) -> str:
    """The gitlab.rb lines that make the registry read-only with its current storage."""
    storage = {k: v for k, v in config.storage.items() if k != "maintenance"}
    maintenance = dict(config.storage.get("maintenance") or {})
    maintenance["readonly"] = {"enabled": True}
    storage["maintenance"] = maintenance
    return f"{RB_BEGIN}\nregistry['storage'] = {_ruby(storage, mask)}\n{RB_END}\n"


def strip_block(text: bytes) -> bytes:
    """gitlab.rb without regops' block (and the newline regops added before it)."""
    start = text.find(RB_BEGIN.encode())
    if start < 0:
        return text
    end = text.find(RB_END.encode(), start)
    end = len(text) if end < 0 else end + len(RB_END) + 1
    return text[:start] + text[end:]


def _ruby(value: Any, mask: bool, key: str = "") -> str:
    if isinstance(value, dict):
        items = ", ".join(f"{_ruby(str(k), False)} => {_ruby(v, mask, str(k))}"
                          for k, v in value.items())  # fmt: skip
        return "{ " + items + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return "nil"
    if mask and SECRET_PARAMETERS.search(key):
        return f"'<{key} as in your gitlab.rb>'"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def omnibus_steps(config: RegistryConfig, untagged: bool) -> str:
    """The guide's Omnibus procedure with regops' checks between the steps (no secret)."""
    flag = " -m" if untagged else ""
    return "\n".join(
        [
            "# 1. what GC will free, and whether -m breaks multi-arch images (registry stays up):",
            f"regops gc plan{flag} --config {config.path}",
            "# 2. read-only: add to /etc/gitlab/gitlab.rb, then reconfigure:",
            omnibus_block(config, mask=True).rstrip("\n"),
            "sudo gitlab-ctl reconfigure",
            "# 3. prove it (a push must be refused), then collect:",
            f"sudo {OMNIBUS_COLLECTOR} garbage-collect{flag} {config.path}",
            "# 4. remove the block from gitlab.rb (read-write again) and reconfigure:",
            "sudo gitlab-ctl reconfigure",
            "# regops gc run --omnibus does all of this, and restores read-write on any failure.",
        ]
    )


# --------------------------------------------------------------------------- markers


def gc_dir() -> Path:
    return state_dir() / GC_SUBDIR


def marker_path() -> Path:
    return gc_dir() / MARKER_NAME


def write_marker(path: Path, data: dict[str, Any]) -> None:
    ensure_private_dir(path.parent)
    atomic_write(path, json.dumps(data, indent=2) + "\n", mode=0o600)


def remove_marker(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def collector_marker_path() -> Path:
    return gc_dir() / COLLECTOR_MARKER_NAME


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def check_no_collector_left(marker: Path) -> None:
    """GCRefused while a collector a killed run started still runs; else forget its marker."""
    try:
        data = json.loads(marker.read_text())
        pgid, boot = int(data["pgid"]), str(data["boot_id"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError("read", marker, OSError(0, str(exc))) from None
    if boot and boot == boot_id() and _group_alive(pgid):
        raise GCRefused(
            f"the collector of an interrupted gc run (process group {pgid}) is still running: "
            "the registry must stay read-only until it ends. Wait for it, or stop it "
            f"(kill -TERM -- -{pgid}), then run `regops gc recover`."
        )
    remove_marker(marker)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def recover(marker: Path, restart_command: str | None = None) -> str | None:
    """Restore what a killed run left read-only; a sentence saying what, or None.

    Refuses (:class:`GCRefused`) while a collector that run started still runs.
    """
    check_no_collector_left(marker.parent / COLLECTOR_MARKER_NAME)
    try:
        data = json.loads(marker.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError("read", marker, OSError(0, str(exc))) from None
    switch: Any
    if data.get("kind") == "omnibus":
        switch = OmnibusSwitch(marker, Path(data["gitlab_rb"]), Path(data["config"]))
    else:
        switch = PlainRegistrySwitch.from_marker(data, marker, restart_command)
    switch.restore()
    return f"restored read-write mode left by an interrupted gc run ({switch.describe()})"


# --------------------------------------------------------------------------- preflight


def young_audit_records(hold: dt.timedelta, now: dt.datetime | None = None) -> list[Any]:
    """Cleanup deletes newer than ``hold`` (still restorable until GC frees their blobs)."""
    files = audit_files()
    if not files or hold <= dt.timedelta(0):
        return []
    cutoff = (now or utc_now()) - hold
    young = []
    for record in read_audit_log(files):
        if record.event != EVENT_RESULT or record.result != RESULT_DELETED:
            continue
        try:
            when = utc_time(record.time, "audit time")
        except ValidationError:
            young.append(record)  # an unreadable time: count it as young, to be safe
            continue
        if when >= cutoff:
            young.append(record)
    return young


def prove_readonly(client: RegistryClient, repository: str) -> bool:
    """True when the registry refuses an upload (405); a writable one gets it cancelled."""
    try:
        client.mount_blob(repository, PROBE_DIGEST, repository)
    except RegistryUnsupported:
        return True
    return False


def wait_ready(client: RegistryClient, timeout: float = READY_TIMEOUT) -> None:
    """Wait until ``/v2/`` answers (after a restart); RegopsError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except (TransportError, RegopsError) as exc:
            if time.monotonic() >= deadline:
                raise RegopsError(
                    f"the registry did not answer within {timeout:.0f} s: {exc}"
                ) from None
            time.sleep(READY_POLL)


def find_collector(path: str | None, omnibus: bool) -> str:
    """The collector binary: ``path``, Omnibus's, or docker-registry/registry on PATH."""
    candidates = [path] if path else ([OMNIBUS_COLLECTOR] if omnibus else list(COLLECTORS))
    for candidate in candidates:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise ConfigError(f"registry binary not found (tried {', '.join(map(str, candidates))})")


def blob_bytes(backend: StorageBackend) -> int:
    """Bytes held by every blob (``blobs/**/data``)."""
    return sum(f.size for f in backend.walk(BLOBS_ROOT) if f.key.endswith("/data"))


# --------------------------------------------------------------------------- signals


class _Signals:
    """SIGTERM raises like Ctrl-C while shielded is off; both wait while shielded is on."""

    def __init__(self) -> None:
        self.shielded = False
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.shielded:
            self.pending = signum
            return
        raise Interrupted(signal.Signals(signum).name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Signals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for previous_signum, handler in self._previous.items():
                signal.signal(previous_signum, handler)

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        """Signals wait until the block ends; then the first one raises (outermost block)."""
        before, self.shielded = self.shielded, True
        try:
            yield
        finally:
            self.shielded = before
            if not before and self.pending is not None:
                signum, self.pending = self.pending, None
                raise Interrupted(signal.Signals(signum).name)


# --------------------------------------------------------------------------- the run


@dataclass
class GCRunRecord:
    """The JSON record a run leaves in ``<state>/gc/runs/<run_id>.json``."""

    run_id: str
    config: str
    storage: str
    untagged: bool
    forced: bool
    switch: str
    started: str
    status: str = "started"  # ok | differs | failed | interrupted | refused
    finished: str | None = None
    readonly_switched: bool = False
    readonly_proved: bool = False
    restored: bool = False
    plan: dict[str, Any] | None = None
    collector: dict[str, Any] | None = None
    differences: list[str] = field(default_factory=list)
    bytes_before: int | None = None
    bytes_after: int | None = None
    bytes_freed: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    log: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> str:
        if self.status in ("ok", "differs"):
            text = (
                f"freed {self.bytes_freed:,} bytes ({self.bytes_before:,} -> "
                f"{self.bytes_after:,}); collector: {self.collector['line']}"
                if self.collector and self.bytes_freed is not None
                else "done"
            )
            if self.differences:
                text += "; DIFFERS from the plan: " + "; ".join(self.differences)
            return text
        return f"{self.status}: {self.error}"


@dataclass
class GCRunOptions:
    """What ``gc run`` was asked to do."""

    config_path: Path
    switch: ReadOnlySwitch
    registry: RegistryClient
    untagged: bool = False
    force: bool = False
    hold: dt.timedelta = DEFAULT_HOLD
    collector: str = "docker-registry"
    ready_timeout: float = READY_TIMEOUT


def run_gc(
    options: GCRunOptions,
    *,
    out: Callable[[str], None] = print,
    runs_dir: Path | None = None,
) -> GCRunRecord:
    """The whole procedure (see the module docstring); returns the run's record, also saved.

    Raises :class:`GCRefused` before anything changes, :class:`Interrupted` (after
    restoring) on SIGINT/SIGTERM.
    """
    folder = ensure_private_dir(runs_dir or gc_dir() / RUNS_SUBDIR)
    started = utc_now()
    run_id = started.strftime("%Y%m%dT%H%M%SZ-") + os.urandom(4).hex()
    config = RegistryConfig.load(options.config_path)
    backend = config.backend()
    record = GCRunRecord(
        run_id=run_id,
        config=str(options.config_path),
        storage=backend.describe(),
        untagged=options.untagged,
        forced=options.force,
        switch=options.switch.describe(),
        started=started.isoformat(timespec="seconds"),
        log=str(folder / f"{run_id}.log"),
    )
    signals = _Signals()
    try:
        with signals.installed():
            try:
                _procedure(options, backend, record, signals, out)
            except BaseException as exc:
                record.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else (
                    "refused" if isinstance(exc, GCRefused) else "failed"
                )  # fmt: skip
                record.error = record.error or redact(str(exc) or type(exc).__name__)
                raise
            finally:
                with signals.shield():
                    _restore(options, record, out)
                    _save(folder, record)
    finally:
        backend.close()
    return record


def _step(record: GCRunRecord, name: str, out: Callable[[str], None], **details: Any) -> None:
    record.steps.append({"step": name, "time": utc_now().isoformat(timespec="seconds"), **details})
    out(f"gc: {name}" + "".join(f"; {k}={v}" for k, v in details.items()))


def _procedure(
    options: GCRunOptions,
    backend: StorageBackend,
    record: GCRunRecord,
    signals: _Signals,
    out: Callable[[str], None],
) -> None:
    young = young_audit_records(options.hold)
    if young:
        newest = max(r.time for r in young)
        raise GCRefused(
            f"{len(young)} cleanup deletes are younger than the restore hold "
            f"({_hours(options.hold)}; newest {newest}): GC would make them impossible to "
            "restore. Wait, or pass --hold 0 to collect anyway."
        )
    _step(record, "preflight: no cleanup delete younger than the hold", out)
    before = plan(backend, untagged=options.untagged, attribute=False)
    _check_plan(before, options)
    _step(record, "preflight plan", out, predicted=before.line())
    with signals.shield():  # the switch and its marker go together
        record.readonly_switched = options.switch.enable()
    _step(record, "read-only on", out, switched=record.readonly_switched)
    wait_ready(options.registry, options.ready_timeout)
    probe = _probe_repository(backend)
    if not prove_readonly(options.registry, probe):
        raise RegopsError(
            "the registry still accepts uploads after switching read-only on: not collecting"
        )
    record.readonly_proved = True
    _step(record, "read-only proved: an upload was refused (405)", out)
    current = plan(backend, untagged=options.untagged, attribute=False)
    _check_plan(current, options)
    record.plan = _plan_summary(current)
    record.bytes_before = current.bytes_total
    _step(record, "plan", out, predicted=current.line(), bytes=current.bytes_eligible)
    counts, code = run_collector(
        options.collector,
        options.config_path,
        options.untagged,
        Path(record.log or "gc.log"),
        shield=signals.shield,
        marker=collector_marker_path(),
    )
    record.collector = {
        "exit": code,
        "line": counts and _line(counts),
        "blobs_marked": counts and counts.blobs_marked,
        "blobs_eligible": counts and counts.blobs_eligible,
        "manifests_eligible": counts and counts.manifests_eligible,
    }
    if code != 0 or counts is None:
        raise RegopsError(f"the collector failed (exit {code}); its output: {record.log}")
    record.differences = differences(current, counts)
    record.bytes_after = blob_bytes(backend)
    record.bytes_freed = record.bytes_before - record.bytes_after
    if record.bytes_freed != current.bytes_eligible:
        record.differences.append(
            f"bytes freed {record.bytes_freed}, planned {current.bytes_eligible}"
        )
    record.status = "differs" if record.differences else "ok"
    _step(record, "collected", out, line=_line(counts), freed=record.bytes_freed)


def _check_plan(result: GCPlan, options: GCRunOptions) -> None:
    if result.collector_error:
        raise GCRefused(f"the collector would stop with an error: {result.collector_error}")
    if options.untagged and result.broken_images and not options.force:
        names = ", ".join(f"{b.repository}:{b.tag}" for b in result.broken_images[:5])
        more = len(result.broken_images) - 5
        raise GCRefused(
            f"-m would break {len(result.broken_images)} multi-arch images ({names}"
            + (f" and {more} more" if more > 0 else "")
            + "): their untagged children would be deleted. Run without -m, or pass --force."
        )


def _probe_repository(backend: StorageBackend) -> str:
    for name in repositories(backend):
        return name
    return PROBE_REPOSITORY


def _restore(options: GCRunOptions, record: GCRunRecord, out: Callable[[str], None]) -> None:
    """Read-write again (when this run switched it) and the registry answering."""
    if not record.readonly_switched:
        return
    try:
        options.switch.restore()
        wait_ready(options.registry, options.ready_timeout)
        record.restored = True
        _step(record, "read-write restored", out)
    except BaseException as exc:  # keep the first error; say loudly what is left
        record.error = (record.error + "; " if record.error else "") + (
            f"RESTORING READ-WRITE FAILED: {redact(str(exc))}; run `regops gc recover`"
        )
        record.status = "failed"
        out(f"gc: {record.error}")


def run_collector(
    binary: str,
    config_path: Path,
    untagged: bool,
    log_path: Path,
    *,
    dry_run: bool = False,
    shield: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    marker: Path | None = None,
) -> tuple[CollectorCounts | None, int]:
    """Run ``garbage-collect``, streaming its output to ``log_path``; (counts, exit code).

    The collector dies with this process (SIGKILL via ``PR_SET_PDEATHSIG``);
    ``marker`` names its process group while it may run, for
    :func:`check_no_collector_left`.

    On any exception (Ctrl-C, SIGTERM) the collector is stopped and waited for
    before the exception goes on: it never runs on while writes come back.
    """
    command = [binary, "garbage-collect"]
    if dry_run:
        command.append("--dry-run")
    if untagged:
        command.append("--delete-untagged")
    command.append(str(config_path))
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    kept: list[str] = []
    with open(log_path, "ab") as sink:
        process: subprocess.Popen[bytes] | None = None
        try:
            with shield():  # a signal while it starts waits until we can stop it
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # the terminal's Ctrl-C reaches regops only
                    preexec_fn=_die_with(os.getpid()),
                    env=env,
                )
                if marker is not None:
                    write_marker(marker, {"pgid": process.pid, "boot_id": boot_id()})
            assert process.stdout is not None
            for raw in process.stdout:
                sink.write(raw)
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if "eligible for deletion" in line:
                    kept.append(line)
            code = process.wait()
        except BaseException:
            if process is not None:
                with shield():  # a second Ctrl-C must not cut the wait for the collector short
                    _stop(process)
            raise
        finally:
            sink.flush()
            if marker is not None and (process is None or process.poll() is not None):
                remove_marker(marker)
    return parse_collector_output("\n".join(kept)), code


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when ``parent`` dies (also if it already has)."""

    def arrange() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(127)  # cannot promise to die with regops: do not run at all
        if os.getppid() != parent:  # died between fork and prctl
            os._exit(127)

    return arrange


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=COLLECTOR_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _plan_summary(result: GCPlan) -> dict[str, Any]:
    return {
        "line": result.line(),
        "blobs_marked": result.blobs_marked,
        "blobs_eligible": result.blobs_eligible,
        "manifests_eligible": result.manifests_eligible,
        "bytes_eligible": result.bytes_eligible,
        "broken_images": [f"{b.repository}:{b.tag}" for b in result.broken_images],
    }


def _line(counts: CollectorCounts) -> str:
    return (
        f"{counts.blobs_marked} blobs marked, {counts.blobs_eligible} blobs and "
        f"{counts.manifests_eligible} manifests eligible for deletion"
    )


def _save(folder: Path, record: GCRunRecord) -> None:
    record.finished = utc_now().isoformat(timespec="seconds")
    atomic_write(folder / f"{record.run_id}.json", json.dumps(asdict(record), indent=2) + "\n")


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}h"


def check_switch_options(omnibus: bool, restart_command: str | None) -> None:
    """UsageError unless exactly one way of switching read-only is given."""
    if omnibus == bool(restart_command):
        raise UsageError(
            "give --restart-command CMD (a registry run from its own config.yml) or "
            "--omnibus (gitlab.rb + gitlab-ctl reconfigure); `regops gc steps` prints "
            "the Omnibus procedure without changing anything"
        )
