"""Tag: one tag of a container repository, and where its details come from.

Details (digest, revision, total_size, created_at, layers, media_type) come
straight from the registry when the connection has registry access: one
manifest GET per tag (a tag can move, so its manifest is asked for by name),
then each config blob by digest through a content cache shared by the
connection (content-addressed: cached forever). A whole repository's tags are
fetched in one concurrent pass. Without registry access they come from
GitLab's tag-details endpoint, one GitLab request per tag. Both give the same
values, with GitLab's meanings:

- ``total_size``: sum of layer sizes (config excluded); None for an index/list.
- ``revision``: the config digest's hex; ``short_revision`` its first 9 characters.
- ``path``: ``<repository path>:<tag>``; ``location``: ``<registry host:port>/<path>``.
- ``created_at``: the config's ``created`` (build time, not push time), to the
  millisecond as GitLab's API gives it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from regops.errors import GitLabNotFound, RegistryNotFound
from regops.models.base import Collection, Model, parse_time, relation
from regops.registry.reference import Digest
from regops.registry.safe_delete import is_placeholder, is_placeholder_config

if TYPE_CHECKING:
    from regops.connection import Connection
    from regops.models.repository import ContainerRepository

log = logging.getLogger("regops.models")

DETAIL_WORKERS = 8  # concurrent detail requests: well under the HTTP pool (32), kind to GitLab
SHORT_REVISION = 9  # GitLab's Tag#short_revision: revision[0..8]
DETAIL_FIELDS = ("digest", "revision", "short_revision", "total_size", "created_at")
REGISTRY_ONLY_FIELDS = ("layers", "media_type", "manifest", "placeholder")


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

    def _key(self) -> Any:
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
        fetch = (
            _registry_fetcher(conn, self.repository)
            if conn.registry is not None
            else _gitlab_fetcher(conn, self.repository)
        )
        data, source = fetch(self.name)
        self.__dict__["_source"] = source
        if data is None:
            raise self.DoesNotExist(f"Tag {self.repository.get('path')}:{self.name} not found")
        return data

    def __repr__(self) -> str:
        path = self._data.get("path") or f"{self.repository.get('path')}:{self._data.get('name')}"
        revision = self._data.get("short_revision")
        return f"<Tag {path}{' ' + revision if revision else ''}>"


# -- loading -----------------------------------------------------------------------


def load_tags(repository: ContainerRepository, details: bool) -> Collection:
    """The repository's tags, with details fetched concurrently when ``details``."""
    conn = repository.connection
    if conn.registry is not None:
        names = conn.registry.tags(repository.path)
        if not details:
            rows = [_listed_row(conn, repository, name) for name in names]
            return _collection(repository, conn, rows, "listed")
        return _detailed(repository, conn, names, _registry_fetcher(conn, repository))
    listed = list(conn.gitlab.repository_tags(repository.project_id, repository.id))
    if not details:
        return _collection(repository, conn, listed, "listed")
    names = [row["name"] for row in listed]
    return _detailed(repository, conn, names, _gitlab_fetcher(conn, repository))


def _collection(repository: Any, conn: Any, rows: Iterable[Mapping], source: str) -> Collection:
    tags = [Tag(row, repository=repository, connection=conn, source=source) for row in rows]
    return Collection(tags, model=Tag)


Fetcher = Callable[[str], "tuple[dict | None, str]"]


def _detailed(repository: Any, conn: Any, names: list[str], fetch: Fetcher) -> Collection:
    """Fetch every tag's details, ``DETAIL_WORKERS`` at a time; vanished tags are dropped."""
    if not names:
        return Collection([], model=Tag)
    workers = min(DETAIL_WORKERS, len(names))
    client = conn.registry if conn.registry is not None else conn.gitlab
    before = client.request_count
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="regops-tags") as pool:
        results = list(pool.map(fetch, names))
    log.info(
        "%s: details of %d tags in %d %s requests (%d at a time)",
        repository.path,
        len(names),
        client.request_count - before,
        "registry" if client is conn.registry else "GitLab",
        workers,
    )
    tags = []
    for name, (data, source) in zip(names, results, strict=True):
        if data is None:
            log.warning("tag %s:%s vanished while listing; skipped", repository.path, name)
            continue
        tags.append(Tag(data, repository=repository, connection=conn, source=source))
    return Collection(tags, model=Tag)


def _listed_row(conn: Any, repository: Any, name: str) -> dict[str, Any]:
    path = f"{repository.path}:{name}"
    return {"name": name, "path": path, "location": f"{conn.registry_host}/{path}"}


def _gitlab_fetcher(conn: Any, repository: Any) -> Fetcher:
    """Details of one tag from GitLab's tag-details endpoint (one GitLab request)."""

    def fetch(name: str) -> tuple[dict | None, str]:
        try:
            row = conn.gitlab.repository_tag(repository.project_id, repository.id, name)
        except GitLabNotFound:
            return None, "missing"
        data = dict(row)
        if data.get("digest"):
            data["digest"] = Digest.parse(data["digest"])
        data["created_at"] = parse_time(data.get("created_at"))
        return data, "gitlab"

    return fetch


def _registry_fetcher(conn: Any, repository: Any) -> Fetcher:
    """Details of one tag from the registry: its manifest by tag, its config by digest."""
    reader = content_reader(conn)

    def fetch(name: str) -> tuple[dict | None, str]:
        try:
            manifest = conn.registry.get_manifest(repository.path, name)
        except RegistryNotFound:
            return None, "missing"
        reader.remember_manifest(manifest)
        config = None
        if manifest.config is not None and not manifest.is_index:
            config = reader.config(repository.path, manifest.config.digest)
        data = _listed_row(conn, repository, name)
        revision = manifest.config.digest.hex if manifest.config is not None else None
        data.update(
            digest=manifest.digest,
            revision=revision,
            short_revision=revision[:SHORT_REVISION] if revision else None,
            total_size=manifest.total_size,
            created_at=_milliseconds(config.created) if config is not None else None,
            layers=manifest.layers,
            media_type=manifest.media_type,
            manifest=manifest,
            placeholder=is_placeholder(manifest)
            or (config is not None and is_placeholder_config(config)),
        )
        return data, "registry"

    return fetch


def _milliseconds(when: datetime | None) -> datetime | None:
    """``when`` cut to milliseconds, as GitLab's API serialises times: both sources agree."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000) if when else None


# -- the per-connection content cache -------------------------------------------------


class ContentReader:
    """Manifests and configs by digest for one connection (a ContentCache + CachingReader)."""

    def __init__(self, conn: Any) -> None:
        from regops.registry.cache import CachingReader, ContentCache

        cache = getattr(conn, "content_cache", None) or ContentCache()
        self.cache = cache
        self.reader = CachingReader(conn.registry, cache)

    def remember_manifest(self, manifest: Any) -> None:
        """Keep a manifest fetched by tag under its digest (schema 1 digests do not verify)."""
        if not manifest.is_schema1 and manifest.digest not in self.cache:
            self.cache.put(manifest.digest, manifest.raw)

    def config(self, repo: str, digest: Digest) -> Any:
        return self.reader.config(repo, digest)

    def manifest(self, repo: str, digest: Digest) -> Any:
        return self.reader.manifest(repo, digest)


_readers: dict[int, ContentReader] = {}
_readers_lock = threading.Lock()


def content_reader(conn: Any) -> ContentReader:
    """The connection's shared :class:`ContentReader` (created on first use)."""
    with _readers_lock:
        holder = getattr(conn, "__dict__", None)
        if holder is not None:
            reader = holder.get("_models_content_reader")
            if reader is None:
                reader = holder["_models_content_reader"] = ContentReader(conn)
            return reader
        reader = _readers.get(id(conn))
        if reader is None:
            reader = _readers[id(conn)] = ContentReader(conn)
        return reader
