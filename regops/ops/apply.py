"""Applying a cleanup plan: the only path in regops that deletes tags.

For each repository, in batches of at most ``batch_size`` tags:

1. re-read every planned tag (one GET) and skip it when it now points at
   another digest (re-pushed since planning) or at a regops placeholder (an
   unfinished batch: recover first);
2. mark the batch pending in the journal (:mod:`regops.ops.journal`), then
   write an "intent" record per tag carrying its raw manifest, the batch id
   and the placeholder's digest to the audit log, fsynced;
3. delete the batch with :class:`regops.registry.safe_delete.SafeDelete`
   (never a tag outside the batch; a batch that fails is rolled back);
4. write a "result" record per tag, then clear the pending mark.

A tag a GitLab tag protection rule keeps is never deleted, even when a plan or
a list of DeleteTargets asks for it: it ends ``failed`` ("protected by GitLab
tag rule ...") without a request, and :class:`SafeDelete` refuses it again.
The rules come from the plans' targets (``PlanTarget.protection``, read from
GitLab by the models) or ``apply_plan(protection=)``.

A run killed at any point leaves its batch marked pending with every intent on
disk; :func:`regops.ops.recovery.recover_pending` (run by ``regops cleanup run
--execute`` before it plans, and by ``regops cleanup recover``) settles it, so
the registry ends as an uninterrupted run would have left it.

>>> result = apply_plan(plan, connection, max_requests_per_second=5)  # doctest: +SKIP
>>> print(result.summary())
deleted 2, already gone 0, skipped 1, rolled back 0, failed 0 (9 registry requests, run 2024…)
"""

from __future__ import annotations

import getpass
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

from tabulate import tabulate

from regops.errors import (
    RegistryNotFound,
    RegopsError,
    UnfinishedDeleteError,
    ValidationError,
)
from regops.ops.audit import (
    EVENT_INTENT,
    RESULT_ALREADY_GONE,
    RESULT_DELETED,
    RESULT_FAILED,
    RESULT_ROLLED_BACK,
    RESULT_SKIPPED_CHANGED,
    AuditRecord,
    AuditWriter,
    OutcomeFields,
    RecordFields,
    encode_manifest,
    new_run_id,
)
from regops.ops.journal import BatchEntry, Journal, encode_bytes
from regops.policy import TagProtection
from regops.registry import safe_delete
from regops.registry.client import RegistryClient
from regops.registry.safe_delete import BatchOutcome, DeleteBatch, OriginalTag, SafeDelete
from regops.secrets import redact, redact_url

if TYPE_CHECKING:
    # typing.TypeIs is Python 3.13+, typing.Unpack 3.11+; annotations only, never run.
    from typing_extensions import TypeIs, Unpack

log = logging.getLogger("regops.apply")

DEFAULT_BATCH_SIZE = 50  # tags per delete batch: bounds what one interruption leaves to settle
RECOVER_HINT = "run `regops cleanup recover`, then plan again"

# The audit result of each SafeDelete tag outcome.
AUDIT_RESULT = {
    safe_delete.DELETED: RESULT_DELETED,
    safe_delete.ALREADY_GONE: RESULT_ALREADY_GONE,
    safe_delete.CHANGED: RESULT_SKIPPED_CHANGED,
    safe_delete.ROLLED_BACK: RESULT_ROLLED_BACK,
    safe_delete.STRANDED: RESULT_FAILED,
}


@dataclass(frozen=True)
class DeleteTarget:
    """One planned tag delete, as apply needs it (plain values, no models)."""

    repository: str
    tag: str
    digest: str
    project_id: int | None = None
    project_path: str | None = None


@dataclass(frozen=True)
class TagOutcome:
    """What happened to one planned tag."""

    repository: str
    tag: str
    digest: str
    result: str
    error: str | None = None
    current_digest: str | None = None


@dataclass
class ApplyResult:
    """The outcome of :func:`apply_plan`: one :class:`TagOutcome` per planned tag."""

    run_id: str
    audit_path: Path | None
    outcomes: list[TagOutcome] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0

    def _with(self, result: str) -> list[TagOutcome]:
        return [o for o in self.outcomes if o.result == result]

    @property
    def deleted(self) -> list[TagOutcome]:
        return self._with(RESULT_DELETED)

    @property
    def already_gone(self) -> list[TagOutcome]:
        return self._with(RESULT_ALREADY_GONE)

    @property
    def skipped(self) -> list[TagOutcome]:
        return self._with(RESULT_SKIPPED_CHANGED)

    @property
    def rolled_back(self) -> list[TagOutcome]:
        """Planned tags whose batch failed and was undone: they keep their image."""
        return self._with(RESULT_ROLLED_BACK)

    @property
    def failed(self) -> list[TagOutcome]:
        return self._with(RESULT_FAILED)

    @property
    def ok(self) -> bool:
        """True when every planned tag was dealt with (re-pushed tags skipped are fine)."""
        return not self.failed and not self.rolled_back

    def summary(self) -> str:
        """One line: counts, requests, run id, and where the audit log is (restore needs it)."""
        text = (
            f"deleted {len(self.deleted)}, already gone {len(self.already_gone)}, "
            f"skipped {len(self.skipped)}, rolled back {len(self.rolled_back)}, "
            f"failed {len(self.failed)} ({self.requests} registry requests, run {self.run_id})"
        )
        return f"{text}; audit log {self.audit_path}" if self.audit_path else text

    def rows(self) -> list[dict[str, str]]:
        return [
            {
                "repository": o.repository,
                "tag": o.tag,
                "digest": o.digest[:19],
                "result": o.result,
                "detail": o.error or (o.current_digest and f"now {o.current_digest[:19]}") or "",
            }
            for o in self.outcomes
        ]

    def __repr__(self) -> str:
        table = tabulate(self.rows(), headers="keys") if self.outcomes else "(nothing to delete)"
        return f"{table}\n{self.summary()}"

    def _repr_html_(self) -> str:
        table = tabulate(self.rows(), headers="keys", tablefmt="html")
        return f"{table}<p>{self.summary()}</p>"


# ---------------------------------------------------------------------- plan adapter


@dataclass(frozen=True)
class PlanTarget:
    """Where a plan's deletes go: the registry it was made from, and for the audit
    log, GitLab's URL and the project (all optional: a plan of plain values has none)."""

    registry: RegistryClient | None = None
    gitlab_url: str | None = None
    project_id: int | None = None
    project_path: str | None = None
    protection: TagProtection | None = None  # the project's tag protection rules


class DeletableTag(Protocol):
    """What apply reads of a planned tag."""

    @property
    def name(self) -> str: ...

    @property
    def digest(self) -> str: ...


class RepositoryPlan(Protocol):
    """What apply reads of one repository's plan (a :class:`~regops.ops.cleanup.CleanupPlan`)."""

    @property
    def repository(self) -> str | None: ...

    @property
    def to_delete(self) -> Sequence[DeletableTag]: ...

    @property
    def target(self) -> PlanTarget | None: ...

    @property
    def placeholder_tags(self) -> list[str]: ...


Plan = RepositoryPlan | Iterable[RepositoryPlan] | Iterable[DeleteTarget]


def targets_from_plan(plan: Plan) -> list[DeleteTarget]:
    """The tags a plan deletes, as :class:`DeleteTarget` values (duplicates dropped).

    ``plan``: one repository's plan, several (a project's ``PolicyPlan``), or
    DeleteTargets. A plan that saw tags on a regops placeholder is refused.
    """
    seen: dict[tuple[str, str], DeleteTarget] = {}
    for target in _targets(plan):
        previous = seen.get((target.repository, target.tag))
        if previous and previous.digest != target.digest:
            raise ValidationError(
                "plan", f"{target.repository}:{target.tag} planned with two digests"
            )
        seen[(target.repository, target.tag)] = target
    return list(seen.values())


def _targets(plan: Plan) -> Iterator[DeleteTarget]:
    if _is_repository_plan(plan):
        yield from _repository_targets(plan)
        return
    for item in plan:
        if isinstance(item, DeleteTarget):
            yield item
        elif _is_repository_plan(item):
            yield from _repository_targets(item)
        else:
            raise ValidationError("plan", f"not a plan or a DeleteTarget: {item!r}")


def _is_repository_plan(value: object) -> TypeIs[RepositoryPlan]:
    return hasattr(value, "to_delete") and hasattr(value, "repository")


def _repository_targets(plan: RepositoryPlan) -> Iterator[DeleteTarget]:
    if plan.placeholder_tags:
        raise UnfinishedDeleteError(
            f"the plan of {plan.repository} saw tags on a regops placeholder (an interrupted "
            f"delete): {', '.join(plan.placeholder_tags[:10])}; {RECOVER_HINT}"
        )
    if not plan.repository:
        raise ValidationError("plan", "a plan without its repository path cannot be applied")
    target = plan.target or PlanTarget()
    for tag in plan.to_delete:
        yield DeleteTarget(
            plan.repository,
            tag.name,
            str(_manifest_digest(tag)),
            target.project_id,
            target.project_path,
        )


def _manifest_digest(tag: DeletableTag) -> str:
    """What the tag points at: ``manifest_digest`` when known (a manifest list's own
    digest), else ``digest`` (the same for a single image)."""
    try:
        known = getattr(tag, "manifest_digest", None)
    except AttributeError:  # a model's "listed, not fetched"
        known = None
    return str(known if known is not None else tag.digest)


def _batches(targets: list[DeleteTarget], size: int) -> Iterator[list[DeleteTarget]]:
    """Targets grouped by repository (plan order kept), at most ``size`` per batch."""
    by_repo: dict[str, list[DeleteTarget]] = {}
    for target in targets:
        by_repo.setdefault(target.repository, []).append(target)
    for group in by_repo.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]


# ---------------------------------------------------------------------- apply


class RunOptions(TypedDict, total=False):
    """:func:`apply_plan`'s keyword arguments that say how to run (plans pass them on)."""

    audit_path: Path | str | None
    actor: str | None
    max_requests_per_second: float | None
    batch_size: int
    run_id: str | None
    journal: Journal | None


def default_actor() -> str:
    """Who runs this: the operating-system user and host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


def apply_plan(
    plan: Plan,
    registry: RegistryClient | None = None,
    *,
    gitlab_url: str | None = None,
    audit_path: Path | str | None = None,
    actor: str | None = None,
    max_requests_per_second: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    run_id: str | None = None,
    journal: Journal | None = None,
    protection: TagProtection | Mapping[str, TagProtection] | None = None,
) -> ApplyResult:
    """Delete exactly the plan's tags, audited, rate-limited; see the module docstring.

    ``registry`` defaults to the one the plan was made from (``plan.target``);
    ``gitlab_url`` (for the audit records) likewise. Returns an
    :class:`ApplyResult`; per-tag failures are reported there, not raised. A
    plan that saw tags on a regops placeholder is refused
    (UnfinishedDeleteError): recover first. An audit log or journal that
    cannot be written raises StateError before the batch it concerns changes
    anything. ``protection``: tag protection rules for every repository, or
    per repository path; default: each repository plan's ``target.protection``.
    """
    if batch_size < 1:
        raise ValidationError("batch_size", f"must be >= 1, got {batch_size}")
    targets = targets_from_plan(plan)
    known = _plan_target(plan)
    registry = registry or known.registry
    if registry is None:
        raise ValidationError("registry", "no registry given or known to the plan; cannot delete")
    if max_requests_per_second:
        registry = registry.paced(max_requests_per_second)
    runner = _Runner(
        registry,
        AuditWriter(audit_path),
        journal or Journal(),
        run_id=run_id or new_run_id(),
        actor=actor or default_actor(),
        gitlab_url=gitlab_url or known.gitlab_url,
        protection=_protection_lookup(plan, protection),
    )
    return runner.run(targets, batch_size)


def _protection_lookup(
    plan: Plan, given: TagProtection | Mapping[str, TagProtection] | None
) -> Callable[[str], TagProtection | None]:
    """Repository path -> its rules: the given ones, else those the plans carry."""
    if isinstance(given, TagProtection):
        return lambda _repository: given
    by_repository: dict[str, TagProtection] = dict(given or {})
    plans = [plan] if _is_repository_plan(plan) else plan if isinstance(plan, Sequence) else []
    for item in plans:
        target = getattr(item, "target", None) if _is_repository_plan(item) else None
        rules = getattr(target, "protection", None)
        repository = getattr(item, "repository", None)
        if rules and repository and repository not in by_repository:
            by_repository[repository] = rules
    return by_repository.get


def _plan_target(plan: Plan) -> PlanTarget:
    """The target of the plan, or of the first repository plan in it that has one."""
    if _is_repository_plan(plan):
        return plan.target or PlanTarget()
    if isinstance(plan, Sequence):
        for item in plan:
            if _is_repository_plan(item) and item.target is not None:
                return item.target
    return PlanTarget()


class _Runner:
    """One apply run: owns the audit writer, the journal and the outcomes."""

    def __init__(
        self,
        registry: RegistryClient,
        audit: AuditWriter,
        journal: Journal,
        *,
        run_id: str,
        actor: str,
        gitlab_url: str | None,
        protection: Callable[[str], TagProtection | None] | None = None,
    ) -> None:
        self.registry = registry
        self.deleter = SafeDelete(registry, protection=protection)
        self.audit = audit
        self.journal = journal
        self.run_id = run_id
        self.actor = actor
        self.gitlab_url = gitlab_url
        self.result = ApplyResult(run_id=run_id, audit_path=audit.path)
        self.intents = 0
        self.batches = 0

    def run(self, targets: list[DeleteTarget], batch_size: int) -> ApplyResult:
        started, first_request = time.monotonic(), self.registry.request_count
        try:
            with self.audit:
                for batch in _batches(targets, batch_size):
                    self._batch(batch)
        finally:
            self.result.requests = self.registry.request_count - first_request
            self.result.seconds = time.monotonic() - started
        log.info("apply %s", self.result.summary())
        return self.result

    def _record(
        self, target: DeleteTarget, event: str, **fields: Unpack[RecordFields]
    ) -> AuditRecord:
        record = AuditRecord(
            event=event,
            repository=target.repository,
            tag=target.tag,
            digest=target.digest,
            project_id=target.project_id,
            project_path=target.project_path,
            run_id=self.run_id,
            actor=self.actor,
            gitlab_url=self.gitlab_url,
            **fields,
        )
        self.audit.write(record)
        return record

    def _outcome(self, target: DeleteTarget, result: str, **fields: Unpack[OutcomeFields]) -> None:
        self._record(target, "result", result=result, **fields)
        self.result.outcomes.append(
            TagOutcome(
                target.repository,
                target.tag,
                target.digest,
                result,
                error=fields.get("error"),
                current_digest=fields.get("current_digest"),
            )
        )

    def _batch(self, targets: list[DeleteTarget]) -> None:
        """Re-check, journal, write intents, delete, write results for one batch."""
        ready: dict[str, tuple[DeleteTarget, OriginalTag]] = {}
        refused = self.deleter.protected(targets[0].repository, [t.tag for t in targets])
        for target in targets:
            if target.tag in refused:  # never deleted, whatever asked for it
                self._outcome(target, RESULT_FAILED, error=f"refused: {refused[target.tag]}")
                continue
            original = self._recheck(target)
            if original is not None:
                ready[target.tag] = (target, original)
        if not ready:
            return
        try:
            batch = self.deleter.prepare(targets[0].repository, [o for _, o in ready.values()])
        except RegopsError as exc:
            for target, _original in ready.values():
                self._outcome(target, RESULT_FAILED, error=f"before any change: {exc}")
            return
        self.batches += 1
        batch_id = f"{self.run_id}-{self.batches}"
        with self.journal.begin(self._entry(batch, batch_id)) as pending:
            for target, original in ready.values():
                self._record(
                    target,
                    EVENT_INTENT,
                    media_type=original.media_type,
                    manifest=encode_manifest(original.raw),
                    method=batch.method,
                    batch=batch_id,
                    placeholder=batch.placeholder_digest,
                )
                self.intents += 1
            try:
                outcome = self.deleter.execute(batch)
            except RegopsError as exc:  # refused before any change (read-only, delete off)
                for target, _original in ready.values():
                    self._outcome(target, RESULT_FAILED, error=f"nothing changed: {exc}")
                pending.finish()
                return
            for target, _original in ready.values():
                self._settled(target, outcome, batch_id)
            if outcome.complete:
                pending.finish()

    def _entry(self, batch: DeleteBatch, batch_id: str) -> BatchEntry:
        placeholder = batch.placeholder
        return BatchEntry(
            run_id=self.run_id,
            batch_id=batch_id,
            repository=batch.repository,
            method=batch.method,
            tags=tuple(batch.names),
            audit_path=str(self.audit.path.resolve()),
            registry_url=redact_url(self.registry.url),
            placeholder_config=encode_bytes(placeholder.config) if placeholder else None,
            placeholder_manifest=encode_bytes(placeholder.manifest) if placeholder else None,
        )

    def _recheck(self, target: DeleteTarget) -> OriginalTag | None:
        """The tag as it is now when it still has its planned digest; else record why not."""
        try:
            manifest = self.registry.get_manifest(target.repository, target.tag)
        except RegistryNotFound:
            self._outcome(target, RESULT_ALREADY_GONE)
            return None
        except RegopsError as exc:
            self._outcome(target, RESULT_FAILED, error=f"re-check: {redact(str(exc))}")
            return None
        if safe_delete.is_placeholder(manifest):
            self._outcome(
                target,
                RESULT_FAILED,
                error=f"on a regops placeholder (an interrupted delete); {RECOVER_HINT}",
                current_digest=str(manifest.digest),
            )
            return None
        if str(manifest.digest) != target.digest:
            self._outcome(target, RESULT_SKIPPED_CHANGED, current_digest=str(manifest.digest))
            return None
        return OriginalTag.of(target.tag, manifest)

    def _settled(self, target: DeleteTarget, outcome: BatchOutcome, batch_id: str) -> None:
        """Record one tag's result from its batch's outcome."""
        state = outcome.results[target.tag]
        fields: OutcomeFields = {"method": outcome.batch.method, "batch": batch_id}
        fields.update(outcome_details(outcome, target.tag))
        self._outcome(target, AUDIT_RESULT[state], **fields)


def outcome_details(outcome: BatchOutcome, tag: str) -> OutcomeFields:
    """``error`` and ``current_digest`` fields saying why a tag ended as it did."""
    state = outcome.results[tag]
    if state == safe_delete.CHANGED:
        current = outcome.current.get(tag)
        return {
            "error": "re-pushed while the delete ran",
            "current_digest": str(current) if current else None,
        }
    if state == safe_delete.ROLLED_BACK:
        return {"error": f"the batch failed and was rolled back: {outcome.error}"}
    if state == safe_delete.STRANDED:
        return {
            "error": f"left on the regops placeholder {outcome.batch.placeholder_digest} "
            f"({outcome.error}); {RECOVER_HINT}",
            "current_digest": str(outcome.batch.placeholder_digest),
        }
    return {}
