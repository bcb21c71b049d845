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

import html
import logging
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from regops.connection import Connection
from regops.errors import ConfigError, PolicyNotApplied, ValidationError
from regops.models.base import (
    Model,
    PrettyPrinter,
    Q,
    Query,
    check_filters,
    relation,
    resolve_connection,
)
from regops.ops import charts
from regops.ops.apply import ApplyResult, RunOptions, apply_plan, default_actor
from regops.ops.cleanup import CleanupPlan, PlanOptions
from regops.ops.forecast import Forecast, PolicyInput, forecast
from regops.policy import (
    POLICY_ATTRIBUTES,
    CleanupPolicy,
    PolicyOptions,
    collect_policy_errors,
    validate_policy_attributes,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; annotations only

    from regops.models.project import Project
    from regops.models.tag import Tag
    from regops.models.user import User

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

    def _key(self) -> Hashable:
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
    ) -> ExpirationPolicy | None:
        """The policy of project ``project_id`` (one GitLab request), or None when the
        project is not there (as in Rails)."""
        project: Project | None = Model.named("Project").find_by_id(
            project_id, connection=connection
        )
        if project is None:
            return None
        return project.container_expiration_policy

    @classmethod
    def where(
        cls,
        *,
        projects: Iterable[Project] | None = None,
        connection: Connection | None = None,
        **filters: object,
    ) -> PolicyQuery:
        """Policies matching ``filters`` (compared here: GitLab cannot filter on them).

        Reads every project (or ``projects``, e.g. ``Project.where(search="app")``).
        """
        return cls.all(projects=projects, connection=connection).where(**filters)

    @classmethod
    def all(
        cls, *, projects: Iterable[Project] | None = None, connection: Connection | None = None
    ) -> PolicyQuery:
        return PolicyQuery(cls, connection=connection, source=projects)

    # -- query hooks ---------------------------------------------------------------

    @classmethod
    def _where(cls, query: Q, filters: Mapping[str, Any]) -> Q:
        """Policy attributes, normalised as GitLab stores them, compared here."""
        check_filters(cls.__name__, filters, POLICY_ATTRIBUTES)
        normalised, errors = collect_policy_errors(filters, partial=True)
        if errors:
            field, messages = next(iter(errors.items()))
            raise ValidationError(field, messages[0])
        described = ", ".join(f"{k}={v!r}" for k, v in normalised.items())
        return query.filter(lambda policy: policy.matches(normalised), described)

    @classmethod
    def _query_items(
        cls, conn: Connection, query: Query[ExpirationPolicy], batch_size: int | None = None
    ) -> Iterator[ExpirationPolicy]:
        """One policy per project (the source's, or every project's), in project order."""
        projects = query.source
        if projects is None:
            projects = Model.named("Project").query(connection=conn).find_each(batch_size)
        for project in projects:
            if "container_expiration_policy" not in project._data:
                project.reload()
            data = project.get("container_expiration_policy")
            if data:
                yield cls.from_project(project, data)

    @classmethod
    def _check_update(cls, attrs: Mapping[str, Any]) -> None:
        validate_policy_attributes(attrs, partial=True)

    def matches(self, values: Mapping[str, Any]) -> bool:
        """True when this policy has ``values`` (normalised policy attributes)."""
        stored, _errors = collect_policy_errors(
            {k: v for k, v in self.attributes.items() if k in values}, partial=True
        )
        return all(_same(k, v, stored.get(k)) for k, v in values.items())

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
        project: Project = Model.named("Project").find(self.project_id, connection=self.connection)
        return project

    # -- changes -------------------------------------------------------------------

    def validate(self, **attrs: object) -> dict[str, Any]:
        """The normalised attributes ``update(**attrs)`` would send; PolicyError if invalid."""
        if not attrs:
            raise ValidationError("attributes", "nothing to update")
        options = self.connection.policy_options()  # what this GitLab's version accepts
        given = validate_policy_attributes(attrs, partial=True, options=options)
        current = {k: v for k, v in self.attributes.items() if k in POLICY_ATTRIBUTES}
        # The record as GitLab saves it (a stored value it no longer offers stays valid).
        validate_policy_attributes(
            attrs, current=current, options=_keeping(options, current.get("older_than"))
        )
        return given

    def update(self, **attrs: object) -> ExpirationPolicy:
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

    def with_changes(self, **attrs: object) -> ExpirationPolicy:
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
        **options: Unpack[PlanOptions],
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
        return PolicyPlan(plans, project_id=project.id, connection=project._connection)


def _keeping(options: PolicyOptions, stored: Any) -> PolicyOptions:
    """``options`` that also accept the policy's stored older_than (GitLab loaded it)."""
    if isinstance(stored, str) and stored not in options.older_than:
        return replace(options, older_than=(*options.older_than, stored))
    return options


def _same(field: str, sent: object, got: object) -> bool:
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


class PolicyPlan(list[CleanupPlan["Tag"]]):
    """The cleanup plans of one project's repositories (a list of CleanupPlan)."""

    def __init__(
        self,
        plans: Iterable[CleanupPlan[Tag]],
        project_id: int | None = None,
        connection: Connection | None = None,
    ) -> None:
        super().__init__(plans)
        self.project_id = project_id
        self.connection = connection  # planned through it: apply() deletes through it

    @property
    def to_delete(self) -> list[Tag]:
        """Every tag to delete, repository after repository."""
        return [tag for plan in self for tag in plan.to_delete]

    @property
    def names_to_delete(self) -> dict[str | None, list[str]]:
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

    def _repr_pretty_(self, printer: PrettyPrinter, cycle: bool) -> None:
        printer.text("PolicyPlan(...)" if cycle else repr(self))

    def _repr_html_(self) -> str:
        parts = [f"<p>{html.escape(self.summary())}</p>"]
        parts.extend(plan._repr_html_() for plan in self)
        return "\n".join(parts)

    def plot(self) -> Any:
        """Per repository, tag ages kept and deleted with the policy's cut-offs: a
        matplotlib Figure (:func:`regops.ops.charts.plan_chart`)."""
        return charts.plan_chart(list(self), title=f"Cleanup plan: {self.summary()}")

    def apply(
        self,
        connection: Connection | None = None,
        *,
        user: User | None = None,
        **options: Unpack[RunOptions],
    ) -> ApplyResult:
        """Delete exactly the planned tags (audited): :func:`regops.ops.apply.apply_plan`.

        ``user``: act for this GitLab user, as GitLab's service does with
        ``current_user``: refused (CleanupPermissionError) unless Developer or
        above in the project; recorded in the audit log. ``options``:
        ``audit_path``, ``max_requests_per_second``, ``batch_size``.
        """
        conn = resolve_connection(connection or self.connection)
        if user is not None:
            if self.project_id is None:
                raise ValidationError("user", "this plan does not know its project")
            user.check_cleanup_permission(self.project_id)
            options["actor"] = actor_for(user, options.get("actor"))
        return apply_plan(self, conn.registry, gitlab_url=conn.settings.gitlab_url, **options)


def actor_for(user: User | None, actor: str | None = None) -> str:
    """Who a run is recorded as: the operating-system user (``actor``), and for whom."""
    actor = actor or default_actor()
    return actor if user is None else f"{actor} for user {user.id} ({user.get('username')})"


# -- queries across projects ----------------------------------------------------------


class PolicyQuery(Query[ExpirationPolicy]):
    """Policies across projects: a :class:`Query` that can also keep only projects
    with container repositories.

    Costs: the project listing (keyset pages of 100), plus one request per
    project for ``with_repositories()``; each read once, then cached.
    """

    def with_repositories(self) -> PolicyQuery:
        """Only policies of projects that have container repositories."""
        return self.filter(lambda policy: _has_repositories(policy.project), "with_repositories")

    def forecast(self, **options: Any) -> Forecast:
        """What the next run of each of these policies will do, planned all at once.

        >>> ExpirationPolicy.where(enabled=True).forecast()     # doctest: +SKIP

        ``options`` go to :func:`regops.ops.forecast.forecast` (``now``,
        ``horizon``, ``max_list_size``, ``workers``, ``progress``). Needs
        registry access (tags are read through the connection's resolver).
        """
        conn = self.connection
        if conn.resolver is None:
            raise ConfigError(
                "a forecast reads every tag: set REGOPS_REGISTRY_URL and a way to "
                "authenticate to the registry; see `regops config`"
            )
        inputs = [
            PolicyInput(policy.project_id, policy.project.full_path, policy.attributes)
            for policy in self
        ]
        return forecast(inputs, gitlab=conn.gitlab, resolver=conn.resolver, **options)


ExpirationPolicy.query_class = PolicyQuery


def _has_repositories(project: Project) -> bool:
    """True when the project has a container repository (the first page tells)."""
    cached = project.__dict__.get("_relations", {}).get("container_repositories")
    if cached is not None:
        return bool(cached)
    rows = project.connection.gitlab.project_repositories(project.id)
    return next(iter(rows), None) is not None
