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

A run killed at any point leaves its batch marked pending with every intent on
disk; :func:`regops.ops.recovery.recover_pending` (run by ``regops cleanup run
--execute`` before it plans, and by ``regops cleanup recover``) settles it, so
the registry ends as an uninterrupted run would have left it.

>>> result = apply_plan(plan, connection, max_requests_per_second=5)  # doctest: +SKIP
>>> print(result.summary())
deleted 2, already gone 0, skipped 1, rolled back 0, failed 0 (9 registry requests, run 2024…)
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from regops.errors import (
    CleanupPermissionError,
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
    encode_manifest,
    new_run_id,
)
from regops.ops.journal import BatchEntry, Journal, encode_bytes
from regops.registry import safe_delete
from regops.registry.safe_delete import BatchOutcome, DeleteBatch, OriginalTag, SafeDelete
from regops.secrets import redact, redact_url

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


class TokenBucket:
    """A token bucket: on average at most ``rate`` requests per second, bursts of ``burst``.

    ``take(n)`` waits until ``n`` tokens are there; ``charge(n)`` books requests
    already made (the bucket may go negative, which delays the next ``take``).

    >>> bucket = TokenBucket(5)
    >>> bucket.take()        # returns at once, then paces callers at 5/s
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate or rate <= 0:
            raise ValidationError("max_requests_per_second", f"must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst else max(1.0, self.rate)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/s, burst={self.burst:g})"

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, count: float = 1.0) -> None:
        """Wait until ``count`` tokens are available, then spend them."""
        with self._lock:
            self._refill()
            missing = count - self._tokens
            if missing > 0:
                delay = missing / self.rate
                self._sleep(delay)
                self.waited += delay
                self._refill()
            self._tokens -= count

    def charge(self, count: float) -> None:
        """Book ``count`` requests made without asking (e.g. inside a batch call)."""
        if count > 0:
            with self._lock:
                self._refill()
                self._tokens -= count


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
        """One line: counts, requests, run id."""
        return (
            f"deleted {len(self.deleted)}, already gone {len(self.already_gone)}, "
            f"skipped {len(self.skipped)}, rolled back {len(self.rolled_back)}, "
            f"failed {len(self.failed)} ({self.requests} registry requests, run {self.run_id})"
        )

    def rows(self) -> list[dict[str, Any]]:
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


def targets_from_plan(plan: Any) -> list[DeleteTarget]:
    """The tags a plan deletes, as :class:`DeleteTarget` values (duplicates dropped)."""
    placeholders = getattr(plan, "placeholder_tags", None)
    if placeholders:
        raise UnfinishedDeleteError(
            f"the plan saw tags on a regops placeholder (an interrupted delete): "
            f"{', '.join(placeholders[:10])}; {RECOVER_HINT}"
        )
    items = plan.to_delete if hasattr(plan, "to_delete") else plan
    seen: dict[tuple[str, str], DeleteTarget] = {}
    for item in items:
        target = item if isinstance(item, DeleteTarget) else _target_from(item)
        previous = seen.get((target.repository, target.tag))
        if previous and previous.digest != target.digest:
            raise ValidationError(
                "plan", f"{target.repository}:{target.tag} planned with two digests"
            )
        seen[(target.repository, target.tag)] = target
    return list(seen.values())


def _target_from(item: Any) -> DeleteTarget:
    """Read a plan entry (a Tag model or a mapping) into a DeleteTarget."""
    if isinstance(item, Mapping):
        repo_path, name = item.get("repository"), item.get("tag") or item.get("name")
        digest, project_id = item.get("digest"), item.get("project_id")
        project_path = item.get("project_path")
    else:
        name, digest = _get(item, "name"), _get(item, "digest")
        repo = _get(item, "repository")
        repo_path = repo if isinstance(repo, str) else _get(repo, "path")
        if repo_path is None and isinstance(_get(item, "path"), str):
            repo_path = item.path.rpartition(":")[0]  # GitLab's Tag#path: "<repo>:<tag>"
        project_id = _get(repo, "project_id")
        project_path = _project_path(repo_path, _get(repo, "name"))
    if not (repo_path and name and digest):
        raise ValidationError("plan", f"entry {item!r} lacks a repository path, tag name or digest")
    return DeleteTarget(str(repo_path), str(name), str(digest), project_id, project_path)


def _get(obj: Any, name: str) -> Any:
    """An attribute, or None when it is missing or was never fetched."""
    try:
        return getattr(obj, name, None)
    except AttributeError:  # a model attribute that is "listed, not fetched"
        return None


def _project_path(repo_path: str | None, repo_name: str | None) -> str | None:
    """The project's full path: the repository path minus its name (GitLab's layout)."""
    if not repo_path or repo_name is None:
        return None
    if repo_name == "":
        return repo_path  # the project's root repository
    suffix = "/" + repo_name.lower()
    return repo_path[: -len(suffix)] if repo_path.endswith(suffix) else None


def _batches(targets: list[DeleteTarget], size: int) -> Iterator[list[DeleteTarget]]:
    """Targets grouped by repository (plan order kept), at most ``size`` per batch."""
    by_repo: dict[str, list[DeleteTarget]] = {}
    for target in targets:
        by_repo.setdefault(target.repository, []).append(target)
    for group in by_repo.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]


# ---------------------------------------------------------------------- apply


def default_actor() -> str:
    """Who runs this: the operating-system user and host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


def apply_plan(
    plan: Any,
    connection: Any,
    *,
    audit_path: Path | str | None = None,
    actor: str | None = None,
    max_requests_per_second: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    run_id: str | None = None,
    journal: Journal | None = None,
) -> ApplyResult:
    """Delete exactly the plan's tags, audited, rate-limited; see the module docstring.

    ``connection`` needs ``.registry`` (a RegistryClient); its GitLab URL, when
    known, goes into the audit records. Returns an :class:`ApplyResult`;
    per-tag failures are reported there, not raised. A plan that saw tags on
    a regops placeholder is refused (UnfinishedDeleteError): recover first.
    An audit log or journal that cannot be written raises StateError before
    the batch it concerns changes anything.
    """
    if batch_size < 1:
        raise ValidationError("batch_size", f"must be >= 1, got {batch_size}")
    registry = getattr(connection, "registry", None)
    if registry is None:
        raise ValidationError("connection", "no registry configured; cannot delete tags")
    targets = targets_from_plan(plan)
    runner = _Runner(
        registry,
        AuditWriter(audit_path),
        journal or Journal(),
        run_id=run_id or new_run_id(),
        actor=actor or default_actor(),
        gitlab_url=_gitlab_url(connection),
        bucket=TokenBucket(max_requests_per_second) if max_requests_per_second else None,
    )
    return runner.run(targets, batch_size)


def _gitlab_url(connection: Any) -> str | None:
    gitlab = getattr(connection, "gitlab", None)
    url = getattr(gitlab, "url", None) or getattr(
        getattr(connection, "settings", None), "gitlab_url", None
    )
    return str(url) if url else None


class _Runner:
    """One apply run: owns the audit writer, the bucket and the outcomes."""

    def __init__(
        self,
        registry: Any,
        audit: AuditWriter,
        journal: Journal,
        *,
        run_id: str,
        actor: str,
        gitlab_url: str | None,
        bucket: TokenBucket | None,
    ) -> None:
        self.registry = registry
        self.deleter = SafeDelete(registry)
        self.audit = audit
        self.journal = journal
        self.bucket = bucket
        self.run_id = run_id
        self.base = {"run_id": run_id, "actor": actor, "gitlab_url": gitlab_url}
        self.result = ApplyResult(run_id=run_id, audit_path=audit.path)
        self.intents = 0
        self.batches = 0

    def run(self, targets: list[DeleteTarget], batch_size: int) -> ApplyResult:
        started, first_request = time.monotonic(), self.registry.request_count
        try:
            with self.audit, self._paced():
                for batch in _batches(targets, batch_size):
                    self._batch(batch)
        finally:
            self.result.requests = self.registry.request_count - first_request
            self.result.seconds = time.monotonic() - started
        log.info("apply %s", self.result.summary())
        return self.result

    @contextlib.contextmanager
    def _paced(self) -> Iterator[None]:
        """Pace every registry request (retries and batch internals included) by the bucket.

        A requests response hook takes a token after each answer, so the next
        request waits its turn; the hook is removed when the run ends. Other
        users of the same session are paced too while the run lasts.
        """
        if self.bucket is None:
            yield
            return
        bucket = self.bucket

        def take_token(response: Any, *args: Any, **kwargs: Any) -> Any:
            bucket.take()
            return response

        hooks = self.registry.session.hooks.setdefault("response", [])
        hooks.append(take_token)
        try:
            yield
        finally:
            hooks.remove(take_token)

    def _record(self, target: DeleteTarget, event: str, **fields: Any) -> AuditRecord:
        record = AuditRecord(
            event=event,
            repository=target.repository,
            tag=target.tag,
            digest=target.digest,
            project_id=target.project_id,
            project_path=target.project_path,
            **self.base,
            **fields,
        )
        self.audit.write(record)
        return record

    def _outcome(self, target: DeleteTarget, result: str, **fields: Any) -> None:
        media_type = fields.pop("media_type", None)
        self._record(target, "result", result=result, media_type=media_type, **fields)
        fields.pop("method", None)
        fields.pop("batch", None)
        self.result.outcomes.append(
            TagOutcome(target.repository, target.tag, target.digest, result, **fields)
        )

    def _batch(self, targets: list[DeleteTarget]) -> None:
        """Re-check, journal, write intents, delete, write results for one batch."""
        ready: dict[str, tuple[DeleteTarget, OriginalTag]] = {}
        for target in targets:
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
        fields: dict[str, Any] = {"method": outcome.batch.method, "batch": batch_id}
        fields.update(outcome_details(outcome, target.tag))
        self._outcome(target, AUDIT_RESULT[state], **fields)


def outcome_details(outcome: BatchOutcome, tag: str) -> dict[str, Any]:
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


# ---------------------------------------------------------------------- project runs

DEVELOPER_ACCESS = 30  # Gitlab::Access::DEVELOPER: the least role allowed to delete images


def check_cleanup_permission(user: Any, project: Any) -> int:
    """The user's access level in ``project``; CleanupPermissionError below Developer (30).

    GitLab's CleanupTagsService needs ``destroy_container_image``, which
    Developer, Maintainer and Owner have.
    """
    level = user.access_level(project)
    if level < DEVELOPER_ACCESS:
        raise CleanupPermissionError(
            f"user {user.id} ({_get(user, 'username') or '?'}) has access level {level} in "
            f"project {project.id}; running its cleanup policy needs at least Developer "
            f"({DEVELOPER_ACCESS})"
        )
    return level
