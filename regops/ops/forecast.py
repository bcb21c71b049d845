"""Tonight's cleanup, instance-wide: what every enabled policy's next run will do.

:func:`forecast` plans every given policy at once (a bounded pool of
projects, each repository's tags read through the shared resolver) and says,
per policy: when GitLab runs it next, how many tags and bytes it deletes,
and whether GitLab will skip it or stop early:

- **invalid regex**: GitLab's run answers ``invalid regex`` and deletes nothing;
- **over the tag limit**: more candidates than the application setting
  ``container_registry_cleanup_tags_service_max_list_size`` (+ ``keep_n``):
  GitLab deletes from a random sample and marks the run unfinished (regops
  plans the cap deterministically, as :func:`regops.ops.cleanup.plan_cleanup`
  documents, so the counts are those of one capped run);
- **all but latest**: a repository where the run leaves nothing but ``latest``.

When: GitLab's ``ContainerExpirationPolicyWorker`` starts, on its cron
(:data:`POLICY_WORKER_MINUTE`), every enabled policy whose ``next_run_at`` has
passed; so a policy runs at the first such tick at or after
``max(now, next_run_at)``, and ``due`` says whether that is within
``horizon`` (24 hours: tonight).

>>> result = forecast(policies, gitlab=gitlab, resolver=resolver)   # doctest: +SKIP
>>> print(result.render("table"))                                    # doctest: +SKIP

Costs: one repository list per project (GitLab), then per repository one tag
list and one manifest GET per tag (plus each config once, by digest, through
the content cache), ``workers`` projects at a time.
"""

from __future__ import annotations

import csv
import html
import io
import json
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from tabulate import tabulate

from regops.durations import parse_duration
from regops.errors import GitLabError, PolicyError, RegopsError, ValidationError
from regops.ops import charts
from regops.ops.cleanup import CleanupPlan, plan_cleanup
from regops.ops.defaults import FORECAST_MAX_WORKERS, FORECAST_WORKERS
from regops.policy import LATEST_TAG, CleanupPolicy
from regops.registry.manifest import Manifest
from regops.registry.reference import Digest
from regops.registry.resolver import TagResolver
from regops.sizes import human_bytes
from regops.times import utc_time

DEFAULT_WORKERS = FORECAST_WORKERS  # projects planned at once
MAX_WORKERS = FORECAST_MAX_WORKERS
DEFAULT_HORIZON = timedelta(hours=24)  # "tonight": the runs of the next day
# GitLab's default container_registry_cleanup_tags_service_max_list_size, used when
# the application settings cannot be read (they need an administrator's token).
GITLAB_MAX_LIST_SIZE = 200
MAX_LIST_SETTING = "container_registry_cleanup_tags_service_max_list_size"
# GitLab's cron for ContainerExpirationPolicyWorker: "50 * * * *" (gitlab.yml's
# container_expiration_policy_worker), so a due policy starts at the next hh:50.
POLICY_WORKER_MINUTE = 50
FORMATS = ("table", "csv", "json")

STATUS_OK = "ok"
STATUS_INVALID = "invalid regex"  # GitLab skips the run: `invalid regex`
STATUS_POLICY = "invalid policy"  # another value GitLab cannot run with
STATUS_OVER_LIMIT = "over the tag limit"  # GitLab stops after a sample: run unfinished
STATUS_ERROR = "unreadable"  # regops could not read a repository: counts incomplete
CSV_HEADER = (
    "project_id",
    "project_path",
    "cadence",
    "next_run_at",
    "runs_at",
    "due",
    "repositories",
    "tags",
    "deleted_tags",
    "deleted_bytes",
    "freed_bytes",
    "status",
    "problems",
)


@dataclass(frozen=True)
class PolicyInput:
    """What the forecast needs of one policy: its project and its attributes."""

    project_id: int
    project_path: str
    attributes: dict[str, Any]


@dataclass
class PolicyForecast:
    """One policy's next run: when, what it deletes, and what GitLab will make of it."""

    project_id: int
    project_path: str
    cadence: str | None
    next_run_at: datetime | None
    runs_at: datetime | None
    due: bool
    repositories: int = 0
    tags: int = 0
    deleted_tags: int = 0
    deleted_bytes: int = 0  # sum of total_size over the deleted tags (GitLab's measure)
    freed_bytes: int | None = 0  # blobs only deleted tags use, per repository (upper bound)
    status: str = STATUS_OK
    problems: list[str] = field(default_factory=list)
    all_but_latest: list[str] = field(default_factory=list)  # repositories
    plans: list[CleanupPlan] = field(default_factory=list, repr=False)

    def csv_row(self) -> tuple[Any, ...]:
        return (
            self.project_id,
            self.project_path,
            self.cadence or "",
            _iso(self.next_run_at),
            _iso(self.runs_at),
            "true" if self.due else "false",
            self.repositories,
            self.tags,
            self.deleted_tags,
            self.deleted_bytes,
            "" if self.freed_bytes is None else self.freed_bytes,
            self.status,
            "; ".join(self.problems),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **dict(zip(CSV_HEADER, self.csv_row(), strict=True)),
            "due": self.due,
            "freed_bytes": self.freed_bytes,
            "problems": list(self.problems),
            "all_but_latest": list(self.all_but_latest),
        }


class Forecast(Sequence[PolicyForecast]):
    """Every planned policy (a sequence of :class:`PolicyForecast`), soonest run first."""

    def __init__(
        self,
        rows: list[PolicyForecast],
        *,
        now: datetime,
        horizon: timedelta,
        max_list_size: int,
        max_list_source: str,
        seconds: float,
        registry_requests: int,
    ) -> None:
        far = datetime.max.replace(tzinfo=timezone.utc)
        self.rows = sorted(rows, key=lambda r: (r.runs_at or far, r.project_path))
        self.now = now
        self.horizon = horizon
        self.max_list_size = max_list_size
        self.max_list_source = max_list_source
        self.seconds = seconds
        self.registry_requests = registry_requests

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> Any:
        return self.rows[index]

    @property
    def due(self) -> list[PolicyForecast]:
        """The policies GitLab runs within the horizon."""
        return [r for r in self.rows if r.due]

    @property
    def ok(self) -> bool:
        """True when every policy's repositories could be read."""
        return all(r.status != STATUS_ERROR for r in self.rows)

    def summary(self) -> str:
        due = self.due
        hours = self.horizon.total_seconds() / 3600
        freed = sum(r.freed_bytes or 0 for r in due)
        skipped = sum(1 for r in self.rows if r.status in (STATUS_INVALID, STATUS_POLICY))
        stopped = sum(1 for r in self.rows if r.status == STATUS_OVER_LIMIT)
        return (
            f"{len(self.rows)} enabled policies, {len(due)} run within {hours:g} h: "
            f"{sum(r.deleted_tags for r in due)} tags, "
            f"{human_bytes(sum(r.deleted_bytes for r in due))} of tags, up to "
            f"{human_bytes(freed)} freed after GC; {skipped} skipped by GitLab "
            f"(invalid), {stopped} over the tag limit ({self.max_list_size}, "
            f"{self.max_list_source}); {self.registry_requests} registry requests, "
            f"{self.seconds:.1f} s"
        )

    # -- output --------------------------------------------------------------------

    def _table_rows(self) -> list[tuple[Any, ...]]:
        return [
            (
                r.project_path,
                r.cadence or "",
                _when(r.runs_at, self.now),
                "yes" if r.due else "",
                r.repositories,
                r.tags,
                r.deleted_tags,
                human_bytes(r.deleted_bytes),
                human_bytes(r.freed_bytes),
                r.status if not r.problems else f"{r.status}: {'; '.join(r.problems)}",
            )
            for r in self.rows
        ]

    TABLE_HEADER = (
        "project",
        "cadence",
        "runs",
        "due",
        "repos",
        "tags",
        "delete",
        "of tags",
        "frees ≤",
        "status",
    )

    def render(self, fmt: str = "table") -> str:
        if fmt == "table":
            if not self.rows:
                return "(no enabled policies)\n"
            return tabulate(self._table_rows(), self.TABLE_HEADER, tablefmt="simple") + "\n"
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(CSV_HEADER)
            writer.writerows(r.csv_row() for r in self.rows)
            return buffer.getvalue()
        if fmt == "json":
            document = {
                "now": _iso(self.now),
                "horizon_hours": self.horizon.total_seconds() / 3600,
                "max_list_size": self.max_list_size,
                "policies": [r.to_dict() for r in self.rows],
            }
            return json.dumps(document, indent=2) + "\n"
        raise ValidationError("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")

    def __repr__(self) -> str:
        return f"{self.render('table')}{self.summary()}"

    def _repr_html_(self) -> str:
        table = tabulate(self._table_rows(), self.TABLE_HEADER, tablefmt="html")
        return f"{table}<p>{html.escape(self.summary())}</p>"

    def plot(self, top: int | None = charts.DEFAULT_TOP) -> Any:
        """Bytes and tags the due runs delete, by project (a :class:`charts.Chart`)."""
        window = f"{self.horizon.total_seconds() / 3600:g} h"
        return charts.forecast_chart(self.due, top=top, window=window)


# --------------------------------------------------------------------------- timing


def next_worker_run(next_run_at: datetime | None, now: datetime) -> datetime | None:
    """The first tick of GitLab's policy worker at or after ``max(now, next_run_at)``."""
    if next_run_at is None:
        return None
    start = max(now, next_run_at)
    tick = start.replace(minute=POLICY_WORKER_MINUTE, second=0, microsecond=0)
    return tick if tick >= start else tick + timedelta(hours=1)


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    return utc_time(value if isinstance(value, datetime) else str(value), "next_run_at")


def _iso(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds") if value else ""


def _when(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "unknown"
    hours = (value - now).total_seconds() / 3600
    return f"{value.astimezone(timezone.utc):%Y-%m-%d %H:%M} (in {hours:.0f} h)"


# --------------------------------------------------------------------------- planning


def max_list_size_of(gitlab: Any) -> tuple[int, str]:
    """GitLab's tag limit per run, and where it came from (its settings or the default)."""
    try:
        settings = gitlab.application_settings()
    except GitLabError:  # not an administrator: the setting cannot be read
        return GITLAB_MAX_LIST_SIZE, "GitLab's default; settings not readable"
    value = settings.get(MAX_LIST_SETTING)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, "from GitLab's settings"
    return GITLAB_MAX_LIST_SIZE, "GitLab's default; not in the settings"


def forecast(
    policies: Iterable[PolicyInput],
    *,
    gitlab: Any,
    resolver: TagResolver,
    now: datetime | None = None,
    horizon: timedelta | str = DEFAULT_HORIZON,
    max_list_size: int | None = None,
    workers: int = DEFAULT_WORKERS,
    progress: bool = False,
) -> Forecast:
    """Plan every policy in ``policies`` (enabled ones: the caller selects) at once.

    ``max_list_size``: GitLab's tag limit (default: read from its application
    settings, else GitLab's default 200). ``horizon``: a timedelta or ``"7d"``.
    A repository that cannot be read marks its policy ``unreadable``; the others go on.
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ValidationError("workers", f"expected 1..{MAX_WORKERS}, got {workers}")
    if isinstance(horizon, str):
        horizon = parse_duration(horizon, "horizon")
    started = time.monotonic()
    now = now or datetime.now(timezone.utc)
    if max_list_size is None:
        limit, source = max_list_size_of(gitlab)
    else:
        limit, source = max_list_size, "given"
    inputs = list(policies)
    before = resolver.client.request_count
    bar = _bar(len(inputs)) if progress else None
    lock = threading.Lock()

    def one(policy: PolicyInput) -> PolicyForecast:
        try:
            return _plan_policy(policy, gitlab, resolver, now, horizon, limit)
        finally:
            if bar is not None:
                with lock:
                    bar.update(1)

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="regops-forecast") as pool:
            rows = list(pool.map(one, inputs))
    finally:
        if bar is not None:
            bar.close()
    return Forecast(
        rows,
        now=now,
        horizon=horizon,
        max_list_size=limit,
        max_list_source=source,
        seconds=time.monotonic() - started,
        registry_requests=resolver.client.request_count - before,
    )


def _bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="policy", desc="planning", leave=False, dynamic_ncols=True)


def _plan_policy(
    policy: PolicyInput,
    gitlab: Any,
    resolver: TagResolver,
    now: datetime,
    horizon: timedelta,
    limit: int,
) -> PolicyForecast:
    attrs = policy.attributes
    next_run = _time(attrs.get("next_run_at"))
    runs_at = next_worker_run(next_run, now)
    row = PolicyForecast(
        project_id=policy.project_id,
        project_path=policy.project_path,
        cadence=attrs.get("cadence"),
        next_run_at=next_run,
        runs_at=runs_at,
        due=runs_at is not None and runs_at <= now + horizon,
    )
    try:
        rules = CleanupPolicy.parse(attrs)
    except PolicyError as exc:
        row.status = STATUS_INVALID if "RE2" in exc.message else STATUS_POLICY
        row.problems.append(f"GitLab will not run it: {exc}")
        return row
    try:
        repositories = [str(r["path"]) for r in gitlab.project_repositories(policy.project_id)]
    except RegopsError as exc:
        row.status = STATUS_ERROR
        row.problems.append(f"repositories: {exc}")
        return row
    row.repositories = len(repositories)
    freed: int | None = 0
    for path in repositories:
        try:
            plan = _plan_repository(path, rules, resolver, now, limit)
            repository_freed = _freed_bytes(plan, resolver)
        except (RegopsError, OSError) as exc:
            row.status = STATUS_ERROR
            row.problems.append(f"{path}: {exc}")
            continue
        row.plans.append(plan)
        row.tags += plan.original_size
        row.deleted_tags += plan.deleted_size
        row.deleted_bytes += sum(t.total_size or 0 for t in plan.to_delete)
        freed = None if freed is None or repository_freed is None else freed + repository_freed
        if not plan.finished and row.status == STATUS_OK:
            row.status = STATUS_OVER_LIMIT
        if not plan.finished:
            row.problems.append(
                f"{path}: {plan.before_truncate_size} candidates, over the limit of "
                f"{limit} + keep_n: GitLab deletes from a sample and runs again"
            )
        if plan.deleted_size and set(plan.kept) <= {LATEST_TAG}:
            row.all_but_latest.append(path)
            row.problems.append(f"{path}: deletes every tag but latest ({plan.deleted_size})")
    row.freed_bytes = freed
    return row


def _plan_repository(
    path: str, rules: CleanupPolicy, resolver: TagResolver, now: datetime, limit: int
) -> CleanupPlan:
    names = resolver.client.tags(path)
    tags = resolver.tags(path, names)
    return plan_cleanup(tags, rules, now=now, max_list_size=limit, repository=path)


def _freed_bytes(plan: CleanupPlan, resolver: TagResolver) -> int | None:
    """Bytes of blobs only the deleted tags of this repository use (an index's children
    read through the resolver, by digest); an upper bound, as ``plan.freed_bytes``."""
    deleted: dict[Digest, int] = {}
    kept: set[Digest] = set()
    for decision in plan.decisions:
        manifest = getattr(decision.tag, "manifest", None)
        if not isinstance(manifest, Manifest):
            return None
        blobs = resolver.pinned_blobs(plan.repository or "", manifest)
        if decision.delete:
            deleted.update(blobs)
        else:
            kept.update(blobs)
    return sum(size for digest, size in deleted.items() if digest not in kept)


__all__ = [
    "DEFAULT_HORIZON",
    "Forecast",
    "PolicyForecast",
    "PolicyInput",
    "forecast",
    "next_worker_run",
]
