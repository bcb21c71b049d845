"""A content-addressed cache of manifests and config blobs, in memory and on disk.

Content named by its digest never changes, so a cached entry is valid forever;
the cache still checks every entry's sha256 when it stores and when it reads
from disk, and drops a file that does not match.

>>> cache = ContentCache(default_cache_dir())  # doctest: +SKIP
>>> reader = CachingReader(client, cache)  # doctest: +SKIP
>>> reader.manifest("group/app", digest).total_size  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from regops.errors import ValidationError
from regops.registry.manifest import ImageConfig, Manifest, parse_manifest
from regops.registry.reference import DIGEST_ALGORITHM, Digest

if TYPE_CHECKING:
    from regops.registry.client import RegistryClient

log = logging.getLogger("regops.registry.cache")

APP_NAME = "regops"
CACHE_SUBDIR = "content"
# Entries kept in memory: manifests and configs are a few KiB, so ~100 MiB at worst.
MEMORY_ENTRIES = 20_000
# Anything larger is not a manifest or config (the registry caps manifests at 4 MiB).
MAX_ENTRY_BYTES = 4 * 1024 * 1024


def default_cache_dir() -> Path:
    """``<user cache dir>/regops/content`` (platformdirs)."""
    return platformdirs.user_cache_path(APP_NAME) / CACHE_SUBDIR


class ContentCache:
    """Bytes by digest: an LRU in memory, plus ``<dir>/sha256/<2 hex>/<hex>`` on disk."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        memory_entries: int = MEMORY_ENTRIES,
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.memory_entries = memory_entries
        self._memory: OrderedDict[Digest, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        where = str(self.directory) if self.directory else "memory only"
        counts = f"entries={len(self._memory)}, hits={self.hits}, misses={self.misses}"
        return f"ContentCache({where}, {counts})"

    def path(self, digest: str) -> Path:
        """Where ``digest`` lives on disk (ValidationError without a directory)."""
        if self.directory is None:
            raise ValidationError("directory", "this cache has no directory")
        digest = Digest.parse(digest)
        return self.directory / digest.algorithm / digest.hex[:2] / digest.hex

    def get(self, digest: str) -> bytes | None:
        """The bytes for ``digest``, or None (counted as a miss)."""
        digest = Digest.parse(digest)
        with self._lock:
            data = self._memory.get(digest)
            if data is not None:
                self._memory.move_to_end(digest)
                self.hits += 1
                return data
        data = self._read_disk(digest)
        with self._lock:
            if data is None:
                self.misses += 1
                return None
            self.hits += 1
            self._remember(digest, data)
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest``; ValidationError when it does not hash to it."""
        digest = Digest.parse(digest)
        data = bytes(data)
        if not digest.verify(data):
            raise ValidationError(
                "digest", f"content hashes to {Digest.of(data)}, not {digest}; not cached"
            )
        if len(data) > MAX_ENTRY_BYTES:
            return  # not a manifest or config: not worth keeping
        with self._lock:
            self._remember(digest, data)
        if self.directory is not None:
            self._write_disk(digest, data)

    def holds_any(self) -> bool:
        """True when anything is cached, in memory or on disk (one directory read)."""
        with self._lock:
            if self._memory:
                return True
        if self.directory is None:
            return False
        try:
            with os.scandir(self.directory / DIGEST_ALGORITHM) as prefixes:
                for prefix in prefixes:
                    if prefix.is_dir():
                        with os.scandir(prefix.path) as entries:
                            if any(not e.name.startswith(".") for e in entries):
                                return True
        except FileNotFoundError:
            pass
        return False

    def __contains__(self, value: object) -> bool:
        try:
            digest = Digest.parse(value)
        except ValidationError:
            return False
        with self._lock:
            if digest in self._memory:
                return True
        return self.directory is not None and self.path(digest).is_file()

    def _remember(self, digest: Digest, data: bytes) -> None:
        """Add to the LRU; the caller holds the lock."""
        self._memory[digest] = data
        self._memory.move_to_end(digest)
        while len(self._memory) > self.memory_entries:
            self._memory.popitem(last=False)

    def _read_disk(self, digest: Digest) -> bytes | None:
        if self.directory is None:
            return None
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if digest.verify(data):
            return data
        log.warning("dropping corrupt cache entry %s (content does not match)", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None

    def _write_disk(self, digest: Digest, data: bytes) -> None:
        """Write via a temporary file and ``os.replace``: readers never see half a file."""
        path = self.path(digest)
        if path.is_file():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


class CachingReader:
    """Manifests and configs by digest through a :class:`ContentCache`.

    ``requests`` counts the fetches that went to the registry.
    """

    def __init__(self, client: RegistryClient, cache: ContentCache | None = None) -> None:
        self.client = client
        self.cache = cache if cache is not None else ContentCache()
        self.requests = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CachingReader({self.client!r}, {self.cache!r}, requests={self.requests})"

    def manifest(self, repo: str, digest: str) -> Manifest:
        """The manifest ``digest`` (fetched from ``repo`` on a miss)."""
        digest = Digest.parse(digest)
        raw = self.cache.get(digest)
        if raw is not None:
            return parse_manifest(raw, digest=digest)
        manifest = self.client.get_manifest(repo, digest)
        self._count()
        self.cache.put(digest, manifest.raw)
        return manifest

    def config(self, repo: str, digest: str) -> ImageConfig:
        """The config blob ``digest`` (fetched from ``repo`` on a miss)."""
        digest = Digest.parse(digest)
        raw = self.cache.get(digest)
        if raw is None:
            raw = self.client.get_blob(repo, digest)
            self._count()
            self.cache.put(digest, raw)
        return ImageConfig.parse(raw)

    def _count(self) -> None:
        with self._lock:
            self.requests += 1
