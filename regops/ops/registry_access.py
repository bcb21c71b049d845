"""Projects whose container registry is enabled but holds no image.

GitLab's rule for "has images" is ``Project#has_container_registry_tags?``:
some container repository of the project has a tag. A project with no
repository, or only repositories without tags, has none. Registry access
levels are ProjectFeature's: ``disabled``, ``private``, ``enabled``
(``Featurable::STRING_OPTIONS``; ``public`` is refused for the registry).

Cost: the project listing (keyset pages of 100) plus one repository listing
per project whose registry is not disabled (``tags_count=true``, which costs
GitLab one registry request per repository).

>>> scan = find_unused_registries(gitlab)     # doctest: +SKIP
>>> [p.path for p in scan.unused]             # doctest: +SKIP
['apps/empty']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from regops.gitlab.client import GitLabClient

ACCESS_LEVELS = ("disabled", "private", "enabled")  # the API's values for the registry


@dataclass(frozen=True)
class UnusedProject:
    id: int
    path: str
    access_level: str


@dataclass
class UnusedScan:
    """``enabled``: projects with the registry not disabled; ``unused``: those without images."""

    scanned: int = 0
    enabled: int = 0
    unused: list[UnusedProject] = field(default_factory=list)
    requests: int = 0


def registry_access_level(project: Mapping[str, Any]) -> str:
    """A project's registry access level from GitLab's JSON (older GitLab: the boolean)."""
    level = project.get("container_registry_access_level")
    if isinstance(level, str) and level in ACCESS_LEVELS:
        return level
    return "enabled" if project.get("container_registry_enabled", True) else "disabled"


def has_images(repositories: Iterable[Mapping[str, Any]]) -> bool:
    """True when some repository has a tag (GitLab's ``has_container_registry_tags?``)."""
    return any((row.get("tags_count") or 0) > 0 for row in repositories)


def find_unused_registries(
    gitlab: GitLabClient, projects: Iterable[Mapping[str, Any]] | None = None
) -> UnusedScan:
    """Projects (all visible, or ``projects``) with the registry enabled and no image."""
    scan = UnusedScan()
    for project in projects if projects is not None else gitlab.projects():
        scan.scanned += 1
        level = registry_access_level(project)
        if level == "disabled":
            continue
        scan.enabled += 1
        repositories = list(gitlab.project_repositories(project["id"], tags_count=True))
        scan.requests += 1
        if not has_images(repositories):
            scan.unused.append(
                UnusedProject(int(project["id"]), str(project.get("path_with_namespace")), level)
            )
    return scan
