"""A read-only view of the registry's filesystem storage layout.

Under ``<rootdirectory>/docker/registry/v2/``: ``blobs/sha256/<2 hex>/<hex>/data``
and ``repositories/<name…>/{_layers,_manifests,_uploads}``. Useful to check
what garbage collection or a cleanup really left on disk; it never writes.

>>> storage = RegistryStorage("/var/opt/gitlab/gitlab-rails/shared/registry")
>>> storage.repositories()  # doctest: +SKIP
['group/app', 'group/app/cache']
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from regops.errors import ValidationError
from regops.registry.reference import Digest, validate_repository_name, validate_tag

V2_PREFIX = Path("docker", "registry", "v2")
LAYERS_DIR = "_layers"  # a folder holding this is a repository
MANIFESTS_DIR = "_manifests"
UPLOADS_DIR = "_uploads"
LINK_FILE = "link"
DATA_FILE = "data"
MAX_LINK_BYTES = 4096  # a link holds one digest (71 bytes); more than this is not a link


class RegistryStorage:
    """Read-only access to a filesystem-driver registry storage root."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.v2 = self.root / V2_PREFIX
        self._repositories = str(self.v2 / "repositories")  # plain str: joined per tag

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

    def _repo_dir(self, repo: str) -> Path:
        return self.v2 / "repositories" / validate_repository_name(repo)

    def repositories(self) -> list[str]:
        """Repository names (folders that hold ``_layers``), sorted."""
        base = self.v2 / "repositories"
        if not base.is_dir():
            return []
        names = []
        for dirpath, dirnames, _files in os.walk(base):
            if LAYERS_DIR in dirnames:
                names.append(Path(dirpath).relative_to(base).as_posix())
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(names)

    def tags(self, repo: str) -> list[str]:
        """Tag names of ``repo`` that point at something (``current/link`` exists), sorted."""
        base = self._repo_dir(repo) / MANIFESTS_DIR / "tags"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "current" / LINK_FILE).is_file())

    def tag_digest(self, repo: str, tag: str) -> Digest | None:
        """The manifest digest ``repo:tag`` points at, None when the tag is absent."""
        # os.path, not pathlib: a usage scan reads one link per tag, and six Path joins
        # per tag cost more than reading the file.
        link = os.path.join(
            self._repositories,
            validate_repository_name(repo),
            MANIFESTS_DIR,
            "tags",
            validate_tag(tag),
            "current",
            LINK_FILE,
        )
        return _read_link(link)

    def manifest_revisions(self, repo: str) -> list[Digest]:
        """Manifests linked in ``repo`` (tagged or not), sorted."""
        return self._links(self._repo_dir(repo) / MANIFESTS_DIR / "revisions" / "sha256")

    def layer_links(self, repo: str) -> list[Digest]:
        """Blobs linked into ``repo`` (layers and configs), sorted."""
        return self._links(self._repo_dir(repo) / LAYERS_DIR / "sha256")

    def uploads(self, repo: str) -> list[str]:
        """Ids of in-progress uploads in ``repo``."""
        base = self._repo_dir(repo) / UPLOADS_DIR
        return sorted(p.name for p in base.iterdir()) if base.is_dir() else []

    @staticmethod
    def _links(base: Path) -> list[Digest]:
        if not base.is_dir():
            return []
        found = (_read_link(p / LINK_FILE) for p in base.iterdir())
        return sorted(d for d in found if d is not None)


def _read_link(path: str | Path) -> Digest | None:
    """The digest in a ``link`` file; None when missing; ValidationError when corrupt."""
    try:  # os.open/os.read: a text-mode file object costs more than this whole read
        handle = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.read(handle, MAX_LINK_BYTES)
    finally:
        os.close(handle)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValidationError("link", f"{path} does not hold a digest") from None
    return Digest.parse(text, field=f"link {path}")
