"""Restore tags from the cleanup audit log: push the logged manifests back under their tags.

A deleted tag's image stays in storage, untagged, until garbage collection;
until then pushing its manifest bytes back under the tag restores it exactly
(same digest). Before pushing, each tag is checked:

- the logged manifest's bytes must hash to the logged digest ("digest mismatch");
- the tag must not exist now with another digest ("tag re-used"; pushed over
  only with ``force``); a tag already at its logged digest is left alone; a
  tag on a regops placeholder (an interrupted delete) is not a user's re-push
  and is restored over;
- every blob the manifest references (config, layers) must still be linked in
  the repository ("blob gone"); for an index or manifest list, every child
  manifest must still exist ("child manifest gone"), and so must its blobs.

Which manifest: per tag, the latest intent of a batch that really moved it,
skipping intents that recorded a regops placeholder (older regops versions
could log one when a run followed an interrupted batch) and intents of
batches that were rolled back; ``run=`` restricts this to one run.

>>> result = restore_from_audit("cleanup-20240102.jsonl", registry)  # doctest: +SKIP
>>> result.not_restored     # each with the reason
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from regops.errors import ManifestError, RegistryNotFound, RegopsError, ValidationError
from regops.ops.audit import (
    EVENT_INTENT,
    RESULT_ROLLED_BACK,
    AuditLog,
    AuditRecord,
    read_audit_log,
)
from regops.registry.client import RegistryClient
from regops.registry.manifest import Manifest, parse_manifest
from regops.registry.reference import Digest
from regops.registry.safe_delete import is_placeholder, is_placeholder_config

log = logging.getLogger("regops.restore")

STATUS_RESTORED = "restored"
STATUS_WOULD_RESTORE = "would_restore"  # dry run: every check passed
STATUS_PRESENT = "already_present"  # the tag points at the logged digest already
STATUS_BLOB_GONE = "blob_gone"
STATUS_CHILD_GONE = "child_manifest_gone"
STATUS_TAG_REUSED = "tag_reused"
STATUS_DIGEST_MISMATCH = "digest_mismatch"
STATUS_FAILED = "failed"
GOOD_STATUSES = frozenset({STATUS_RESTORED, STATUS_WOULD_RESTORE, STATUS_PRESENT})


@dataclass(frozen=True)
class RestoreItem:
    """What restore did (or would do) for one logged tag, and why."""

    repository: str
    tag: str
    digest: str
    status: str
    reason: str = ""
    project_id: int | None = None
    project_path: str | None = None
    run_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in GOOD_STATUSES


@dataclass
class RestoreResult:
    """One :class:`RestoreItem` per logged tag selected, plus log warnings."""

    items: list[RestoreItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def restored(self) -> list[RestoreItem]:
        wanted = STATUS_WOULD_RESTORE if self.dry_run else STATUS_RESTORED
        return [i for i in self.items if i.status == wanted]

    @property
    def already_present(self) -> list[RestoreItem]:
        return [i for i in self.items if i.status == STATUS_PRESENT]

    @property
    def not_restored(self) -> list[RestoreItem]:
        """Tags that could not (or, in a dry run, could not be) restored."""
        return [i for i in self.items if not i.ok]

    @property
    def ok(self) -> bool:
        return not self.not_restored

    def summary(self) -> str:
        verb = "would restore" if self.dry_run else "restored"
        return (
            f"{verb} {len(self.restored)}, already present {len(self.already_present)}, "
            f"not restorable {len(self.not_restored)}"
        )

    def rows(self) -> list[dict[str, str]]:
        return [
            {
                "repository": i.repository,
                "tag": i.tag,
                "digest": i.digest[:19],
                "status": i.status,
                "reason": i.reason,
            }
            for i in self.items
        ]

    def __repr__(self) -> str:
        table = tabulate(self.rows(), headers="keys") if self.items else "(nothing to restore)"
        return f"{table}\n{self.summary()}"

    def _repr_html_(self) -> str:
        return tabulate(self.rows(), headers="keys", tablefmt="html") + f"<p>{self.summary()}</p>"


def select_intents(
    audit: AuditLog,
    *,
    projects: Iterable[str | int] | None = None,
    tags: Iterable[str] | None = None,
    repositories: Iterable[str] | None = None,
    run: str | None = None,
    placeholder: Callable[[AuditRecord], bool] | None = None,
) -> list[AuditRecord]:
    """The manifest to restore per (repository, tag), filtered.

    ``projects`` match a record's project id or path; ``tags``,
    ``repositories`` and ``run`` (a run id) match exactly. The latest intent
    wins (a tag deleted twice, re-pushed in between, comes back as it was
    before the last delete), except intents of rolled-back batches and those
    ``placeholder`` says recorded a regops placeholder (default: by the
    manifest's annotation).
    """
    project_set = {str(p) for p in projects} if projects else None
    tag_set = set(tags) if tags else None
    repo_set = set(repositories) if repositories else None
    is_placeholder_record = placeholder or _annotated_placeholder
    undone = {
        (h.run_id, h.repository, h.tag)
        for h in audit.histories()
        if h.result is not None and h.result.result == RESULT_ROLLED_BACK
    }
    latest: dict[tuple[str, str], AuditRecord] = {}
    for record in audit.records:
        if record.event != EVENT_INTENT or record.manifest is None:
            continue
        if run is not None and record.run_id != run:
            continue
        if (record.run_id, record.repository, record.tag) in undone:
            continue
        if is_placeholder_record(record):
            continue
        latest[record.key] = record
    chosen = []
    for record in latest.values():
        if project_set is not None and not (
            {str(record.project_id), str(record.project_path)} & project_set
        ):
            continue
        if tag_set is not None and record.tag not in tag_set:
            continue
        if repo_set is not None and record.repository not in repo_set:
            continue
        chosen.append(record)
    return chosen


def _annotated_placeholder(record: AuditRecord) -> bool:
    try:
        return is_placeholder(_logged_manifest(record))
    except (ManifestError, ValidationError):
        return False  # an unreadable record is reported by the restore itself


def restore_from_audit(
    audit: AuditLog | Path | str | Iterable[Path | str],
    registry: RegistryClient,
    *,
    projects: Iterable[str | int] | None = None,
    tags: Iterable[str] | None = None,
    repositories: Iterable[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    run: str | None = None,
) -> RestoreResult:
    """Push logged manifests back under their tags where that is still possible."""
    if not isinstance(audit, AuditLog):
        audit = read_audit_log(audit)
    result = RestoreResult(warnings=list(audit.warnings), dry_run=dry_run)
    if run is not None and not any(r.run_id == run for r in audit.records):
        raise ValidationError("run", f"no record of run {run!r} in {_paths(audit)}")
    placeholders = _PlaceholderCheck(registry)
    selected = select_intents(
        audit,
        projects=projects,
        tags=tags,
        repositories=repositories,
        run=run,
        placeholder=placeholders.logged,
    )
    for record in selected:
        item = _restore_one(registry, record, placeholders, force=force, dry_run=dry_run)
        log.info("%s:%s %s %s", item.repository, item.tag, item.status, item.reason)
        result.items.append(item)
    return result


def _item(record: AuditRecord, status: str, reason: str = "") -> RestoreItem:
    return RestoreItem(
        record.repository,
        record.tag,
        record.digest,
        status,
        reason,
        record.project_id,
        record.project_path,
        record.run_id,
    )


def _restore_one(
    registry: RegistryClient,
    record: AuditRecord,
    placeholders: _PlaceholderCheck,
    *,
    force: bool,
    dry_run: bool,
) -> RestoreItem:
    """Check one logged tag and push it back (unless a check fails or dry_run)."""
    try:
        manifest = _logged_manifest(record)
    except (ManifestError, ValidationError) as exc:
        return _item(record, STATUS_DIGEST_MISMATCH, str(exc))
    try:
        current = _current_digest(registry, record)
        if current == record.digest:
            return _item(record, STATUS_PRESENT, "the tag already points at the logged digest")
        reused = current is not None and not placeholders.at(record.repository, current)
        if reused and not force:
            return _item(record, STATUS_TAG_REUSED, f"the tag now points at {current}; use --force")
        problem = _missing_content(registry, record.repository, manifest)
        if problem is not None:
            return _item(record, *problem)
        if dry_run:
            note = f"would replace {current}" if current else ""
            return _item(record, STATUS_WOULD_RESTORE, note)
        pushed = registry.put_manifest(
            record.repository, record.tag, manifest.raw, manifest.media_type
        )
    except RegopsError as exc:
        return _item(record, STATUS_FAILED, str(exc))
    if str(pushed) != record.digest:
        return _item(record, STATUS_FAILED, f"the registry stored {pushed}, not the logged digest")
    note = f"replaced {current}" if current else ""
    return _item(record, STATUS_RESTORED, note)


class _PlaceholderCheck:
    """Is a manifest a regops placeholder? By annotation, else (older ones) by config label.

    The config is fetched only for a config-only image (no layers), once per digest.
    """

    def __init__(self, registry: RegistryClient) -> None:
        self.registry = registry
        self._known: dict[tuple[str, str], bool] = {}

    def logged(self, record: AuditRecord) -> bool:
        """True when an intent recorded a placeholder instead of the tag's image."""
        try:
            manifest = _logged_manifest(record)
        except (ManifestError, ValidationError):
            return False  # reported as digest_mismatch by the restore itself
        return self._check(record.repository, manifest)

    def at(self, repository: str, digest: str) -> bool:
        """True when ``digest`` in ``repository`` is a placeholder."""
        try:
            manifest = self.registry.get_manifest(repository, digest)
        except RegistryNotFound:
            return False
        return self._check(repository, manifest)

    def _check(self, repository: str, manifest: Manifest) -> bool:
        if is_placeholder(manifest):
            return True
        if manifest.layers or manifest.config is None:
            return False
        key = (repository, str(manifest.digest))
        if key not in self._known:
            try:
                config = self.registry.get_config(repository, manifest.config.digest)
            except RegistryNotFound:
                return False
            self._known[key] = is_placeholder_config(config)
        return self._known[key]


def _paths(audit: AuditLog) -> str:
    return ", ".join(str(p) for p in audit.paths) or "the audit log"


def _logged_manifest(record: AuditRecord) -> Manifest:
    """The intent's manifest, parsed, its bytes checked against the logged digest."""
    raw = record.raw_manifest
    if raw is None:
        raise ValidationError("manifest", "the record holds no manifest")
    actual = Digest.of(raw)
    if actual != record.digest:
        raise ValidationError(
            "manifest", f"logged bytes hash to {actual}, not the logged {record.digest}"
        )
    return parse_manifest(raw, record.media_type)


def _current_digest(registry: RegistryClient, record: AuditRecord) -> str | None:
    try:
        return str(registry.manifest_digest(record.repository, record.tag))
    except RegistryNotFound:
        return None


def _missing_content(
    registry: RegistryClient, repository: str, manifest: Manifest
) -> tuple[str, str] | None:
    """(status, reason) for the first thing the registry no longer has, else None."""
    if manifest.is_index:
        for child in manifest.children:
            try:
                child_manifest = registry.get_manifest(repository, child.digest)
            except RegistryNotFound:
                return STATUS_CHILD_GONE, f"child manifest {child.digest} is gone"
            missing = _missing_blobs(registry, repository, child_manifest)
            if missing:
                return STATUS_BLOB_GONE, f"blob {missing} of child {child.digest} is gone"
        return None
    missing = _missing_blobs(registry, repository, manifest)
    if missing:
        return STATUS_BLOB_GONE, f"blob {missing} is gone (garbage collected?)"
    return None


def _missing_blobs(registry: RegistryClient, repository: str, manifest: Manifest) -> str | None:
    """The first referenced blob the repository no longer links, or None."""
    for digest in manifest.referenced_digests:
        if registry.blob_size(repository, digest) is None:
            return str(digest)
    return None
