"""UsageHistory: the recorded usage snapshots in the console and notebooks.

>>> history = UsageHistory()                       # <state dir>/usage-history.sqlite3
>>> history.record_now()                           # scan every project now and store it
>>> history.growth("30d")                          # per project, first -> last this month
>>> history.top_growers(5)
>>> history.after_runs()                           # each cleanup / GC run, measured
>>> history.plot("90d")                            # growth lines (a matplotlib Figure)

The operations are :mod:`regops.ops.history` (the SQLite file, plain values);
this object picks the default locations, reads the cleanup audit logs and GC
records, and shows its answers as tables.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tabulate import tabulate

from regops.connection import Connection
from regops.models.base import resolve_connection
from regops.models.reports import usage_by_project
from regops.ops import charts
from regops.ops.history import (
    GROWTH_HEADER,
    Growth,
    HistoryStore,
    Run,
    RunEffect,
    Snapshot,
    after_runs,
    cleanup_runs,
    default_history_path,
    gc_runs,
    growth,
    growth_rows,
    parse_since,
    render,
    top_growers,
)

Since = str | datetime | timedelta | None
RUN_HEADER = (
    "kind",
    "run_id",
    "finished_at",
    "tags_deleted",
    "snapshot before",
    "first snapshot after",
    "registry_size_bytes change",
    "unique_bytes change",
    "record",
)


OVERVIEW_HEADER = (
    "taken_at",
    "projects",
    "repositories",
    "tags",
    "registry_size_bytes",
    "unique_bytes",
    "incomplete_projects",
)


def _overview_rows(snapshots: list[Snapshot]) -> list[tuple[Any, ...]]:
    return [
        (f"{s.taken_at:%Y-%m-%d %H:%M:%S}", s.projects, s.repositories, s.tags,
         s.registry_size_bytes, s.unique_bytes, s.incomplete_projects)
        for s in snapshots
    ]  # fmt: skip


class Table(list):
    """A list of values that prints as a table (text and HTML)."""

    def __init__(
        self,
        items: Iterable[Any],
        headers: Sequence[str],
        rows: Callable[[list[Any]], list[tuple[Any, ...]]],
        empty: str,
    ) -> None:
        super().__init__(items)
        self.headers = tuple(headers)
        self._rows = rows
        self._empty = empty

    def __repr__(self) -> str:
        if not self:
            return self._empty
        return tabulate(self._rows(list(self)), self.headers, tablefmt="simple", intfmt=",")

    __str__ = __repr__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("Table(...)" if cycle else repr(self))

    def _repr_html_(self) -> str:
        if not self:
            return f"<p>{html.escape(self._empty)}</p>"
        return tabulate(self._rows(list(self)), self.headers, tablefmt="html")


def _run_rows(effects: list[RunEffect]) -> list[tuple[Any, ...]]:
    def stamp(snapshot: Snapshot | None) -> str:
        return f"{snapshot.taken_at:%Y-%m-%d %H:%M:%S}" if snapshot else "none"

    return [
        (
            e.run.kind,
            e.run.run_id,
            f"{e.run.finished_at:%Y-%m-%d %H:%M:%S}",
            "" if e.run.tags_deleted is None else e.run.tags_deleted,
            stamp(e.before),
            stamp(e.after),
            e.delta("registry_size_bytes"),
            e.delta("unique_bytes"),
            Path(e.run.source).name,
        )
        for e in effects
    ]


class UsageHistory:
    """The usage history file, with the cleanup and GC runs recorded beside it."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        audit_dir: str | os.PathLike[str] | None = None,
        gc_dir: str | os.PathLike[str] | None = None,
        connection: Connection | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_history_path()
        self.audit_dir = Path(audit_dir) if audit_dir is not None else None
        self.gc_dir = Path(gc_dir) if gc_dir is not None else None
        self._connection = connection

    def __repr__(self) -> str:
        if not self.path.exists():
            return f"<UsageHistory {self.path}: no snapshots yet>"
        found = self.snapshots()
        if not found:
            return f"<UsageHistory {self.path}: no snapshots yet>"
        return (
            f"<UsageHistory {self.path}: {len(found)} snapshots, "
            f"{found[0].taken_at:%Y-%m-%d %H:%M} .. {found[-1].taken_at:%Y-%m-%d %H:%M}>"
        )

    # -- writing -------------------------------------------------------------------

    def record(
        self, report: Any, *, taken_at: datetime | None = None, gitlab_url: str | None = None
    ) -> int:
        """Store ``report`` (a UsageReport) as a snapshot; returns its id."""
        if gitlab_url is None and self._connection is not None:
            gitlab_url = self._connection.settings.gitlab_url
        with HistoryStore(self.path) as store:
            return store.record(report, taken_at=taken_at, gitlab_url=gitlab_url)

    def record_now(self, projects: Iterable[Any] | None = None, **options: Any) -> Any:
        """Scan usage now (extended: unique_bytes too) and record it; returns the report."""
        options.setdefault("extended", True)
        conn = resolve_connection(self._connection)
        report = usage_by_project(projects, connection=conn, **options)
        self.record(report, gitlab_url=conn.settings.gitlab_url)
        return report

    # -- reading -------------------------------------------------------------------

    def snapshots(self, since: Since = None, *, project: int | str | None = None) -> list[Snapshot]:
        """Snapshots taken since ``since`` (``"30d"``, an ISO date, a datetime), oldest first."""
        with HistoryStore(self.path, create=False) as store:
            return store.snapshots(since=parse_since(since), project=project)

    def overview(self, since: Since = None) -> Table:
        """One row per snapshot: when, how many projects, the instance totals."""
        return Table(self.snapshots(since), OVERVIEW_HEADER, _overview_rows, "(no snapshots)")

    def table(self, since: Since = None, *, project: int | str | None = None) -> str:
        """The snapshots as text: one row per project, then the totals."""
        return render(self.snapshots(since, project=project), "table")

    def growth(self, since: Since = None) -> Table:
        """Per project, its first and last complete row since ``since``; largest growth first."""
        return Table(growth(self.snapshots(since)), GROWTH_HEADER, growth_rows, "(no snapshots)")

    def top_growers(self, n: int = 10, since: Since = None) -> Table:
        """The ``n`` projects whose registry_size_bytes grew most since ``since``."""
        grown: list[Growth] = top_growers(growth(self.snapshots(since)), n)
        return Table(grown, GROWTH_HEADER, growth_rows, "(no project grew)")

    def runs(self) -> list[Run]:
        """Cleanup runs (audit logs) and GC runs (JSON records), oldest first."""
        found = cleanup_runs(self.audit_dir) + gc_runs(self.gc_dir)
        return sorted(found, key=lambda r: r.finished_at)

    def after_runs(self, since: Since = None) -> Table:
        """Each cleanup or GC run beside the snapshot before it and the first after it:
        what it freed, measured (instance totals, after minus before)."""
        effects = after_runs(self.snapshots(since), self._runs_since(since))
        return Table(effects, RUN_HEADER, _run_rows, "(no cleanup or GC runs recorded)")

    def _runs_since(self, since: Since) -> list[Run]:
        start = parse_since(since)
        return [r for r in self.runs() if start is None or r.finished_at >= start]

    def plot(self, since: Since = None, *, top: int = charts.DEFAULT_LINES) -> Any:
        """Instance totals and the ``top`` growing projects over time, with runs marked."""
        return charts.history_chart(self.snapshots(since), self._runs_since(since), top=top)
