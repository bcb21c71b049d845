"""A usage history for the demo: recorded runs on the sandbox with real changes between them.

:func:`seed_history` records a usage snapshot, pushes new images (nightly
builds into ``apps/web/frontend``, a new release into ``platform/tools/lint``),
records again, runs a cleanup of ``apps/web/frontend`` (a real, audited
delete), and records a third time. Notebook 04 reads what it leaves: the
history file and the cleanup's audit log.

>>> seed_history(sandbox.connect(), tmp / "history.sqlite3", audit_dir=tmp / "audit")
... # doctest: +SKIP

Against a running ``regops sandbox --seed demo`` (after ``source <env file>``)::

    python -m regops.sandbox.history          # into the default history file

It pushes and deletes, so it refuses any GitLab but one on loopback.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from regops.connection import Connection, connect
from regops.models import Project
from regops.ops.history import HistoryStore, default_history_path
from regops.ops.usage import by_project, select_projects
from regops.sandbox.images import build_image, push_image, random_layer

NIGHTLY_REPOSITORY = "apps/web/frontend"
RELEASE_REPOSITORY = "platform/tools/lint"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # the sandbox; never a real instance
NIGHTLIES = 4  # new main-* builds pushed between the first two snapshots
NEW_LAYER = 64 * 1024  # bytes: each new image adds a visible step to the growth chart
# The one-off cleanup run between the second and third snapshots.
CLEANUP = {"name_regex": "main-.*", "keep_n": 5, "older_than": "14d"}


def seed_history(
    connection: Connection, path: str | Path, *, audit_dir: str | Path | None = None
) -> dict[str, Any]:
    """Three snapshots in ``path`` with pushes and a cleanup between them; a summary.

    ``connection``: an administrator's, with a registry key (it pushes).
    """
    record = _recorder(connection, Path(path))
    first = record()
    now = datetime.datetime.now(datetime.timezone.utc)
    registry = connection.registry
    for index in range(NIGHTLIES):
        created = now - datetime.timedelta(hours=NIGHTLIES - index)
        image = build_image([random_layer(NEW_LAYER)], created)
        push_image(registry, NIGHTLY_REPOSITORY, image, (f"main-1{index:02d}",))
    release = build_image([random_layer(NEW_LAYER)], now - datetime.timedelta(days=1))
    push_image(registry, RELEASE_REPOSITORY, release, ("2024.07",))
    second = record()
    project = Project.find("apps/web", connection=connection)
    repository = next(r for r in project.container_repositories if r.path == NIGHTLY_REPOSITORY)
    audit_path = Path(audit_dir) / f"cleanup-{now:%Y%m%d}.jsonl" if audit_dir else None
    result = repository.plan_cleanup(CLEANUP).apply(audit_path=audit_path)
    third = record()
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


def main() -> int:
    """``python -m regops.sandbox.history``: seed the default history from the sandbox."""
    connection = connect()
    host = urlsplit(connection.settings.gitlab_url or "").hostname
    if host not in LOOPBACK_HOSTS:
        print(
            f"regops.sandbox.history: {host} is not the sandbox (loopback); refusing to "
            "push and delete there",
            file=sys.stderr,
        )
        return 2
    summary = seed_history(connection, default_history_path())
    print(
        f"recorded snapshots {summary['snapshots']} in {default_history_path()}; "
        f"cleanup deleted {len(summary['deleted'])} tags ({summary['audit_path']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
