"""What tags point at: one resolver per connection, each digest fetched once.

A tag is resolved in one of two ways: over HTTP, one ``GET`` of its manifest
by tag (the only way the v2 API tells what a tag points at; the body comes with
it); or, on the registry host, from the digest in its storage link file, then
the manifest by digest. Everything fetched by digest (manifests, image
configs) is content-addressed: parsed once and kept in a bounded in-memory
LRU, read through the on-disk :class:`~regops.registry.cache.ContentCache`,
and fetched from the registry at most once at a time however many threads ask.

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
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from regops.errors import RegistryNotFound
from regops.registry.cache import ContentCache
from regops.registry.client import RegistryClient
from regops.registry.manifest import Descriptor, ImageConfig, Manifest, parse_manifest
from regops.registry.reference import Digest
from regops.registry.safe_delete import is_placeholder, is_placeholder_config

SHORT_REVISION = 9  # GitLab's Tag#short_revision: revision[0..8]
PARSED_ENTRIES = 20_000  # parsed manifests/configs kept in memory (a few KiB each)
DETAIL_WORKERS = 8  # concurrent tag reads for one repository: well under the HTTP pool

T = TypeVar("T", Manifest, ImageConfig)


@dataclass(frozen=True)
class TagDetails:
    """One tag, resolved: its manifest (and image config when asked), with GitLab's fields.

    - ``total_size``: sum of layer sizes (config excluded); None for an index/list.
    - ``revision``: the config digest's hex; ``short_revision`` its first 9 characters.
    - ``created_at``: the config's ``created`` (build time, not push time), cut
      to the millisecond as GitLab's API gives it.
    - ``placeholder``: the tag sits on a regops placeholder (an interrupted delete).
    """

    repository: str
    name: str
    manifest: Manifest
    config: ImageConfig | None = None

    @property
    def digest(self) -> Digest:
        return self.manifest.digest

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return self.manifest.layers

    @property
    def total_size(self) -> int | None:
        return self.manifest.total_size

    @property
    def revision(self) -> str | None:
        config = self.manifest.config
        return config.digest.hex if config is not None else None

    @property
    def short_revision(self) -> str | None:
        revision = self.revision
        return revision[:SHORT_REVISION] if revision else None

    @property
    def created_at(self) -> datetime | None:
        created = self.config.created if self.config is not None else None
        return created.replace(microsecond=created.microsecond // 1000 * 1000) if created else None

    @property
    def placeholder(self) -> bool:
        if is_placeholder(self.manifest):
            return True
        return self.config is not None and is_placeholder_config(self.config)


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
    ) -> None:
        self.client = client
        self.cache = cache if cache is not None else ContentCache()
        self.requests = 0
        self.memo_hits = 0
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
        self, repository: str, tag: str, *, config: bool = True, missing_ok: bool = True
    ) -> TagDetails | None:
        """What ``repository:tag`` points at now (one GET by tag); None when it is gone
        (RegistryNotFound instead, with the registry's reason, unless ``missing_ok``)."""
        try:
            manifest = self.client.get_manifest(repository, tag)
        except RegistryNotFound:
            if missing_ok:
                return None
            raise
        finally:
            self._count()
        manifest = self._remember_manifest(manifest)
        return self._details(repository, tag, manifest, config)

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
        """Every named tag resolved, ``workers`` at a time; tags gone meanwhile are left out."""
        if not names:
            return []
        if len(names) == 1 or workers <= 1:
            found = [self.tag(repository, name, config=config) for name in names]
        else:
            with ThreadPoolExecutor(min(workers, len(names)), "regops-tags") as pool:
                found = list(pool.map(lambda n: self.tag(repository, n, config=config), names))
        return [details for details in found if details is not None]

    def _details(self, repository: str, tag: str, manifest: Manifest, config: bool) -> TagDetails:
        image_config = None
        if config and manifest.config is not None and not manifest.is_index:
            image_config = self.config(repository, manifest.config.digest)
        return TagDetails(repository, tag, manifest, image_config)

    # -- content by digest -------------------------------------------------------

    def manifest(self, repository: str, digest: Digest | str) -> Manifest:
        """The manifest ``digest``: from memory, the cache, or one fetch from ``repository``."""
        digest = Digest.parse(digest)
        return self._once(digest, Manifest, lambda: self._load_manifest(repository, digest))

    def config(self, repository: str, digest: Digest | str) -> ImageConfig:
        """The image config blob ``digest``, the same way."""
        digest = Digest.parse(digest)
        return self._once(digest, ImageConfig, lambda: self._load_config(repository, digest))

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
