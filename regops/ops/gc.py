"""Garbage collection plans: what ``registry garbage-collect`` will free, before it runs.

:func:`plan` reads the registry's storage directly (read-only; the registry
stays up) and repeats the Distribution 2.8 collector's mark and sweep
(``registry/storage/garbagecollect.go``) step for step:

1. repositories are the folders that hold ``_layers`` (folders starting with
   ``_`` are not entered);
2. in each, every ``_manifests/revisions/**/link`` whose manifest blob exists
   is marked with what it references (config and layers; for a list or index
   its child manifests only, not their layers). With ``untagged`` (``-m``,
   ``--delete-untagged``) a revision no tag's ``current/link`` points at is
   queued for deletion instead, and not marked;
3. every blob (``blobs/**/data``) not marked is eligible.

The plan's ``blobs_marked``, ``blobs_eligible`` and ``manifests_eligible``
are the three numbers of the collector's last line (``N blobs marked, M blobs
and K manifests eligible for deletion``); ``bytes_eligible`` is what those
blobs hold. Where the collector would stop with an error (a link that is not
a digest, a manifest it cannot parse, ``-m`` in a repository with untagged
manifests but no tags folder), ``collector_error`` says so.

The 2.8 collector's ``-m`` hazard: the children of a manifest list or OCI
index are untagged manifests, so ``-m`` removes their revision links and
sweeps their configs and layers, while the list stays tagged: the image
cannot be pulled any more (checked on the real binary, see tests/test_gc_*).
``broken_images`` names every tag that would end up that way; ``regops gc
run`` refuses ``-m`` while there is one unless forced. An untagged manifest
(``eligible_manifests``) can still be pulled by digest until ``-m`` runs.

>>> storage = FilesystemBackend("/var/opt/gitlab/gitlab-rails/shared/registry")  # doctest: +SKIP
>>> result = plan(storage, untagged=True)           # doctest: +SKIP
>>> result.counts, result.bytes_eligible            # doctest: +SKIP
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from regops.errors import GitLabNotFound, ValidationError
from regops.ops import charts
from regops.registry.backends import StorageBackend
from regops.registry.layout import (
    BLOBS_ROOT,
    CURRENT_DIR,
    DATA_FILE,
    LAYERS_DIR,
    LINK_FILE,
    MAX_LINK_BYTES,
    REPOSITORIES_ROOT,
    REVISIONS,
    TAGS,
)
from regops.registry.manifest import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from regops.sizes import human_bytes

# go-digest's Parse: an available algorithm and its exact lowercase hex length.
GO_DIGEST = re.compile(r"\A(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})\Z")
SUMMARY_LINE = re.compile(
    r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion$", re.MULTILINE
)
ELIGIBLE_BLOB = re.compile(r"^blob eligible for deletion: (\S+)$", re.MULTILINE)
ELIGIBLE_MANIFEST = re.compile(r"^manifest eligible for deletion: (\S+)$", re.MULTILINE)
FORMATS = ("table", "json", "csv")
NO_REPOSITORY = "(linked from no repository)"  # blobs left by deleted repositories or uploads
CSV_COLUMNS = (
    "repository",
    "project",
    "blobs",
    "bytes",
    "shared_blobs",
    "shared_bytes",
    "manifests_eligible",
)
MAX_SHOWN = 20  # rows of broken images / shared blobs shown in a table before "... N more"


class CollectorWouldFail(Exception):
    """The real collector stops with an error at this point (the plan records why)."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class BrokenImage:
    """A tag ``-m`` would break: a list/index whose untagged children it removes."""

    repository: str
    tag: str
    digest: str
    children: tuple[str, ...]  # untagged child manifests whose revision links -m removes
    blobs_swept: int  # the children's configs and layers the sweep deletes

    def to_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "children": list(self.children),
            "blobs_swept": self.blobs_swept,
        }


@dataclass
class RepositoryShare:
    """What of the eligible bytes one repository links (and so loses in GC)."""

    repository: str
    project: str | None = None
    blobs: int = 0  # eligible blobs linked only here
    bytes: int = 0
    shared_blobs: int = 0  # eligible blobs linked here and in other repositories
    shared_bytes: int = 0
    manifests_eligible: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CSV_COLUMNS}


@dataclass(frozen=True)
class SharedBlob:
    """An eligible blob linked from several repositories."""

    digest: str
    size: int
    repositories: tuple[str, ...]


@dataclass(eq=False)
class GCPlan:
    """What ``garbage-collect [--delete-untagged]`` would do on this storage, and to whom.

    Print it (a table), ``to_json()`` / ``to_csv()`` / ``to_dataframe()`` it.
    """

    storage: str
    driver: str
    untagged: bool
    blobs_marked: int
    blobs_eligible: int
    manifests_eligible: int
    bytes_eligible: int
    blobs_total: int
    bytes_total: int
    eligible_blobs: dict[str, int] = field(repr=False, default_factory=dict)
    eligible_manifests: list[tuple[str, str]] = field(repr=False, default_factory=list)
    repositories: list[RepositoryShare] = field(repr=False, default_factory=list)
    shared: list[SharedBlob] = field(repr=False, default_factory=list)
    broken_images: list[BrokenImage] = field(repr=False, default_factory=list)
    collector_error: str | None = None
    seconds: float = 0.0
    requests: int = 0

    @property
    def command(self) -> str:
        return "garbage-collect" + (" -m" if self.untagged else "")

    @property
    def counts(self) -> tuple[int, int, int]:
        """The collector's three numbers: (blobs marked, blobs eligible, manifests eligible)."""
        return (self.blobs_marked, self.blobs_eligible, self.manifests_eligible)

    @property
    def bytes_after(self) -> int:
        return self.bytes_total - self.bytes_eligible

    def line(self) -> str:
        """The collector's last line, as this plan predicts it."""
        return (
            f"{self.blobs_marked} blobs marked, {self.blobs_eligible} blobs and "
            f"{self.manifests_eligible} manifests eligible for deletion"
        )

    def summary(self) -> str:
        """One line: the prediction and the bytes it frees."""
        if self.collector_error:
            return f"{self.command} would stop with an error: {self.collector_error}"
        text = f"{self.command}: {self.line()}; frees {human_bytes(self.bytes_eligible)}"
        if self.broken_images:
            text += f"; BREAKS {len(self.broken_images)} multi-arch tags"
        return text

    def __repr__(self) -> str:
        return self.to_table()

    def plot(self, top: int | None = charts.DEFAULT_TOP) -> Any:  # Any: a matplotlib Figure
        """Bytes freed by repository, alone and shared (:func:`regops.ops.charts.gc_chart`)."""
        return charts.gc_chart(self, top=top)

    def to_dicts(self) -> list[dict[str, Any]]:
        """One dict per repository that loses something (for CSV and DataFrames)."""
        return [row.to_dict() for row in self.repositories]

    def to_dict(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "driver": self.driver,
            "untagged": self.untagged,
            "command": self.command,
            "blobs_marked": self.blobs_marked,
            "blobs_eligible": self.blobs_eligible,
            "manifests_eligible": self.manifests_eligible,
            "bytes_eligible": self.bytes_eligible,
            "blobs_total": self.blobs_total,
            "bytes_total": self.bytes_total,
            "bytes_after": self.bytes_after,
            "collector_error": self.collector_error,
            "repositories": self.to_dicts(),
            "shared_blobs": [
                {"digest": s.digest, "size": s.size, "repositories": list(s.repositories)}
                for s in self.shared
            ],
            "broken_images": [b.to_dict() for b in self.broken_images],
            "eligible_manifests": [
                {"repository": repo, "digest": digest} for repo, digest in self.eligible_manifests
            ],
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.to_dicts())
        return buffer.getvalue()

    def to_dataframe(self) -> Any:
        """The per-repository rows as a pandas DataFrame (pandas is optional)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from None
        return pandas.DataFrame(self.to_dicts(), columns=list(CSV_COLUMNS))

    def render(self, fmt: str = "table") -> str:
        if fmt == "table":
            return self.to_table()
        if fmt == "json":
            return self.to_json()
        if fmt == "csv":
            return self.to_csv()
        raise ValidationError("format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")

    def to_table(self) -> str:
        lines = [f"{self.command} on {self.storage} ({self.driver})"]
        if self.collector_error:
            lines.append(f"the collector would STOP WITH AN ERROR: {self.collector_error}")
        lines.append(f"predicted: {self.line()}")
        lines.append(
            f"frees {self.bytes_eligible:,} bytes ({human_bytes(self.bytes_eligible)}) of "
            f"{self.bytes_total:,} in {self.blobs_total:,} blobs"
        )
        rows = [[r.to_dict()[c] for c in CSV_COLUMNS] for r in self.repositories]
        if rows:
            lines += ["", tabulate(rows, CSV_COLUMNS, tablefmt="simple", intfmt=",")]
        lines += self.hazard_lines()
        return "\n".join(lines) + "\n"

    def hazard_lines(self) -> list[str]:
        """Warnings: tags -m breaks, untagged manifests it deletes (pull by digest fails)."""
        lines: list[str] = []
        if self.broken_images:
            lines += [
                "",
                f"-m WOULD BREAK {len(self.broken_images)} multi-arch tags (the 2.8 collector "
                "deletes the untagged children of a tagged list/index):",
            ]
            for image in self.broken_images[:MAX_SHOWN]:
                lines.append(
                    f"  {image.repository}:{image.tag} ({image.digest[:19]}…): "
                    f"{len(image.children)} children removed, {image.blobs_swept} blobs swept"
                )
            if len(self.broken_images) > MAX_SHOWN:
                lines.append(f"  ... {len(self.broken_images) - MAX_SHOWN} more")
        if self.untagged and self.eligible_manifests:
            lines += [
                "",
                f"{len(self.eligible_manifests)} untagged manifests are deleted; pulls by "
                "their digest fail afterwards.",
            ]
        return lines

    def _repr_html_(self) -> str:
        rows = [[r.to_dict()[c] for c in CSV_COLUMNS] for r in self.repositories]
        table = tabulate(rows, CSV_COLUMNS, tablefmt="html") if rows else ""
        hazards = "<br>".join(html.escape(line) for line in self.hazard_lines() if line)
        return (
            f"<p><b>{html.escape(self.command)}</b> on {html.escape(self.storage)}: "
            f"{html.escape(self.summary())}</p>{table}" + (f"<p>{hazards}</p>" if hazards else "")
        )


@dataclass(frozen=True)
class CollectorCounts:
    """What the real collector printed: its last line and the digests it listed."""

    blobs_marked: int
    blobs_eligible: int
    manifests_eligible: int
    eligible_blobs: frozenset[str]
    eligible_manifests: tuple[str, ...]

    @property
    def counts(self) -> tuple[int, int, int]:
        return (self.blobs_marked, self.blobs_eligible, self.manifests_eligible)


def parse_collector_output(text: str) -> CollectorCounts | None:
    """The counts of ``garbage-collect``'s stdout; None when its summary line is missing."""
    found = SUMMARY_LINE.findall(text)
    if not found:
        return None
    marked, blobs, manifests = (int(n) for n in found[-1])
    return CollectorCounts(
        marked,
        blobs,
        manifests,
        frozenset(ELIGIBLE_BLOB.findall(text)),
        tuple(ELIGIBLE_MANIFEST.findall(text)),
    )


def differences(plan: GCPlan, counts: CollectorCounts) -> list[str]:
    """How the collector's output differs from the plan (empty when it agrees)."""
    found = []
    names = ("blobs marked", "blobs eligible", "manifests eligible")
    for name, planned, real in zip(names, plan.counts, counts.counts, strict=True):
        if planned != real:
            found.append(f"{name}: planned {planned}, collector {real}")
    if counts.eligible_blobs and set(plan.eligible_blobs) != counts.eligible_blobs:
        extra = len(counts.eligible_blobs - set(plan.eligible_blobs))
        missing = len(set(plan.eligible_blobs) - counts.eligible_blobs)
        found.append(f"eligible blobs differ: {extra} not planned, {missing} planned but kept")
    return found


# --------------------------------------------------------------------------- layout


def blob_data_key(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{BLOBS_ROOT}/{algorithm}/{hexpart[:2]}/{hexpart}/{DATA_FILE}"


def repository_key(repository: str, *parts: str) -> str:
    return "/".join((REPOSITORIES_ROOT, repository, *parts))


def revision_link_key(repository: str, digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return repository_key(repository, REVISIONS, algorithm, hexpart, LINK_FILE)


def parse_link(raw: bytes, key: str) -> str:
    """The digest a link holds, exactly as go-digest parses it (no whitespace allowed)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CollectorWouldFail(f"{key} is not a digest link") from None
    if not GO_DIGEST.match(text):
        raise CollectorWouldFail(f"{key} is not a digest link")
    return text


def digest_from_data_key(key: str) -> str:
    """The blob digest the collector derives from a ``.../data`` path (``digestFromPath``)."""
    folder, hexpart = key[: -len(DATA_FILE) - 1].rsplit("/", 1)
    parent, name = folder.rsplit("/", 1)
    algorithm = parent.rsplit("/", 1)[-1] if name == hexpart[:2] else name
    digest = f"{algorithm}:{hexpart}"
    if not GO_DIGEST.match(digest):
        raise CollectorWouldFail(f"{key} is not where a blob is stored")
    return digest


def repositories(backend: StorageBackend) -> Iterator[str]:
    """Repository names in the collector's order: sorted walk, folders holding ``_layers``."""
    stack: list[str] = [""]
    while stack:
        relative = stack.pop()
        entries = backend.list(f"{REPOSITORIES_ROOT}/{relative}".rstrip("/"))
        if entries is None:
            continue
        children: list[str] = []
        for entry in entries:
            if entry.name == LAYERS_DIR:
                yield relative
                continue
            if entry.name.startswith("_"):
                if not entry.is_dir:
                    break  # the walk stops at a skipped file: its later siblings are not seen
                continue
            if entry.is_dir:
                children.append(f"{relative}/{entry.name}".lstrip("/"))
        stack.extend(reversed(children))


def manifest_references(raw: bytes, where: str) -> tuple[str, tuple[str, ...]]:
    """(kind, referenced digests) as the 2.8 manifest store parses it: ``image``,
    ``index`` (children only) or ``schema1``. CollectorWouldFail where Get fails."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CollectorWouldFail(f"manifest {where} is not JSON") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise CollectorWouldFail(f"manifest {where} is not a JSON object")
    version = _field(document, "schemaVersion", 0)
    media_type = _field(document, "mediaType", "")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CollectorWouldFail(f"manifest {where}: schemaVersion is not a number")
    if not isinstance(media_type, str):
        raise CollectorWouldFail(f"manifest {where}: mediaType is not a string")
    if version == 1:
        if _field(document, "signatures", None) is None:
            raise CollectorWouldFail(f"manifest {where}: schema 1 without signatures")
        layers = _field(document, "fsLayers", None) or []
        return "schema1", tuple(_descriptor_digest(d, "blobSum", where) for d in layers)
    if version != 2:
        raise CollectorWouldFail(f"manifest {where}: unrecognized schema version {version}")
    if media_type in (DOCKER_MANIFEST, OCI_MANIFEST):
        return "image", _image_references(document, where)
    if media_type in (DOCKER_LIST, OCI_INDEX):
        return "index", _index_references(document, where)
    if media_type == "":
        if _field(document, "manifests", None) is not None:
            return "index", _index_references(document, where)
        return "image", _image_references(document, where)
    raise CollectorWouldFail(f"manifest {where}: unrecognized content type {media_type}")


def _field(document: dict[str, Any], name: str, default: Any) -> Any:
    """A JSON field as Go's encoding/json finds it (exact name first, then any case)."""
    if name in document:
        return document[name]
    lowered = name.lower()
    for key, value in document.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return default


def _descriptor_digest(descriptor: Any, name: str, where: str) -> str:
    if descriptor is None:
        return ""
    if not isinstance(descriptor, dict):
        raise CollectorWouldFail(f"manifest {where}: a descriptor is not an object")
    value = _field(descriptor, name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CollectorWouldFail(f"manifest {where}: a {name} is not a string")
    return value


def _image_references(document: dict[str, Any], where: str) -> tuple[str, ...]:
    layers = _field(document, "layers", None) or []
    if not isinstance(layers, list):
        raise CollectorWouldFail(f"manifest {where}: layers is not a list")
    config = _descriptor_digest(_field(document, "config", None), "digest", where)
    return (config, *(_descriptor_digest(layer, "digest", where) for layer in layers))


def _index_references(document: dict[str, Any], where: str) -> tuple[str, ...]:
    children = _field(document, "manifests", None) or []
    if not isinstance(children, list):
        raise CollectorWouldFail(f"manifest {where}: manifests is not a list")
    return tuple(_descriptor_digest(child, "digest", where) for child in children)


# --------------------------------------------------------------------------- planning


class _Planner:
    """One mark-and-sweep simulation over a backend (see :func:`plan`)."""

    def __init__(self, backend: StorageBackend, untagged: bool) -> None:
        self.backend = backend
        self.untagged = untagged
        self.blob_sizes: dict[str, int] = {}
        self.marked: set[str] = set()
        self.eligible_manifests: list[tuple[str, str]] = []
        self.references: dict[str, tuple[str, tuple[str, ...]]] = {}  # manifest -> (kind, refs)
        self.broken: list[BrokenImage] = []
        self.repositories: list[str] = []

    def scan_blobs(self) -> None:
        found = False
        for stored in self.backend.walk(BLOBS_ROOT):
            found = True
            if stored.key.rsplit("/", 1)[-1] == DATA_FILE:
                self.blob_sizes[digest_from_data_key(stored.key)] = stored.size
        if not found and self.backend.list(BLOBS_ROOT) is None:
            raise CollectorWouldFail("there is no blobs folder (error enumerating blobs)")

    def mark(self) -> None:
        self.backend.prefetch(REPOSITORIES_ROOT)
        if self.backend.list(REPOSITORIES_ROOT) is None:
            raise CollectorWouldFail("there is no repositories folder (failed to mark)")
        for repository in repositories(self.backend):
            self.repositories.append(repository)
            self.mark_repository(repository)

    def mark_repository(self, repository: str) -> None:
        links = sorted(
            stored.key
            for stored in self.backend.walk(repository_key(repository, REVISIONS))
            if stored.key.rsplit("/", 1)[-1] == LINK_FILE
        )
        if not links:
            return
        contents = self.backend.read_many(links, MAX_LINK_BYTES)
        valid: list[tuple[str, str]] = []  # (digest named by the link, blob it resolves to)
        for key in links:
            raw = contents[key]
            if raw is None:
                continue
            digest = parse_link(raw, key)
            target = self._resolve(repository, digest, key, raw)
            if target is not None and target in self.blob_sizes:
                valid.append((digest, target))
        if not valid:
            return
        tags = self._tags(repository) if self.untagged else None
        tagged = set(tags.values()) if tags else set()
        to_read = []
        for digest, target in valid:
            if self.untagged and digest not in tagged:
                if tags is None:
                    raise CollectorWouldFail(
                        f"repository {repository} has untagged manifests and no tags folder "
                        "(-m stops: failed to retrieve tags)"
                    )
                self.eligible_manifests.append((repository, digest))
                continue
            self.marked.add(digest)
            to_read.append((digest, target))
        self._load_references(target for _, target in to_read)
        for _digest, target in to_read:
            self.marked.update(self.references[target][1])
        if self.untagged and tags:
            self._find_broken(repository, tags, tagged, dict(valid))

    def _resolve(self, repository: str, digest: str, key: str, raw: bytes) -> str | None:
        """The blob a revision resolves to (the linkedBlobStatter's Stat), None if absent."""
        expected = revision_link_key(repository, digest)
        if expected == key:
            return digest
        other = self.backend.read(expected, MAX_LINK_BYTES)
        return None if other is None else parse_link(other, expected)

    def _tags(self, repository: str) -> dict[str, str] | None:
        """Tag -> digest of its ``current/link``; None when the tags folder is absent."""
        entries = self.backend.list(repository_key(repository, TAGS))
        if entries is None:
            return None
        keys = {e.name: repository_key(repository, TAGS, e.name, CURRENT_DIR, LINK_FILE)
                for e in entries}  # fmt: skip
        contents = self.backend.read_many(keys.values(), MAX_LINK_BYTES)
        found = {}
        for tag, key in keys.items():
            raw = contents[key]
            if raw is not None:
                found[tag] = parse_link(raw, key)
        return found

    def _load_references(self, digests: Iterable[str]) -> None:
        missing = sorted({d for d in digests if d not in self.references})
        if not missing:
            return
        contents = self.backend.read_many([blob_data_key(d) for d in missing])
        for digest in missing:
            raw = contents[blob_data_key(digest)]
            if raw is None:
                raise CollectorWouldFail(f"manifest {digest} vanished while reading")
            self.references[digest] = manifest_references(raw, digest)

    def _find_broken(
        self, repository: str, tags: dict[str, str], tagged: set[str], valid: dict[str, str]
    ) -> None:
        """Tags on a list/index whose children -m removes (children are untagged)."""
        for tag, digest in sorted(tags.items()):
            target = valid.get(digest)
            if target is None or self.references.get(target, ("", ()))[0] != "index":
                continue
            children = tuple(
                c for c in self.references[target][1] if c not in tagged and c in valid
            )
            if children:
                self._load_references(valid[c] for c in children)
                self.broken.append(BrokenImage(repository, tag, digest, children, 0))

    def finish_broken(self) -> None:
        """Count only the children's blobs the sweep really deletes (nothing else marks them)."""
        fixed = []
        for image in self.broken:
            refs: set[str] = set()
            for child in image.children:
                known = self.references.get(child)
                if known:
                    refs.update(r for r in known[1] if r in self.blob_sizes)
            swept = sum(1 for ref in refs if ref not in self.marked)
            fixed.append(
                BrokenImage(image.repository, image.tag, image.digest, image.children, swept)
            )
        self.broken = fixed


def plan(
    backend: StorageBackend,
    *,
    untagged: bool = False,
    gitlab: Any = None,
    attribute: bool = True,
) -> GCPlan:
    """What ``garbage-collect [--delete-untagged]`` would report on ``backend``'s storage.

    ``gitlab`` (a GitLabClient) names the project of each repository that
    loses bytes. Read-only: nothing in the storage changes.
    """
    started = time.monotonic()
    planner = _Planner(backend, untagged)
    error = None
    try:
        planner.scan_blobs()
        planner.mark()
    except CollectorWouldFail as exc:
        error = str(exc)
    planner.finish_broken()
    eligible = {d: s for d, s in planner.blob_sizes.items() if d not in planner.marked}
    result = GCPlan(
        storage=backend.describe(),
        driver=backend.kind,
        untagged=untagged,
        blobs_marked=len(planner.marked),
        blobs_eligible=len(eligible),
        manifests_eligible=len(planner.eligible_manifests),
        bytes_eligible=sum(eligible.values()),
        blobs_total=len(planner.blob_sizes),
        bytes_total=sum(planner.blob_sizes.values()),
        eligible_blobs=eligible,
        eligible_manifests=list(planner.eligible_manifests),
        broken_images=planner.broken,
        collector_error=error,
    )
    if attribute and error is None and (eligible or planner.eligible_manifests):
        result.repositories, result.shared = attribute_bytes(
            backend, planner.repositories, eligible, planner.eligible_manifests
        )
        if gitlab is not None:
            projects = resolve_projects(gitlab, [r.repository for r in result.repositories])
            for row in result.repositories:
                row.project = projects.get(row.repository)
    result.seconds = time.monotonic() - started
    result.requests = backend.requests
    return result


def attribute_bytes(
    backend: StorageBackend,
    names: list[str],
    eligible: dict[str, int],
    eligible_manifests: list[tuple[str, str]],
) -> tuple[list[RepositoryShare], list[SharedBlob]]:
    """Which repositories link each eligible blob (layer or revision links), per repository.

    A link is ``<folder>/sha256/<hex>/link``: a folder whose link file is gone (the
    filesystem driver leaves it when a manifest or layer is deleted) links nothing.
    """
    owners: dict[str, list[str]] = defaultdict(list)
    for repository in names:
        for folder in (f"{LAYERS_DIR}/sha256", f"{REVISIONS}/sha256"):
            base = repository_key(repository, folder)
            for stored in backend.walk(base):
                hexpart, _, name = stored.key[len(base) + 1 :].partition("/")
                digest = f"sha256:{hexpart}"
                if name != LINK_FILE or digest not in eligible:
                    continue
                if not owners[digest] or owners[digest][-1] != repository:
                    owners[digest].append(repository)
    rows: dict[str, RepositoryShare] = {}

    def row(name: str) -> RepositoryShare:
        return rows.setdefault(name, RepositoryShare(name))

    shared = []
    for digest, size in eligible.items():
        linked = owners.get(digest) or [NO_REPOSITORY]
        if len(linked) == 1:
            share = row(linked[0])
            share.blobs += 1
            share.bytes += size
            continue
        shared.append(SharedBlob(digest, size, tuple(linked)))
        for name in linked:
            share = row(name)
            share.shared_blobs += 1
            share.shared_bytes += size
    for repository, _digest in eligible_manifests:
        row(repository).manifests_eligible += 1
    ordered = sorted(rows.values(), key=lambda r: (-(r.bytes + r.shared_bytes), r.repository))
    shared.sort(key=lambda s: (-s.size, s.digest))
    return ordered, shared


def resolve_projects(gitlab: Any, names: Iterable[str]) -> dict[str, str | None]:
    """Repository path -> the GitLab project path it belongs to (None when none matches).

    A container repository's path is its project's full path, optionally
    followed by a name; the longest prefix GitLab knows as a project wins.
    One ``GET /projects/:path`` per distinct prefix tried.
    """
    known: dict[str, str | None] = {}
    found: dict[str, str | None] = {}
    for name in names:
        parts = name.split("/")
        found[name] = None
        for end in range(len(parts), 0, -1):
            prefix = "/".join(parts[:end])
            if prefix not in known:
                known[prefix] = _project_path(gitlab, prefix)
            if known[prefix]:
                found[name] = known[prefix]
                break
    return found


def _project_path(gitlab: Any, path: str) -> str | None:
    try:
        project = gitlab.project(path)
    except GitLabNotFound:
        return None
    return str(project.get("path_with_namespace") or path)


__all__ = [
    "BrokenImage",
    "CollectorCounts",
    "GCPlan",
    "RepositoryShare",
    "SharedBlob",
    "differences",
    "parse_collector_output",
    "plan",
    "resolve_projects",
]
