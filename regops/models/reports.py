"""Reports over models through their connection: ``usage_by_project(Project.last(100))``.

The operations themselves (:mod:`regops.ops.usage`) take clients; these
functions hand them the connection's, as the console and notebooks expect.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from regops.connection import Connection
from regops.errors import ConfigError
from regops.models.base import resolve_connection
from regops.ops.usage import ScanOptions, UsageReport, by_project, select_projects

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; annotations only


def usage_by_project(
    projects: Iterable[object] | None = None,  # each checked by ProjectRef.of
    *,
    connection: Connection | None = None,
    **options: Unpack[ScanOptions],
) -> UsageReport:
    """Registry usage by project, as the admin guide's Rails recipe (and more).

    ``projects``: models, API dicts or ids' refs (default: every project the
    token sees). ``options`` go to :func:`regops.ops.usage.by_project`
    (``extended``, ``workers``, ``storage``, ``progress``). Tags are read
    through the connection's resolver and its on-disk cache.

    >>> print(usage_by_project(Project.last(100)).to_csv(), end="")  # doctest: +SKIP
    """
    conn = resolve_connection(connection)
    if conn.resolver is None:
        raise ConfigError(
            "registry usage needs the registry: set REGOPS_REGISTRY_URL and a way to "
            "authenticate (signing key, or user + token); see `regops config`"
        )
    chosen = select_projects(conn.gitlab) if projects is None else projects
    return by_project(chosen, gitlab=conn.gitlab, resolver=conn.resolver, **options)
