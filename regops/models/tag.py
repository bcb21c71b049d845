"""Tag: one tag of a container repository, and where its details come from.

Details (digest, revision, total_size, created_at, layers, media_type) come
from the connection's tag resolver when it has registry access
(:class:`regops.registry.resolver.TagResolver`: one manifest GET per tag, as
a tag can move, then each config blob by digest through the on-disk content
cache; with the registry's GitLab API also its tags list). A whole
repository's tags are read in one concurrent pass. Without registry access
they come from GitLab's tag-details endpoint, one GitLab request per tag. Both
give the same values, with GitLab's meanings:

- ``total_size``: sum of layer sizes (config excluded) of the image GitLab
  sees: a Docker manifest list's linux/amd64 child; None for an OCI index.
  With the GitLab API: its ``size_bytes``.
- ``revision``: the config digest's hex; ``short_revision`` its first 9 characters.
- ``path``: ``<repository path>:<tag>``; ``location``: ``<registry host:port>/<path>``.
- ``created_at``: the config's ``created`` (build time, not push time), to the
  millisecond as GitLab's API gives it; with the GitLab API the push time
  (and ``updated_at`` the last re-push).
- ``digest``: GitLab's (a list's amd64 child); ``manifest_digest`` what the tag
  itself points at (what a delete re-checks).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from regops.connection import Connection
from regops.errors import GitLabNotFound
from regops.models.base import Collection, Model, parse_time, relation
from regops.registry.reference import Digest
from regops.registry.resolver import DETAIL_WORKERS, TagDetails

if TYPE_CHECKING:
    from regops.models.repository import ContainerRepository

log = logging.getLogger("regops.models")

DETAIL_FIELDS = ("digest", "revision", "short_revision", "total_size", "created_at")
REGISTRY_ONLY_FIELDS = (
    "layers",
    "media_type",
    "manifest",
    "placeholder",
    "manifest_digest",
    "updated_at",
)


class Tag(Model):
    """A tag: ``name``, ``path``, ``location``, ``digest``, ``total_size``, ``created_at`` ..."""

    fields = (
        "name",
        "path",
        "location",
        *DETAIL_FIELDS,
        *REGISTRY_ONLY_FIELDS,
    )
    table_columns = ("name", "short_revision", "total_size", "created_at")
    repr_fields = ("path", "short_revision")
    parent_relations = ("repository",)

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        repository: ContainerRepository,
        connection: Connection | None = None,
        source: str = "listed",
    ) -> None:
        super().__init__(data, connection=connection or repository._connection)
        self.repository = repository
        self.__dict__["_source"] = source

    @relation
    def repository(self) -> ContainerRepository:
        """The repository this tag belongs to (always given when the tag is made)."""
        raise RuntimeError("a Tag is always created with its repository")

    @property
    def source(self) -> str:
        """Where the details came from: ``listed`` (none), ``gitlab`` or ``registry``."""
        return self.__dict__["_source"]

    def _key(self) -> Hashable:
        return (self.repository.get("id"), self._data.get("name"))

    def _missing_reason(self, name: str) -> str:
        if self.source == "listed":
            return (
                f"Tag.{name}: listed, not fetched — call tag.reload() (one request), "
                "repository.load_tags() for every tag, or access via repository.tags "
                "with registry access"
            )
        if self.source == "gitlab" and name in REGISTRY_ONLY_FIELDS:
            return (
                f"Tag.{name}: GitLab's tag-details endpoint does not give it; "
                "configure registry access (registry key or realm) to read manifests"
            )
        if self.source == "missing":
            return f"Tag.{name}: the tag vanished from the registry after it was listed"
        return super()._missing_reason(name)

    def _fetch(self) -> Mapping[str, Any]:
        conn = self.connection
        if conn.resolver is not None:
            details = conn.resolver.tag(self.repository.path, self.name)
            data, source = (registry_row(conn, details), "registry") if details else (None, "")
        else:
            data, source = gitlab_details(conn, self.repository, self.name)
        if data is None:
            self.__dict__["_source"] = "missing"
            raise self.DoesNotExist(f"Tag {self.repository.get('path')}:{self.name} not found")
        self.__dict__["_source"] = source
        return data

    def __repr__(self) -> str:
        path = self._data.get("path") or f"{self.repository.get('path')}:{self._data.get('name')}"
        revision = self._data.get("short_revision")
        return f"<Tag {path}{' ' + revision if revision else ''}>"


# -- loading -----------------------------------------------------------------------


def load_tags(repository: ContainerRepository, details: bool) -> Collection[Tag]:
    """The repository's tags, with details read concurrently when ``details``.

    Registry access: the tag list, then (``details``) the resolver reads every
    tag. GitLab only: its tag list, then one tag-details request per tag.
    """
    conn = repository.connection
    if conn.resolver is not None:
        assert conn.registry is not None
        names = conn.registry.tags(repository.path)
        if not details:
            rows = [listed_row(conn, repository.path, name) for name in names]
            return _collection(repository, conn, rows, "listed")
        before = conn.registry.request_count
        resolved = conn.resolver.tags(repository.path, names)
        log.info(
            "%s: details of %d tags in %d registry requests",
            repository.path,
            len(names),
            conn.registry.request_count - before,
        )
        _log_vanished(repository, names, [d.name for d in resolved])
        rows = [registry_row(conn, d) for d in resolved]
        return _collection(repository, conn, rows, "registry")
    listed = list(conn.gitlab.repository_tags(repository.project_id, repository.id))
    if not details:
        return _collection(repository, conn, listed, "listed")
    names = [row["name"] for row in listed]
    with ThreadPoolExecutor(DETAIL_WORKERS, thread_name_prefix="regops-tags") as pool:
        found = list(pool.map(lambda n: gitlab_details(conn, repository, n)[0], names))
    # GitLab lists a tag it has no details for (an OCI index: its registry read gets a
    # 404): the tag stays, with GitLab's empty details, as GitLab's own list shows it.
    rows = [
        row if row is not None else {**listed_row, **dict.fromkeys(DETAIL_FIELDS)}
        for listed_row, row in zip(listed, found, strict=True)
    ]
    return _collection(repository, conn, rows, "gitlab")


def _log_vanished(repository: ContainerRepository, listed: list[str], found: list[str]) -> None:
    for name in sorted(set(listed) - set(found)):
        log.warning("tag %s:%s vanished while listing; skipped", repository.path, name)


def _collection(
    repository: ContainerRepository,
    conn: Connection,
    rows: Iterable[Mapping[str, Any]],
    source: str,
) -> Collection[Tag]:
    tags = [Tag(row, repository=repository, connection=conn, source=source) for row in rows]
    return Collection(tags, model=Tag)


def listed_row(conn: Connection, repository_path: str, name: str) -> dict[str, Any]:
    """A tag as a listing knows it: name, GitLab's path and location."""
    path = f"{repository_path}:{name}"
    return {"name": name, "path": path, "location": f"{conn.registry_host}/{path}"}


def registry_row(conn: Connection, details: TagDetails) -> dict[str, Any]:
    """A tag's data from the resolver, with GitLab's field names."""
    row = listed_row(conn, details.repository, details.name)
    row.update(
        digest=details.digest,
        revision=details.revision,
        short_revision=details.short_revision,
        total_size=details.total_size,
        created_at=details.created_at,
        updated_at=details.updated_at,
        layers=details.layers,
        media_type=details.media_type,
        manifest=details.manifest,
        manifest_digest=details.manifest_digest,
        placeholder=details.placeholder,
    )
    return row


def gitlab_details(
    conn: Connection, repository: ContainerRepository, name: str
) -> tuple[dict[str, Any] | None, str]:
    """One tag from GitLab's tag-details endpoint (one GitLab request); None when gone."""
    try:
        row = conn.gitlab.repository_tag(repository.project_id, repository.id, name)
    except GitLabNotFound:
        return None, "missing"
    data = dict(row)
    if data.get("digest"):
        data["digest"] = Digest.parse(data["digest"])
    data["created_at"] = parse_time(data.get("created_at"))
    return data, "gitlab"
