"""Registry usage by project: the admin guide's Rails recipe, done right and fast.

The Rails recipe ("Registry Disk Space Usage by Project") sums GitLab's
``Tag#total_size`` over every tag of every repository of each project, one
registry round trip per tag, sequentially. :func:`by_project` computes the same
``registry_size_bytes``, with GitLab's meaning on every kind of image (the
layers of the image GitLab's Accept gets: a Docker manifest list counts its
linux/amd64 child, an OCI index nothing; with the registry's GitLab API, the
tags list's ``size_bytes``, one request per 1000 tags), and, optionally, what
the project really pins on disk (``unique_bytes``: every distinct blob counted
once), what GitLab's count misses (``all_platforms_bytes``: every platform of a
list or index counted) and, with the GitLab API, what GitLab's project
statistics show (``gitlab_registry_size``: the deduplicated size of the
project's repositories, one request per project).

>>> report = by_project(Project.last(100))        # doctest: +SKIP
>>> report                                        # a table
>>> report.write("usage.csv")                     # the recipe's CSV, written atomically

Cost, per run: GitLab: the project list + one ``registry/repositories`` call
per project. Registry (HTTP mode): one tag list per repository + one
``GET manifest`` by tag per tag (the only way over HTTP to learn what a tag
points at; the body comes with it, so a distinct manifest costs nothing more;
configs are never fetched: sizes come from the manifest's descriptors) + one
``GET manifest`` per distinct Docker list's amd64 child (GitLab's size) and,
extended only, per distinct index child (cached on disk by digest). With the
registry's GitLab API: one tags-list request per 1000 tags of a repository
instead (plus the per-tag reads above when extended, for ``unique_bytes``).
Storage mode (``storage=RegistryStorage(root)``, for an admin on the
registry host): the tag list still comes from the registry, but what each tag
points at is read from ``_manifests/tags/<tag>/current/link`` on disk, so the
registry is asked only for manifests the on-disk cache does not hold: a
nightly run reads only what is new.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, TypedDict, overload

from regops.errors import (
    ConfigError,
    GitLabNotFound,
    GitLabUnauthorized,
    HostUnreachable,
    RegistryNotFound,
    RegistryUnauthorized,
    RegopsError,
    ValidationError,
)
from regops.fsutil import atomic_write
from regops.gitlab.client import GitLabClient
from regops.http import AdaptiveLimit
from regops.ops import charts
from regops.ops.defaults import USAGE_FORMATS, USAGE_MAX_WORKERS, USAGE_WORKERS
from regops.registry.gitlab_api import SIZE_SELF_WITH_DESCENDANTS
from regops.registry.manifest import Manifest
from regops.registry.reference import Digest
from regops.registry.resolver import TagResolver
from regops.registry.storage import RegistryStorage

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs is Python 3.13+; annotations only

log = logging.getLogger("regops.usage")

# Faults that are not about one project: every further request would fail the same way.
SYSTEMIC_FAULTS = (HostUnreachable, RegistryUnauthorized, GitLabUnauthorized)
DEFAULT_WORKERS = USAGE_WORKERS  # the cap on concurrent registry requests (--workers)
MAX_WORKERS = USAGE_MAX_WORKERS
WAIT_SLICE = 0.2  # seconds the main thread sleeps between checks, so Ctrl-C is seen promptly
# Threads beyond the current limit: tasks that are between requests (GitLab, disk,
# bookkeeping) should not leave a registry slot unused.
SPARE_THREADS = 2
# HEAD by tag (warm cache): judged after this many HEADs; when more than this share
# of them found an unknown digest (each then costs a GET too), the scan GETs instead.
HEAD_PROBE = 32
HEAD_MISS_LIMIT = 0.2
# Threads reading local files (link files, cache entries) at once. Each small read
# releases the GIL around its system calls; 16 threads doing that together spend
# more CPU handing the GIL over than reading (measured: 235 us per link file vs 30).
DISK_READERS = 1
FORMATS = USAGE_FORMATS
# The Rails recipe's header, byte for byte (note the space in "project path").
CSV_HEADER = ("project_id", "creator_id", "registry_size_bytes", "project path")
EXTENDED_HEADER = (
    *CSV_HEADER,
    "repositories",
    "tags",
    "unique_bytes",
    "all_platforms_bytes",
    "gitlab_registry_size",
    "incomplete",
)
TOTAL_LABEL = "(all scanned projects)"  # unique_bytes here counts a shared blob once

Cell = int | str | None  # one value of a CSV or table row


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ProjectRef:
    """What the report needs of a project: id, creator id, full path."""

    id: int
    creator_id: int | None
    full_path: str

    @classmethod
    def of(cls, project: object) -> ProjectRef:
        """From a GitLab API dict, a :class:`regops.models.Project` or a ProjectRef.

        Any value is accepted and checked here: ``id`` must be an integer, ``creator_id``
        an integer or missing, and a path must be there.
        """
        if isinstance(project, ProjectRef):
            return project
        get = project.get if isinstance(project, Mapping) else _attribute_getter(project)
        pid = get("id")
        if not _is_int(pid):
            raise ValidationError("project", f"expected a project with an integer id, got {pid!r}")
        creator_id = get("creator_id")
        if creator_id is not None and not _is_int(creator_id):
            raise ValidationError(
                "project", f"project {pid}: expected an integer creator_id, got {creator_id!r}"
            )
        path = get("path_with_namespace") or get("full_path")
        if not path:
            raise ValidationError("project", f"project {pid} has no path_with_namespace")
        return cls(pid, creator_id, str(path))


def _is_int(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _attribute_getter(obj: object) -> Callable[[str], object]:
    def get(name: str) -> object:
        try:
            return getattr(obj, name)
        except AttributeError:
            return None

    return get


@dataclass
class ProjectUsage:
    """One project's registry usage; ``incomplete`` when any part of it could not be read."""

    project_id: int
    creator_id: int | None
    full_path: str
    registry_size_bytes: int = 0
    repositories: int = 0
    tags: int = 0
    unique_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    # Every platform of a list or index counted (extended): what GitLab's sum misses.
    all_platforms_bytes: int = 0
    # GitLab's project statistic (the GitLab API's self_with_descendants size), when known.
    gitlab_registry_size: int | None = None
    # digest -> size of every blob the project's tags reference (manifests included).
    blobs: dict[Digest, int] = field(default_factory=dict, repr=False)
    # "repository path:tag" -> GitLab's total_size (None for an index or schema 1).
    tag_sizes: dict[str, int | None] = field(default_factory=dict, repr=False)

    @property
    def incomplete(self) -> bool:
        return bool(self.errors)

    def csv_row(self, extended: bool = False) -> tuple[Cell, ...]:
        row: tuple[Cell, ...] = (
            self.project_id,
            self.creator_id,
            self.registry_size_bytes,
            self.full_path,
        )
        if extended:
            row += (
                self.repositories,
                self.tags,
                self.unique_bytes,
                self.all_platforms_bytes,
                "" if self.gitlab_registry_size is None else self.gitlab_registry_size,
                _flag(self.incomplete),
            )
        return row

    def to_dict(self, extended: bool = True) -> dict[str, object]:
        data: dict[str, object] = {
            "project_id": self.project_id,
            "creator_id": self.creator_id,
            "registry_size_bytes": self.registry_size_bytes,
            "project_path": self.full_path,
        }
        if extended:
            data.update(
                repositories=self.repositories,
                tags=self.tags,
                unique_bytes=self.unique_bytes,
                all_platforms_bytes=self.all_platforms_bytes,
                gitlab_registry_size=self.gitlab_registry_size,
            )
        data.update(incomplete=self.incomplete, errors=list(self.errors))
        return data


def _flag(value: bool) -> str:
    return "true" if value else "false"


@dataclass
class UsageSummary:
    """Totals over every scanned project, and what the scan cost."""

    projects: int = 0
    repositories: int = 0
    tags: int = 0
    registry_size_bytes: int = 0
    unique_bytes: int = 0  # instance-wide: a blob shared by projects counted once
    all_platforms_bytes: int = 0
    incomplete_projects: int = 0
    gitlab_requests: int = 0
    registry_requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0
    mode: str = "http"
    # The most registry requests in flight at once (the adaptive limit's peak, at most
    # --workers), and the HEADs that spared a manifest body (warm cache, HTTP mode).
    concurrency: int = 0
    head_hits: int = 0

    def line(self) -> str:
        """The one-line summary printed on stderr at the end of a run."""
        text = (
            f"{self.projects} projects, {self.repositories} repositories, {self.tags} tags; "
            f"{self.gitlab_requests} GitLab + {self.registry_requests} registry requests, "
            f"{self.cache_hits} cache hits; {self.seconds:.2f} s"
        )
        if self.incomplete_projects:
            text += f"; {self.incomplete_projects} projects INCOMPLETE"
        return text

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class UsageReport(Sequence[ProjectUsage]):
    """The rows worth reporting (size above 0, or incomplete), plus every scanned project.

    Prints as a table; ``to_csv`` gives the Rails recipe's CSV; ``write`` saves
    any format atomically.
    """

    def __init__(
        self,
        projects: list[ProjectUsage],
        summary: UsageSummary,
        *,
        extended: bool = False,
        stopped_by: str | None = None,
    ) -> None:
        self.projects = projects
        self.summary = summary
        self.extended = extended
        self.stopped_by = stopped_by  # the systemic fault that stopped the scan, if one did
        # Set when the scan saw only part of the instance (a non-admin token): every
        # format states it (a "# ..." line heads the CSV, a JSON field, the table's footer).
        self.coverage: str | None = None
        self.rows = [p for p in projects if _reported(p)]

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> ProjectUsage: ...

    @overload
    def __getitem__(self, index: slice) -> list[ProjectUsage]: ...

    def __getitem__(self, index: int | slice) -> ProjectUsage | list[ProjectUsage]:
        return self.rows[index]

    def __repr__(self) -> str:
        return self.to_table()

    def _repr_html_(self) -> str:
        from tabulate import tabulate

        headers, rows = self._table_data()
        table = tabulate(rows, headers, tablefmt="html")
        lines = (self._total_line(), self.summary.line())
        return table + "".join(f"<p>{html.escape(line)}</p>" for line in lines)

    def plot(self, top: int | None = charts.DEFAULT_TOP) -> Any:  # Any: a matplotlib Figure
        """Top projects by registry_size_bytes beside unique_bytes: a matplotlib Figure
        (:func:`regops.ops.charts.usage_chart`); ``.save("usage.png")`` writes it."""
        return charts.usage_chart(self, top=top)

    @property
    def ok(self) -> bool:
        """True when every project was read completely."""
        return not any(p.incomplete for p in self.projects)

    @property
    def incomplete(self) -> list[ProjectUsage]:
        return [p for p in self.projects if p.incomplete]

    def to_dicts(self) -> list[dict[str, object]]:
        return [row.to_dict(self.extended) for row in self.rows]

    def to_csv(self, path_or_file: str | os.PathLike[str] | IO[str] | None = None) -> str:
        """The CSV text (written to ``path_or_file`` when given, atomically for a path).

        Default: the Rails recipe's bytes (header, then one row per project
        whose registry_size_bytes is above 0, in scan order; ``\\n`` line ends;
        a missing creator is empty). Extended: four more columns, incomplete
        projects too, and a last row with the instance-wide deduplicated total.
        """
        text = self.render("csv")
        _emit(text, path_or_file)
        return text

    def to_json(self) -> str:
        return self.render("json")

    def to_table(self) -> str:
        return self.render("table")

    def render(self, fmt: str = "csv") -> str:
        """The report as text: ``csv``, ``json`` or ``table``."""
        if fmt == "csv":
            return self._csv()
        if fmt == "json":
            return self._json()
        if fmt == "table":
            return self._table()
        raise ValidationError("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")

    def write(self, path: str | os.PathLike[str] | None, fmt: str = "csv") -> None:
        """Write to ``path`` atomically (never half a file); None or ``-``: stdout."""
        _emit(self.render(fmt), None if path in (None, "-") else path, stdout=True)

    # -- formats -------------------------------------------------------------------

    def _csv(self) -> str:
        buffer = io.StringIO()
        if self.coverage:
            buffer.write(f"# {self.coverage}\n")
        # QUOTE_MINIMAL writes GitLab paths and integers exactly as Ruby's "%s,%s,%s,%s"
        # does (a GitLab path never holds a comma or a quote), and stays valid CSV if one did.
        writer = csv.writer(buffer, lineterminator="\n")
        if not self.extended:
            writer.writerow(CSV_HEADER)
            writer.writerows(p.csv_row() for p in self.projects if p.registry_size_bytes > 0)
            return buffer.getvalue()
        writer.writerow(EXTENDED_HEADER)
        writer.writerows(p.csv_row(extended=True) for p in self.rows)
        s = self.summary
        writer.writerow(
            ("", "", s.registry_size_bytes, TOTAL_LABEL, s.repositories, s.tags, s.unique_bytes,
             s.all_platforms_bytes, "", _flag(s.incomplete_projects > 0))
        )  # fmt: skip
        return buffer.getvalue()

    def _json(self) -> str:
        document = {
            "projects": [p.to_dict(self.extended) for p in self.rows],
            "summary": self.summary.to_dict(),
            "coverage": self.coverage or "the whole instance",
        }
        return json.dumps(document, indent=2) + "\n"

    def _table_data(self) -> tuple[list[str], list[tuple[Cell, ...]]]:
        headers = list(EXTENDED_HEADER if self.extended else CSV_HEADER)
        rows = [p.csv_row(self.extended) for p in self.rows]
        if not self.extended and any(p.incomplete for p in self.rows):
            headers.append("incomplete")
            rows = [(*row, _flag(p.incomplete)) for row, p in zip(rows, self.rows, strict=True)]
        return headers, rows

    def _table(self) -> str:
        from tabulate import tabulate

        headers, rows = self._table_data()
        body = tabulate(rows, headers, tablefmt="simple", intfmt=",") if rows else "(no usage)"
        footer = f"{self._total_line()}\n{self.summary.line()}\n"
        if self.coverage:
            footer += f"{self.coverage}\n"
        return f"{body}\n{footer}"

    def _total_line(self) -> str:
        """``total: N registry_size_bytes[, M unique bytes]`` (M counts a shared blob once)."""
        return f"total: {self.summary.registry_size_bytes:,} registry_size_bytes" + (
            f", {self.summary.unique_bytes:,} unique bytes" if self.extended else ""
        )


def _reported(project: ProjectUsage) -> bool:
    return project.registry_size_bytes > 0 or project.unique_bytes > 0 or project.incomplete


def _emit(text: str, target: str | os.PathLike[str] | IO[str] | None, stdout: bool = False) -> None:
    if target is None:
        if stdout:
            import sys

            sys.stdout.write(text)
            sys.stdout.flush()
        return
    if hasattr(target, "write"):
        target.write(text)
        return
    atomic_write(target, text)


# --------------------------------------------------------------------------- selection


def select_projects(
    gitlab: GitLabClient,
    *,
    last: int | None = None,
    projects: Sequence[int | str] = (),
    group: str | None = None,
) -> list[ProjectRef]:
    """Which projects to scan: all (default), the ``last`` N by id, given ones, or a group's.

    Order: by id ascending (as ``Project.last(n)`` returns them), or as given.
    """
    chosen = [name for name, value in (("last", last), ("project", projects), ("group", group))
              if value]  # fmt: skip
    if len(chosen) > 1:
        raise ValidationError(chosen[1], f"cannot be combined with --{chosen[0]}")
    if last is not None:
        if last <= 0:
            raise ValidationError("last", f"expected a positive number, got {last}")
        found = list(gitlab.projects_desc(last))
        return [ProjectRef.of(p) for p in sorted(found, key=lambda p: p["id"])]
    if projects:
        return _unique([ProjectRef.of(gitlab.project(p)) for p in projects])
    if group:
        return sorted((ProjectRef.of(p) for p in gitlab.group_projects(group)), key=_ref_id)
    return [ProjectRef.of(p) for p in gitlab.projects()]


def _ref_id(ref: ProjectRef) -> int:
    return ref.id


def _unique(refs: list[ProjectRef]) -> list[ProjectRef]:
    seen: dict[int, ProjectRef] = {}
    for ref in refs:
        seen.setdefault(ref.id, ref)
    return list(seen.values())


# --------------------------------------------------------------------------- the scan


class ScanOptions(TypedDict, total=False):
    """:func:`by_project`'s optional keyword arguments that callers pass on."""

    extended: bool
    workers: int
    storage: RegistryStorage | None
    progress: bool


def by_project(
    projects: Iterable[object],  # each checked by ProjectRef.of
    *,
    gitlab: GitLabClient,
    resolver: TagResolver,
    extended: bool = False,
    workers: int = DEFAULT_WORKERS,
    storage: RegistryStorage | None = None,
    progress: bool = False,
) -> UsageReport:
    """Registry usage of ``projects`` (API dicts, :class:`ProjectRef`, or objects with
    ``id``, ``path_with_namespace`` and ``creator_id``, such as the models).

    Tags are read through ``resolver`` (its cache decides what is fetched).
    ``extended`` also reads the children of multi-arch indexes (by digest) so
    that ``unique_bytes`` includes their layers. ``storage`` is a
    :class:`regops.registry.storage.RegistryStorage`: tag digests are read
    from its link files instead of one GET per tag. Failures never stop the
    scan: the project is marked incomplete with the reason.
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ValidationError("workers", f"expected 1..{MAX_WORKERS}, got {workers}")
    refs = [ProjectRef.of(p) for p in projects]
    scan = _Scan(gitlab, resolver, refs, extended, workers, storage, progress)
    return scan.run()


Task = tuple[Callable[..., None], tuple[Any, ...]]  # a function and its arguments


class _Scan:
    """One concurrent scan: projects -> repositories -> tags, on a bounded set of threads.

    Work is a stack of sources (iterators of tasks): a project's task pushes its
    repositories, a repository's its tags, and threads take from the newest
    source first, so the tags of a listed repository are read before more
    repositories are listed: what is in flight, and in memory, is bounded by
    the threads, not by the number of tags. The registry's requests hold a slot
    of an :class:`~regops.http.AdaptiveLimit` (at most ``workers``); threads
    follow the limit. A task's failure marks its project incomplete; an
    unexpected exception (a bug) is re-raised once the threads stop.
    """

    def __init__(
        self,
        gitlab: GitLabClient,
        resolver: TagResolver,
        refs: list[ProjectRef],
        extended: bool,
        workers: int,
        storage: RegistryStorage | None,
        progress: bool,
    ) -> None:
        self.gitlab = gitlab
        self.resolver = resolver
        self.registry = resolver.client
        self.refs = refs
        self.extended = extended
        self.workers = workers
        self.storage = storage
        self.api = resolver.gitlab_api  # the registry's GitLab API: GitLab's sizes come from it
        self.rows = [ProjectUsage(r.id, r.creator_id, r.full_path) for r in refs]
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)  # new work, or the scan is over
        self.sources: list[Iterator[Task]] = []
        self.running = 0  # tasks being run
        self.threads = 0  # threads alive
        self.idle = 0  # threads waiting for work
        self.done = threading.Event()
        self.stopping = False
        self.crash: BaseException | None = None
        self.stopped_by: RegopsError | None = None  # a systemic fault: the scan stops
        self.finished: set[int] = set()  # projects whose every repository was read
        self.bar = _progress_bar(len(refs)) if progress else None
        self.repos_left: dict[tuple[int, str], int] = {}
        self.shared_hits = 0  # tags answered by another tag's manifest (same digest)
        self.disk_slots = threading.BoundedSemaphore(DISK_READERS)
        self.limit = AdaptiveLimit(workers)
        # HEAD by tag when the cache holds manifests already (a warm run), until too
        # many HEADs find a digest it does not hold.
        self.head = storage is None and resolver.cache.holds_any()
        self.heads_before = (resolver.head_hits, resolver.head_misses)

    # -- scheduling ----------------------------------------------------------------

    def run(self) -> UsageReport:
        started = time.monotonic()
        counts = self._counters()
        self._push(iter([(self._project, (index,)) for index in range(len(self.refs))]))
        try:
            with self.registry.limited(self.limit):
                self._start_thread()
                while not self.done.wait(WAIT_SLICE):
                    pass
        except BaseException:
            self._stop()
            raise
        finally:
            if self.bar is not None:
                self.bar.close()
        if self.crash is not None:
            raise self.crash
        if self.stopped_by is not None:
            for index, row in enumerate(self.rows):
                if index not in self.finished and not row.errors:
                    row.errors.append(f"not read: the scan stopped ({self.stopped_by})")
        return UsageReport(
            self.rows,
            self._summary(counts, started),
            extended=self.extended,
            stopped_by=str(self.stopped_by) if self.stopped_by is not None else None,
        )

    def _push(self, tasks: Iterator[Task]) -> None:
        """More work, taken before older sources; wakes a waiting thread."""
        with self.lock:
            if self.stopping:
                return
            self.sources.append(tasks)
            if self.idle:
                self.work.notify()

    def _start_thread(self) -> None:
        """One more worker thread (the caller checked the count under the lock, or it is
        the first)."""
        with self.lock:
            self.threads += 1
        threading.Thread(target=self._worker, name="regops-usage", daemon=True).start()

    def _next(self) -> Task | None:
        """The next task of the newest source (the caller holds the lock)."""
        sources = self.sources
        while sources:
            task = next(sources[-1], None)
            if task is not None:
                return task
            sources.pop()
        return None

    def _worker(self) -> None:
        """Run tasks until there are none left and none running (or the scan stops)."""
        lock = self.lock
        while True:
            with lock:
                task = None if self.stopping else self._next()
                while task is None:
                    if self.stopping or not self.running:
                        self.threads -= 1
                        if not self.threads:
                            self.done.set()
                        self.work.notify_all()  # the others see the end too
                        return
                    self.idle += 1
                    self.work.wait()
                    self.idle -= 1
                    task = None if self.stopping else self._next()
                self.running += 1
                more = bool(self.sources)
                wanted = min(self.workers, self.limit.limit + SPARE_THREADS)
                grow = more and not self.idle and self.threads < wanted
                if more and self.idle:
                    self.work.notify()  # work left: pass the baton to a waiting thread
            if grow:
                self._start_thread()
            self._run(task)
            with lock:
                self.running -= 1
                if not self.running and not self.sources:
                    self.work.notify_all()  # nothing left and nothing to come: all stop

    def _run(self, task: Task) -> None:
        fn, args = task
        try:
            fn(*args)
        except BaseException as exc:  # a bug, not a registry answer: stop and re-raise
            with self.lock:
                self.crash = self.crash or exc
            self._stop()

    def _stop(self) -> None:
        """No new task starts; running ones finish (their requests are bounded by timeouts)."""
        with self.lock:
            self.stopping = True
            self.sources.clear()
            self.work.notify_all()

    def _fail(self, index: int, where: str, exc: Exception) -> None:
        """Mark the project incomplete; a systemic fault stops the whole scan, said once."""
        message = f"{where}: {exc}"
        systemic = isinstance(exc, SYSTEMIC_FAULTS)
        with self.lock:
            self.rows[index].errors.append(message)
            first = systemic and self.stopped_by is None
            if first:
                assert isinstance(exc, RegopsError)
                self.stopped_by = exc
                self.stopping = True
                self.sources.clear()
                self.work.notify_all()
        if first:
            log.info("stopping the scan: %s", exc)  # the caller reports the cause, once
        elif not systemic and not self.stopping:
            log.warning("%s: %s", self.refs[index].full_path, message)

    # -- tasks ---------------------------------------------------------------------

    def _project(self, index: int) -> None:
        ref = self.refs[index]
        try:
            repositories = list(self.gitlab.project_repositories(ref.id))
        except RegopsError as exc:
            self._fail(index, "repositories", exc)
            self._tick_project(index)
            return
        if self.extended and self.api is not None:
            self._gitlab_statistic(index, ref.full_path)
        with self.lock:
            self.rows[index].repositories = len(repositories)
            self.repos_left[(index, "")] = len(repositories)
        if self.bar is not None:
            self.bar.add_repositories(len(repositories))
        if not repositories:
            self._tick_project(index)
        self._push((self._repository, (index, str(r["path"]))) for r in repositories)

    def _repository(self, index: int, path: str) -> None:
        sized = False  # True once GitLab's sizes came from its API (no per-tag reads for them)
        try:
            if self.api is not None:
                tags = self._api_sizes(index, path)
                sized = True
            else:
                tags = self.registry.tags(path)
        except (RegopsError, OSError) as exc:
            self._fail(index, f"{path}: tag list", exc)
            self._tick_repository(index, path)
            return
        with self.lock:
            self.rows[index].tags += len(tags)
        if sized and not self.extended:
            self._tick_repository(index, path)
            return
        if self.storage is not None:
            self._storage_tags(index, path, tags, self.storage, sized)
            return
        with self.lock:
            self.repos_left[(index, path)] = len(tags)
        if not tags:
            self._tick_repository(index, path)
        self._push((self._tag, (index, path, tag, sized)) for tag in tags)

    def _api_sizes(self, index: int, path: str) -> list[str]:
        """GitLab-API mode: every tag and its ``size_bytes`` from the tags list (what
        GitLab's ``repository.tags`` reads there), one request per 1000 tags."""
        found = self.resolver.api_tags(path)
        for details in found:
            self._record(index, path, [details.name], details.total_size, {})
        return [details.name for details in found]

    def _gitlab_statistic(self, index: int, project_path: str) -> None:
        """GitLab's project statistic: the API's deduplicated self_with_descendants size."""
        assert self.api is not None
        try:
            size = self.api.repository(project_path.lower(), size=SIZE_SELF_WITH_DESCENDANTS)
        except RegistryNotFound:
            return  # GitLab's deduplicated_size is nil there too: no repository at all
        except (RegopsError, OSError) as exc:
            self._fail(index, "GitLab API repository size", exc)
            return
        with self.lock:
            self.rows[index].gitlab_registry_size = size.size_bytes

    def _tag(self, index: int, path: str, tag: str, sized: bool = False) -> None:
        """HTTP mode: one GET by tag (the only way over HTTP to learn what it points at).

        GitLab's size is the layers of the image its Accept gets (a list's
        amd64 child, fetched by digest once); ``sized``: already recorded.
        """
        try:
            details = self.resolver.tag(
                path, tag, config=False, api=False, missing_ok=False, head=self.head
            )
            if self.head:
                self._judge_head()
            if details is None or details.manifest is None:
                raise RegistryNotFound("GET", f"{path}:{tag}", 404, "the tag vanished meanwhile")
            manifest = details.manifest
            blobs = (
                self.resolver.pinned_blobs(path, manifest)
                if self.extended
                else manifest.blob_sizes()
            )
            platforms = self._all_platforms(path, manifest) if self.extended else 0
        except (RegopsError, OSError) as exc:
            self._fail(index, f"{path}:{tag}", exc)
        else:
            size = None if sized else details.total_size
            self._record(index, path, [tag] if not sized else [], size, blobs, platforms)
        self._group_done(index, path)

    def _judge_head(self) -> None:
        """Back to GETs when too many HEADs found a digest the cache does not hold."""
        hits = self.resolver.head_hits - self.heads_before[0]
        misses = self.resolver.head_misses - self.heads_before[1]
        if hits + misses >= HEAD_PROBE and misses > (hits + misses) * HEAD_MISS_LIMIT:
            self.head = False
            log.info("the cache holds few of these manifests: reading tags with GET")

    def _storage_tags(
        self,
        index: int,
        path: str,
        tags: list[str],
        storage: RegistryStorage,
        sized: bool = False,
    ) -> None:
        """Storage mode: read every tag's link here, then resolve each distinct digest once.

        Tags are grouped by digest. A digest parsed earlier in the scan or held by
        the cache is resolved in this task; only one that must be fetched becomes
        a task of its own, so fetches run concurrently and a warm scan pays no
        pool hand-off per tag. The reads happen under ``disk_slots``.
        """
        with self.disk_slots:
            groups = self._tag_links(index, path, tags, storage)
            local = {digest: self._local_manifest(path, digest) for digest in groups}
        with self.lock:
            self.repos_left[(index, path)] = len(groups)
        if not groups:
            self._tick_repository(index, path)
        fetch = []
        for digest, names in groups.items():
            manifest = local[digest]
            if manifest is not None:
                self._digest_tags(index, path, digest, names, manifest, sized)
            else:
                fetch.append((self._digest_tags, (index, path, digest, names, None, sized)))
        if fetch:
            self._push(iter(fetch))

    def _tag_links(
        self, index: int, path: str, tags: list[str], storage: RegistryStorage
    ) -> dict[Digest, list[str]]:
        """Digest -> the tags of ``path`` pointing at it, from the link files."""
        groups: dict[Digest, list[str]] = {}
        for tag in tags:
            try:
                digest = storage.tag_digest(path, tag)
                if digest is None:  # the registry lists it, the disk does not: wrong root?
                    raise ConfigError(f"tag {path}:{tag} has no current/link under {storage}")
            except (RegopsError, OSError) as exc:
                self._fail(index, f"{path}:{tag}", exc)
                continue
            groups.setdefault(digest, []).append(tag)
        return groups

    def _local_manifest(self, path: str, digest: Digest) -> Manifest | None:
        """``digest`` when the resolver has it without a request; None: fetch it in a task."""
        if not self.resolver.known(digest):
            return None
        return self.resolver.manifest(path, digest)

    def _digest_tags(
        self, index: int, path: str, digest: Digest, tags: list[str],
        manifest: Manifest | None = None, sized: bool = False,
    ) -> None:  # fmt: skip
        """Record ``tags`` of ``path``, which all point at ``digest``."""
        try:
            if manifest is None:
                manifest = self.resolver.manifest(path, digest)
            blobs = (
                self.resolver.pinned_blobs(path, manifest)
                if self.extended
                else manifest.blob_sizes()
            )
            platforms = self._all_platforms(path, manifest) if self.extended else 0
            image = None if sized else self.resolver.gitlab_image(path, manifest)
        except (RegopsError, OSError) as exc:
            for tag in tags:
                self._fail(index, f"{path}:{tag}", exc)
        else:
            with self.lock:
                self.shared_hits += len(tags) - 1  # the other tags reuse what the first read
            size = image.total_size if image is not None else None
            self._record(index, path, [] if sized else tags, size, blobs, platforms * len(tags))
        self._group_done(index, path)

    def _group_done(self, index: int, path: str) -> None:
        """One tag (HTTP) or one digest's tags (storage) of ``path`` done."""
        with self.lock:
            key = (index, path)
            self.repos_left[key] -= 1
            finished = not self.repos_left[key]
        if finished:
            self._tick_repository(index, path)

    # -- reading -------------------------------------------------------------------

    def _all_platforms(self, path: str, manifest: Manifest) -> int:
        """The layers of every image a tag holds: each platform of a list or index."""
        if not manifest.children:
            return manifest.total_size or 0
        children = [self.resolver.manifest(path, child.digest) for child in manifest.children]
        return sum(self._all_platforms(path, child) for child in children)

    def _record(
        self, index: int, path: str, tags: list[str], total_size: int | None,
        blobs: dict[Digest, int], all_platforms: int = 0,
    ) -> None:  # fmt: skip
        with self.lock:
            row = self.rows[index]
            for tag in tags:
                row.tag_sizes[f"{path}:{tag}"] = total_size
            if total_size is not None:  # as the Rails loop: tags without a size are skipped
                row.registry_size_bytes += total_size * len(tags)
            row.blobs.update(blobs)
            row.all_platforms_bytes += all_platforms

    # -- progress and totals -------------------------------------------------------

    def _tick_repository(self, index: int, path: str) -> None:
        if self.bar is not None:
            self.bar.repository_done()
        with self.lock:
            key = (index, "")
            self.repos_left[key] -= 1
            finished = not self.repos_left[key]
        if finished:
            self._tick_project(index)

    def _tick_project(self, index: int) -> None:
        with self.lock:
            self.finished.add(index)
        if self.bar is not None:
            self.bar.project_done()

    def _counters(self) -> tuple[int, int, int, int]:
        cache = self.resolver.cache
        hits = cache.hits + self.resolver.memo_hits + self.shared_hits
        return self.gitlab.request_count, self.registry.request_count, hits, cache.misses

    def _summary(self, before: tuple[int, int, int, int], started: float) -> UsageSummary:
        after = self._counters()
        everything: dict[Digest, int] = {}
        for row in self.rows:
            row.unique_bytes = sum(row.blobs.values())
            everything.update(row.blobs)
        return UsageSummary(
            projects=len(self.rows),
            repositories=sum(r.repositories for r in self.rows),
            tags=sum(r.tags for r in self.rows),
            registry_size_bytes=sum(r.registry_size_bytes for r in self.rows),
            unique_bytes=sum(everything.values()),
            all_platforms_bytes=sum(r.all_platforms_bytes for r in self.rows),
            incomplete_projects=sum(1 for r in self.rows if r.incomplete),
            gitlab_requests=after[0] - before[0],
            registry_requests=after[1] - before[1],
            cache_hits=after[2] - before[2],
            cache_misses=after[3] - before[3],
            seconds=time.monotonic() - started,
            mode="storage" if self.storage is not None else "http",
            concurrency=self.limit.peak,
            head_hits=self.resolver.head_hits - self.heads_before[0],
        )


class _Progress:
    """A tqdm bar over repositories (the total grows as projects are listed)."""

    def __init__(self, projects: int) -> None:
        from tqdm import tqdm

        self.projects_total = projects
        self.projects_done = 0
        self.repositories_total = 0  # the bar's total, kept here: tqdm's may be None
        self.lock = threading.Lock()
        self.bar = tqdm(total=0, unit="repo", desc=self._desc(), leave=False, dynamic_ncols=True)

    def _desc(self) -> str:
        return f"projects {self.projects_done}/{self.projects_total}"

    def add_repositories(self, count: int) -> None:
        with self.lock:
            self.repositories_total += count
            self.bar.total = self.repositories_total
            self.bar.refresh()

    def repository_done(self) -> None:
        with self.lock:
            self.bar.update(1)

    def project_done(self) -> None:
        with self.lock:
            self.projects_done += 1
            self.bar.set_description(self._desc(), refresh=True)

    def close(self) -> None:
        self.bar.close()


def _progress_bar(projects: int) -> _Progress:
    return _Progress(projects)


# --------------------------------------------------------------------------- the baseline


def naive_by_project(gitlab: GitLabClient, projects: Iterable[object]) -> UsageReport:
    """The Rails loop as a Python user would write it over the GitLab API, sequentially.

    One ``GET .../tags/:name`` per tag (GitLab does one registry round trip
    each). The reference the fast scan is measured and checked against; it
    also works without registry credentials.
    """
    started = time.monotonic()
    before = gitlab.request_count
    rows = []
    for ref in (ProjectRef.of(p) for p in projects):
        row = ProjectUsage(ref.id, ref.creator_id, ref.full_path)
        for repository in gitlab.project_repositories(ref.id):
            row.repositories += 1
            for listed in gitlab.repository_tags(ref.id, repository["id"]):
                row.tags += 1
                try:
                    size = gitlab.repository_tag(ref.id, repository["id"], listed["name"]).get(
                        "total_size"
                    )
                except GitLabNotFound:  # an OCI index: GitLab's Tag has no manifest, no size
                    size = None
                row.tag_sizes[f"{repository['path']}:{listed['name']}"] = size
                if size is not None:
                    row.registry_size_bytes += size
        rows.append(row)
    summary = UsageSummary(
        projects=len(rows),
        repositories=sum(r.repositories for r in rows),
        tags=sum(r.tags for r in rows),
        registry_size_bytes=sum(r.registry_size_bytes for r in rows),
        gitlab_requests=gitlab.request_count - before,
        seconds=time.monotonic() - started,
        mode="gitlab-api",
    )
    return UsageReport(rows, summary)


def iter_sizes(report: UsageReport) -> Iterator[tuple[int, int]]:
    """(project_id, registry_size_bytes) for every scanned project, in scan order."""
    for row in report.projects:
        yield row.project_id, row.registry_size_bytes
