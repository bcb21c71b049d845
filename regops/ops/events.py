"""Registry notifications: each event stored once, in SQLite, before the registry hears 200.

The registry POSTs ``{"events": [...]}`` envelopes (media type
``application/vnd.docker.distribution.events.v1+json``) and retries an
envelope until an answer is 2xx/3xx (Distribution's notifications docs:
"an http request is made to the endpoint until the request succeeds").
:func:`receive` is what a listener does with one request:

1. ``Authorization`` equal to the shared secret, compared in constant time
   (GitLab's ``API::ContainerRegistryEvent`` compares the whole header with
   ``registry.notification_secret``): else 401, nothing read.
2. The body is an events envelope (a JSON object with an ``events`` list of
   objects, each with a string ``id`` and ``action``): else 400.
3. Every event of the envelope is inserted in one transaction, ignoring ids
   already stored (the registry redelivers the same ids), and committed
   (WAL, ``synchronous=FULL``) before the answer: a crash before the commit
   means no 200, so the registry sends the envelope again; a crash after it
   means a duplicate delivery, which the id makes harmless.

:class:`EventStore` is the database: schema versioned with ``PRAGMA
user_version``, WAL, a busy timeout, one writer at a time.

>>> store = EventStore(state_dir() / "events.sqlite3")          # doctest: +SKIP
>>> store.query(repository="group/app", action="push", since=...)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regops.durations import parse_duration
from regops.errors import StateError, ValidationError
from regops.locks import ensure_private_dir, state_dir
from regops.registry.manifest import parse_rfc3339
from regops.secrets import Secret

SCHEMA_VERSION = 1  # PRAGMA user_version of the database this code writes
DB_NAME = "events.sqlite3"
BUSY_TIMEOUT_MS = 5_000  # a reader (regops events list) never blocks a write longer than this
MAX_BODY_BYTES = 10 * 1024 * 1024  # an envelope is a few KB; refuse anything absurd (413)
MAX_ID_LENGTH = 200  # Distribution's ids are UUIDs (36); anything long is not an event id
EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
ACTIONS = ("push", "pull", "mount", "delete")  # what Distribution sends; others are stored too
COLUMNS = (
    "id",
    "timestamp",
    "action",
    "repository",
    "tag",
    "digest",
    "media_type",
    "size",
    "url",
    "actor",
    "request_id",
    "request_addr",
    "request_host",
    "request_method",
    "request_useragent",
    "source_addr",
    "source_instance",
    "received_at",
)
_SCHEMA = """
CREATE TABLE events (
    id TEXT PRIMARY KEY,          -- the registry's event id: a redelivery inserts nothing
    timestamp TEXT NOT NULL,      -- the event's time as the registry sent it
    epoch REAL,                   -- the same, in seconds, for since/until
    action TEXT NOT NULL,
    repository TEXT,
    tag TEXT,
    digest TEXT,
    media_type TEXT,
    size INTEGER,
    url TEXT,
    actor TEXT,
    request_id TEXT,
    request_addr TEXT,
    request_host TEXT,
    request_method TEXT,
    request_useragent TEXT,
    source_addr TEXT,
    source_instance TEXT,
    received_at TEXT NOT NULL,
    raw TEXT NOT NULL             -- the event's JSON, whole
);
CREATE INDEX events_repository ON events (repository, epoch);
CREATE INDEX events_action ON events (action, epoch);
CREATE INDEX events_epoch ON events (epoch);
"""
# user_version -> statements that bring a database from that version to the next.
MIGRATIONS: dict[int, str] = {0: _SCHEMA}


class EnvelopeError(ValidationError):
    """A request body that is not an events envelope (400)."""


@dataclass(frozen=True)
class Answer:
    """What a listener answers: status and JSON body."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class StoreResult:
    stored: int
    duplicates: int


def default_db_path() -> Path:
    """``<state dir>/events.sqlite3``."""
    return state_dir() / DB_NAME


class EventStore:
    """The events database (thread-safe: one connection, writes serialized)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self._lock = threading.Lock()
        try:
            ensure_private_dir(self.path.parent)
            self._db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
                isolation_level=None,
            )
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")  # the commit is on disk before 200
            self._migrate()
        except sqlite3.Error as exc:
            raise StateError("open the events database", self.path, OSError(0, str(exc))) from None
        os.chmod(self.path, 0o600)

    def __repr__(self) -> str:
        return f"<EventStore {self.path}>"

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    "use the events database",
                    self.path,
                    OSError(0, f"schema version {version} is newer than regops' {SCHEMA_VERSION}"),
                )
            while version < SCHEMA_VERSION:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in MIGRATIONS[version].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    version += 1
                    self._db.execute(f"PRAGMA user_version = {version}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------
    def add(self, events: Sequence[Mapping[str, Any]]) -> StoreResult:
        """Insert ``events`` in one transaction, skipping ids already stored; committed."""
        received = _utc_text(datetime.datetime.now(datetime.timezone.utc))
        rows = [_row(event, received) for event in events]
        placeholders = ", ".join("?" for _ in range(len(COLUMNS) + 2))
        names = ", ".join((*COLUMNS, "epoch", "raw"))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                stored = 0
                for row in rows:
                    cursor = self._db.execute(
                        f"INSERT OR IGNORE INTO events ({names}) VALUES ({placeholders})", row
                    )
                    stored += cursor.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return StoreResult(stored, len(rows) - stored)

    # -- reading -------------------------------------------------------------------------
    def query(
        self,
        *,
        repository: str | None = None,
        action: str | None = None,
        tag: str | None = None,
        digest: str | None = None,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events matching every given filter, oldest first (by the event's time)."""
        clauses: list[str] = []
        params: list[Any] = []
        for name, value in (
            ("repository", repository),
            ("action", action),
            ("tag", tag),
            ("digest", digest),
        ):
            if value is not None:
                clauses.append(f"{name} = ?")
                params.append(value)
        if since is not None:
            clauses.append("epoch >= ?")
            params.append(since.timestamp())
        if until is not None:
            clauses.append("epoch < ?")
            params.append(until.timestamp())
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        sql = f"SELECT {', '.join(COLUMNS)} FROM events{where} ORDER BY epoch, rowid{tail}"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])


def _utc_text(value: datetime.datetime) -> str:
    return (
        value.astimezone(datetime.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _mapping(event: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = event.get(key)
    return value if isinstance(value, dict) else {}


def _row(event: Mapping[str, Any], received: str) -> tuple[Any, ...]:
    target, request, actor, source = (
        _mapping(event, key) for key in ("target", "request", "actor", "source")
    )
    when = parse_rfc3339(event.get("timestamp"))
    size = target.get("size", target.get("length"))
    return (
        str(event["id"]),
        str(event.get("timestamp") or ""),
        str(event["action"]),
        _text(target.get("repository")),
        _text(target.get("tag")),
        _text(target.get("digest")),
        _text(target.get("mediaType")),
        int(size) if isinstance(size, int) and not isinstance(size, bool) else None,
        _text(target.get("url")),
        _text(actor.get("name")),
        _text(request.get("id")),
        _text(request.get("addr")),
        _text(request.get("host")),
        _text(request.get("method")),
        _text(request.get("useragent")),
        _text(source.get("addr")),
        _text(source.get("instanceID")),
        received,
        when.timestamp() if when is not None else None,
        json.dumps(event, sort_keys=True, separators=(",", ":")),
    )


# -- one request -------------------------------------------------------------------------------


def parse_envelope(body: bytes) -> list[dict[str, Any]]:
    """The events of an envelope; EnvelopeError saying what is wrong (never echoing the body)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise EnvelopeError("body", "not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise EnvelopeError("body", 'not an events envelope: expected {"events": [...]}')
    events = data["events"]
    for number, event in enumerate(events, start=1):
        if not isinstance(event, dict):
            raise EnvelopeError(f"events[{number}]", "not an object")
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_LENGTH:
            raise EnvelopeError(f"events[{number}].id", "missing or not an event id")
        if not isinstance(event.get("action"), str) or not event["action"]:
            raise EnvelopeError(f"events[{number}].action", "missing")
    return events


def authorized(header: str | None, secret: Secret) -> bool:
    """True when ``header`` is the secret; constant time (both sides hashed first, so
    neither content nor length leaks through timing)."""
    if header is None:
        return False
    given = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
    wanted = hashlib.sha256(secret.reveal().encode()).digest()
    return hmac.compare_digest(given, wanted)


def receive(store: EventStore, secret: Secret, authorization: str | None, body: bytes) -> Answer:
    """Handle one POST: 401 bad secret, 400 bad body, else store (committed) and 200."""
    if not authorized(authorization, secret):
        return Answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad Authorization"}]})
    if len(body) > MAX_BODY_BYTES:
        return Answer(413, {"errors": [{"code": "TOO_LARGE", "message": "body too large"}]})
    try:
        events = parse_envelope(body)
    except EnvelopeError as exc:
        return Answer(400, {"errors": [{"code": "BAD_ENVELOPE", "message": str(exc)}]})
    result = store.add(events)
    return Answer(200, {"stored": result.stored, "duplicates": result.duplicates})


def since_value(
    text: str | datetime.datetime | None, now: datetime.datetime | None = None
) -> datetime.datetime | None:
    """``since=``: a datetime, an RFC 3339 time, or a duration back from now (``1h``, ``7d``)."""
    if text is None or isinstance(text, datetime.datetime):
        if isinstance(text, datetime.datetime) and text.tzinfo is None:
            return text.replace(tzinfo=datetime.timezone.utc)
        return text
    moment = parse_rfc3339(text)
    if moment is not None:
        return moment
    back = parse_duration(text, field="since")
    return (now or datetime.datetime.now(datetime.timezone.utc)) - back


def to_csv_rows(events: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows for CSV: the header, then one row per event (COLUMNS order)."""
    return [list(COLUMNS), *([event.get(c) for c in COLUMNS] for event in events)]
