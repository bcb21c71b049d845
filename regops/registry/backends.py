"""Where the registry keeps its files: one small interface over its storage drivers.

The Distribution registry stores the same layout (``docker/registry/v2/...``,
see :mod:`regops.registry.storage`) through a storage driver. regops reads it
through :class:`StorageBackend`, the few primitives the registry's own
garbage collector uses (list a folder, walk below a prefix, read a small
file), with two implementations:

- :class:`FilesystemBackend`: the ``filesystem`` driver's ``rootdirectory``;
- :class:`S3Backend`: the ``s3`` driver's bucket and ``rootdirectory`` prefix
  (boto3; paginated listings, one request per 1,000 keys; the listing gives
  each object's size, so nothing is HEAD'ed).

Keys are ``/``-separated and relative to the driver's root, e.g.
``docker/registry/v2/blobs/sha256/ab/ab12…/data``. Everything here only reads.

>>> backend = FilesystemBackend("/var/opt/gitlab/gitlab-rails/shared/registry")
>>> sum(f.size for f in backend.walk("docker/registry/v2/blobs"))  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from regops.errors import ConfigError, StorageError
from regops.secrets import redact

MAX_SMALL_READ = 4 * 1024 * 1024  # a manifest is at most 4 MiB (the registry's own limit)
S3_PAGE_SIZE = 1000  # keys per ListObjectsV2 page: S3's maximum, so a listing costs the fewest
S3_READERS = 16  # concurrent GETs for small objects: a round trip each, latency-bound
STREAM_CHUNK = 1024 * 1024  # bytes per read when hashing a blob


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file (object) of the storage: its key, size in bytes and modification time."""

    key: str
    size: int
    modified: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Entry:
    """A direct child of a folder: its name and whether it is a folder."""

    name: str
    is_dir: bool


def join(*parts: str) -> str:
    """Keys joined with ``/`` (empty parts dropped)."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class StorageBackend(ABC):
    """Read-only access to a registry storage, whatever the driver.

    ``list`` and ``walk`` answer like the registry's drivers: a folder that
    does not exist (on S3: has no object below it) lists as None.
    """

    kind: str = ""

    @abstractmethod
    def describe(self) -> str:
        """Where this is (a path, ``s3://bucket/prefix``), never a credential."""

    @abstractmethod
    def walk(self, prefix: str) -> Iterator[StoredFile]:
        """Every file below ``prefix`` (any depth), in no particular order."""

    @abstractmethod
    def list(self, prefix: str) -> list[Entry] | None:
        """The direct children of folder ``prefix``, sorted by name; None when it is absent."""

    @abstractmethod
    def read(self, key: str, limit: int = MAX_SMALL_READ) -> bytes | None:
        """The content of a small file (at most ``limit`` bytes read); None when absent."""

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """A stream of the file's bytes (for hashing a blob); StorageError when absent."""

    def read_many(
        self, keys: Iterable[str], limit: int = MAX_SMALL_READ
    ) -> dict[str, bytes | None]:
        """``read`` for each key (concurrently where a read is a network round trip)."""
        return {key: self.read(key, limit) for key in keys}

    def prefetch(self, prefix: str) -> None:  # noqa: B027 (a no-op where listing is cheap)
        """Hint: ``list``/``walk`` calls below ``prefix`` follow (S3: from one listing)."""

    @property
    def requests(self) -> int:
        """Requests sent to a remote store so far (0 for the filesystem)."""
        return 0

    def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release connections."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


# --------------------------------------------------------------------------- filesystem


class FilesystemBackend(StorageBackend):
    """The ``filesystem`` driver: files under ``rootdirectory``.

    Symlinked folders are not entered, and a read never follows a symlink out
    of the root (StorageError naming the path, never the content).
    """

    kind = "filesystem"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._real_root = os.path.realpath(self.root)

    def describe(self) -> str:
        return self.root

    def path(self, key: str) -> str:
        """The file system path of ``key``."""
        return os.path.join(self.root, *key.split("/")) if key else self.root

    def walk(self, prefix: str) -> Iterator[StoredFile]:
        base = self.path(prefix)
        stack = [(base, prefix.strip("/"))]
        while stack:
            folder, key = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                child = f"{key}/{entry.name}" if key else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, child))
                elif entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    yield StoredFile(child, info.st_size, info.st_mtime)

    def list(self, prefix: str) -> list[Entry] | None:
        try:
            entries = list(os.scandir(self.path(prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        found = [Entry(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        return sorted(found, key=lambda e: e.name)

    def read(self, key: str, limit: int = MAX_SMALL_READ) -> bytes | None:
        path = self.path(key)
        try:
            handle = self._open_fd(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        try:
            chunks, left = [], limit
            while left > 0:
                chunk = os.read(handle, min(left, STREAM_CHUNK))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        except IsADirectoryError:
            return None
        finally:
            os.close(handle)

    def open(self, key: str) -> IO[bytes]:
        path = self.path(key)
        try:
            return os.fdopen(self._open_fd(path), "rb")
        except FileNotFoundError:
            raise StorageError(path, "missing") from None

    def size(self, key: str) -> int | None:
        """The file's size, None when it is not a regular file."""
        try:
            info = os.lstat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def _open_fd(self, path: str) -> int:
        try:
            return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # ELOOP: the file itself is a symlink
                raise
        real = os.path.realpath(path)
        if not real.startswith(self._real_root + os.sep):
            raise StorageError(path, f"a symlink leads outside the storage root {self.root}")
        return os.open(path, os.O_RDONLY)


# --------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Location:
    """The ``s3`` driver's parameters regops needs (credentials kept out of repr)."""

    bucket: str
    rootdirectory: str = ""
    region: str | None = None
    regionendpoint: str | None = None
    accesskey: str | None = None
    secretkey: str | None = None
    secure: bool = True
    skipverify: bool = False

    def __repr__(self) -> str:
        return f"S3Location({self.describe()!r})"

    @property
    def prefix(self) -> str:
        """The key prefix of the driver's root (``rootdirectory`` without slashes)."""
        return self.rootdirectory.strip("/")

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.regionendpoint}" if self.regionendpoint else where


class S3Backend(StorageBackend):
    """The ``s3`` driver: objects in a bucket, below the ``rootdirectory`` prefix."""

    kind = "s3"

    def __init__(self, location: S3Location, *, client: Any = None) -> None:
        self.location = location
        self._client = client or _make_s3_client(location)
        self._requests = 0
        self._count_lock = threading.Lock()
        self._client.meta.events.register("before-send.s3.*", self._count)
        # prefix -> sorted keys and their (size, mtime), from one flat listing
        self._snapshots: dict[str, tuple[list[str], dict[str, tuple[int, float]]]] = {}

    def describe(self) -> str:
        return self.location.describe()

    @property
    def requests(self) -> int:
        return self._requests

    def _count(self, **_: Any) -> None:
        with self._count_lock:
            self._requests += 1

    def _key(self, key: str) -> str:
        return join(self.location.prefix, key)

    def _relative(self, full: str) -> str:
        prefix = self.location.prefix
        return full[len(prefix) + 1 :] if prefix else full

    def _snapshot_for(self, prefix: str) -> tuple[list[str], dict[str, tuple[int, float]]] | None:
        for base, snapshot in self._snapshots.items():
            if prefix == base or prefix.startswith(base + "/"):
                return snapshot
        return None

    def _list_flat(self, prefix: str) -> Iterator[StoredFile]:
        """One paginated ListObjectsV2 pass over every key below ``prefix``."""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.location.bucket,
            Prefix=self._key(prefix) + "/",
            PaginationConfig={"PageSize": S3_PAGE_SIZE},
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield StoredFile(
                        self._relative(item["Key"]),
                        int(item["Size"]),
                        item["LastModified"].timestamp(),
                    )
        except Exception as exc:  # botocore's errors: no shared base worth importing here
            raise _s3_error(self.location, exc) from None

    def prefetch(self, prefix: str) -> None:
        prefix = prefix.strip("/")
        if self._snapshot_for(prefix) is not None:
            return
        files = {f.key: (f.size, f.modified) for f in self._list_flat(prefix)}
        self._snapshots[prefix] = (sorted(files), files)

    def walk(self, prefix: str) -> Iterator[StoredFile]:
        prefix = prefix.strip("/")
        snapshot = self._snapshot_for(prefix)
        if snapshot is None:
            yield from self._list_flat(prefix)
            return
        keys, info = snapshot
        start = prefix + "/"
        for index in range(bisect.bisect_left(keys, start), len(keys)):
            key = keys[index]
            if not key.startswith(start):
                break
            size, modified = info[key]
            yield StoredFile(key, size, modified)

    def list(self, prefix: str) -> list[Entry] | None:
        prefix = prefix.strip("/")
        snapshot = self._snapshot_for(prefix)
        if snapshot is not None:
            return _list_from_snapshot(snapshot[0], prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        entries: dict[str, bool] = {}
        full = self._key(prefix) + "/"
        try:
            for page in paginator.paginate(
                Bucket=self.location.bucket,
                Prefix=full,
                Delimiter="/",
                PaginationConfig={"PageSize": S3_PAGE_SIZE},
            ):
                for item in page.get("CommonPrefixes", ()):
                    entries[item["Prefix"][len(full) :].rstrip("/")] = True
                for item in page.get("Contents", ()):
                    entries.setdefault(item["Key"][len(full) :], False)
        except Exception as exc:
            raise _s3_error(self.location, exc) from None
        if not entries:
            return None
        return [Entry(name, is_dir) for name, is_dir in sorted(entries.items())]

    def read(self, key: str, limit: int = MAX_SMALL_READ) -> bytes | None:
        try:
            answer = self._client.get_object(
                Bucket=self.location.bucket, Key=self._key(key), Range=f"bytes=0-{limit - 1}"
            )
        except Exception as exc:
            if _is_missing(exc):
                return None
            if _error_code(exc) == "InvalidRange":  # S3's answer for a range of an empty object
                return b""
            raise _s3_error(self.location, exc) from None
        with answer["Body"] as body:
            return body.read()

    def read_many(
        self, keys: Iterable[str], limit: int = MAX_SMALL_READ
    ) -> dict[str, bytes | None]:
        keys = list(keys)
        if len(keys) < 2:
            return {key: self.read(key, limit) for key in keys}
        with ThreadPoolExecutor(max_workers=min(S3_READERS, len(keys))) as pool:
            return dict(zip(keys, pool.map(lambda k: self.read(k, limit), keys), strict=True))

    def open(self, key: str) -> IO[bytes]:
        try:
            answer = self._client.get_object(Bucket=self.location.bucket, Key=self._key(key))
        except Exception as exc:
            if _is_missing(exc):
                where = f"s3://{self.location.bucket}/{self._key(key)}"
                raise StorageError(where, "missing") from None
            raise _s3_error(self.location, exc) from None
        return answer["Body"]

    def close(self) -> None:
        self._client.close()


def _list_from_snapshot(keys: list[str], prefix: str) -> list[Entry] | None:
    """The direct children of ``prefix`` in a sorted key list (None when there are none)."""
    start = prefix + "/"
    entries: dict[str, bool] = {}
    index = bisect.bisect_left(keys, start)
    while index < len(keys) and keys[index].startswith(start):
        rest = keys[index][len(start) :]
        name, slash, _ = rest.partition("/")
        if slash:
            entries[name] = True
            # skip every key below this child folder at once
            index = bisect.bisect_left(keys, f"{start}{name}0", index)  # "0" follows "/"
        else:
            entries.setdefault(name, False)
            index += 1
    if not entries:
        return None
    return [Entry(name, is_dir) for name, is_dir in sorted(entries.items())]


def _make_s3_client(location: S3Location) -> Any:
    """A boto3 S3 client for the driver's parameters (path-style with a custom endpoint)."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise ConfigError(
            "reading S3 storage needs boto3, which is not installed: pip install 'regops[s3]'"
        ) from None
    options: dict[str, Any] = {"region_name": location.region or "us-east-1"}
    config: dict[str, Any] = {
        "retries": {"max_attempts": 5, "mode": "standard"},
        "max_pool_connections": S3_READERS,  # one connection per concurrent reader
    }
    if location.regionendpoint:
        endpoint = location.regionendpoint
        if "://" not in endpoint:
            endpoint = ("https://" if location.secure else "http://") + endpoint
        options["endpoint_url"] = endpoint
        # The registry's driver uses path-style requests with a custom endpoint, too.
        config["s3"] = {"addressing_style": "path"}
    if location.accesskey and location.secretkey:
        options["aws_access_key_id"] = location.accesskey
        options["aws_secret_access_key"] = location.secretkey
    if location.skipverify:
        options["verify"] = False
    try:
        return boto3.client("s3", config=Config(**config), **options)
    except BotoCoreError as exc:  # e.g. AWS_CA_BUNDLE naming no file; never a credential
        raise ConfigError(
            f"cannot set up the S3 client for s3://{location.bucket}: {redact(str(exc))}"
        ) from None


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_missing(exc: Exception) -> bool:
    return _error_code(exc) in {"NoSuchKey", "404", "NotFound"}


def _s3_error(location: S3Location, exc: Exception) -> StorageError:
    """A StorageError naming the bucket and S3's error code (never a credential)."""
    code = _error_code(exc) or type(exc).__name__
    return StorageError(f"s3://{location.bucket}/{location.prefix}", f"S3 request failed: {code}")
