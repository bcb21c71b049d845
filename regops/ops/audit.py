"""The cleanup audit log: JSON Lines, one "intent" record per tag before its delete,
then one "result" record after it.

Each line is written with one ``write`` on an append-only descriptor, then
flushed and fsynced, so a run killed at any moment leaves every earlier line
on disk; at worst the last line is torn, which :func:`read_audit_log`
tolerates with a warning. An intent carries the tag's raw manifest (base64),
which is what :mod:`regops.ops.restore` pushes back. No record ever holds a
token: URLs go through :func:`regops.secrets.redact_url` and free text through
:func:`regops.secrets.redact`.

>>> with AuditWriter(default_audit_path()) as audit:  # doctest: +SKIP
...     audit.write(AuditRecord.intent(target, manifest_raw, media_type))
>>> log = read_audit_log(path)
>>> log.pending()          # intents a killed run left without a result
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypedDict

from regops.errors import StateError, ValidationError
from regops.fsutil import fsync_folder, write_all
from regops.locks import PRIVATE_FILE_MODE, ensure_private_dir, state_dir
from regops.secrets import redact, redact_url
from regops.times import utc_now

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; annotations only

log = logging.getLogger("regops.audit")

AUDIT_FORMAT_VERSION = 2  # 2: batch, placeholder, rolled_back; readers accept <= this
AUDIT_SUBDIR = "audit"
AUDIT_FILE_TEMPLATE = "cleanup-{date}.jsonl"  # one file per UTC day; runs append

EVENT_INTENT = "intent"  # written (and fsynced) before the delete
EVENT_RESULT = "result"  # written after it
EVENTS = frozenset({EVENT_INTENT, EVENT_RESULT})

RESULT_DELETED = "deleted"
RESULT_ALREADY_GONE = "already_gone"  # the tag was missing: deleted earlier or by someone else
RESULT_SKIPPED_CHANGED = "skipped_changed_digest"  # re-pushed since planning: not deleted
RESULT_ROLLED_BACK = "rolled_back"  # its batch failed and was undone: the tag kept its image
RESULT_FAILED = "failed"
RESULTS = frozenset(
    {
        RESULT_DELETED,
        RESULT_ALREADY_GONE,
        RESULT_SKIPPED_CHANGED,
        RESULT_ROLLED_BACK,
        RESULT_FAILED,
    }
)


def new_run_id() -> str:
    """A fresh run id (hex, sortable enough to read, unique across hosts)."""
    return utc_now().strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


def default_audit_path(now: dt.datetime | None = None) -> Path:
    """``<state dir>/audit/cleanup-YYYYMMDD.jsonl`` for today's (UTC) date."""
    day = (now or utc_now()).astimezone(dt.timezone.utc).strftime("%Y%m%d")
    return default_audit_dir() / AUDIT_FILE_TEMPLATE.format(date=day)


def default_audit_dir() -> Path:
    """``<state dir>/audit``: where runs write their audit logs by default."""
    return state_dir() / AUDIT_SUBDIR


def audit_files(directory: Path | None = None) -> list[Path]:
    """Every audit log in ``directory`` (default: :func:`default_audit_dir`), oldest first."""
    folder = directory or default_audit_dir()
    if not folder.is_dir():
        return []
    return sorted(folder.glob(AUDIT_FILE_TEMPLATE.format(date="*")))


class OutcomeFields(TypedDict, total=False):
    """Optional fields of an :class:`AuditRecord` that say how one tag's delete went."""

    error: str | None
    current_digest: str | None
    method: str | None
    batch: str | None
    placeholder: str | None


class ResultFields(OutcomeFields, total=False):
    """What :meth:`AuditRecord.with_result` may set besides the result."""

    actor: str | None


class RecordFields(OutcomeFields, total=False):
    """The optional fields apply writes into its intent and result records."""

    result: str | None
    media_type: str | None
    manifest: str | None


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log."""

    event: str
    run_id: str
    repository: str
    tag: str
    digest: str  # the planned digest (what the tag pointed at when planned)
    time: str = ""
    gitlab_url: str | None = None
    project_id: int | None = None
    project_path: str | None = None
    media_type: str | None = None
    manifest: str | None = None  # base64 of the raw manifest bytes (intents)
    actor: str | None = None
    result: str | None = None  # one of RESULTS (result records)
    error: str | None = None
    current_digest: str | None = None  # what the tag pointed at instead (skipped)
    method: str | None = None  # how the registry delete was done
    batch: str | None = None  # the delete batch (one per repository chunk) the tag was in
    placeholder: str | None = None  # digest of the batch's placeholder manifest, if any
    v: int = AUDIT_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValidationError("event", f"{self.event!r} is not one of {sorted(EVENTS)}")
        if self.event == EVENT_RESULT and self.result not in RESULTS:
            raise ValidationError("result", f"{self.result!r} is not one of {sorted(RESULTS)}")

    def __repr__(self) -> str:
        outcome = self.result or "intent"
        return f"<AuditRecord {self.run_id} {self.repository}:{self.tag} {outcome}>"

    @property
    def key(self) -> tuple[str, str]:
        """(repository, tag): what the record is about."""
        return (self.repository, self.tag)

    @property
    def raw_manifest(self) -> bytes | None:
        """The manifest bytes an intent recorded, or None."""
        if self.manifest is None:
            return None
        try:
            return base64.b64decode(self.manifest, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationError("manifest", f"not valid base64 in {self!r}: {exc}") from None

    def with_result(self, result: str, **fields: Unpack[ResultFields]) -> AuditRecord:
        """The result record that follows this intent (no manifest copy)."""
        return replace(self, event=EVENT_RESULT, result=result, manifest=None, time="", **fields)

    def to_json(self) -> str:
        """One JSON line (no newline), secrets removed from text fields."""
        data = asdict(self)
        data["time"] = self.time or utc_now().isoformat(timespec="milliseconds")
        if data["gitlab_url"]:
            data["gitlab_url"] = redact_url(data["gitlab_url"])
        for name in ("actor", "error", "project_path"):
            if data[name]:
                data[name] = redact(data[name])
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> AuditRecord:
        """A record from a parsed line; unknown keys from newer writers are ignored."""
        if not isinstance(data, dict):
            raise ValidationError("record", "not a JSON object")
        version = data.get("v", AUDIT_FORMAT_VERSION)
        if not isinstance(version, int) or version > AUDIT_FORMAT_VERSION:
            raise ValidationError("v", f"audit format {version!r} is newer than this regops")
        known = {name for name in cls.__dataclass_fields__}
        missing = {"event", "run_id", "repository", "tag", "digest"} - data.keys()
        if missing:
            raise ValidationError("record", f"missing {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in known})


def encode_manifest(raw: bytes) -> str:
    """Base64 text of raw manifest bytes, as stored in an intent."""
    return base64.b64encode(raw).decode("ascii")


class AuditWriter:
    """Appends records to a JSON Lines file, each one fsynced before returning."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_audit_path()
        self._fd: int | None = None
        self.written = 0

    def __repr__(self) -> str:
        return f"AuditWriter({str(self.path)!r}, written={self.written})"

    def open(self) -> AuditWriter:
        """Open for appending (creating it 0600), mending a torn last line first.

        StateError (the path and the OS's reason, one line) when the log cannot be
        created or written: a cleanup opens it before its first delete.
        """
        if self._fd is not None:
            return self
        ensure_private_dir(self.path.parent)
        try:
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise StateError("open the audit log", self.path, exc) from None
        try:
            if created:
                fsync_folder(self.path.parent)
            elif _ends_torn(self.path):
                # A killed writer left half a line; end it so our first record starts clean.
                log.warning("audit log %s ended with a torn line; starting a new line", self.path)
                self._write_bytes(b"\n")
        except OSError as exc:
            self.close()  # __exit__ never runs when __enter__ raises
            raise StateError("open the audit log", self.path, exc) from None
        except BaseException:
            self.close()
            raise
        return self

    def write(self, record: AuditRecord) -> None:
        """Append one record and make it durable (flush + fsync) before returning."""
        if self._fd is None:
            self.open()
        self._write_bytes((record.to_json() + "\n").encode("utf-8"))
        self.written += 1

    def _write_bytes(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:  # ENOSPC, EIO: the record is not durable; stop the run
            raise StateError("write to the audit log", self.path, exc) from None

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> AuditWriter:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _ends_torn(path: Path) -> bool:
    """True when the file is non-empty and does not end with a newline."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


@dataclass
class TagHistory:
    """What one run did to one tag: its intent (if any) and its result (if any)."""

    run_id: str
    repository: str
    tag: str
    intent: AuditRecord | None = None
    result: AuditRecord | None = None

    @property
    def pending(self) -> bool:
        """An intent with no result: the run stopped between the two."""
        return self.intent is not None and self.result is None


@dataclass
class AuditLog:
    """The records read from one or more audit files, and what was wrong with them."""

    records: list[AuditRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:
        runs = len({r.run_id for r in self.records})
        return f"<AuditLog {len(self.records)} records, {runs} runs, {len(self.warnings)} warnings>"

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def histories(self) -> list[TagHistory]:
        """Per (run, repository, tag), in first-seen order."""
        found: dict[tuple[str, str, str], TagHistory] = {}
        for record in self.records:
            key = (record.run_id, record.repository, record.tag)
            history = found.setdefault(key, TagHistory(*key))
            if record.event == EVENT_INTENT:
                history.intent = record
            else:
                history.result = record
        return list(found.values())

    def pending(self) -> list[TagHistory]:
        """Intents without a result (a run was interrupted between them)."""
        return [h for h in self.histories() if h.pending]

    def results(self, result: str | None = None) -> list[AuditRecord]:
        """Result records, optionally only those with ``result``."""
        return [
            r
            for r in self.records
            if r.event == EVENT_RESULT and (result is None or r.result == result)
        ]

    def batch_intents(self, batch: str) -> list[AuditRecord]:
        """The intents (with a manifest) written for delete batch ``batch``, in log order."""
        return [
            r
            for r in self.records
            if r.event == EVENT_INTENT and r.batch == batch and r.manifest is not None
        ]

    def placeholder_intents(self, placeholder: str) -> list[AuditRecord]:
        """The intents of the batch whose placeholder has digest ``placeholder``."""
        return [
            r
            for r in self.records
            if r.event == EVENT_INTENT and r.placeholder == placeholder and r.manifest is not None
        ]


def read_audit_log(paths: Path | str | Iterable[Path | str]) -> AuditLog:
    """Read audit files; torn or unparsable lines are skipped with a warning each."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    audit = AuditLog()
    for path in map(Path, paths):
        audit.paths.append(path)
        _read_one(path, audit)
    for warning in audit.warnings:
        log.warning("%s", warning)
    return audit


def _read_one(path: Path, audit: AuditLog) -> None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValidationError("audit log", f"{path} does not exist") from None
    lines = data.split(b"\n")
    torn_tail = lines[-1] != b""  # no final newline: the writer was stopped mid-line
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_last = number == len(lines) and torn_tail
        try:
            audit.records.append(AuditRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            kind = "torn last line" if is_last else "unreadable line"
            reason = exc.message if isinstance(exc, ValidationError) else "not a JSON record"
            audit.warnings.append(f"{path}:{number}: {kind} skipped ({reason})")
