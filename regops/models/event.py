"""Event: the registry notifications ``regops events serve`` stored, as console objects.

>>> Event.where(repository="apps/web", action="push", since="1d")        # doctest: +SKIP
>>> Event.where(action="delete").to_csv("deletes.csv")                   # doctest: +SKIP

Read from the events database (``<state dir>/events.sqlite3``, or ``db=``);
filters run in SQLite. No GitLab connection is needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from regops.connection import Connection
from regops.models.base import Model, Q, Query, check_filters
from regops.ops.events import COLUMNS, EventStore, default_db_path, since_value

FILTERS = ("repository", "action", "tag", "digest", "since", "until")


class Event(Model):
    """One stored registry event (push, pull, mount or delete)."""

    fields = COLUMNS
    table_columns = ("timestamp", "action", "repository", "tag", "digest", "actor")
    repr_fields = ("action", "repository", "tag", "digest")
    time_fields = ("timestamp", "received_at")

    @classmethod
    def where(cls, *, db: str | os.PathLike[str] | None = None, **filters: Any) -> EventQuery:
        """Events matching ``filters``: repository, action, tag, digest, since, until.

        ``since``/``until``: a datetime, an RFC 3339 time or a duration back from now.
        """
        return cls.all(db=db).where(**filters)

    @classmethod
    def all(cls, *, db: str | os.PathLike[str] | None = None) -> EventQuery:
        source = [Path(db)] if db is not None else None  # Query.source is an iterable
        return EventQuery(cls, source=source)

    @classmethod
    def _where(cls, query: Q, filters: Mapping[str, Any]) -> Q:
        check_filters(cls.__name__, filters, FILTERS)
        values = dict(filters)
        for key in ("since", "until"):
            if key in values:
                values[key] = since_value(values[key])
        return query.with_filters(values)

    @classmethod
    def _query_items(
        cls, conn: Connection | None, query: Query, batch_size: int | None = None
    ) -> Iterator[Event]:
        path = next(iter(query.source), None) if query.source is not None else None
        path = path if isinstance(path, Path) else default_db_path()
        with EventStore(path) as store:
            rows = store.query(**query.filters)
        for row in rows:
            yield cls(row)

    def _key(self) -> Any:
        return self._data.get("id")

    def _fetch(self) -> Mapping[str, Any]:
        return self._data


class EventQuery(Query):
    """A Query over the events database: needs no GitLab connection."""

    def find_each(self, batch_size: int | None = None) -> Iterator[Any]:
        for item in Event._query_items(None, self, batch_size):
            if all(test(item) for _, test in self.predicates):
                yield item


Event.query_class = EventQuery
