"""User: a GitLab account, and its access level in a project.

>>> User.current().is_admin        # doctest: +SKIP
True
>>> User.find(7).access_level(project)   # 0 when not a member  # doctest: +SKIP
30
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from regops.connection import Connection
from regops.errors import CleanupPermissionError, GitLabNotFound
from regops.models.base import Model, resolve_connection

if TYPE_CHECKING:
    from regops.models.project import Project

NO_ACCESS = 0  # GitLab's Gitlab::Access::NO_ACCESS: not a member (directly or inherited)
DEVELOPER_ACCESS = 30  # Gitlab::Access::DEVELOPER: the least role allowed to delete images


class User(Model):
    """A GitLab user: ``id``, ``username``, ``name``, ``state``, ``is_admin``."""

    fields = ("id", "username", "name", "state", "is_admin", "email", "created_at")
    table_columns = ("id", "username", "name", "state", "is_admin")
    repr_fields = ("id", "username")
    time_fields = ("created_at", "last_sign_in_at", "current_sign_in_at", "last_activity_on")

    @classmethod
    def find(cls, user_id: int, *, connection: Connection | None = None) -> User:
        """The user with this id, or ``User.DoesNotExist``."""
        conn = resolve_connection(connection)
        try:
            return cls(conn.gitlab.user(user_id), connection=conn)
        except GitLabNotFound:
            raise cls.DoesNotExist(f"User {user_id} not found (or not visible)") from None

    @classmethod
    def current(cls, *, connection: Connection | None = None) -> User:
        """The user the connection's token belongs to."""
        conn = resolve_connection(connection)
        return cls(conn.gitlab.current_user(), connection=conn)

    def _fetch(self) -> Mapping[str, Any]:
        return self.connection.gitlab.user(self.id)

    def _missing_reason(self, name: str) -> str:
        if name == "is_admin":
            return "User.is_admin: GitLab shows it only to administrators"
        return super()._missing_reason(name)

    def access_level(self, project: Project | int | str) -> int:
        """This user's access level in ``project`` (a Project or id), inherited included.

        One request (``members/all/:user_id``); ``0`` when not a member. An
        administrator who is not a member also gets 0: admin rights are not
        a membership.
        """
        project_id = project if isinstance(project, (int, str)) else project.id
        try:
            member = self.connection.gitlab.member(project_id, self.id)
        except GitLabNotFound:
            return NO_ACCESS
        return int(member.get("access_level") or NO_ACCESS)

    def check_cleanup_permission(self, project: Project | int | str) -> int:
        """This user's access level in ``project``; CleanupPermissionError below Developer.

        GitLab's CleanupTagsService needs ``destroy_container_image``, which
        Developer, Maintainer and Owner have (an administrator who is not a
        member is refused: admin mode is not a membership).
        """
        level = self.access_level(project)
        if level < DEVELOPER_ACCESS:
            raise CleanupPermissionError(
                f"user {self.id} ({self.get('username') or '?'}) has access level {level} in "
                f"project {project if isinstance(project, (int, str)) else project.id}; "
                "running its cleanup policy needs "
                f"at least Developer ({DEVELOPER_ACCESS})"
            )
        return level
