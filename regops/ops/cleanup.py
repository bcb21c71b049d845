"""Cleanup plans: which tags a GitLab cleanup policy run would delete, and why.

:func:`plan_cleanup` reproduces GitLab's two cleanup services step for step,
without deleting anything (app/services/projects/container_repository/
cleanup_tags_base_service.rb and its two subclasses). GitLab picks the service
by the registry: ``Gitlab::CleanupTagsService`` when the registry has the GitLab
API (``GET /gitlab/v1/`` answers 200 or 401: the metadata database),
``ThirdParty::CleanupTagsService`` otherwise. ``service=`` selects them here
(``"third_party"`` by default; the models choose by the connected registry).

Third-party service (tags from ``/v2/<path>/tags/list``, dated by build time):

1. ``latest`` is kept (unless ``keep_latest`` is false);
2. a tag stays a candidate only if it matches ``name_regex_delete`` (older name
   ``name_regex``) and does not match ``name_regex_keep``; both are RE2, anchored;
3. optional cap (GitLab's ``container_registry_cleanup_tags_service_max_list_size``);
4. ``keep_n``: candidates sorted newest first (unknown ``created_at`` sorts as
   now), the first ``keep_n`` kept;
5. ``older_than``: only candidates with a known ``created_at`` before
   ``now - older_than`` stay; the rest are kept;
6. tags a protection rule matches are kept (``protected`` / ``immutable``);
7. what is left is the delete list, in GitLab's order.

GitLab-API service (tags from ``/gitlab/v1/repositories/<path>/tags/list/``):
the same steps 1, 2, 4, 5, 6 run on each page of 1000 tags separately, in the
order the API lists them, and a tag is dated by push time, ``updated_at ||
created_at``; there is no cap (GitLab stops at a time limit instead). So
``keep_n`` keeps that many tags *per page*: 1200 tags and ``keep_n: 10`` keep 20.

Deliberate differences, all visible:

- Anchoring: GitLab builds ``\\A`` + pattern + ``\\z``, so a top-level ``|``
  anchors only its outer alternatives (``C|D`` also matches ``Cx``). regops
  anchors the whole pattern, ``\\A(?:pattern)\\z`` (what the policy author
  means), plans a second time with GitLab's own anchoring, and lists in
  :attr:`CleanupPlan.warnings` every tag whose decision differs between the
  two, knock-on effects on ``keep_n`` included.
- The cap (step 3): GitLab takes a *random* sample of ``keep_n + max_list_size``
  candidates. regops takes, deterministically, the newest ``keep_n`` (so step 4
  keeps exactly the tags an uncapped run keeps) plus the oldest
  ``max_list_size`` (the most deletable), and marks the plan unfinished. Without
  ``max_list_size`` (the default) every tag is decided.
- Protection: every rule protects, as in GitLab's policy run (no user); GitLab
  Community Edition ignores immutability rules there, regops keeps those tags too.
- Garbage in a policy (a ``keep_n`` that is not a number, an unparseable
  ``older_than``) raises :class:`PolicyError`; GitLab's ``to_i`` / ChronicDuration
  would treat it as 0 or crash the run.

A plan is a value: print it (a table), ``to_dicts()`` it, diff it. Nothing here
deletes; applying a plan lives elsewhere.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypedDict, TypeVar

from tabulate import tabulate

from regops.errors import PolicyError, ValidationError
from regops.ops import charts
from regops.ops.apply import ApplyResult, DeletableTag, PlanTarget, RunOptions, apply_plan
from regops.policy import (
    IMMUTABLE,
    LATEST_TAG,
    PROTECTED,
    CleanupPolicy,
    TagProtection,
    compile_gitlab_literal_regex,
)
from regops.registry.client import RegistryClient
from regops.sizes import human_bytes

# The two GitLab services plan_cleanup reproduces (GitLab's class names).
SERVICE_THIRD_PARTY = "third_party"  # ThirdParty::CleanupTagsService: /v2/ tags, build time
SERVICE_GITLAB = "gitlab"  # Gitlab::CleanupTagsService: the registry's GitLab API, push time
SERVICES = (SERVICE_THIRD_PARTY, SERVICE_GITLAB)
# Gitlab::CleanupTagsService::TAGS_PAGE_SIZE: keep_n applies to each page of this many tags.
GITLAB_TAGS_PAGE_SIZE = 1000

# Why a tag is kept (the values of CleanupPlan.kept).
KEEP_LATEST = "latest"
KEEP_NAME_REGEX_KEEP = "name_regex_keep"
KEEP_NOT_MATCHED = "not matched by name_regex"
KEEP_OVER_LIST_SIZE = "beyond max_list_size"
KEEP_N = "keep_n"
KEEP_NEWER = "newer than older_than"
KEEP_UNKNOWN_DATE = "unknown created_at"
KEEP_PROTECTED = PROTECTED  # a GitLab tag protection rule matches it
KEEP_IMMUTABLE = IMMUTABLE  # a GitLab immutability rule matches it
# A tag on a regops placeholder is unfinished work, not an image: never a candidate.
KEEP_PLACEHOLDER = "on a regops placeholder: an interrupted delete (run regops cleanup recover)"
# Why a tag is deleted: the last step that let it through.
DELETE_OLDER_THAN = "older than {older_than}"
DELETE_BEYOND_KEEP_N = "beyond the newest {keep_n}"
DELETE_MATCHED = "matched by name_regex"

# Rows shown by repr before "... N more" (the full list is in .decisions).
MAX_REPR_ROWS = 50
# Tag names listed in one warning.
MAX_WARNING_NAMES = 10
TABLE_HEADERS = ("repository", "tag", "created_at", "size", "decision", "reason")

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; annotations only


class PlannedTag(Protocol):
    """What a plan needs of a tag: its name.

    Everything else it reads is optional and read with getattr, a missing value
    being unknown: ``created_at`` (aware datetime, ISO text or None),
    ``total_size``, ``path``, ``digest``, ``manifest``, ``placeholder``.
    """

    @property
    def name(self) -> str: ...


TagT = TypeVar("TagT", bound=PlannedTag)  # the caller's tag type, handed back in the plan
DeletableT = TypeVar("DeletableT", bound=DeletableTag)  # a tag apply can delete: name + digest


class PlanOptions(TypedDict, total=False):
    """:func:`plan_cleanup`'s optional keyword arguments that models pass on."""

    now: datetime | None
    max_list_size: int | None
    service: str  # SERVICE_THIRD_PARTY or SERVICE_GITLAB
    page_size: int


@dataclass(frozen=True)
class TagDecision(Generic[TagT]):
    """One tag and what the plan does with it."""

    tag: TagT
    delete: bool
    reason: str

    @property
    def name(self) -> str:
        return self.tag.name

    @property
    def decision(self) -> str:
        return "delete" if self.delete else "keep"


@dataclass(eq=False)
class CleanupPlan(Generic[TagT]):
    """What one cleanup run would delete in one repository, and why every tag stays.

    ``counts`` follows the result of the GitLab service that ran (``service``):
    the third-party one reports original_size, before_truncate_size,
    after_truncate_size, before_delete_size and deleted_size; the GitLab-API one
    original_size, before_delete_size and deleted_size, summed over its pages.
    ``before_delete_size`` counts protected tags too (GitLab drops them in its
    delete service, after that count); ``deleted_size`` does not.
    """

    decisions: list[TagDecision[TagT]]
    to_delete: list[TagT]
    policy: CleanupPolicy
    now: datetime
    repository: str | None = None
    target: PlanTarget | None = field(default=None, repr=False)  # where apply() deletes
    finished: bool = True
    original_size: int = 0
    before_truncate_size: int = 0
    after_truncate_size: int = 0
    before_delete_size: int = 0
    warnings: list[str] = field(default_factory=list)
    service: str = SERVICE_THIRD_PARTY
    pages: int = 1

    @property
    def deleted_size(self) -> int:
        return len(self.to_delete)

    @property
    def kept(self) -> dict[str, str]:
        """Tag name -> reason, for every tag the run leaves in place."""
        return {d.name: d.reason for d in self.decisions if not d.delete}

    @property
    def names_to_delete(self) -> list[str]:
        return [tag.name for tag in self.to_delete]

    @property
    def placeholders(self) -> dict[str, str]:
        """Tag -> placeholder digest of tags on a regops placeholder (recover them first)."""
        return {
            d.name: str(_attr(d.tag, "digest"))
            for d in self.decisions
            if d.reason == KEEP_PLACEHOLDER
        }

    @property
    def placeholder_tags(self) -> list[str]:
        """Tags found on a regops placeholder: an interrupted delete to recover first."""
        return list(self.placeholders)

    @property
    def kept_by_keep_n(self) -> list[TagDecision]:
        """The decisions the ``keep_n`` step kept (the newest candidates)."""
        return [d for d in self.decisions if d.reason == KEEP_N]

    @property
    def protected(self) -> dict[str, str]:
        """Tag -> ``protected`` or ``immutable``, for tags a GitLab rule keeps."""
        return {
            d.name: d.reason for d in self.decisions if d.reason in (KEEP_PROTECTED, KEEP_IMMUTABLE)
        }

    @property
    def counts(self) -> dict[str, int]:
        if self.service == SERVICE_GITLAB:
            return {
                "original_size": self.original_size,
                "before_delete_size": self.before_delete_size,
                "deleted_size": self.deleted_size,
            }
        return {
            "original_size": self.original_size,
            "before_truncate_size": self.before_truncate_size,
            "after_truncate_size": self.after_truncate_size,
            "before_delete_size": self.before_delete_size,
            "deleted_size": self.deleted_size,
        }

    @functools.cached_property
    def freed_bytes(self) -> int | None:
        """Bytes garbage collection could free after this plan: blobs (manifest,
        config, layers) referenced only by deleted tags, each counted once.

        None when a tag's manifest or a size is unknown, or a tag is an index
        (its children's layers are not known here). Assumes GC removes untagged
        manifests (``registry garbage-collect -m``, as GitLab's
        ``registry-garbage-collect``). Blobs are counted for this repository only;
        one still used by another repository is not freed, so this is an upper
        bound. Nothing is fetched: a tag listed without its manifest gives None.
        """
        deleted: dict[str, int] = {}
        kept: set[str] = set()
        for decision in self.decisions:
            sizes = referenced_blobs(decision.tag)
            if sizes is None:
                return None
            if decision.delete:
                deleted.update(sizes)
            else:
                kept.update(sizes)
        return sum(size for digest, size in deleted.items() if digest not in kept)

    def to_dicts(self) -> list[dict[str, object]]:
        """One plain dict per tag, in the listing order (for CSV, JSON, diffs)."""
        return [
            {
                "repository": self._repository_of(d.tag),
                "tag": d.name,
                "created_at": _iso(_created_at(d.tag)),
                "size": _attr(d.tag, "total_size"),
                "delete": d.delete,
                "decision": d.decision,
                "reason": d.reason,
            }
            for d in self.decisions
        ]

    def summary(self) -> str:
        """One line: how many tags, how many deleted, whether the run finished."""
        repositories = {self._repository_of(d.tag) for d in self.decisions}
        name = repositories.pop() if len(repositories) == 1 else None
        text = (
            f"{name or 'repository'}: {self.original_size} tags, "
            f"{self.deleted_size} to delete, {self.original_size - self.deleted_size} kept"
        )
        if "freed_bytes" in self.__dict__ and self.freed_bytes is not None:
            text += f", frees up to {human_bytes(self.freed_bytes)}"
        return text if self.finished else text + " (unfinished: max_list_size reached)"

    def _rows(self, limit: int | None) -> list[list[str]]:
        rows = []
        for d in self.decisions[:limit]:
            created = _created_at(d.tag)
            size = _attr(d.tag, "total_size")
            rows.append(
                [
                    self._repository_of(d.tag) or "",
                    d.name,
                    created.strftime("%Y-%m-%d %H:%M") if created else "unknown",
                    human_bytes(size, unknown="") if isinstance(size, int) else "",
                    d.decision,
                    d.reason,
                ]
            )
        return rows

    def _repository_of(self, tag: PlannedTag) -> str | None:
        return self.repository or _repository_from_path(tag)

    def _table(self, limit: int | None, tablefmt: str = "simple") -> str:
        """The decisions as a table; the repository column only when it is known."""
        rows = self._rows(limit)
        headers: Sequence[str] = TABLE_HEADERS
        if not any(row[0] for row in rows):
            rows, headers = [row[1:] for row in rows], TABLE_HEADERS[1:]
        return tabulate(rows, headers=headers, tablefmt=tablefmt)

    def __repr__(self) -> str:
        lines = [self.summary()]
        if self.decisions:
            lines.append(self._table(MAX_REPR_ROWS))
        if len(self.decisions) > MAX_REPR_ROWS:
            lines.append(f"... {len(self.decisions) - MAX_REPR_ROWS} more (see .decisions)")
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = [f"<p>{html.escape(self.summary())}</p>"]
        parts.append(self._table(None, tablefmt="html"))
        parts.extend(f"<p>warning: {html.escape(w)}</p>" for w in self.warnings)
        return "\n".join(parts)

    def plot(self) -> Any:  # Any: a matplotlib Figure (matplotlib is imported when drawn)
        """Tag ages, kept and deleted, with the policy's cut-offs: a matplotlib Figure
        (:func:`regops.ops.charts.plan_chart`)."""
        return charts.plan_chart([self])

    def apply(
        self: CleanupPlan[DeletableT],
        registry: RegistryClient | None = None,
        *,
        gitlab_url: str | None = None,
        **options: Unpack[RunOptions],
    ) -> ApplyResult:
        """Delete exactly the planned tags, audited: :func:`regops.ops.apply.apply_plan`.

        ``registry`` defaults to the one the plan was made from (a plan made
        through the models knows it); ``options`` are ``audit_path``,
        ``actor``, ``max_requests_per_second``, ``batch_size``.
        """
        return apply_plan(self, registry, gitlab_url=gitlab_url, **options)


def plan_cleanup(
    tags: Iterable[TagT],
    policy: object,  # checked by CleanupPolicy.parse
    now: datetime | None = None,
    max_list_size: int | None = None,
    repository: str | None = None,
    target: PlanTarget | None = None,
    *,
    service: str = SERVICE_THIRD_PARTY,
    protection: TagProtection | None = None,
    page_size: int = GITLAB_TAGS_PAGE_SIZE,
    notes: Sequence[str] = (),
) -> CleanupPlan:
    """Decide every tag as a GitLab cleanup run would; delete nothing.

    ``tags``: objects with ``.name`` and ``.created_at`` (aware datetime, ISO
    text or None); for ``service="gitlab"`` also ``.updated_at``, given in the
    order the registry's GitLab API lists them. ``policy``: a
    :class:`~regops.policy.CleanupPolicy`, or what :meth:`CleanupPolicy.parse
    <regops.policy.CleanupPolicy.parse>` takes (a mapping with the API's
    parameter names, or a policy object). ``service``: ``"third_party"``
    (GitLab's ThirdParty::CleanupTagsService, the default) or ``"gitlab"``
    (Gitlab::CleanupTagsService: push-time dating, ``keep_n`` per page of
    ``page_size`` tags, no ``max_list_size``). ``protection``: the project's
    tag protection rules; the tags they match are kept. ``notes``: extra lines
    for :attr:`CleanupPlan.warnings` (the models say there how GitLab itself
    would delete on this registry).

    >>> plan = plan_cleanup(tags, {"name_regex_delete": ".*", "keep_n": 1})  # doctest: +SKIP
    >>> plan.names_to_delete, plan.kept                                     # doctest: +SKIP
    """
    rules = CleanupPolicy.parse(policy)
    now = _check_now(now)
    service = _check_service(service)
    page_size = _check_page_size(page_size)
    max_list_size = _check_max_list_size(max_list_size)
    if service == SERVICE_GITLAB and max_list_size:
        raise ValidationError(
            "max_list_size", "applies to GitLab's third-party service only (service='third_party')"
        )
    listed = _check_tags(tags, dated_by_push=service == SERVICE_GITLAB)
    protection = protection or TagProtection()
    ours = _Pipeline(rules, now, service, protection, rules.delete_regex, rules.keep_regex)
    ours.run(listed, max_list_size, page_size)
    warnings = _anchoring_warnings(listed, ours, max_list_size, page_size)
    return CleanupPlan(
        decisions=[ours.decided[tag.name] for tag in listed],
        to_delete=ours.deleted,
        policy=rules,
        now=now,
        repository=repository,
        target=target,
        finished=ours.after_truncate_size == ours.before_truncate_size,
        original_size=len(listed),
        before_truncate_size=ours.before_truncate_size,
        after_truncate_size=ours.after_truncate_size,
        before_delete_size=ours.before_delete_size,
        warnings=warnings + ours.placeholder_warnings() + [str(note) for note in notes],
        service=service,
        pages=ours.pages,
    )


class _Pipeline:
    """The steps of one GitLab cleanup service, recording a decision per tag.

    Run twice per plan: with regops's anchoring, and with GitLab's literal one
    (``name_matchers``), so the warnings can name every tag decided otherwise.
    """

    def __init__(
        self,
        rules: CleanupPolicy,
        now: datetime,
        service: str,
        protection: TagProtection,
        delete_regex: Any,
        keep_regex: Any,
    ) -> None:
        self.rules = rules
        self.now = now
        self.service = service
        self.protection = protection
        self.delete_regex = delete_regex
        self.keep_regex = keep_regex
        self.decided: dict[str, TagDecision] = {}
        self.deleted: list[Any] = []
        self.before_truncate_size = 0
        self.after_truncate_size = 0
        self.before_delete_size = 0
        self.pages = 0

    def run(self, listed: list[Any], max_list_size: int | None, page_size: int) -> None:
        """Decide every tag: the whole list (third party), or page after page (GitLab)."""
        candidates = self.set_aside_placeholders(listed)
        if self.service == SERVICE_THIRD_PARTY:
            self.pages = 1
            self._run_page(candidates, max_list_size)
            return
        # GitLab pages the registry's tag list; a placeholder still takes its place there.
        placeholder_names = {
            name for name, d in self.decided.items() if d.reason == KEEP_PLACEHOLDER
        }
        for start in range(0, max(len(listed), 1), page_size):
            page = listed[start : start + page_size]
            self.pages += 1
            self._run_page([tag for tag in page if tag.name not in placeholder_names], None)

    def _run_page(self, tags: list[Any], max_list_size: int | None) -> None:
        candidates = self.keep_latest(tags)
        candidates = self.filter_by_name(candidates)
        self.before_truncate_size += len(candidates)
        candidates = self.truncate(candidates, max_list_size)
        self.after_truncate_size += len(candidates)
        candidates = self.filter_keep_n(candidates)
        candidates = self.filter_older_than(candidates)
        self.before_delete_size += len(candidates)
        for tag in candidates:
            reason = self.protection.reason(tag.name)
            if reason is not None:
                self.keep(tag, reason)
            else:
                self.delete(tag)
                self.deleted.append(tag)

    def keep(self, tag: TagT, reason: str) -> None:
        self.decided[tag.name] = TagDecision(tag, False, reason)

    def delete(self, tag: TagT) -> None:
        if self.rules.older_than is not None:
            reason = DELETE_OLDER_THAN.format(older_than=self.rules.older_than)
        elif self.rules.keep_n is not None:
            reason = DELETE_BEYOND_KEEP_N.format(keep_n=self.rules.keep_n)
        else:
            reason = DELETE_MATCHED
        self.decided[tag.name] = TagDecision(tag, True, reason)

    def pushed_at(self, tag: Any) -> datetime | None:
        """GitLab's ``pushed_at``: build time (third party), ``updated_at || created_at``."""
        if self.service == SERVICE_GITLAB:
            return _pushed_at(tag)
        return _created_at(tag)

    def set_aside_placeholders(self, tags: list[Any]) -> list[Any]:
        """Keep tags on a regops placeholder out of every step (they are not images).

        Counted as the newest (their date is unknown), they would push real
        tags out of keep_n; recovery puts their images back first.
        """
        for tag in tags:
            if _attr(tag, "placeholder"):
                self.keep(tag, KEEP_PLACEHOLDER)
        return [tag for tag in tags if not _attr(tag, "placeholder")]

    def placeholder_warnings(self) -> list[str]:
        names = [name for name, d in self.decided.items() if d.reason == KEEP_PLACEHOLDER]
        if not names:
            return []
        return [
            f"{len(names)} tags are on a regops placeholder (a delete was interrupted): "
            f"{_names(names)}; run `regops cleanup recover` and plan again before applying"
        ]

    def keep_latest(self, tags: list[TagT]) -> list[TagT]:
        if not self.rules.keep_latest:
            return list(tags)
        for tag in tags:
            if tag.name == LATEST_TAG:
                self.keep(tag, KEEP_LATEST)
        return [tag for tag in tags if tag.name != LATEST_TAG]

    def name_decision(self, name: str) -> str | None:
        """None when the name filter lets the tag through, else the keep reason."""
        if not self.delete_regex.search(name):
            return KEEP_NOT_MATCHED
        if self.keep_regex.search(name):
            return KEEP_NAME_REGEX_KEEP
        return None

    def filter_by_name(self, tags: list[TagT]) -> list[TagT]:
        result = []
        for tag in tags:
            reason = self.name_decision(tag.name)
            if reason is None:
                result.append(tag)
            else:
                self.keep(tag, reason)
        return result

    def truncate(self, tags: list[TagT], max_list_size: int | None) -> list[TagT]:
        """GitLab's cap, deterministic: the newest keep_n plus the oldest max_list_size."""
        keep_n = self.rules.keep_n or 0
        if not max_list_size or len(tags) <= max_list_size + keep_n:
            return tags
        ordered = self.newest_first(tags)
        chosen = {id(tag) for tag in ordered[:keep_n] + ordered[len(ordered) - max_list_size :]}
        for tag in tags:
            if id(tag) not in chosen:
                self.keep(tag, KEEP_OVER_LIST_SIZE)
        return [tag for tag in tags if id(tag) in chosen]

    def newest_first(self, tags: list[Any]) -> list[Any]:
        """GitLab's order_by_date_desc: sort ascending, then reversed.

        Unknown dates sort as now. Ruby's sort_by is not stable; regops sorts
        stably, so ties come out in reverse listing order (GitLab deletes
        ``Bb Ba`` in that order in its own spec).
        """
        ordered = sorted(tags, key=lambda tag: self.pushed_at(tag) or self.now)
        ordered.reverse()
        return ordered

    def filter_keep_n(self, tags: list[TagT]) -> list[TagT]:
        if self.rules.keep_n is None:
            return tags
        ordered = self.newest_first(tags)
        for tag in ordered[: self.rules.keep_n]:
            self.keep(tag, KEEP_N)
        return ordered[self.rules.keep_n :]

    def filter_older_than(self, tags: list[TagT]) -> list[TagT]:
        if self.rules.older_than_delta is None:
            return tags
        cutoff = self.now - self.rules.older_than_delta
        result = []
        for tag in tags:
            pushed = self.pushed_at(tag)
            if pushed is None:
                self.keep(tag, KEEP_UNKNOWN_DATE)
            elif pushed < cutoff:
                result.append(tag)
            else:
                self.keep(tag, KEEP_NEWER)
        return result


def _anchoring_warnings(
    listed: list[Any], ours: _Pipeline, max_list_size: int | None, page_size: int
) -> list[str]:
    """Plan again with GitLab's literal ``\\A<p>\\z`` anchoring; name every tag decided
    otherwise (a different name match, and what it changes in keep_n)."""
    rules = ours.rules
    try:
        delete = compile_gitlab_literal_regex(rules.name_regex, rules.regex_field)
        keep = compile_gitlab_literal_regex(rules.name_regex_keep, "name_regex_keep")
    except PolicyError as exc:
        return [f"GitLab's own run of this policy would fail and delete nothing: {exc}"]
    theirs = _Pipeline(rules, ours.now, ours.service, ours.protection, delete, keep)
    theirs.run(listed, max_list_size, page_size)
    differ = [
        tag.name
        for tag in listed
        if ours.decided[tag.name].delete != theirs.decided[tag.name].delete
    ]
    if not differ:
        return []
    gitlab_deletes = [n for n in differ if theirs.decided[n].delete]
    gitlab_keeps = [n for n in differ if not theirs.decided[n].delete]
    parts = []
    if gitlab_deletes:
        parts.append(f"GitLab would also delete {_names(gitlab_deletes)}")
    if gitlab_keeps:
        parts.append(f"GitLab would keep {_names(gitlab_keeps)}")
    return [
        "GitLab anchors the policy regexes as \\A<pattern>\\z without a group (a top-level "
        "'|' anchors only the outer alternatives; an unclosed \\Q swallows the \\z); this "
        "plan anchors the whole pattern. Planned again GitLab's way: " + "; ".join(parts)
    ]


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_WARNING_NAMES])
    more = len(names) - MAX_WARNING_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def _check_service(service: str) -> str:
    if service not in SERVICES:
        raise ValidationError("service", f"expected one of {', '.join(SERVICES)}, got {service!r}")
    return service


def _check_page_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("page_size", f"expected a whole number >= 1, got {value!r}")
    return value


def _check_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValidationError("now", f"expected a timezone-aware datetime, got {now!r}")
    return now


def _check_max_list_size(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("max_list_size", f"expected a whole number >= 0, got {value!r}")
    return value  # 0 means no limit, as in GitLab


def _check_tags(tags: Iterable[Any], *, dated_by_push: bool = False) -> list[Any]:
    """Every tag needs a str name, unique, and a usable created_at (and updated_at)."""
    listed = list(tags)
    seen: set[str] = set()
    for tag in listed:
        name = getattr(tag, "name", None)
        if not isinstance(name, str) or not name:
            raise ValidationError("tags", f"a tag without a name: {tag!r}")
        if name in seen:
            raise ValidationError("tags", f"tag {name!r} listed twice")
        seen.add(name)
        _created_at(tag)
        if dated_by_push:
            _pushed_at(tag)
    return listed


def _created_at(tag: PlannedTag) -> datetime | None:
    """The tag's created_at as an aware datetime (ISO strings accepted), or None."""
    return _time_attr(tag, "created_at")


def _pushed_at(tag: Any) -> datetime | None:
    """GitLab's push time of a tag from its GitLab API: ``updated_at || created_at``."""
    return _time_attr(tag, "updated_at") or _time_attr(tag, "created_at")


def _time_attr(tag: Any, name: str) -> datetime | None:
    value = _attr(tag, name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValidationError(name, f"tag {tag.name!r}: {value!r}") from exc
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationError(
            name, f"tag {tag.name!r}: expected a timezone-aware datetime, got {value!r}"
        )
    return value


def _attr(obj: object, name: str) -> Any:  # Any: an optional field of the caller's own type
    """getattr that treats a missing or unfetchable attribute as unknown."""
    try:
        return getattr(obj, name, None)
    except AttributeError:
        return None


def referenced_blobs(tag: object) -> dict[str, int] | None:
    """Digest -> size of every blob a tag keeps alive: its manifest, config, layers.

    Needs ``tag.manifest`` with ``.config`` and ``.layers`` (descriptors with
    ``digest`` and ``size``) and ``.digest`` + ``.raw`` for the manifest itself
    (``tag.digest`` is used when the manifest has none). None when anything is
    unknown or the manifest is an index (its children's blobs are not known).
    """
    manifest = _attr(tag, "manifest")
    if manifest is None or _attr(manifest, "children"):
        return None
    sizes: dict[str, int] = {}
    digest = _attr(manifest, "digest") or _attr(tag, "digest")
    raw = _attr(manifest, "raw")
    if digest is None or raw is None:
        return None
    sizes[str(digest)] = len(raw)
    config = _attr(manifest, "config")
    descriptors: Sequence[object] = [*([config] if config is not None else [])]
    descriptors = [*descriptors, *(_attr(manifest, "layers") or ())]
    for descriptor in descriptors:
        size = _attr(descriptor, "size")
        blob = _attr(descriptor, "digest")
        if blob is None or not isinstance(size, int):
            return None
        sizes[str(blob)] = size
    return sizes


def _repository_from_path(tag: object) -> str | None:
    """``group/app:tag`` -> ``group/app`` (GitLab's Tag#path)."""
    path = _attr(tag, "path")
    if isinstance(path, str) and ":" in path:
        return path.rpartition(":")[0]
    return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
