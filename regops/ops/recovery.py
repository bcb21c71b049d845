"""Recovery: settle the delete batches an interrupted run left, before anything is planned.

Two ways to find them:

- :func:`recover_pending`: the journal's pending markers whose run has died
  (:mod:`regops.ops.journal`). Each batch is rebuilt from its audit-log
  intents (tag, original digest and manifest, placeholder) and settled with
  :meth:`SafeDelete.settle <regops.registry.safe_delete.SafeDelete.settle>`:
  rolled back when its placeholder still exists, recorded as deleted when the
  placeholder (the commit point) is gone. Results go to the same audit log.
- :func:`recover_placeholders`: tags a plan found on a regops placeholder with
  no pending marker (the marker's host or state directory is gone). The
  placeholder's batch is looked up in the audit logs by its digest and rolled
  back where the originals are known; tags on it that no audit record names
  cannot be rolled back and are deleted with the placeholder (what their batch
  was doing), and said so.

>>> report = recover_pending(connection.registry)       # doctest: +SKIP
>>> report.summary()
'2 batches settled: 3 tags rolled back, 0 deleted, 0 stranded'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from regops.errors import RegopsError, ValidationError
from regops.ops.apply import AUDIT_RESULT, default_actor, outcome_details
from regops.ops.audit import (
    AuditLog,
    AuditRecord,
    AuditWriter,
    audit_files,
    default_audit_path,
    new_run_id,
    read_audit_log,
)
from regops.ops.journal import Journal, PendingBatch
from regops.registry import safe_delete
from regops.registry.client import RegistryClient
from regops.registry.manifest import ImageConfig, parse_manifest
from regops.registry.reference import Digest
from regops.registry.safe_delete import (
    BatchOutcome,
    DeleteBatch,
    OriginalTag,
    Placeholder,
    SafeDelete,
)
from regops.secrets import redact, redact_url

log = logging.getLogger("regops.recovery")

SOURCE_JOURNAL = "journal"
SOURCE_REGISTRY = "registry"
# A tag found on a placeholder that no audit record names: deleted with it (its batch's aim).
FINISHED_UNRECORDED = "deleted_unrecorded"


@dataclass(frozen=True)
class SettledBatch:
    """One batch recovery settled (or could not): an outcome per tag."""

    repository: str
    batch_id: str | None
    run_id: str | None
    source: str
    results: Mapping[str, str]
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and safe_delete.STRANDED not in self.results.values()


@dataclass
class RecoveryReport:
    """Every batch recovery looked at, and what it left."""

    recovery_run_id: str
    batches: list[SettledBatch] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every batch found was settled."""
        return all(b.complete for b in self.batches)

    def count(self, outcome: str) -> int:
        return sum(1 for b in self.batches for r in b.results.values() if r == outcome)

    def summary(self) -> str:
        unsettled = sum(1 for b in self.batches if not b.complete)
        text = (
            f"{len(self.batches)} interrupted batches settled: "
            f"{self.count(safe_delete.ROLLED_BACK)} tags rolled back, "
            f"{self.count(safe_delete.DELETED) + self.count(FINISHED_UNRECORDED)} deleted, "
            f"{self.count(safe_delete.STRANDED)} still stranded"
        )
        return text + (f"; {unsettled} batches NOT settled" if unsettled else "")

    def rows(self) -> list[dict[str, str]]:
        return [
            {
                "repository": b.repository,
                "batch": b.batch_id or "",
                "tag": tag,
                "outcome": outcome,
                "detail": b.error or "",
            }
            for b in self.batches
            for tag, outcome in (b.results.items() or [("", "")])
        ]

    def __repr__(self) -> str:
        if not self.batches:
            return "(no interrupted delete to settle)"
        return f"{tabulate(self.rows(), headers='keys')}\n{self.summary()}"


def recover_pending(
    registry: RegistryClient,
    *,
    journal: Journal | None = None,
    actor: str | None = None,
) -> RecoveryReport:
    """Settle every batch of a dead run in ``journal`` that belongs to this registry."""
    report = RecoveryReport(new_run_id())
    recorder = _Recorder(actor or default_actor(), report.recovery_run_id)
    ours = redact_url(registry.url)
    for pending in (journal or Journal()).unfinished():
        entry = pending.entry
        if entry.registry_url != ours:
            report.warnings.append(
                f"pending batch {entry.batch_id} belongs to registry {entry.registry_url}, "
                "not this one: left for a run against it"
            )
            continue
        report.batches.append(_settle_pending(registry, pending, recorder))
    for warning in report.warnings:
        log.warning("%s", warning)
    return report


def _settle_pending(
    registry: RegistryClient, pending: PendingBatch, recorder: _Recorder
) -> SettledBatch:
    entry = pending.entry
    try:
        audit = read_audit_log(entry.audit_path)
    except ValidationError as exc:
        return _unsettled(entry.repository, entry.batch_id, entry.run_id, exc.reason)
    intents = audit.batch_intents(entry.batch_id)
    placeholder = None
    stored = entry.placeholder_bytes()
    if stored is not None:
        placeholder = Placeholder(stored[0], stored[1], Digest.of(stored[1]))
    batch = DeleteBatch(entry.repository, entry.method, _originals(intents), placeholder)
    try:
        outcome = SafeDelete(registry).settle(batch)
    except RegopsError as exc:
        return _unsettled(entry.repository, entry.batch_id, entry.run_id, redact(str(exc)))
    recorder.write(Path(entry.audit_path), intents, outcome)
    settled = SettledBatch(
        entry.repository, entry.batch_id, entry.run_id, SOURCE_JOURNAL, dict(outcome.results)
    )
    if settled.complete:
        pending.finish()
    return settled


def recover_placeholders(
    registry: RegistryClient,
    repository: str,
    tags: Mapping[str, str],
    *,
    audit_paths: Iterable[Path | str] | None = None,
    actor: str | None = None,
) -> RecoveryReport:
    """Settle the batches of ``tags`` (tag -> placeholder digest) found on placeholders.

    ``audit_paths`` default to every audit log in the default audit folder.
    """
    report = RecoveryReport(new_run_id())
    recorder = _Recorder(actor or default_actor(), report.recovery_run_id)
    paths = list(audit_paths) if audit_paths is not None else audit_files()
    audit = read_audit_log(paths) if paths else AuditLog()
    by_placeholder: dict[Digest, list[str]] = {}
    for tag, digest in tags.items():
        by_placeholder.setdefault(Digest.parse(digest), []).append(tag)
    for digest, names in by_placeholder.items():
        report.batches.append(
            _settle_placeholder(registry, repository, digest, names, audit, recorder)
        )
    return report


def _settle_placeholder(
    registry: RegistryClient,
    repository: str,
    digest: Digest,
    names: list[str],
    audit: AuditLog,
    recorder: _Recorder,
) -> SettledBatch:
    intents = [r for r in audit.placeholder_intents(digest) if r.repository == repository]
    batch_id = intents[0].batch if intents else None
    run_id = intents[0].run_id if intents else None
    try:
        placeholder = _read_placeholder(registry, repository, digest)
        originals = _originals(intents)
        batch = DeleteBatch(repository, safe_delete.METHOD_PLACEHOLDER, originals, placeholder)
        outcome = SafeDelete(registry).settle(batch)
    except RegopsError as exc:
        return _unsettled(repository, batch_id, run_id, redact(str(exc)), SOURCE_REGISTRY)
    recorder.write(default_audit_path(), intents, outcome)
    results = dict(outcome.results)
    for name in names:
        # Not in any audit record: it went with the placeholder, as its batch intended.
        results.setdefault(name, FINISHED_UNRECORDED)
    return SettledBatch(repository, batch_id, run_id, SOURCE_REGISTRY, results)


def _read_placeholder(registry: RegistryClient, repository: str, digest: Digest) -> Placeholder:
    """The placeholder's bytes, read back from the registry (and checked to be one)."""
    manifest = registry.get_manifest(repository, digest)
    if manifest.config is None:
        raise ValidationError("placeholder", f"{digest} in {repository} is not a placeholder")
    config = registry.get_blob(repository, manifest.config.digest)
    marked = safe_delete.is_placeholder(manifest) or safe_delete.is_placeholder_config(
        ImageConfig.parse(config)
    )
    if not marked:
        raise ValidationError("placeholder", f"{digest} in {repository} is not a placeholder")
    return Placeholder(config, manifest.raw, digest)


def _originals(intents: Iterable[AuditRecord]) -> tuple[OriginalTag, ...]:
    """The batch's tags as they were, from their intents (the first intent of each tag)."""
    found: dict[str, OriginalTag] = {}
    for record in intents:
        raw = record.raw_manifest
        if raw is None or record.tag in found:
            continue
        manifest = parse_manifest(raw, record.media_type, record.digest)
        found[record.tag] = OriginalTag.of(record.tag, manifest)
    return tuple(found.values())


def _unsettled(
    repository: str,
    batch_id: str | None,
    run_id: str | None,
    error: str,
    source: str = SOURCE_JOURNAL,
) -> SettledBatch:
    log.error("could not settle batch %s in %s: %s", batch_id, repository, error)
    return SettledBatch(repository, batch_id, run_id, source, {}, error)


class _Recorder:
    """Writes the result records of settled batches into the batches' own audit logs."""

    def __init__(self, actor: str, recovery_run_id: str) -> None:
        self.actor = actor
        self.recovery_run_id = recovery_run_id

    def write(self, path: Path, intents: Iterable[AuditRecord], outcome: BatchOutcome) -> None:
        records = []
        seen: set[str] = set()
        for intent in intents:
            state = outcome.results.get(intent.tag)
            if state is None or intent.tag in seen:
                continue
            seen.add(intent.tag)
            details = outcome_details(outcome, intent.tag)
            note = f"settled by recovery run {self.recovery_run_id}"
            details["error"] = f"{details['error']}; {note}" if details.get("error") else note
            records.append(intent.with_result(AUDIT_RESULT[state], actor=self.actor, **details))
        if not records:
            return
        with AuditWriter(path) as audit:
            for record in records:
                audit.write(record)


__all__ = [
    "FINISHED_UNRECORDED",
    "RecoveryReport",
    "SettledBatch",
    "recover_pending",
    "recover_placeholders",
]
