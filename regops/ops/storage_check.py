"""The registry's storage checked: what is broken, what is stale, and what a copy lacks.

:func:`check` reads the layout (``docker/registry/v2``) through a storage
backend (filesystem or S3) and reports, each with what it breaks and what to
do:

- ``tag_without_revision``: a tag's ``current/link`` names a manifest the
  repository has no revision link for (the registry answers 404 for the tag);
- ``revision_without_blob``: a revision whose manifest blob is gone;
- ``missing_blob``: a manifest (named by its tags) references a config, layer
  or child manifest that is not stored: the image cannot be pulled;
- ``corrupt_blob`` (``verify_content``): a blob whose sha256 is not its name;
- ``missing_repository`` / ``unknown_repository`` (with GitLab): repositories
  GitLab lists that storage lacks, and the other way round;
- stale, not broken: ``dangling_layer_link`` (a ``_layers`` link without its
  blob: garbage collection 2.8 leaves these; a push re-uploads the blob) and
  ``stale_upload`` (an unfinished upload older than ``upload_age``).

:func:`compare` is the object-storage migration check done right: one
listing of each side, every file except ``_uploads`` present on both with
the same size (and, with ``verify_content``, the same sha256 for blobs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from regops.errors import ValidationError
from regops.ops.gc import (
    CollectorWouldFail,
    blob_data_key,
    digest_from_data_key,
    manifest_references,
    parse_link,
)
from regops.registry.backends import StorageBackend
from regops.registry.layout import (
    BLOBS_ROOT,
    CURRENT_DIR,
    LAYERS_DIR,
    LINK_FILE,
    MANIFESTS_DIR,
    REPOSITORIES_ROOT,
    UPLOADS_DIR,
    V2_ROOT,
)

BROKEN = "broken"  # exit 1: something cannot be pulled or is not what it claims
STALE = "stale"  # reported, exit 0: space or clutter, nothing breaks
DEFAULT_UPLOAD_AGE = dt.timedelta(days=7)  # the registry's own uploadpurging age (168h)
HASH_CHUNK = 1024 * 1024
FORMATS = ("table", "json")

ADVICE = {
    "tag_without_revision": (
        "pulling the tag answers 404 (manifest unknown)",
        "push the image again under this tag, or delete the tag",
    ),
    "revision_without_blob": (
        "the manifest is gone: pulls of it (and of tags on it) fail",
        "push the image again; then run gc plan to see what is left over",
    ),
    "missing_blob": (
        "the image cannot be pulled: a blob it references is not stored",
        "push the image again (the registry re-uploads what is missing)",
    ),
    "corrupt_blob": (
        "the blob's content does not match its digest: pulls fail verification",
        "delete the blob file and push the images that use it again",
    ),
    "missing_repository": (
        "GitLab lists the repository but storage has nothing: its images cannot be pulled",
        "push the images again, or delete the repository in GitLab",
    ),
    "unknown_repository": (
        "storage holds a repository GitLab does not know: nobody sees or cleans it",
        "delete it through the registry API (or remove the folder), then run gc",
    ),
    "dangling_layer_link": (
        "nothing (a push re-uploads the blob); left by garbage collection",
        "nothing needed",
    ),
    "stale_upload": (
        "disk space only: an upload that was never finished",
        "enable storage.maintenance.uploadpurging, or delete the folder",
    ),
}
SEVERITY = {
    "dangling_layer_link": STALE,
    "stale_upload": STALE,
}


@dataclass(frozen=True)
class Finding:
    """One problem: its kind, where, and (from ADVICE) what it breaks and what to do."""

    kind: str
    repository: str
    subject: str  # a tag, a digest, an upload id
    detail: str = ""
    size: int = 0

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, BROKEN)

    @property
    def breaks(self) -> str:
        return ADVICE[self.kind][0]

    @property
    def todo(self) -> str:
        return ADVICE[self.kind][1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "repository": self.repository,
            "subject": self.subject,
            "detail": self.detail,
            "size": self.size,
            "breaks": self.breaks,
            "todo": self.todo,
        }


@dataclass(eq=False)
class CheckReport:
    """Findings of :func:`check`; ``ok`` when nothing is broken (stale is fine)."""

    storage: str
    findings: list[Finding] = field(default_factory=list)
    repositories: int = 0
    tags: int = 0
    blobs: int = 0
    blobs_verified: int = 0
    seconds: float = 0.0
    requests: int = 0

    @property
    def broken(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == BROKEN]

    @property
    def ok(self) -> bool:
        return not self.broken

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def summary(self) -> str:
        stale = len(self.findings) - len(self.broken)
        text = (
            f"{self.repositories} repositories, {self.tags} tags, {self.blobs} blobs checked"
            + (f" ({self.blobs_verified} hashed)" if self.blobs_verified else "")
            + f": {len(self.broken)} broken, {stale} stale"
        )
        return text

    def render(self, fmt: str = "table") -> str:
        if fmt == "json":
            document = {
                "storage": self.storage,
                "ok": self.ok,
                "summary": self.summary(),
                "findings": [f.to_dict() for f in self.findings],
            }
            return json.dumps(document, indent=2) + "\n"
        if fmt != "table":
            raise ValidationError("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
        rows = [
            (f.severity, f.kind, f.repository, f.subject, f.detail, f.breaks, f.todo)
            for f in self.findings
        ]
        headers = ("severity", "kind", "repository", "subject", "detail", "breaks", "do")
        body = tabulate(rows, headers, tablefmt="simple") if rows else "(nothing found)"
        return f"{body}\n{self.summary()}\n"

    def __repr__(self) -> str:
        return self.render()


class _Repository:
    __slots__ = ("layers", "revisions", "tags", "uploads")

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}  # tag -> current link key
        self.revisions: set[str] = set()  # digests (from the path)
        self.layers: set[str] = set()
        self.uploads: dict[str, list[float]] = {}  # id -> [bytes, newest mtime]


def _split(key: str) -> tuple[str, list[str]] | None:
    """(repository, the parts from its first ``_`` folder on) of a key under repositories/."""
    parts = key[len(REPOSITORIES_ROOT) + 1 :].split("/")
    for index, part in enumerate(parts):
        if part.startswith("_"):
            return ("/".join(parts[:index]), parts[index:]) if index else None
    return None


def check(
    backend: StorageBackend,
    *,
    verify_content: bool = False,
    gitlab_repositories: Iterable[str] | None = None,
    upload_age: dt.timedelta = DEFAULT_UPLOAD_AGE,
    now: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check the storage (read-only). ``gitlab_repositories``: every container repository
    path GitLab knows (adds the missing/unknown repository checks)."""
    started = time.monotonic()
    report = CheckReport(backend.describe())
    blobs: dict[str, int] = {}
    for stored in backend.walk(BLOBS_ROOT):
        if stored.key.endswith("/data"):
            try:
                blobs[digest_from_data_key(stored.key)] = stored.size
            except CollectorWouldFail:
                continue
    report.blobs = len(blobs)
    repositories: dict[str, _Repository] = defaultdict(_Repository)
    for stored in backend.walk(REPOSITORIES_ROOT):
        split = _split(stored.key)
        if split is None:
            continue
        name, rest = split
        _classify(repositories[name], rest, stored.key, stored.size, stored.modified)
    cutoff = ((now or dt.datetime.now(dt.timezone.utc)) - upload_age).timestamp()
    for name in sorted(repositories):
        _check_repository(backend, name, repositories[name], blobs, report, cutoff)
    report.repositories = sum(1 for r in repositories.values() if r.revisions or r.layers)
    if gitlab_repositories is not None:
        _compare_with_gitlab(repositories, set(gitlab_repositories), report)
    if verify_content:
        _verify(backend, blobs, report, progress)
    report.seconds = time.monotonic() - started
    report.requests = backend.requests
    return report


def _classify(repo: _Repository, rest: list[str], key: str, size: int, modified: float) -> None:
    head = rest[0]
    if head == LAYERS_DIR and len(rest) == 4 and rest[3] == LINK_FILE:
        repo.layers.add(f"{rest[1]}:{rest[2]}")
    elif (
        head == MANIFESTS_DIR and len(rest) == 5 and rest[1] == "revisions" and rest[4] == LINK_FILE
    ):
        repo.revisions.add(f"{rest[2]}:{rest[3]}")
    elif head == MANIFESTS_DIR and len(rest) == 5 and rest[1] == "tags" and rest[3] == CURRENT_DIR:
        repo.tags[rest[2]] = key
    elif head == UPLOADS_DIR and len(rest) >= 2:
        entry = repo.uploads.setdefault(rest[1], [0, 0.0])
        entry[0] += size
        entry[1] = max(entry[1], modified)


def _check_repository(
    backend: StorageBackend,
    name: str,
    repo: _Repository,
    blobs: dict[str, int],
    report: CheckReport,
    cutoff: float,
) -> None:
    add = report.findings.append
    report.tags += len(repo.tags)
    links = backend.read_many(repo.tags.values(), 4096)
    tagged: dict[str, list[str]] = defaultdict(list)
    for tag, key in sorted(repo.tags.items()):
        raw = links[key]
        if raw is None:
            continue
        try:
            digest = parse_link(raw, key)
        except CollectorWouldFail:
            add(Finding("tag_without_revision", name, tag, "its current link is not a digest"))
            continue
        if digest not in repo.revisions:
            add(Finding("tag_without_revision", name, tag, digest))
            continue
        tagged[digest].append(tag)
    present = sorted(d for d in repo.revisions if d in blobs)
    for digest in sorted(repo.revisions - set(present)):
        tags = ", ".join(tagged.get(digest, [])) or "untagged"
        add(Finding("revision_without_blob", name, digest, f"tags: {tags}"))
    manifests = backend.read_many([blob_data_key(d) for d in present])
    for digest in present:
        raw = manifests[blob_data_key(digest)]
        try:
            kind, refs = manifest_references(raw or b"", digest)
        except CollectorWouldFail as exc:
            add(Finding("missing_blob", name, digest, f"unreadable manifest: {exc}"))
            continue
        missing = [
            r for r in refs if r not in blobs or (kind == "index" and r not in repo.revisions)
        ]
        if missing:
            tags = ", ".join(tagged.get(digest, [])) or "untagged"
            shown = ", ".join(m[:19] + "…" for m in missing[:3])
            add(Finding("missing_blob", name, tags, f"{digest[:19]}… lacks {shown}"))
    for digest in sorted(repo.layers - set(blobs)):
        add(Finding("dangling_layer_link", name, digest))
    for upload, (size, modified) in sorted(repo.uploads.items()):
        if modified < cutoff:
            age = dt.timedelta(seconds=int(time.time() - modified))
            add(Finding("stale_upload", name, upload, f"{int(size)} bytes, {age} old", int(size)))


def _compare_with_gitlab(
    repositories: dict[str, _Repository], known: set[str], report: CheckReport
) -> None:
    stored = {name for name, repo in repositories.items() if repo.revisions or repo.layers}
    for name in sorted(known - stored):
        report.findings.append(Finding("missing_repository", name, "-"))
    for name in sorted(stored - known):
        report.findings.append(Finding("unknown_repository", name, "-"))


def _verify(
    backend: StorageBackend,
    blobs: dict[str, int],
    report: CheckReport,
    progress: Callable[[int], None] | None,
) -> None:
    for digest, size in sorted(blobs.items()):
        actual = hash_stream(backend, blob_data_key(digest), progress)
        report.blobs_verified += 1
        if f"sha256:{actual}" != digest:
            detail = f"content hashes to sha256:{actual[:12]}…"
            report.findings.append(Finding("corrupt_blob", "-", digest, detail, size))


def hash_stream(
    backend: StorageBackend, key: str, progress: Callable[[int], None] | None = None
) -> str:
    """sha256 hex of a stored file, read in chunks (``progress(bytes)`` after each)."""
    digest = hashlib.sha256()
    with backend.open(key) as stream:
        while True:
            chunk = stream.read(HASH_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Difference:
    kind: str  # missing (only in source), extra (only in destination), size, content
    key: str
    source_size: int | None
    destination_size: int | None


@dataclass(eq=False)
class CompareReport:
    source: str
    destination: str
    source_files: int = 0
    destination_files: int = 0
    differences: list[Difference] = field(default_factory=list)
    verified: int = 0
    source_requests: int = 0
    destination_requests: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        return (
            f"{self.source_files} files in {self.source}, {self.destination_files} in "
            f"{self.destination} (_uploads left out): {len(self.differences)} differences"
            + (f"; {self.verified} blobs hashed on both sides" if self.verified else "")
        )

    def render(self, fmt: str = "table") -> str:
        if fmt == "json":
            document = {
                "ok": self.ok,
                "summary": self.summary(),
                "differences": [d.__dict__ for d in self.differences],
                "requests": {
                    "source": self.source_requests,
                    "destination": self.destination_requests,
                },
            }
            return json.dumps(document, indent=2) + "\n"
        rows = [(d.kind, d.key, d.source_size, d.destination_size) for d in self.differences]
        body = (
            tabulate(rows, ("difference", "key", "source size", "destination size"))
            if rows
            else "(identical)"
        )
        return f"{body}\n{self.summary()}\n"

    def __repr__(self) -> str:
        return self.render()


def listing(backend: StorageBackend) -> dict[str, int]:
    """key -> size of every file under docker/registry/v2 except ``_uploads`` (one pass)."""
    return {f.key: f.size for f in backend.walk(V2_ROOT) if f"/{UPLOADS_DIR}/" not in f"/{f.key}/"}


def compare(
    source: StorageBackend,
    destination: StorageBackend,
    *,
    verify_content: bool = False,
    progress: Callable[[int], None] | None = None,
) -> CompareReport:
    """Every file of ``source`` on ``destination`` with the same size, and nothing more."""
    started = time.monotonic()
    report = CompareReport(source.describe(), destination.describe())
    left, right = listing(source), listing(destination)
    report.source_files, report.destination_files = len(left), len(right)
    for key in sorted(left.keys() | right.keys()):
        a, b = left.get(key), right.get(key)
        if b is None:
            report.differences.append(Difference("missing", key, a, None))
        elif a is None:
            report.differences.append(Difference("extra", key, None, b))
        elif a != b:
            report.differences.append(Difference("size", key, a, b))
        elif verify_content and key.startswith(f"{BLOBS_ROOT}/") and key.endswith("/data"):
            expected = key.rsplit("/", 2)[-2]
            sides = [hash_stream(side, key, progress) for side in (source, destination)]
            report.verified += 1
            if any(h != expected for h in sides):
                report.differences.append(Difference("content", key, a, b))
    report.source_requests = source.requests
    report.destination_requests = destination.requests
    report.seconds = time.monotonic() - started
    return report


def gitlab_repository_paths(gitlab: Any) -> list[str]:
    """Every container repository path GitLab knows: one request per project (+ pages)."""
    paths = []
    for project in gitlab.projects():
        for repository in gitlab.project_repositories(project["id"]):
            paths.append(str(repository["path"]))
    return sorted(set(paths))
