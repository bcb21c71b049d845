"""ExpirationPolicy: a project's container cleanup policy, checked before it is sent.

>>> policy = ExpirationPolicy.find_by(project_id=5)                 # doctest: +SKIP
>>> policy.update(keep_n=5, older_than="14d")                       # doctest: +SKIP
>>> policy.plan()                 # what a run would delete; nothing deleted  # doctest: +SKIP
>>> ExpirationPolicy.where(enabled=False).with_repositories().update_all(enabled=True)
... # doctest: +SKIP

Values are validated with GitLab's rules and messages (:mod:`regops.policy`)
before any request; after ``PUT /projects/:id`` the project is read again and
every sent value compared: an update GitLab silently ignored raises
:class:`PolicyNotApplied` naming the fields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from regops.errors import PolicyNotApplied, RegopsError, UpdateAllError, ValidationError
from regops.models.base import (
    MAX_TABLE_ROWS,
    Collection,
    Model,
    check_filters,
    relation,
    resolve_connection,
)
from regops.policy import (
    POLICY_ATTRIBUTES,
    CleanupPolicy,
    collect_policy_errors,
    validate_policy_attributes,
)

if TYPE_CHECKING:
    from regops.connection import Connection
    from regops.models.project import Project

log = logging.getLogger("regops.models")

# Rails' ContainerExpirationPolicy attribute names, in the order GitLab shows them.
ATTRIBUTE_NAMES = (
    "cadence",
    "enabled",
    "keep_n",
    "older_than",
    "name_regex",
    "name_regex_keep",
    "next_run_at",
    "project_id",
)
REGEX_FIELDS = ("name_regex", "name_regex_keep")


class ExpirationPolicy(Model):
    """A project's cleanup policy (GitLab's ContainerExpirationPolicy)."""

    fields = ATTRIBUTE_NAMES
    table_columns = (
        "project_id",
        "enabled",
        "cadence",
        "keep_n",
        "older_than",
        "name_regex",
        "name_regex_keep",
        "next_run_at",
    )
    repr_fields = ("project_id", "enabled", "cadence", "keep_n", "older_than", "name_regex")
    parent_relations = ("project",)
    time_fields = ("next_run_at",)

    def _key(self) -> Any:
        return self._data.get("project_id")

    @classmethod
    def from_project(cls, project: Project, data: Mapping[str, Any]) -> ExpirationPolicy:
        """The policy inside a project's answer, tied to that project."""
        policy = cls({**data, "project_id": project.id}, connection=project._connection)
        policy.project = project
        return policy

    # -- finders -------------------------------------------------------------------

    @classmethod
    def find_by(
        cls, *, project_id: int | str, connection: Connection | None = None
    ) -> ExpirationPolicy:
        """The policy of project ``project_id`` (one GitLab request)."""
        from regops.models.project import Project

        try:
            project = Project.find(project_id, connection=connection)
        except Project.DoesNotExist:
            raise cls.DoesNotExist(
                f"ExpirationPolicy not found: project {project_id} not found"
            ) from None
        return project.container_expiration_policy

    @classmethod
    def where(
        cls, *, projects: Any = None, connection: Connection | None = None, **filters: Any
    ) -> PolicyQuery:
        """Policies matching ``filters`` (compared here: GitLab cannot filter on them).

        Iterates every project (or ``projects``, e.g. ``Project.where(search="app")``).
        """
        return PolicyQuery(connection=connection, projects=projects).where(**filters)

    @classmethod
    def all(cls, *, connection: Connection | None = None) -> PolicyQuery:
        return PolicyQuery(connection=connection)

    # -- data ----------------------------------------------------------------------

    def _fetch(self) -> Mapping[str, Any]:
        project = self.project.reload()
        return {**(project.get("container_expiration_policy") or {}), "project_id": project.id}

    @property
    def attributes(self) -> dict[str, Any]:
        """Rails' attribute names and values (``policy.attributes`` in a Rails console)."""
        return {name: self._data.get(name) for name in ATTRIBUTE_NAMES}

    @property
    def rules(self) -> CleanupPolicy:
        """The policy as a cleanup run reads it (PolicyError when GitLab could not run it)."""
        return CleanupPolicy.parse(self.attributes)

    @relation
    def project(self) -> Project:
        from regops.models.project import Project

        return Project.find(self.project_id, connection=self.connection)

    # -- changes -------------------------------------------------------------------

    def validate(self, **attrs: Any) -> dict[str, Any]:
        """The normalised attributes ``update(**attrs)`` would send; PolicyError if invalid."""
        if not attrs:
            raise ValidationError("attributes", "nothing to update")
        given = validate_policy_attributes(attrs, partial=True)
        current = {k: v for k, v in self.attributes.items() if k in POLICY_ATTRIBUTES}
        validate_policy_attributes(attrs, current=current)  # the record as GitLab saves it
        return given

    def update(self, **attrs: Any) -> ExpirationPolicy:
        """Validate, ``PUT /projects/:id``, read back and check every sent value took.

        Raises PolicyError (nothing sent) for values GitLab would refuse, and
        :class:`PolicyNotApplied` when GitLab answered but kept other values.
        """
        given = self.validate(**attrs)
        gitlab = self.connection.gitlab
        gitlab.update_project(self.project_id, container_expiration_policy_attributes=given)
        fresh = gitlab.project(self.project_id).get("container_expiration_policy") or {}
        ignored = _not_applied(given, fresh)
        self.__dict__["_data"] = self._prepare({**fresh, "project_id": self.project_id})
        if ignored:
            raise PolicyNotApplied(self.project_id, ignored)
        log.info("project %s: policy updated (%s)", self.project_id, ", ".join(given))
        return self

    # -- planning ------------------------------------------------------------------

    def with_changes(self, **attrs: Any) -> ExpirationPolicy:
        """An unsaved copy with ``attrs`` changed (validated), for one-off plans.

        >>> policy.with_changes(keep_n=5, name_regex="main-.*").plan()   # doctest: +SKIP
        """
        changes = validate_policy_attributes(attrs, partial=True)
        return ExpirationPolicy(
            {**self._data, **changes, "project_id": self.project_id}, connection=self.connection
        )

    def plan(
        self,
        project: Project | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> PolicyPlan:
        """What a run of this policy would delete in every repository of the project.

        Nothing is deleted. ``overrides`` change attributes for this plan only
        (validated, not saved); ``options`` go to
        :func:`regops.ops.cleanup.plan_cleanup` (``now``, ``max_list_size``).
        """
        if overrides:
            return self.with_changes(**overrides).plan(project, **options)
        project = project or self.project
        plans = [
            repository.plan_cleanup(self, **options)
            for repository in project.container_repositories
        ]
        return PolicyPlan(plans, project_id=project.id)


def _same(field: str, sent: Any, got: Any) -> bool:
    if field in REGEX_FIELDS:
        return (sent or None) == (got or None)
    return sent == got


def _not_applied(given: Mapping[str, Any], fresh: Mapping[str, Any]) -> dict[str, tuple]:
    """Sent fields whose value GitLab does not show back: field -> (sent, got)."""
    known = {k: v for k, v in fresh.items() if k in POLICY_ATTRIBUTES}
    stored, _errors = collect_policy_errors(known, partial=True)  # same coercions as sent
    return {
        field: (value, stored.get(field))
        for field, value in given.items()
        if not _same(field, value, stored.get(field))
    }


# -- plans over a project ------------------------------------------------------------


class PolicyPlan(list):
    """The cleanup plans of one project's repositories (a list of CleanupPlan)."""

    def __init__(self, plans: list[Any], project_id: Any = None) -> None:
        super().__init__(plans)
        self.project_id = project_id

    @property
    def to_delete(self) -> list[Any]:
        """Every tag to delete, repository after repository."""
        return [tag for plan in self for tag in plan.to_delete]

    @property
    def names_to_delete(self) -> dict[str, list[str]]:
        return {plan.repository: plan.names_to_delete for plan in self}

    @property
    def placeholder_tags(self) -> list[str]:
        """``repository:tag`` of tags on a regops placeholder (an interrupted delete)."""
        return [f"{plan.repository}:{tag}" for plan in self for tag in plan.placeholder_tags]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [row for plan in self for row in plan.to_dicts()]

    def summary(self) -> str:
        tags = sum(plan.original_size for plan in self)
        deleted = sum(plan.deleted_size for plan in self)
        return (
            f"project {self.project_id}: {len(self)} repositories, {tags} tags, "
            f"{deleted} to delete, {tags - deleted} kept"
        )

    def __repr__(self) -> str:
        if not self:
            return f"project {self.project_id}: no container repositories"
        return "\n\n".join([self.summary(), *(repr(plan) for plan in self)])

    __str__ = __repr__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("PolicyPlan(...)" if cycle else repr(self))

    def _repr_html_(self) -> str:
        import html

        parts = [f"<p>{html.escape(self.summary())}</p>"]
        parts.extend(plan._repr_html_() for plan in self)
        return "\n".join(parts)

    def apply(self, connection: Connection | None = None, **options: Any) -> Any:
        """Delete exactly the planned tags (audited): :func:`regops.ops.apply.apply_plan`."""
        from regops.ops.apply import apply_plan

        return apply_plan(self, resolve_connection(connection), **options)


# -- queries across projects ----------------------------------------------------------


class PolicyQuery:
    """Policies across projects, filtered here (lazy, chainable, immutable).

    Costs: the project listing (keyset pages of 100), plus one request per
    project for ``with_repositories()``.
    """

    def __init__(
        self,
        *,
        connection: Connection | None = None,
        projects: Any = None,
        filters: Mapping[str, Any] | None = None,
        with_repositories: bool = False,
    ) -> None:
        self._connection = connection
        self.projects = projects
        self.filters = dict(filters or {})
        self.only_with_repositories = with_repositories

    def _clone(self, **changes: Any) -> PolicyQuery:
        state = {
            "connection": self._connection,
            "projects": self.projects,
            "filters": self.filters,
            "with_repositories": self.only_with_repositories,
            **changes,
        }
        return PolicyQuery(**state)

    def where(self, **filters: Any) -> PolicyQuery:
        """More attribute filters (values normalised as GitLab would store them)."""
        check_filters("ExpirationPolicy", filters, POLICY_ATTRIBUTES)
        normalised, errors = collect_policy_errors(filters, partial=True)
        if errors:
            field, messages = next(iter(errors.items()))
            raise ValidationError(field, messages[0])
        return self._clone(filters={**self.filters, **normalised})

    def with_repositories(self) -> PolicyQuery:
        """Only policies of projects that have container repositories."""
        return self._clone(with_repositories=True)

    def _projects(self) -> Iterator[Project]:
        from regops.models.project import Project

        if self.projects is not None:
            return iter(self.projects)
        return iter(Project.all(connection=self._connection))

    def __iter__(self) -> Iterator[ExpirationPolicy]:
        for project in self._projects():
            if "container_expiration_policy" not in project._data:
                project.reload()
            data = project.get("container_expiration_policy")
            if not data:
                continue
            policy = ExpirationPolicy.from_project(project, data)
            if not self._matches(policy):
                continue
            if self.only_with_repositories and not _has_repositories(project):
                continue
            yield policy

    def _matches(self, policy: ExpirationPolicy) -> bool:
        stored, _errors = collect_policy_errors(
            {k: v for k, v in policy.attributes.items() if k in self.filters}, partial=True
        )
        return all(_same(k, v, stored.get(k)) for k, v in self.filters.items())

    def all(self) -> Collection:
        return Collection(self, model=ExpirationPolicy)

    def count(self) -> int:
        return sum(1 for _ in self)

    def first(self, n: int | None = None) -> Any:
        items = []
        for policy in self:
            items.append(policy)
            if len(items) >= (n or 1):
                break
        if n is None:
            return items[0] if items else None
        return Collection(items, model=ExpirationPolicy)

    def update_all(self, **attrs: Any) -> Collection:
        """``policy.update(**attrs)`` for every matching policy; all are tried.

        Values are validated once before anything is sent. Failures are
        collected and raised together (:class:`UpdateAllError`) after the rest.
        """
        validate_policy_attributes(attrs, partial=True)
        policies = list(self)
        updated: list[ExpirationPolicy] = []
        failed: dict[Any, Exception] = {}
        for policy in policies:
            try:
                updated.append(policy.update(**attrs))
            except RegopsError as exc:
                failed[policy.project_id] = exc
        if failed:
            raise UpdateAllError(updated, failed)
        return Collection(updated, model=ExpirationPolicy)

    def __repr__(self) -> str:
        items = self.first(MAX_TABLE_ROWS + 1)
        more = None
        if len(items) > MAX_TABLE_ROWS:
            items = items[:MAX_TABLE_ROWS]
            more = "... more (call .count() for the total, .all() for every row)"
        return Collection(items, model=ExpirationPolicy, more=more).table()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("<ExpirationPolicy query>" if cycle else repr(self))

    def _repr_html_(self) -> str:
        return self.first(MAX_TABLE_ROWS)._repr_html_()


def _has_repositories(project: Project) -> bool:
    """True when the project has a container repository (the first page tells)."""
    cached = project.__dict__.get("_relations", {}).get("container_repositories")
    if cached is not None:
        return bool(cached)
    rows = project.connection.gitlab.project_repositories(project.id)
    return next(iter(rows), None) is not None
