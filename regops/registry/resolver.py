"""What tags point at: one resolver per connection, each digest fetched once.

A tag is resolved in one of two ways: over HTTP, one ``GET`` of its manifest
by tag (the only way the v2 API tells what a tag points at; the body comes with
it); or, on the registry host, from the digest in its storage link file, then
the manifest by digest. Everything fetched by digest (manifests, image
configs) is content-addressed: parsed once and kept in a bounded in-memory
LRU, read through the on-disk :class:`~regops.registry.cache.ContentCache`,
and fetched from the registry at most once at a time however many threads ask.

GitLab's fields of a tag (:class:`GitLabTag`) are computed here as GitLab
computes them: from the manifest GitLab's ``Accept`` gets (a Docker manifest
list's linux/amd64 child; nothing for an OCI index), or, when the registry has
the GitLab API (``gitlab_api=``), from its tags list. regops's own extras
(unique bytes, restore, delete safety, placeholders) read the raw manifest,
with every type.

The usage scan, the console's ``Tag`` objects and the sandbox's GitLab
stand-in all read tags through this one class.

>>> resolver = TagResolver(client, ContentCache(default_cache_dir()))  # doctest: +SKIP
>>> details = resolver.tag("group/app", "v1.0")                          # doctest: +SKIP
>>> details.total_size, details.created_at                               # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from regops.errors import RegistryNotFound, ValidationError
from regops.registry.cache import ContentCache
from regops.registry.client import RegistryClient
from regops.registry.gitlab_api import ApiTag, GitLabRegistryAPI
from regops.registry.manifest import (
    DOCKER_LIST,
    Descriptor,
    ImageConfig,
    Manifest,
    parse_manifest,
)
from regops.registry.reference import Digest
from regops.registry.safe_delete import is_placeholder, is_placeholder_config

SHORT_REVISION = 9  # GitLab's Tag#short_revision: revision[0..8]
PARSED_ENTRIES = 20_000  # parsed manifests/configs kept in memory (a few KiB each)
DETAIL_WORKERS = 8  # concurrent tag reads for one repository: well under the HTTP pool

T = TypeVar("T", Manifest, ImageConfig)


# Where GitLab's view of a tag came from.
SOURCE_MANIFEST = "manifest"  # v2 reads with GitLab's Accept (ThirdParty registries)
SOURCE_GITLAB_API = "gitlab_api"  # the registry's /gitlab/v1/ tags list (metadata database)
# The platform Distribution serves in place of a Docker manifest list to a client
# that does not accept lists (registry/handlers/manifests.go: defaultArch, defaultOS).
DEFAULT_PLATFORM = ("amd64", "linux")


@dataclass(frozen=True)
class GitLabTag:
    """A tag's fields as GitLab's ``ContainerRegistry::Tag`` computes them.

    From manifests (a registry without the GitLab API), GitLab reads with
    ``Accept: ACCEPTED_TYPES`` (Docker v2 and OCI image manifests only,
    lib/container_registry/base_client.rb): a Docker manifest list comes back as
    its linux/amd64 child, whose digest, config and layers GitLab reports; an
    OCI index (or a list without that child) comes back 404, and GitLab has
    nothing (no :class:`GitLabTag`). ``created_at`` is the config's ``created``
    (build time). From the registry's GitLab API (``transform_tags_page`` in
    app/models/container_repository.rb) every field is the API's, for every
    kind of manifest: ``created_at``/``updated_at`` are push times,
    ``total_size`` is ``size_bytes``, ``revision`` the config digest's hex or ``""``.
    """

    digest: Digest | None
    revision: str | None
    created_at: datetime | None
    total_size: int | None
    layers: tuple[Descriptor, ...] | None = None
    updated_at: datetime | None = None
    media_type: str | None = None
    source: str = SOURCE_MANIFEST

    @property
    def short_revision(self) -> str | None:
        """``revision[0..8]`` (GitLab returns nil only when revision is nil)."""
        return self.revision[:SHORT_REVISION] if self.revision is not None else None

    @property
    def pushed_at(self) -> datetime | None:
        """GitLab's date for cleanup: build time, or ``updated_at || created_at`` (API)."""
        return self.updated_at or self.created_at

    @classmethod
    def of_image(cls, image: Manifest, config: ImageConfig | None) -> GitLabTag:
        """From the manifest GitLab sees (and its image config, when read)."""
        created = config.created if config is not None else None
        return cls(
            digest=image.digest,
            revision=image.config.digest.hex if image.config is not None else None,
            created_at=_to_millisecond(created),
            total_size=image.total_size,
            layers=image.layers,
            media_type=image.media_type,
        )


def gitlab_image_of(manifest: Manifest) -> Descriptor | Manifest | None:
    """What GitLab's ``Accept`` gets for a tag pointing at ``manifest``.

    The manifest itself for an image (or schema 1); for a Docker manifest list
    the descriptor of the child Distribution serves instead (the first
    linux/amd64 entry); None for an OCI index or a list without that child.
    """
    if manifest.media_type == DOCKER_LIST:
        for child in manifest.children:
            platform = child.platform or {}
            if (platform.get("architecture"), platform.get("os")) == DEFAULT_PLATFORM:
                return child
        return None
    if manifest.is_index:
        return None
    return manifest


@dataclass(frozen=True)
class TagDetails:
    """One tag, resolved: GitLab's fields (``gitlab``) and what regops reads itself.

    GitLab's fields (None when GitLab has nothing for the tag, see
    :class:`GitLabTag`): ``digest``, ``revision``, ``short_revision``,
    ``created_at`` (build time to the millisecond, or push time from the GitLab
    API), ``updated_at`` (API only), ``total_size`` (layers only; ``size_bytes``
    from the API), ``layers``.

    regops's own, from the raw manifest (read with every type): ``manifest``
    (None when only the GitLab API was read), ``manifest_digest`` (what the tag
    points at: what apply re-checks), ``media_type``, ``placeholder``. ``image``
    is the manifest GitLab sees (the amd64 child of a list) and ``config`` its
    image config when read.
    """

    repository: str
    name: str
    manifest: Manifest | None
    config: ImageConfig | None = None
    image: Manifest | None = None
    gitlab: GitLabTag | None = None
    raw_digest: Digest | None = None

    @property
    def manifest_digest(self) -> Digest | None:
        """The digest the tag points at (a list's own digest, not its child's)."""
        if self.manifest is not None:
            return self.manifest.digest
        return self.raw_digest

    @property
    def digest(self) -> Digest | None:
        return self.gitlab.digest if self.gitlab is not None else None

    @property
    def media_type(self) -> str | None:
        if self.manifest is not None:
            return self.manifest.media_type
        return self.gitlab.media_type if self.gitlab is not None else None

    @property
    def layers(self) -> tuple[Descriptor, ...] | None:
        return self.gitlab.layers if self.gitlab is not None else None

    @property
    def total_size(self) -> int | None:
        return self.gitlab.total_size if self.gitlab is not None else None

    @property
    def revision(self) -> str | None:
        return self.gitlab.revision if self.gitlab is not None else None

    @property
    def short_revision(self) -> str | None:
        return self.gitlab.short_revision if self.gitlab is not None else None

    @property
    def created_at(self) -> datetime | None:
        return self.gitlab.created_at if self.gitlab is not None else None

    @property
    def updated_at(self) -> datetime | None:
        return self.gitlab.updated_at if self.gitlab is not None else None

    @property
    def placeholder(self) -> bool:
        if self.manifest is not None and is_placeholder(self.manifest):
            return True
        return self.config is not None and is_placeholder_config(self.config)


def gitlab_tag_of_row(row: ApiTag) -> GitLabTag:
    """GitLab's fields of a tag from its GitLab API row (``transform_tags_page``)."""
    return GitLabTag(
        digest=row.digest,
        revision=row.revision,
        created_at=row.created_at,
        total_size=row.size_bytes,
        layers=None,
        updated_at=row.updated_at,
        media_type=row.media_type,
        source=SOURCE_GITLAB_API,
    )


def _to_millisecond(value: datetime | None) -> datetime | None:
    """Cut to the millisecond, as GitLab's API gives times."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000) if value else None


class TagResolver:
    """Tags to :class:`TagDetails`, and content by digest, for one registry client.

    ``requests`` counts the registry requests it made (tag GETs included);
    ``memo_hits`` the reads answered from its parsed-object memory.
    """

    def __init__(
        self,
        client: RegistryClient,
        cache: ContentCache | None = None,
        *,
        parsed_entries: int = PARSED_ENTRIES,
        gitlab_api: GitLabRegistryAPI | None = None,
    ) -> None:
        self.client = client
        self.gitlab_api = gitlab_api
        self.cache = cache if cache is not None else ContentCache()
        self.requests = 0
        self.memo_hits = 0
        self.head_hits = 0  # tags whose HEAD gave a digest held here (no body fetched)
        self.head_misses = 0  # tags whose HEAD gave an unknown digest (then one GET)
        self._parsed_entries = parsed_entries
        self._parsed: OrderedDict[Digest, Manifest | ImageConfig] = OrderedDict()
        self._inflight: dict[Digest, threading.Event] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"TagResolver({self.client.url!r}, {self.cache!r}, requests={self.requests}, "
            f"memo_hits={self.memo_hits})"
        )

    # -- tags --------------------------------------------------------------------

    def tag(
        self,
        repository: str,
        tag: str,
        *,
        config: bool = True,
        api: bool = True,
        missing_ok: bool = True,
        head: bool = False,
    ) -> TagDetails | None:
        """What ``repository:tag`` points at now (one GET by tag); None when it is gone
        (RegistryNotFound instead, with the registry's reason, unless ``missing_ok``).

        ``head``: a HEAD by tag first (``Docker-Content-Digest``), the body only when
        that digest is not held here (then the GET by tag as without it): for a warm
        cache, where most digests are known. Either way the manifest is the one the tag
        points at, read with every type, so GitLab's view (a list's amd64 child) is the same.

        With the registry's GitLab API, GitLab's fields come from its tag row (one
        more request), as GitLab's ``ContainerRepository#tag`` reads them;
        ``api=False`` skips that (GitLab's fields then come from the manifest).
        """
        answered, details = False, None
        if head:
            answered, details = self._head_tag(repository, tag, config, missing_ok)
        if not answered:
            details = self._read_tag(repository, tag, config, missing_ok)
        if details is None or self.gitlab_api is None or not api:
            return details
        row = self.gitlab_api.tag(repository, tag)
        self._count()
        return replace(details, gitlab=gitlab_tag_of_row(row) if row is not None else None)

    def api_tags(self, repository: str) -> list[TagDetails]:
        """Every tag of ``repository`` from the registry's GitLab API, in its order, with
        GitLab's fields only (no manifest read: one request per 1000 tags)."""
        if self.gitlab_api is None:
            raise ValidationError("gitlab_api", "this registry has no GitLab API (/gitlab/v1/)")
        return [
            TagDetails(
                repository, row.name, None, gitlab=gitlab_tag_of_row(row), raw_digest=row.digest
            )
            for row in self._api_rows(repository)
        ]

    def _api_rows(self, repository: str) -> list[ApiTag]:
        assert self.gitlab_api is not None
        rows: list[ApiTag] = []
        for page in self.gitlab_api.tag_pages(repository):
            self._count()
            rows.extend(page)
        return rows

    def tag_at(
        self, repository: str, tag: str, digest: Digest, *, config: bool = True
    ) -> TagDetails:
        """``tag`` known to point at ``digest`` (a storage link): the manifest by digest."""
        return self._details(repository, tag, self.manifest(repository, digest), config)

    def tags(
        self,
        repository: str,
        names: Sequence[str],
        *,
        config: bool = True,
        workers: int = DETAIL_WORKERS,
    ) -> list[TagDetails]:
        """Every named tag resolved, ``workers`` at a time; tags gone meanwhile are left out.

        With the registry's GitLab API, GitLab's fields come from its tags list
        (one request per 1000 tags) and the tags come in that list's order.
        """
        if not names:
            return []
        read = self._read_tag
        if len(names) == 1 or workers <= 1:
            found = [read(repository, name, config) for name in names]
        else:
            with ThreadPoolExecutor(min(workers, len(names)), "regops-tags") as pool:
                found = list(pool.map(lambda n: read(repository, n, config), names))
        resolved = [details for details in found if details is not None]
        if self.gitlab_api is None:
            return resolved
        # GitLab's fields from the API's rows, and the API's order (its cleanup pages it).
        rows = {row.name: row for row in self._api_rows(repository)}
        rank = {name: i for i, name in enumerate(rows)}
        merged = [
            replace(d, gitlab=gitlab_tag_of_row(rows[d.name]) if d.name in rows else None)
            for d in resolved
        ]
        return sorted(merged, key=lambda d: rank.get(d.name, len(rank)))

    def _head_tag(
        self, repository: str, tag: str, config: bool, missing_ok: bool
    ) -> tuple[bool, TagDetails | None]:
        """One HEAD by tag: (True, details) when its digest is held here or the tag is gone
        (None), (False, None) when the body must be fetched."""
        try:
            digest = self.client.manifest_digest(repository, tag, fallback=False)
        except RegistryNotFound:
            if missing_ok:
                return True, None
            raise
        finally:
            self._count()
        if digest is None or not self.known(digest):
            with self._lock:
                self.head_misses += 1
            return False, None
        manifest = self.manifest(repository, digest)
        with self._lock:
            self.head_hits += 1
        return True, self._details(repository, tag, manifest, config)

    def _read_tag(
        self, repository: str, tag: str, config: bool, missing_ok: bool = True
    ) -> TagDetails | None:
        """One GET by tag and GitLab's view from the manifest (no API row)."""
        try:
            manifest = self.client.get_manifest(repository, tag)
        except RegistryNotFound:
            if missing_ok:
                return None
            raise
        finally:
            self._count()
        return self._details(repository, tag, self._remember_manifest(manifest), config)

    def _details(self, repository: str, tag: str, manifest: Manifest, config: bool) -> TagDetails:
        """The tag with GitLab's view: the manifest GitLab's Accept gets, and its config."""
        image = self.gitlab_image(repository, manifest)
        image_config = None
        if config and image is not None and image.config is not None:
            image_config = self.config(repository, image.config.digest)
        gitlab = GitLabTag.of_image(image, image_config) if image is not None else None
        return TagDetails(repository, tag, manifest, image_config, image, gitlab)

    def gitlab_image(self, repository: str, manifest: Manifest) -> Manifest | None:
        """The manifest GitLab reads for a tag at ``manifest`` (a list's amd64 child,
        fetched by digest once); None when GitLab gets a 404 (an OCI index)."""
        seen = gitlab_image_of(manifest)
        if seen is None or isinstance(seen, Manifest):
            return seen
        try:
            child = self.manifest(repository, seen.digest)
        except RegistryNotFound:  # Distribution answers 404 too: GitLab has no manifest
            return None
        return None if child.is_index else child  # a nested index: GitLab cannot read it

    # -- content by digest -------------------------------------------------------

    def manifest(self, repository: str, digest: Digest | str) -> Manifest:
        """The manifest ``digest``: from memory, the cache, or one fetch from ``repository``."""
        digest = Digest.parse(digest)
        return self._once(digest, Manifest, lambda: self._load_manifest(repository, digest))

    def config(self, repository: str, digest: Digest | str) -> ImageConfig:
        """The image config blob ``digest``, the same way."""
        digest = Digest.parse(digest)
        return self._once(digest, ImageConfig, lambda: self._load_config(repository, digest))

    def pinned_blobs(self, repository: str, manifest: Manifest) -> dict[Digest, int]:
        """Every blob ``manifest`` keeps alive, with its size: its own and, for an index,
        each child's (read through this resolver)."""
        blobs = manifest.blob_sizes()
        for child in manifest.children:
            blobs.update(self.manifest(repository, child.digest).blob_sizes())
        return blobs

    def known(self, digest: Digest) -> bool:
        """True when ``digest`` is in memory or the cache (no request)."""
        with self._lock:
            if digest in self._parsed:
                return True
        return digest in self.cache

    def _load_manifest(self, repository: str, digest: Digest) -> Manifest:
        raw = self.cache.get(digest)
        if raw is not None:
            return parse_manifest(raw, digest=digest)
        try:
            manifest = self.client.get_manifest(repository, digest)
        finally:
            self._count()
        self.cache.put(digest, manifest.raw)
        return manifest

    def _load_config(self, repository: str, digest: Digest) -> ImageConfig:
        raw = self.cache.get(digest)
        if raw is None:
            try:
                raw = self.client.get_blob(repository, digest)
            finally:
                self._count()
            self.cache.put(digest, raw)
        return ImageConfig.parse(raw)

    def _remember_manifest(self, manifest: Manifest) -> Manifest:
        """Keep a manifest fetched by tag under its digest; the first copy wins."""
        if manifest.is_schema1:  # a schema 1 digest does not verify its bytes: not cached
            return manifest
        with self._lock:
            known = self._parsed.get(manifest.digest)
            if isinstance(known, Manifest):
                self._parsed.move_to_end(manifest.digest)
                return known
            self._store(manifest.digest, manifest)
        if manifest.digest not in self.cache:
            self.cache.put(manifest.digest, manifest.raw)
        return manifest

    def _once(self, digest: Digest, kind: type[T], load: Callable[[], T]) -> T:
        """``load()`` for ``digest`` once at a time: other threads wait and share the result."""
        while True:
            with self._lock:
                known = self._parsed.get(digest)
                if isinstance(known, kind):
                    self._parsed.move_to_end(digest)
                    self.memo_hits += 1
                    return known
                event = self._inflight.get(digest)
                if event is None:  # this thread loads; the others wait for its event
                    mine = self._inflight[digest] = threading.Event()
                    break
            event.wait()  # the owner finished (or failed: then one of us tries again)
        try:
            value = load()
            with self._lock:
                self._store(digest, value)
            return value
        finally:
            with self._lock:
                self._inflight.pop(digest, None)
            mine.set()

    def _store(self, digest: Digest, value: Manifest | ImageConfig) -> None:
        """Into the bounded LRU; the caller holds the lock."""
        self._parsed[digest] = value
        self._parsed.move_to_end(digest)
        while len(self._parsed) > self._parsed_entries:
            self._parsed.popitem(last=False)

    def _count(self) -> None:
        with self._lock:
            self.requests += 1
