"""Project: finders, server-side filters, and its registry relations.

>>> Project.last(3)                                   # doctest: +SKIP
>>> p = Project.find_by(full_path="group/app")        # doctest: +SKIP
>>> p.container_repositories, p.creator, p.container_expiration_policy  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, overload

from regops.connection import Connection
from regops.errors import GitLabNotFound, SettingsNotApplied, ValidationError
from regops.gitlab.appsettings import validate_access_level
from regops.gitlab.client import PER_PAGE, PROJECT_FILTERS
from regops.models.base import (
    Collection,
    Model,
    Q,
    Query,
    check_filters,
    relation,
    resolve_connection,
)
from regops.ops.registry_access import has_images, registry_access_level
from regops.policy import TagProtection

if TYPE_CHECKING:
    from regops.models.policy import ExpirationPolicy
    from regops.models.repository import ContainerRepository
    from regops.models.user import User

# GET /projects filters GitLab applies server-side; `simple` is left out because
# its answers lack the fields the model relies on (policy, creator_id).
SUPPORTED_FILTERS = frozenset(PROJECT_FILTERS - {"simple"})
VISIBILITIES = ("private", "internal", "public")
FIND_BY_KEYS = ("id", "full_path", "path_with_namespace")


class Project(Model):
    """A GitLab project, with its container repositories, creator and cleanup policy."""

    fields = (
        "id",
        "name",
        "path",
        "path_with_namespace",
        "creator_id",
        "visibility",
        "archived",
        "created_at",
        "last_activity_at",
        "web_url",
        "namespace",
    )
    table_columns = ("id", "full_path", "visibility", "archived", "last_activity_at")
    repr_fields = ("id", "path_with_namespace")
    time_fields = ("created_at", "last_activity_at", "updated_at")

    # -- finders -------------------------------------------------------------------

    @classmethod
    def find(cls, project_id: int | str, *, connection: Connection | None = None) -> Project:
        """The project with this id (or full path), or ``Project.DoesNotExist``."""
        conn = resolve_connection(connection)
        try:
            return cls(conn.gitlab.project(project_id), connection=conn)
        except GitLabNotFound:
            raise cls.DoesNotExist(f"Project {project_id} not found (or not visible)") from None

    @classmethod
    def find_by(cls, *, connection: Connection | None = None, **attrs: int | str) -> Project | None:
        """``Project.find_by(full_path="group/app")`` (also ``id=``, ``path_with_namespace=``):
        the project, or None when there is none (as in Rails; ``find`` raises)."""
        if len(attrs) != 1 or next(iter(attrs)) not in FIND_BY_KEYS:
            raise ValidationError(
                ",".join(attrs) or "find_by",
                f"Project.find_by takes exactly one of {', '.join(FIND_BY_KEYS)} "
                "(use Project.where(...) for other filters)",
            )
        return cls.find_by_id(next(iter(attrs.values())), connection=connection)

    @classmethod
    def all(cls, *, connection: Connection | None = None) -> Query[Project]:
        """Every project visible to the token (lazy: nothing sent until used)."""
        return cls.query(connection=connection)

    @classmethod
    def where(cls, *, connection: Connection | None = None, **filters: object) -> Query[Project]:
        """Projects matching GitLab's server-side filters (``search``, ``archived`` ...)."""
        return cls.query(connection=connection).where(**filters)

    @overload
    @classmethod
    def first(cls, n: None = None, *, connection: Connection | None = None) -> Project | None: ...

    @overload
    @classmethod
    def first(cls, n: int, *, connection: Connection | None = None) -> Collection[Project]: ...

    @classmethod
    def first(
        cls, n: int | None = None, *, connection: Connection | None = None
    ) -> Project | Collection[Project] | None:
        """The lowest-id project, or a Collection of the ``n`` lowest."""
        return cls.query(connection=connection).first(n)

    @overload
    @classmethod
    def last(cls, n: None = None, *, connection: Connection | None = None) -> Project | None: ...

    @overload
    @classmethod
    def last(cls, n: int, *, connection: Connection | None = None) -> Collection[Project]: ...

    @classmethod
    def last(
        cls, n: int | None = None, *, connection: Connection | None = None
    ) -> Project | Collection[Project] | None:
        """The highest-id project, or a Collection of the ``n`` highest (ascending ids)."""
        return cls.query(connection=connection).last(n)

    @classmethod
    def count(cls, *, connection: Connection | None = None) -> int:
        return cls.query(connection=connection).count()

    @classmethod
    def find_each(
        cls, batch_size: int | None = None, *, connection: Connection | None = None
    ) -> Iterator[Project]:
        return cls.query(connection=connection).find_each(batch_size)

    # -- query hooks ---------------------------------------------------------------

    @classmethod
    def _where(cls, query: Q, filters: Mapping[str, Any]) -> Q:
        check_filters(cls.__name__, filters, SUPPORTED_FILTERS)
        visibility = filters.get("visibility")
        if visibility is not None and visibility not in VISIBILITIES:
            raise ValidationError("visibility", f"expected one of {', '.join(VISIBILITIES)}")
        return query.with_filters(filters)

    @classmethod
    def _query_items(
        cls, conn: Connection, query: Query[Project], batch_size: int | None = None
    ) -> Iterator[Project]:
        params = dict(query.filters)
        if batch_size:
            params["per_page"] = max(1, min(batch_size, PER_PAGE))
        for row in conn.gitlab.projects(**params):
            yield cls(row, connection=conn)

    @classmethod
    def _query_last(cls, conn: Connection, query: Query[Project], n: int) -> list[Project]:
        return [cls(row, connection=conn) for row in conn.gitlab.projects_desc(n, **query.filters)]

    @classmethod
    def _query_count(cls, conn: Connection, query: Query[Project]) -> int | None:
        """GitLab's own count (None above 10,000 projects: the caller then counts)."""
        return conn.gitlab.count_projects(**query.filters)

    # -- data ----------------------------------------------------------------------

    def _fetch(self) -> Mapping[str, Any]:
        try:
            return self.connection.gitlab.project(self.id)
        except GitLabNotFound:
            raise self.DoesNotExist(f"Project {self.id} not found (deleted?)") from None

    @property
    def full_name(self) -> str:
        """GitLab's ``Project#full_name``: ``Group / Sub / Project`` (name_with_namespace)."""
        name = self._data.get("name_with_namespace")
        if name:
            return str(name)
        return " / ".join(self.full_path.split("/"))

    @property
    def full_path(self) -> str:
        """The project's full path (``group/sub/app``), GitLab's ``path_with_namespace``."""
        return self.path_with_namespace

    # -- relations -----------------------------------------------------------------

    @relation
    def container_repositories(self) -> Collection[ContainerRepository]:
        """The project's container repositories (one paginated GitLab list)."""
        model = Model.named("ContainerRepository")
        conn = self.connection
        rows = conn.gitlab.project_repositories(self.id, tags_count=True)
        repos: list[ContainerRepository] = [
            model(row, connection=conn, project=self) for row in rows
        ]
        return Collection(repos, model=model)

    @property
    def tag_protection(self) -> TagProtection:
        """The project's container tag protection rules, as GitLab lists them (18.7+;
        read once per connection). Every plan keeps the tags they match."""
        return self.connection.tag_protection(self.id).rules

    @relation
    def creator(self) -> User | None:
        """The user who created the project (None when GitLab gives no creator)."""
        creator_id = self.get("creator_id")
        if creator_id is None:
            return None
        user: User = Model.named("User").find(creator_id, connection=self.connection)
        return user

    @relation
    def container_expiration_policy(self) -> ExpirationPolicy:
        """The project's cleanup policy (from the project's own answer)."""
        model = Model.named("ExpirationPolicy")
        if "container_expiration_policy" not in self._data:
            self.reload()
        data = self._data.get("container_expiration_policy")
        if not data:
            raise model.DoesNotExist(
                f"ExpirationPolicy not found: project {self.id} has no container_expiration_policy"
            )
        policy: ExpirationPolicy = model.from_project(self, data)
        return policy

    # -- container registry access (issue 15) -----------------------------------------

    @property
    def container_registry_access_level(self) -> str:
        """``enabled``, ``private`` or ``disabled`` (older GitLab: from the boolean)."""
        return registry_access_level(self._data)

    def has_container_images(self) -> bool:
        """True when a container repository of the project has a tag (one GitLab list)."""
        rows = self.connection.gitlab.project_repositories(self.id, tags_count=True)
        return has_images(rows)

    def update_container_registry_access_level(self, level: str, *, force: bool = False) -> Project:
        """Set the registry's access level, then read it back (SettingsNotApplied if ignored).

        GitLab itself accepts ``disabled`` on a project with images: they stay in
        storage, but nobody can pull, push or delete them any more (ProjectPolicy's
        ``container_registry_disabled`` rule; /jwt/auth grants nothing), so a
        cleanup policy cannot reach them either. regops refuses that unless
        ``force=True`` (a deliberate difference, see the README).
        """
        level = validate_access_level(level)
        leaving = level == "disabled" and self.container_registry_access_level != level
        if leaving and not force and self.has_container_images():
            raise ValidationError(
                "container_registry_access_level",
                f"project {self.id} has container images: disabling its registry leaves "
                "them in storage where nobody can pull or delete them; delete them first, "
                "or pass force=True",
            )
        gitlab = self.connection.gitlab
        gitlab.update_project(self.id, container_registry_access_level=level)
        fresh = gitlab.project(self.id)
        self.__dict__["_data"] = self._prepare(fresh)
        self.__dict__["_relations"] = {}
        got = registry_access_level(fresh)
        if got != level:
            raise SettingsNotApplied(
                f"project {self.id}", {"container_registry_access_level": (level, got)}
            )
        return self
