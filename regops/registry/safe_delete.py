"""Deleting tags without taking a sibling down, as a batch that can always be settled.

Deleting a manifest by digest removes EVERY tag that points at it, so regops
never deletes a tag's image by digest. On GitLab's registry a tag is deleted by
name. On a plain Distribution registry (which cannot delete a tag by name) a
batch of tags is deleted the way GitLab's own service does it, made
recoverable:

1. ``prepare``: the tags' original manifests (read by the caller just before)
   and a unique placeholder image (a config-only manifest marked with the
   ``io.regops.placeholder`` annotation and a label in its config). No request
   changes anything; the caller makes the batch durable (the audit log) now.
2. ``execute``: a preflight ``DELETE`` of the placeholder's digest (a 404 proves
   the registry allows manifest deletes; a 405 raises, nothing touched);
   upload the placeholder; ``PUT`` it under each tag (which moves the tag off
   its image); ``HEAD`` every tag (a tag someone re-pushed meanwhile is left
   alone); then ``DELETE`` the placeholder by digest, the COMMIT POINT, which
   takes exactly the batch's tags with it. Idempotent requests are retried by
   the HTTP layer (a 404 on the final DELETE means it already happened).
3. ``settle``: brings a batch left in ANY intermediate state (a request that
   kept failing, a kill, a Ctrl-C) to a final one. Before the commit point the
   batch is rolled back: every tag still on the placeholder gets its original
   manifest back (same bytes, same digest); after it, the tags are deleted.
   ``execute`` settles on failure; recovery settles the batches a killed run
   left (see :mod:`regops.ops.recovery`).

The images stay in storage, untagged, until garbage collection.

Tags a GitLab tag protection rule keeps are never deleted: given the rules
(``protection=``, repository path -> :class:`~regops.policy.TagProtection`),
``prepare`` refuses a batch holding one (:class:`ProtectedTagError`) before
anything changes, whoever asks.

>>> deleter = SafeDelete(client)                                # doctest: +SKIP
>>> batch = deleter.prepare("group/app", [OriginalTag.of("1.0", manifest)])  # doctest: +SKIP
>>> deleter.execute(batch).results                              # doctest: +SKIP
{'1.0': 'deleted'}
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from regops.errors import (
    DeleteRolledBack,
    ProtectedTagError,
    RegistryNotFound,
    RegistryUnsupported,
    RegopsError,
    UnfinishedDeleteError,
    UnsafeDeleteError,
)
from regops.policy import TagProtection
from regops.registry.manifest import DOCKER_CONFIG, DOCKER_MANIFEST, ImageConfig, Manifest
from regops.registry.reference import Digest, validate_repository_name, validate_tag
from regops.secrets import redact

if TYPE_CHECKING:
    from regops.registry.client import RegistryClient

log = logging.getLogger("regops.registry")

# The annotation that marks a regops placeholder manifest (read without fetching its config).
PLACEHOLDER_ANNOTATION = "io.regops.placeholder"
# The config label regops has always put on its placeholder; older placeholders carry only this.
PLACEHOLDER_LABEL = "io.regops.dummy"

METHOD_TAG_DELETE = "tag_delete"  # DELETE /v2/<name>/manifests/<tag> (GitLab's registry)
METHOD_PLACEHOLDER = "placeholder"  # move the tags onto a placeholder, delete it by digest
METHOD_NONE = "none"  # nothing to delete

# What happened to one tag of a batch.
DELETED = "deleted"
ALREADY_GONE = "already_gone"  # not there (deleted by someone else, or before this batch)
CHANGED = "changed"  # re-pushed by someone while the batch ran: left alone
ROLLED_BACK = "rolled_back"  # not deleted: the batch was undone, the tag keeps its image
STRANDED = "stranded"  # still on the placeholder: the rollback failed too; settle again
TAG_OUTCOMES = frozenset({DELETED, ALREADY_GONE, CHANGED, ROLLED_BACK, STRANDED})


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Placeholder:
    """A unique config-only image: ``config`` and ``manifest`` bytes, and the manifest digest.

    A random uuid in both makes its digest unique to one batch: no tag outside
    the batch can point at it, and it can never be a real image.
    """

    config: bytes = field(repr=False)
    manifest: bytes = field(repr=False)
    digest: Digest

    @classmethod
    def create(cls) -> Placeholder:
        marker = uuid.uuid4().hex
        config = {
            "architecture": "",
            "os": "",
            "config": {"Labels": {PLACEHOLDER_LABEL: marker}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
        config_raw = json.dumps(config, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG,
                "size": len(config_raw),
                "digest": str(Digest.of(config_raw)),
            },
            "layers": [],
            # Kept by the registry with the bytes: a placeholder is known from its manifest alone.
            "annotations": {PLACEHOLDER_ANNOTATION: marker},
        }
        raw = json.dumps(manifest, indent=3).encode()
        return cls(config_raw, raw, Digest.of(raw))


def is_placeholder(manifest: Manifest) -> bool:
    """True for a regops placeholder manifest (by its annotation)."""
    if manifest.is_index or manifest.is_schema1 or manifest.layers:
        return False
    annotations = manifest.json.get("annotations")
    return isinstance(annotations, dict) and PLACEHOLDER_ANNOTATION in annotations


def is_placeholder_config(config: ImageConfig) -> bool:
    """True for the config of a regops placeholder (also the older, unannotated ones)."""
    inner = config.json.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    return isinstance(labels, dict) and PLACEHOLDER_LABEL in labels


@dataclass(frozen=True)
class OriginalTag:
    """A tag as it was just before its batch: name, digest, manifest bytes and type."""

    tag: str
    digest: Digest
    raw: bytes = field(repr=False)
    media_type: str

    @classmethod
    def of(cls, tag: str, manifest: Manifest) -> OriginalTag:
        return cls(validate_tag(tag), manifest.digest, manifest.raw, manifest.media_type)


@dataclass(frozen=True)
class DeleteBatch:
    """Tags of one repository deleted together, and how (``method``)."""

    repository: str
    method: str
    tags: tuple[OriginalTag, ...]
    placeholder: Placeholder | None = None

    @property
    def names(self) -> list[str]:
        return [t.tag for t in self.tags]

    @property
    def placeholder_digest(self) -> Digest | None:
        return self.placeholder.digest if self.placeholder is not None else None


@dataclass(frozen=True)
class BatchOutcome:
    """What a batch did: an outcome per tag, and why it did not complete (``error``).

    ``current`` holds the digest a ``changed`` tag points at now.
    """

    batch: DeleteBatch
    results: Mapping[str, str]
    error: str | None = None
    current: Mapping[str, Digest] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when nothing is left for a later settle (no tag stranded)."""
        return STRANDED not in self.results.values()

    def tags_with(self, outcome: str) -> tuple[str, ...]:
        return tuple(tag for tag, result in self.results.items() if result == outcome)


@dataclass(frozen=True)
class TagDeleteResult:
    """What :meth:`SafeDelete.delete_tags` did.

    ``deleted``: tags removed. ``missing``: tags that did not exist.
    ``changed``: tags someone re-pushed while the delete ran; left alone.
    ``method``: ``tag_delete``, ``placeholder`` or ``none``.
    """

    deleted: tuple[str, ...]
    missing: tuple[str, ...]
    method: str
    changed: tuple[str, ...] = ()


# --------------------------------------------------------------------------- the protocol


# The tag protection rules of a repository path (None: no rules known).
ProtectionLookup = Callable[[str], "TagProtection | None"]


class SafeDelete:
    """Tag deletes through one :class:`RegistryClient` that never remove another tag,
    nor a tag a GitLab protection rule keeps (``protection``)."""

    def __init__(self, client: RegistryClient, protection: ProtectionLookup | None = None) -> None:
        self.client = client
        self.protection = protection

    def __repr__(self) -> str:
        return f"SafeDelete({self.client!r})"

    def protected(self, repository: str, tags: Iterable[str]) -> dict[str, str]:
        """Tag -> why, for the tags of ``repository`` a protection rule keeps."""
        rules = self.protection(repository) if self.protection is not None else None
        if not rules:
            return {}
        found = {tag: rules.describe(tag) for tag in tags}
        return {tag: why for tag, why in found.items() if why is not None}

    def prepare(self, repository: str, originals: Iterable[OriginalTag]) -> DeleteBatch:
        """A batch for ``originals``; asks the registry (once per repository) how to delete.

        ProtectedTagError, before any request, when a protection rule keeps one of them.
        """
        repository = validate_repository_name(repository)
        tags = tuple({t.tag: t for t in originals}.values())
        refused = self.protected(repository, (t.tag for t in tags))
        if refused:
            raise ProtectedTagError(repository, refused)
        if not tags:
            return DeleteBatch(repository, METHOD_NONE, ())
        if self.client.supports_tag_delete(repository):
            return DeleteBatch(repository, METHOD_TAG_DELETE, tags)
        return DeleteBatch(repository, METHOD_PLACEHOLDER, tags, Placeholder.create())

    def execute(self, batch: DeleteBatch, *, check_other_tags: bool = False) -> BatchOutcome:
        """Delete the batch's tags; on a failure after the first change, settle it (roll back).

        Raises RegopsError only when nothing is left changed: the registry
        refuses manifest deletes (read-only, or delete disabled), or
        ``check_other_tags`` found a tag outside the batch on the placeholder
        (UnsafeDeleteError; the batch's tags are put back first, the
        placeholder is kept for that tag). Later registry and transport
        failures are reported in the outcome's ``error``. A KeyboardInterrupt
        (or any other BaseException) settles the batch first, then propagates.
        """
        if batch.method == METHOD_NONE:
            return BatchOutcome(batch, {})
        if batch.placeholder is not None:
            self._preflight(batch.repository, batch.placeholder.digest)
        try:
            if batch.method == METHOD_TAG_DELETE:
                return self._delete_by_name(batch)
            return self._delete_by_placeholder(batch, check_other_tags)
        except UnsafeDeleteError:
            raise
        except RegopsError as exc:
            error = redact(str(exc))
            log.warning("%s: delete batch failed, settling it: %s", batch.repository, error)
            return self._settle_after(batch, error)
        except BaseException:
            self._settle_quietly(batch)
            raise

    def settle(self, batch: DeleteBatch, *, error: str | None = None) -> BatchOutcome:
        """Bring a batch left in any state to a final one: rolled back, or deleted.

        Placeholder batches: when the placeholder still exists (the commit point
        was not reached), every tag on it gets its original manifest back, and
        the placeholder is deleted once no tag points at it. When it is gone,
        its tags went with it: deleted. Tag-delete batches: a tag that is gone
        was deleted; one still at its original image was not (rolled back).
        Raises RegopsError when the registry cannot even be read.
        """
        current = self.client.tag_digests(batch.repository, batch.names)
        placeholder = batch.placeholder_digest
        placeholder_exists = placeholder is not None and self._manifest_exists(
            batch.repository, placeholder
        )
        results: dict[str, str] = {}
        moved_away: dict[str, Digest] = {}
        for original in batch.tags:
            now = current[original.tag]
            if placeholder is not None and now == placeholder:
                results[original.tag] = self._roll_back(batch.repository, original)
            elif now is None:
                results[original.tag] = ALREADY_GONE if placeholder_exists else DELETED
            elif now == original.digest:
                results[original.tag] = ROLLED_BACK
            else:
                results[original.tag] = CHANGED
                moved_away[original.tag] = now
        if placeholder_exists and STRANDED not in results.values():
            assert placeholder is not None
            self._drop_placeholder(batch.repository, placeholder)
        return BatchOutcome(batch, results, error, moved_away)

    def _drop_placeholder(self, repo: str, placeholder: Digest) -> None:
        """Delete a placeholder no batch tag is on any more; failing leaves only a tiny
        untagged manifest behind, so it is logged, not raised."""
        try:
            self.client.delete_manifest(repo, placeholder, missing_ok=True)
        except RegopsError as exc:
            log.warning("%s: left the untagged placeholder %s: %s", repo, placeholder, exc)

    # -- methods -----------------------------------------------------------------

    def _delete_by_name(self, batch: DeleteBatch) -> BatchOutcome:
        results = {}
        for original in batch.tags:
            deleted = self.client.delete_tag(batch.repository, original.tag)
            results[original.tag] = DELETED if deleted else ALREADY_GONE
        return BatchOutcome(batch, results)

    def _delete_by_placeholder(self, batch: DeleteBatch, check_other_tags: bool) -> BatchOutcome:
        repo, placeholder = batch.repository, batch.placeholder
        assert placeholder is not None
        self.client.upload_blob(repo, placeholder.config)
        for original in batch.tags:
            self.client.put_manifest(repo, original.tag, placeholder.manifest, DOCKER_MANIFEST)
        current = self.client.tag_digests(repo, batch.names)
        results: dict[str, str] = {}
        moved_away: dict[str, Digest] = {}
        for name, digest in current.items():
            if digest == placeholder.digest:
                results[name] = DELETED
            elif digest is None:
                results[name] = ALREADY_GONE
            else:
                results[name] = CHANGED
                moved_away[name] = digest
        if check_other_tags:
            self._check_other_tags(batch, current)
        # The commit point: the batch's tags, and only they, go with the placeholder.
        self.client.delete_manifest(repo, placeholder.digest, missing_ok=True)
        return BatchOutcome(batch, results, None, moved_away)

    def _preflight(self, repo: str, digest: Digest) -> None:
        """Prove manifest deletes work before moving any tag (405: delete off or read-only)."""
        try:
            self.client.delete_manifest(repo, digest, missing_ok=True)
        except RegistryUnsupported as exc:
            raise RegistryUnsupported(
                exc.method,
                exc.url,
                exc.status,
                f"{repo}: the registry refuses manifest deletes, so tags cannot be deleted; "
                f"no tag was changed ({exc.detail})",
                exc.codes,
            ) from None

    # -- settling ----------------------------------------------------------------

    def _roll_back(self, repo: str, original: OriginalTag) -> str:
        """Put the original manifest back under its tag: ROLLED_BACK, or STRANDED on failure."""
        try:
            self.client.put_manifest(repo, original.tag, original.raw, original.media_type)
        except RegopsError as exc:
            log.error(
                "%s:%s is still on a regops placeholder; roll back failed: %s",
                repo,
                original.tag,
                redact(str(exc)),
            )
            return STRANDED
        return ROLLED_BACK

    def _manifest_exists(self, repo: str, digest: Digest) -> bool:
        try:
            self.client.manifest_digest(repo, digest)
        except RegistryNotFound:
            return False
        return True

    def _settle_after(self, batch: DeleteBatch, error: str) -> BatchOutcome:
        try:
            return self.settle(batch, error=error)
        except RegopsError as exc:
            # The registry cannot even be read: every tag may still be on the placeholder.
            reason = f"{error}; settling failed too: {redact(str(exc))}"
            return BatchOutcome(batch, dict.fromkeys(batch.names, STRANDED), reason)

    def _settle_quietly(self, batch: DeleteBatch) -> None:
        """Settle on the way out of an interrupt; a failure is logged, not raised over it."""
        try:
            self.settle(batch)
        except RegopsError as exc:
            log.error("%s: could not settle the interrupted batch: %s", batch.repository, exc)

    # -- a batch without a journal ---------------------------------------------------

    def delete_tags(
        self, repository: str, tags: Iterable[str], *, check_other_tags: bool = False
    ) -> TagDeleteResult:
        """Delete tags by name in one batch, never removing any other tag.

        Reads each tag's manifest first (one GET per tag: what a rollback puts
        back), then runs :meth:`execute`. Without a journal, a process killed
        mid-batch can leave tags on the placeholder: code that must survive
        that journals the batch between :meth:`prepare` and :meth:`execute`
        (``regops.ops.apply`` does). ``check_other_tags=True`` also proves,
        before the placeholder is deleted, that no other tag of the repository
        points at it (one HEAD per other tag): UnsafeDeleteError if one does.
        """
        repository = validate_repository_name(repository)
        wanted = list(dict.fromkeys(validate_tag(t) for t in tags))
        if not wanted:
            return TagDeleteResult((), (), METHOD_NONE)
        refused = self.protected(repository, wanted)
        if refused:  # before reading anything: a protected tag is never a candidate
            raise ProtectedTagError(repository, refused)
        originals, missing = self._originals(repository, wanted)
        batch = self.prepare(repository, originals)
        if batch.method == METHOD_NONE:
            return TagDeleteResult((), tuple(missing), METHOD_NONE)
        outcome = self.execute(batch, check_other_tags=check_other_tags)
        if outcome.error is not None:
            raise_batch_error(outcome)
        return TagDeleteResult(
            outcome.tags_with(DELETED),
            (*missing, *outcome.tags_with(ALREADY_GONE)),
            batch.method,
            outcome.tags_with(CHANGED),
        )

    def _originals(
        self, repository: str, wanted: Sequence[str]
    ) -> tuple[list[OriginalTag], list[str]]:
        try:
            existing = set(self.client.tags(repository))
        except RegistryNotFound:
            existing = set()
        originals, missing = [], [t for t in wanted if t not in existing]
        for tag in (t for t in wanted if t in existing):
            try:
                originals.append(OriginalTag.of(tag, self.client.get_manifest(repository, tag)))
            except RegistryNotFound:
                missing.append(tag)
        return originals, missing

    def _check_other_tags(self, batch: DeleteBatch, current: Mapping[str, Digest | None]) -> None:
        """UnsafeDeleteError when a tag outside the batch points at the placeholder.

        The batch's tags are put back on their images first; the placeholder
        stays (deleting it would take that tag down).
        """
        others = [t for t in self.client.tags(batch.repository) if t not in set(batch.names)]
        digests = self.client.tag_digests(batch.repository, others)
        holders = sorted(t for t, d in digests.items() if d == batch.placeholder_digest)
        if not holders:
            return
        for original in batch.tags:
            if current[original.tag] == batch.placeholder_digest:
                self._roll_back(batch.repository, original)
        raise UnsafeDeleteError(
            f"{batch.repository}: tags {', '.join(holders)} outside the batch point at the "
            f"placeholder {batch.placeholder_digest}; not deleting it (tags "
            f"{', '.join(batch.names)} were put back on their images)"
        )


def raise_batch_error(outcome: BatchOutcome) -> None:
    """Raise a RegopsError describing a batch that did not complete."""
    stranded = outcome.tags_with(STRANDED)
    where = outcome.batch.repository
    if stranded:
        raise UnfinishedDeleteError(
            f"{where}: delete failed ({outcome.error}); tags {', '.join(stranded)} are left on "
            f"the regops placeholder {outcome.batch.placeholder_digest}: run "
            "`regops cleanup recover` to put them back"
        )
    raise DeleteRolledBack(
        f"{where}: delete failed ({outcome.error}); the batch was rolled back, every tag keeps "
        "its image"
    )
