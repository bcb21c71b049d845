"""ContainerRepository: one image repository of a project, and its tags.

>>> repo = ContainerRepository.find(12)       # doctest: +SKIP
>>> repo.tags                  # table of tags with sizes  # doctest: +SKIP
>>> repo.plan_cleanup()         # what the policy would delete  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from regops.connection import Connection
from regops.errors import GitLabNotFound
from regops.models.base import Collection, Model, relation, resolve_connection
from regops.models.tag import load_tags
from regops.ops.apply import PlanTarget
from regops.ops.cleanup import CleanupPlan, PlanOptions, plan_cleanup

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; annotations only

    from regops.models.policy import ExpirationPolicy
    from regops.models.project import Project
    from regops.models.tag import Tag


class ContainerRepository(Model):
    """A container repository: ``id``, ``name``, ``path``, ``location``, ``tags_count``."""

    fields = (
        "id",
        "name",
        "path",
        "project_id",
        "location",
        "created_at",
        "tags_count",
        "cleanup_policy_started_at",
        "status",
    )
    table_columns = ("id", "path", "tags_count", "created_at", "status")
    repr_fields = ("id", "path")
    parent_relations = ("project",)
    time_fields = ("created_at", "cleanup_policy_started_at")

    @classmethod
    def _prepare(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        row = super()._prepare(data)
        row.pop("tags", None)  # a `tags=true` listing: tags come from the `tags` relation
        return row

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        connection: Connection | None = None,
        project: Project | None = None,
    ) -> None:
        super().__init__(data, connection=connection)
        if project is not None:
            self.project = project

    @classmethod
    def find(
        cls, repository_id: int, *, connection: Connection | None = None
    ) -> ContainerRepository:
        """The repository with this id, or ``ContainerRepository.DoesNotExist``."""
        conn = resolve_connection(connection)
        try:
            return cls(conn.gitlab.repository(repository_id, tags_count=True), connection=conn)
        except GitLabNotFound:
            raise cls.DoesNotExist(
                f"ContainerRepository {repository_id} not found (or not visible)"
            ) from None

    def _fetch(self) -> Mapping[str, Any]:
        try:
            data = self.connection.gitlab.repository(self.id, tags_count=True)
        except GitLabNotFound:
            raise self.DoesNotExist(f"ContainerRepository {self.id} not found (deleted?)") from None
        return data

    # -- relations -----------------------------------------------------------------

    @relation
    def project(self) -> Project:
        """The project this repository belongs to (one GitLab request)."""
        project: Project = Model.named("Project").find(self.project_id, connection=self.connection)
        return project

    @relation
    def tags(self) -> Collection[Tag]:
        """The repository's tags.

        With registry access, every tag comes with its details (digest, size,
        created_at), fetched from the registry in one concurrent pass and
        cached by digest. Without it, tags are only listed (name, path,
        location): see :meth:`load_tags` for details through GitLab.
        """
        return load_tags(self, details=self.connection.registry is not None)

    def load_tags(self, details: bool = True) -> Collection[Tag]:
        """Tags with details now, whatever the access (cached as ``.tags``).

        Without registry access this costs one GitLab request per tag
        (GitLab's tag-details endpoint), sent concurrently.
        """
        tags = load_tags(self, details=details)
        self.tags = tags
        return tags

    # -- cleanup -------------------------------------------------------------------

    def plan_cleanup(
        self,
        policy: ExpirationPolicy | Mapping[str, Any] | None = None,
        **options: Unpack[PlanOptions],
    ) -> CleanupPlan[Tag]:
        """What ``policy`` (default: the project's) would delete here; nothing is deleted.

        ``options`` go to :func:`regops.ops.cleanup.plan_cleanup` (``now``,
        ``max_list_size``, ``service``). As GitLab does, the service follows the
        registry: ``gitlab`` when it has the GitLab API (push times, ``keep_n`` per
        page), ``third_party`` otherwise. The project's tag protection rules are
        read from GitLab (where its version has them) and kept out of the plan,
        and the plan says when GitLab itself could not delete on this registry.
        The plan knows this connection's registry, so ``plan.apply()`` needs no
        argument and never deletes a protected tag.
        """
        if policy is None:
            policy = self.project.container_expiration_policy
        tags = self.tags
        if any("created_at" not in tag._data for tag in tags):
            tags = self.load_tags(details=True)
        conn = self.connection
        protection = conn.tag_protection(self.project_id)
        notes = [note for note in (protection.note, conn.delete_method_note()) if note]
        options.setdefault("service", conn.cleanup_service)
        return plan_cleanup(
            tags,
            policy,
            repository=self.path,
            target=PlanTarget(
                registry=conn.registry,
                gitlab_url=conn.settings.gitlab_url,
                project_id=self.project_id,
                project_path=self.project.full_path,
                protection=protection.rules,
            ),
            protection=protection.rules,
            notes=notes,
            **options,
        )
