"""A usage history for the demo: recorded runs on the sandbox with real changes between them.

:func:`seed_history` records a usage snapshot, pushes new images (a nightly
build series in ``apps/web/frontend`` and a new ``platform/tools/scan``
repository), records again, runs a cleanup of ``apps/web/frontend`` (a real,
audited delete), and records a third time. Notebook 04 reads what it leaves:
the history file and the cleanup's audit log.

>>> seed_history(sandbox, tmp / "history.sqlite3", audit_dir=tmp / "audit")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regops.models import Project
from regops.ops.history import HistoryStore
from regops.ops.usage import by_project, select_projects
from regops.sandbox.images import build_image, days_ago, push_image, random_layer

if TYPE_CHECKING:
    from regops.sandbox import Sandbox

NIGHTLY_REPOSITORY = "apps/web/frontend"
NEW_REPOSITORY = "platform/tools/scan"
NIGHTLIES = 4  # new main-* builds pushed between the first two snapshots
NEW_LAYER = 64 * 1024  # bytes: each new image adds a visible step to the growth chart
# The one-off cleanup run between the second and third snapshots.
CLEANUP = {"name_regex": "main-.*", "keep_n": 5, "older_than": "14d"}


def seed_history(
    sandbox: Sandbox, path: str | Path, *, audit_dir: str | Path | None = None
) -> dict[str, Any]:
    """Three snapshots in ``path`` with pushes and a cleanup between them; a summary."""
    connection = sandbox.connect()
    try:
        record = _recorder(connection, Path(path))
        first = record()
        now = datetime.datetime.now(datetime.timezone.utc)
        for index in range(NIGHTLIES):
            created = now - datetime.timedelta(hours=NIGHTLIES - index)
            image = build_image([random_layer(NEW_LAYER)], created)
            push_image(sandbox.registry, NIGHTLY_REPOSITORY, image, (f"main-1{index:02d}",))
        scan = build_image([random_layer(NEW_LAYER)], days_ago(1))
        push_image(sandbox.registry, NEW_REPOSITORY, scan, ("1.0", "latest"))
        sandbox.app.register_repositories()
        second = record()
        project = Project.find_by(full_path="apps/web", connection=connection)
        repository = next(
            r for r in project.container_repositories if r.path == NIGHTLY_REPOSITORY
        )
        audit_path = Path(audit_dir) / f"cleanup-{now:%Y%m%d}.jsonl" if audit_dir else None
        result = repository.plan_cleanup(CLEANUP).apply(audit_path=audit_path)
        third = record()
    finally:
        connection.close()
    return {
        "snapshots": [first, second, third],
        "deleted": [outcome.tag for outcome in result.deleted],
        "audit_path": str(result.audit_path),
    }


def _recorder(connection: Any, path: Path) -> Any:
    def record() -> int:
        projects = select_projects(connection.gitlab)
        report = by_project(
            projects, gitlab=connection.gitlab, resolver=connection.resolver, extended=True
        )
        with HistoryStore(path) as store:
            return store.record(report, gitlab_url=connection.settings.gitlab_url)

    return record
