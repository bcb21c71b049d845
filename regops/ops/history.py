"""Usage history: registry usage snapshots in one SQLite file, and what changed between them.

A usage run that asks for it (``regops usage --record``; the cron recipe does
by default) stores a **snapshot**: when it was taken, the instance totals and,
per scanned project, ``registry_size_bytes``, ``unique_bytes``,
``repositories``, ``tags`` and whether the project was read completely. One
snapshot is one transaction: a run killed while writing leaves no part of it,
and every earlier snapshot stays readable.

>>> with HistoryStore(default_history_path()) as store:      # doctest: +SKIP
...     store.record(report)
...     snapshots = store.snapshots(since=utc_now() - timedelta(days=30))
>>> growth(snapshots)                                         # per project, first -> last

The file (default ``<state dir>/usage-history.sqlite3``, mode 0600) is in WAL
mode with a busy timeout, so a reader never blocks a writer and two writers
(cron and a person) wait for each other instead of failing. Its schema is
versioned (``PRAGMA user_version``) and upgraded in place, one transaction per
step (:data:`MIGRATIONS`):

- version 1: ``snapshots(id, taken_at, projects, repositories, tags,
  registry_size_bytes, unique_bytes, incomplete_projects)`` and
  ``project_usage(snapshot_id, project_id, project_path, registry_size_bytes,
  unique_bytes, repositories, tags, incomplete)``;
- version 2: ``snapshots`` gains ``gitlab_url`` (which instance), ``extended``
  (1 when unique_bytes was measured; set for old rows that hold any) and
  ``seconds``; indexes on ``snapshots(taken_at)`` and
  ``project_usage(project_id)``.

A row is stored for every scanned project (zero usage included), so a project
missing from a snapshot was not scanned by it. Growth takes, per project, the
first and the last *complete* row in the period.

**Runs that free space** are read from their own records, so each can be set
beside the first snapshot taken after it (:func:`after_runs`): cleanup runs
from the audit logs (:func:`regops.ops.audit.audit_files`) and garbage
collection runs from JSON records in ``<state dir>/gc/`` (:data:`GC_RECORD_GLOB`).
A GC record is one JSON object per file, format 1::

    {"format": 1, "run_id": "...", "started_at": "<RFC 3339>",
     "finished_at": "<RFC 3339>", "ok": true, "bytes_before": 123,
     "bytes_after": 45, "blobs_deleted": 6, "manifests_deleted": 2}

``run_id`` and ``finished_at`` are required; the rest may be null or absent
and unknown keys are ignored, so the GC command can add what it measures.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from tabulate import tabulate

from regops.durations import parse_duration
from regops.errors import HistoryError, StateError, ValidationError
from regops.locks import PRIVATE_FILE_MODE, ensure_private_dir, state_dir
from regops.ops.audit import (
    EVENT_RESULT,
    RESULT_DELETED,
    audit_files,
    default_audit_dir,
    read_audit_log,
)
from regops.times import utc_now, utc_time

log = logging.getLogger("regops.history")

HISTORY_FILE = "usage-history.sqlite3"
HISTORY_ENV = "REGOPS_HISTORY"  # overrides the default file (cron jobs, containers)
BUSY_TIMEOUT_MS = 30_000  # a writer waits this long for another one's transaction
GC_SUBDIR = "gc"
GC_RECORD_GLOB = "gc-*.json"
GC_RECORD_FORMAT = 1
KIND_CLEANUP = "cleanup"
KIND_GC = "gc"
ROW_FIELDS = ("registry_size_bytes", "unique_bytes", "repositories", "tags")

# Each step brings the schema from version N-1 to N, in one transaction.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY,
            taken_at TEXT NOT NULL,
            projects INTEGER NOT NULL,
            repositories INTEGER NOT NULL,
            tags INTEGER NOT NULL,
            registry_size_bytes INTEGER NOT NULL,
            unique_bytes INTEGER NOT NULL,
            incomplete_projects INTEGER NOT NULL
        );
        CREATE TABLE project_usage (
            snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
            project_id INTEGER NOT NULL,
            project_path TEXT NOT NULL,
            registry_size_bytes INTEGER NOT NULL,
            unique_bytes INTEGER NOT NULL,
            repositories INTEGER NOT NULL,
            tags INTEGER NOT NULL,
            incomplete INTEGER NOT NULL,
            PRIMARY KEY (snapshot_id, project_id)
        );
        """,
    ),
    (
        2,
        """
        ALTER TABLE snapshots ADD COLUMN gitlab_url TEXT;
        ALTER TABLE snapshots ADD COLUMN extended INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE snapshots ADD COLUMN seconds REAL;
        UPDATE snapshots SET extended = 1 WHERE unique_bytes > 0;
        CREATE INDEX snapshots_taken_at ON snapshots (taken_at);
        CREATE INDEX project_usage_project ON project_usage (project_id);
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def default_history_path() -> Path:
    """``$REGOPS_HISTORY`` or ``<state dir>/usage-history.sqlite3``."""
    override = os.environ.get(HISTORY_ENV)
    return Path(override) if override else state_dir() / HISTORY_FILE


def default_gc_dir() -> Path:
    """``<state dir>/gc``: where garbage collection runs leave their JSON records."""
    return state_dir() / GC_SUBDIR


def _iso(value: datetime) -> str:
    """The stored form: UTC, microseconds, so text order is time order."""
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_since(
    text: str | datetime | timedelta | None, now: datetime | None = None
) -> datetime | None:
    """``30d`` (a duration back from now), an ISO date/time, a datetime, or None."""
    if text is None or isinstance(text, datetime):
        return text
    now = now or utc_now()
    if isinstance(text, timedelta):
        return now - text
    if text[:1].isdigit() and "-" in text:
        return utc_time(text, "since")
    return now - parse_duration(text, "since")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ProjectRow:
    """One project in one snapshot."""

    project_id: int
    project_path: str
    registry_size_bytes: int
    unique_bytes: int
    repositories: int
    tags: int
    incomplete: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Snapshot:
    """One recorded usage run: when, the totals, and a row per scanned project."""

    id: int
    taken_at: datetime
    projects: int
    repositories: int
    tags: int
    registry_size_bytes: int
    unique_bytes: int
    incomplete_projects: int
    gitlab_url: str | None = None
    extended: bool = False
    seconds: float | None = None
    rows: tuple[ProjectRow, ...] = ()

    def row(self, project: int | str) -> ProjectRow | None:
        """The row of project ``project`` (id or path), or None."""
        for row in self.rows:
            if project in (row.project_id, row.project_path):
                return row
        return None

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "rows"}
        data["taken_at"] = _iso(self.taken_at)
        data["rows"] = [row.to_dict() for row in self.rows]
        return data


@dataclass(frozen=True)
class Growth:
    """One project's change between its first and last complete row in a period."""

    project_id: int
    project_path: str
    first_at: datetime
    last_at: datetime
    first_registry_size_bytes: int
    last_registry_size_bytes: int
    first_unique_bytes: int
    last_unique_bytes: int
    first_tags: int
    last_tags: int

    @property
    def registry_size_delta(self) -> int:
        return self.last_registry_size_bytes - self.first_registry_size_bytes

    @property
    def unique_delta(self) -> int:
        return self.last_unique_bytes - self.first_unique_bytes

    @property
    def tags_delta(self) -> int:
        return self.last_tags - self.first_tags

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.update(
            first_at=_iso(self.first_at),
            last_at=_iso(self.last_at),
            registry_size_delta=self.registry_size_delta,
            unique_delta=self.unique_delta,
            tags_delta=self.tags_delta,
        )
        return data


@dataclass(frozen=True)
class Run:
    """A cleanup or garbage collection run, from its own record."""

    kind: str  # KIND_CLEANUP or KIND_GC
    run_id: str
    finished_at: datetime
    source: str  # the audit log or GC record it was read from
    started_at: datetime | None = None
    projects: tuple[str, ...] = ()  # cleanup: the project paths it deleted tags of
    tags_deleted: int | None = None  # cleanup
    ok: bool | None = None  # gc
    bytes_before: int | None = None  # gc: storage bytes measured by the run
    bytes_after: int | None = None


@dataclass(frozen=True)
class RunEffect:
    """A run beside the last snapshot before it and the first one after it."""

    run: Run
    before: Snapshot | None
    after: Snapshot | None

    def delta(self, name: str = "registry_size_bytes") -> int | None:
        """Instance total ``name`` after minus before (None without both snapshots)."""
        if self.before is None or self.after is None:
            return None
        return int(getattr(self.after, name)) - int(getattr(self.before, name))

    def project_deltas(self, name: str = "registry_size_bytes") -> dict[str, int]:
        """Per project the run touched (cleanup), ``name`` after minus before."""
        if self.before is None or self.after is None:
            return {}
        result = {}
        for path in self.run.projects:
            old, new = self.before.row(path), self.after.row(path)
            if old is not None and new is not None:
                result[path] = int(getattr(new, name)) - int(getattr(old, name))
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.run.kind,
            "run_id": self.run.run_id,
            "finished_at": _iso(self.run.finished_at),
            "source": self.run.source,
            "projects": list(self.run.projects),
            "tags_deleted": self.run.tags_deleted,
            "before": _iso(self.before.taken_at) if self.before else None,
            "after": _iso(self.after.taken_at) if self.after else None,
            "registry_size_delta": self.delta("registry_size_bytes"),
            "unique_delta": self.delta("unique_bytes"),
            "project_registry_size_deltas": self.project_deltas(),
        }


# --------------------------------------------------------------------------- the store


class HistoryStore:
    """The SQLite history file: open (creating or upgrading it), record, read.

    >>> with HistoryStore(path) as store:          # doctest: +SKIP
    ...     store.record(report)
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self.path = Path(path) if path is not None else default_history_path()
        self.create = create
        self._db: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"HistoryStore({str(self.path)!r})"

    # -- opening -------------------------------------------------------------------

    def open(self) -> HistoryStore:
        """Open the file (created 0600 when missing and ``create``), WAL, schema current."""
        if self._db is not None:
            return self
        if not self.path.exists():
            if not self.create:
                raise HistoryError(self.path, "no such file (record a usage run first)")
            self._create_file()
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise HistoryError(self.path, f"cannot open: {exc}") from None
        self._db = db
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA foreign_keys = ON")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise HistoryError(self.path, f"not a usable history database ({exc})") from None
        except BaseException:
            self.close()
            raise
        return self

    def _create_file(self) -> None:
        """An empty file, owner-only: SQLite gives its -wal and -shm files the same mode."""
        ensure_private_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise StateError("create the usage history", self.path, exc) from None
        os.close(fd)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION`, one transaction per step.

        The version is read again inside each write transaction: two processes
        opening a new file at once apply every step once.
        """
        assert self._db is not None
        for version, script in MIGRATIONS:
            current = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if current > SCHEMA_VERSION:
                raise HistoryError(
                    self.path,
                    f"schema version {current} is newer than this regops knows "
                    f"({SCHEMA_VERSION}); upgrade regops",
                )
            if current >= version:
                continue
            with self._transaction() as db:
                if int(db.execute("PRAGMA user_version").fetchone()[0]) >= version:
                    continue
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version}")
            log.info("%s: schema upgraded to version %d", self.path, version)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` (the write lock, waiting out another writer) ... COMMIT."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    def __enter__(self) -> HistoryStore:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------

    def record(
        self,
        report: Any,
        *,
        taken_at: datetime | None = None,
        gitlab_url: str | None = None,
        extended: bool | None = None,
    ) -> int:
        """Store ``report`` (a :class:`regops.ops.usage.UsageReport`) as one snapshot.

        Every scanned project gets a row. One transaction: all of it or nothing.
        ``extended``: whether unique_bytes was measured with index children
        (default: the report's own flag). Returns the snapshot's id.
        """
        if extended is None:
            extended = bool(getattr(report, "extended", False))
        when = taken_at or utc_now()
        if when.tzinfo is None:
            raise ValidationError("taken_at", f"expected a timezone-aware time, got {when!r}")
        summary = report.summary
        try:
            with self._transaction() as db:
                cursor = db.execute(
                    "INSERT INTO snapshots (taken_at, projects, repositories, tags, "
                    "registry_size_bytes, unique_bytes, incomplete_projects, gitlab_url, "
                    "extended, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        _iso(when),
                        summary.projects,
                        summary.repositories,
                        summary.tags,
                        summary.registry_size_bytes,
                        summary.unique_bytes,
                        summary.incomplete_projects,
                        gitlab_url,
                        int(extended),
                        getattr(summary, "seconds", None),
                    ),
                )
                snapshot_id = int(cursor.lastrowid or 0)
                db.executemany(
                    "INSERT INTO project_usage (snapshot_id, project_id, project_path, "
                    "registry_size_bytes, unique_bytes, repositories, tags, incomplete) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        (
                            snapshot_id,
                            p.project_id,
                            p.full_path,
                            p.registry_size_bytes,
                            p.unique_bytes,
                            p.repositories,
                            p.tags,
                            int(p.incomplete),
                        )
                        for p in report.projects
                    ),
                )
        except sqlite3.Error as exc:
            raise HistoryError(self.path, f"cannot record the snapshot: {exc}") from None
        return snapshot_id

    # -- reading -------------------------------------------------------------------

    def snapshots(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        project: int | str | None = None,
    ) -> list[Snapshot]:
        """Snapshots taken in ``[since, until]``, oldest first, with their rows
        (only ``project``'s, by id or path, when given)."""
        where, args = [], []
        if since is not None:
            where.append("taken_at >= ?")
            args.append(_iso(since))
        if until is not None:
            where.append("taken_at <= ?")
            args.append(_iso(until))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        try:
            heads = self.db.execute(
                "SELECT id, taken_at, projects, repositories, tags, registry_size_bytes, "
                "unique_bytes, incomplete_projects, gitlab_url, extended, seconds "
                f"FROM snapshots{clause} ORDER BY taken_at, id",
                args,
            ).fetchall()
            rows = self._rows([int(h[0]) for h in heads], project)
        except sqlite3.Error as exc:
            raise HistoryError(self.path, f"cannot read: {exc}") from None
        return [
            Snapshot(
                id=h[0],
                taken_at=utc_time(h[1]),
                projects=h[2],
                repositories=h[3],
                tags=h[4],
                registry_size_bytes=h[5],
                unique_bytes=h[6],
                incomplete_projects=h[7],
                gitlab_url=h[8],
                extended=bool(h[9]),
                seconds=h[10],
                rows=tuple(rows.get(h[0], ())),
            )
            for h in heads
        ]

    def _rows(self, ids: list[int], project: int | str | None) -> dict[int, list[ProjectRow]]:
        if not ids:
            return {}
        sql = (
            "SELECT snapshot_id, project_id, project_path, registry_size_bytes, unique_bytes, "
            "repositories, tags, incomplete FROM project_usage WHERE snapshot_id BETWEEN ? AND ?"
        )
        args: list[Any] = [min(ids), max(ids)]
        if isinstance(project, int):
            sql += " AND project_id = ?"
            args.append(project)
        elif project is not None:
            sql += " AND project_path = ?"
            args.append(project)
        wanted = set(ids)
        result: dict[int, list[ProjectRow]] = {}
        for r in self.db.execute(sql + " ORDER BY snapshot_id, project_id", args):
            if r[0] in wanted:
                row = ProjectRow(
                    project_id=r[1],
                    project_path=r[2],
                    registry_size_bytes=r[3],
                    unique_bytes=r[4],
                    repositories=r[5],
                    tags=r[6],
                    incomplete=bool(r[7]),
                )
                result.setdefault(r[0], []).append(row)
        return result


def _statements(script: str) -> list[str]:
    """A migration script's statements (none holds a ``;`` inside)."""
    return [s.strip() for s in script.split(";") if s.strip()]


# --------------------------------------------------------------------------- analysis


def growth(snapshots: Sequence[Snapshot]) -> list[Growth]:
    """Per project: its first and last complete row in ``snapshots`` (oldest first),
    largest ``registry_size_bytes`` growth first. Projects seen once have zero growth."""
    first: dict[int, tuple[datetime, ProjectRow]] = {}
    last: dict[int, tuple[datetime, ProjectRow]] = {}
    for snapshot in sorted(snapshots, key=lambda s: (s.taken_at, s.id)):
        for row in snapshot.rows:
            if row.incomplete:
                continue
            first.setdefault(row.project_id, (snapshot.taken_at, row))
            last[row.project_id] = (snapshot.taken_at, row)
    result = []
    for pid, (first_at, old) in first.items():
        last_at, new = last[pid]
        result.append(
            Growth(
                project_id=pid,
                project_path=new.project_path,
                first_at=first_at,
                last_at=last_at,
                first_registry_size_bytes=old.registry_size_bytes,
                last_registry_size_bytes=new.registry_size_bytes,
                first_unique_bytes=old.unique_bytes,
                last_unique_bytes=new.unique_bytes,
                first_tags=old.tags,
                last_tags=new.tags,
            )
        )
    result.sort(key=lambda g: (-g.registry_size_delta, g.project_path))
    return result


def top_growers(growths: Iterable[Growth], n: int = 10) -> list[Growth]:
    """The ``n`` projects that grew most (registry_size_bytes), growing ones only."""
    return [g for g in growths if g.registry_size_delta > 0][:n]


def after_runs(snapshots: Sequence[Snapshot], runs: Iterable[Run]) -> list[RunEffect]:
    """Each run beside the last snapshot before it started and the first one after it
    finished (None where there is none), oldest run first."""
    ordered = sorted(snapshots, key=lambda s: (s.taken_at, s.id))
    effects = []
    for run in sorted(runs, key=lambda r: r.finished_at):
        began = run.started_at or run.finished_at
        before = [s for s in ordered if s.taken_at <= began]
        after = [s for s in ordered if s.taken_at >= run.finished_at]
        effects.append(RunEffect(run, before[-1] if before else None, after[0] if after else None))
    return effects


# --------------------------------------------------------------------------- runs


def cleanup_runs(directory: Path | None = None) -> list[Run]:
    """Cleanup runs that deleted tags, from the audit logs (``<state dir>/audit``)."""
    paths = audit_files(directory or default_audit_dir())
    runs: dict[str, dict[str, Any]] = {}
    for path in paths:
        for record in read_audit_log(path):
            if not record.time:
                continue
            at = utc_time(record.time, "audit time")
            entry = runs.setdefault(
                record.run_id,
                {"start": at, "end": at, "projects": set(), "deleted": 0, "source": str(path)},
            )
            entry["start"], entry["end"] = min(entry["start"], at), max(entry["end"], at)
            if record.event == EVENT_RESULT and record.result == RESULT_DELETED:
                entry["deleted"] += 1
                if record.project_path:
                    entry["projects"].add(record.project_path)
    return [
        Run(
            kind=KIND_CLEANUP,
            run_id=run_id,
            started_at=entry["start"],
            finished_at=entry["end"],
            source=entry["source"],
            projects=tuple(sorted(entry["projects"])),
            tags_deleted=entry["deleted"],
        )
        for run_id, entry in runs.items()
        if entry["deleted"]
    ]


def gc_runs(directory: Path | None = None) -> list[Run]:
    """Garbage collection runs from their JSON records (``<state dir>/gc/gc-*.json``).

    A record that cannot be read is skipped with a warning naming the file.
    """
    folder = directory or default_gc_dir()
    if not folder.is_dir():
        return []
    runs = []
    for path in sorted(folder.glob(GC_RECORD_GLOB)):
        try:
            runs.append(_gc_run(path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            reason = exc.message if isinstance(exc, ValidationError) else type(exc).__name__
            log.warning("%s: GC record skipped (%s)", path, reason)
    return runs


def _gc_run(path: Path, data: Any) -> Run:
    if not isinstance(data, dict):
        raise ValidationError("record", "not a JSON object")
    version = data.get("format", GC_RECORD_FORMAT)
    if not isinstance(version, int) or version > GC_RECORD_FORMAT:
        raise ValidationError("format", f"GC record format {version!r} is newer than this regops")
    started = data.get("started_at")
    return Run(
        kind=KIND_GC,
        run_id=str(data["run_id"]),
        started_at=utc_time(started, "started_at") if started else None,
        finished_at=utc_time(data["finished_at"], "finished_at"),
        source=str(path),
        ok=data.get("ok"),
        bytes_before=_int_or_none(data.get("bytes_before")),
        bytes_after=_int_or_none(data.get("bytes_after")),
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- rendering

FLAT_HEADER = (
    "taken_at",
    "project_id",
    "project_path",
    "registry_size_bytes",
    "unique_bytes",
    "repositories",
    "tags",
    "incomplete",
)
TOTAL_LABEL = "(total)"


def flat_rows(snapshots: Iterable[Snapshot], totals: bool = True) -> list[tuple[Any, ...]]:
    """One row per (snapshot, project), then the snapshot's totals when ``totals``."""
    rows: list[tuple[Any, ...]] = []
    for s in snapshots:
        stamp = _iso(s.taken_at)
        for r in s.rows:
            rows.append(
                (stamp, r.project_id, r.project_path, r.registry_size_bytes, r.unique_bytes,
                 r.repositories, r.tags, "true" if r.incomplete else "false")
            )  # fmt: skip
        if totals:
            rows.append(
                (stamp, "", TOTAL_LABEL, s.registry_size_bytes, s.unique_bytes, s.repositories,
                 s.tags, "true" if s.incomplete_projects else "false")
            )  # fmt: skip
    return rows


def render(snapshots: Sequence[Snapshot], fmt: str, *, totals: bool = True) -> str:
    """``table``, ``csv`` (flat rows) or ``json`` (a list of snapshots with their rows)."""
    if fmt == "json":
        return json.dumps([s.to_dict() for s in snapshots], indent=2) + "\n"
    rows = flat_rows(snapshots, totals=totals)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(FLAT_HEADER)
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "table":
        if not rows:
            return "(no snapshots)\n"
        return tabulate(rows, FLAT_HEADER, tablefmt="simple", intfmt=",") + "\n"
    raise ValidationError("format", f"expected table, csv or json, got {fmt!r}")


GROWTH_HEADER = (
    "project_path",
    "first_at",
    "last_at",
    "registry_size_bytes",
    "registry_size_delta",
    "unique_bytes",
    "unique_delta",
    "tags_delta",
)


def growth_rows(growths: Iterable[Growth]) -> list[tuple[Any, ...]]:
    return [
        (g.project_path, _iso(g.first_at)[:19], _iso(g.last_at)[:19], g.last_registry_size_bytes,
         g.registry_size_delta, g.last_unique_bytes, g.unique_delta, g.tags_delta)
        for g in growths
    ]  # fmt: skip
