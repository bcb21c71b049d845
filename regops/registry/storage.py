"""A read-only view of the registry's filesystem storage layout.

Under ``<rootdirectory>/docker/registry/v2/``: ``blobs/sha256/<2 hex>/<hex>/data``
and ``repositories/<name…>/{_layers,_manifests,_uploads}``. Useful to check
what garbage collection or a cleanup really left on disk; it never writes.

>>> storage = RegistryStorage("/var/opt/gitlab/gitlab-rails/shared/registry")
>>> storage.repositories()  # doctest: +SKIP
['group/app', 'group/app/cache']
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from regops.errors import StorageError, ValidationError
from regops.registry.layout import (
    CURRENT_DIR,
    DATA_FILE,
    LAYERS_DIR,
    LINK_FILE,
    MANIFESTS_DIR,
    MAX_LINK_BYTES,
    UPLOADS_DIR,
    V2_ROOT,
)
from regops.registry.reference import Digest, validate_repository_name, validate_tag

V2_PREFIX = Path(V2_ROOT)
SEP = os.sep  # paths are joined as strings on the per-tag path (os.path.join costs ~1 us a part)


class RegistryStorage:
    """Read-only access to a filesystem-driver registry storage root.

    Nothing under ``repositories/`` is read through a symlink that leads outside
    the root (StorageError naming the path), and a file that is not a digest link
    is reported by its path, never by its content.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.v2 = self.root / V2_PREFIX
        self._repositories = str(self.v2 / "repositories")  # plain str: joined per tag
        self._real_root = os.path.realpath(self.root)
        # Folders already resolved under the root; each is resolved once per object.
        self._checked_dirs: set[str] = set()

    def __repr__(self) -> str:
        return f"RegistryStorage({str(self.root)!r})"

    # ------------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        """Where the blob's bytes live (whether or not the file exists)."""
        digest = Digest.parse(digest)
        return self.v2 / "blobs" / digest.algorithm / digest.hex[:2] / digest.hex / DATA_FILE

    def blob_size(self, digest: str) -> int | None:
        """The blob's size in bytes, None when it is not stored."""
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blobs(self) -> Iterator[Digest]:
        """Every stored blob (manifests included), in path order."""
        base = self.v2 / "blobs" / "sha256"
        if not base.is_dir():
            return
        for data in sorted(base.glob(f"*/*/{DATA_FILE}")):  # stray files are not matched
            folder = data.parent
            if data.is_file() and folder.parent.name == folder.name[:2]:
                try:
                    yield Digest(f"sha256:{folder.name}")
                except ValidationError:  # not a digest: not a blob the registry wrote
                    continue

    def total_blob_bytes(self) -> int:
        """Bytes used by all blobs (what a garbage collection can shrink)."""
        return sum(self.blob_size(d) or 0 for d in self.blobs())

    # ------------------------------------------------------------------ repositories

    def _repo_dir(self, repo: str, *parts: str) -> str:
        """A folder of ``repo`` (``_manifests/tags``, ...), checked to stay under the root."""
        return self._checked_dir(
            SEP.join((self._repositories, validate_repository_name(repo), *parts))
        )

    def repositories(self) -> list[str]:
        """Repository names (folders that hold ``_layers``), sorted."""
        base = self.v2 / "repositories"
        if not base.is_dir():
            return []
        names = []
        for dirpath, dirnames, _files in os.walk(base):  # symlinked folders: not entered
            if LAYERS_DIR in dirnames:
                names.append(Path(dirpath).relative_to(base).as_posix())
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(names)

    def tags(self, repo: str) -> list[str]:
        """Tag names of ``repo`` that point at something (``current/link`` exists), sorted."""
        base = self._repo_dir(repo, MANIFESTS_DIR, "tags")
        return sorted(n for n in _list_dir(base) if self._is_file(base, n, CURRENT_DIR, LINK_FILE))

    def tag_digest(self, repo: str, tag: str) -> Digest | None:
        """The manifest digest ``repo:tag`` points at, None when the tag is absent."""
        # str joins, not pathlib or os.path.join: a usage scan reads one link per tag,
        # and six Path joins per tag cost more than reading the file.
        base = self._repo_dir(repo, MANIFESTS_DIR, "tags")
        return self._read_link(base, validate_tag(tag), CURRENT_DIR, LINK_FILE)

    def manifest_revisions(self, repo: str) -> list[Digest]:
        """Manifests linked in ``repo`` (tagged or not), sorted."""
        return self._links(self._repo_dir(repo, MANIFESTS_DIR, "revisions", "sha256"))

    def layer_links(self, repo: str) -> list[Digest]:
        """Blobs linked into ``repo`` (layers and configs), sorted."""
        return self._links(self._repo_dir(repo, LAYERS_DIR, "sha256"))

    def uploads(self, repo: str) -> list[str]:
        """Ids of in-progress uploads in ``repo``."""
        return sorted(_list_dir(self._repo_dir(repo, UPLOADS_DIR)))

    def _links(self, base: str) -> list[Digest]:
        found = (self._read_link(base, name, LINK_FILE) for name in _list_dir(base))
        return sorted(d for d in found if d is not None)

    # ------------------------------------------------------------------ safe reads

    def _check_inside(self, path: str) -> None:
        """StorageError unless ``path``, every symlink resolved, stays under the root."""
        real = os.path.realpath(path)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise StorageError(path, f"a symlink leads outside the storage root {self.root}")

    def _checked_dir(self, directory: str) -> str:
        """``directory`` once it resolved under the root (cached: resolving costs ~60 us)."""
        if directory not in self._checked_dirs:
            self._check_inside(directory)
            if os.path.isdir(directory):  # a missing one is checked again when it appears
                self._checked_dirs.add(directory)
        return directory

    def _below(self, directory: str, *parts: str) -> tuple[str, bool]:
        """``directory/parts…`` and whether it is already resolved and checked.

        Cheap: the folders between ``directory`` (checked) and the last part are
        lstat'ed; only a symlink among them costs resolving the whole path.
        FileNotFoundError when one of them is missing.
        """
        current = directory
        for part in parts[:-1]:
            current = f"{current}{SEP}{part}"
            if stat.S_ISLNK(os.lstat(current).st_mode):
                path = SEP.join((directory, *parts))
                self._check_inside(path)
                return path, True
        return f"{current}{SEP}{parts[-1]}", False

    def _open(self, path: str, resolved: bool) -> int:
        """A read-only descriptor; the last component, if a symlink, must stay under the root."""
        if not resolved:
            try:
                return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError as exc:
                if exc.errno != errno.ELOOP:  # ELOOP: the file itself is a symlink
                    raise
            self._check_inside(path)
        return os.open(path, os.O_RDONLY)

    def _is_file(self, directory: str, *parts: str) -> bool:
        """True when ``directory/parts…`` is a regular file under the root."""
        try:
            path, resolved = self._below(directory, *parts)
            if not resolved and stat.S_ISLNK(os.lstat(path).st_mode):
                self._check_inside(path)
            return stat.S_ISREG(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _read_link(self, directory: str, *parts: str) -> Digest | None:
        """The digest in the ``link`` file ``directory/parts…``; None when missing.

        StorageError when it is not a digest link (naming the path only: the
        content may be anything a symlink pointed at, a private key say).
        """
        try:  # os.open/os.read: a text-mode file object costs more than this whole read
            handle = self._open(*self._below(directory, *parts))
        except FileNotFoundError:
            return None
        try:
            data = os.read(handle, MAX_LINK_BYTES)
        finally:
            os.close(handle)
        digest = _digest_or_none(data)
        if digest is None:
            raise StorageError(SEP.join((directory, *parts)), "not a digest link")
        return digest


def _list_dir(directory: str) -> list[str]:
    """The names in ``directory``; [] when it does not exist."""
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _digest_or_none(data: bytes) -> Digest | None:
    """The digest ``data`` holds, or None; the error (which quotes the data) is dropped here."""
    try:
        return Digest(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValidationError):
        return None
