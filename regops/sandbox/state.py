"""The sandbox's GitLab data: users, groups, projects, members, policies, repository ids.

Everything the GitLab API stand-in knows that the registry does not: who
exists, which project owns which path, who may do what, the cleanup policy
of each project, and the stable ids GitLab gives container repositories.
With a data directory the state is saved as JSON after every change.

Test hooks live here too: :meth:`SandboxState.throttle` (answer 429 to the
next requests), :attr:`SandboxState.request_counts` (API requests per
endpoint kind) and :attr:`SandboxState.registry_reads` (registry reads the
stand-in made, by kind: ``manifest``, ``config``).

>>> state = SandboxState()
>>> root = state.add_user("root", admin=True)
>>> group = state.add_group("apps")
>>> project = state.add_project(group, "web", creator=root)
>>> project.full_path
'apps/web'
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from regops.durations import parse_duration
from regops.errors import ValidationError
from regops.gitlab.appsettings import REGISTRY_SETTINGS
from regops.ops.cleanup import GITLAB_TAGS_PAGE_SIZE
from regops.policy import (
    OLDER_THAN_OPTIONS,
    POLICY_DEFAULTS,
    PolicyOptions,
    TagProtectionRule,
    validate_policy_attributes,
)
from regops.secrets import Secret

# GitLab's access levels (Gitlab::Access).
GUEST, REPORTER, DEVELOPER, MAINTAINER, OWNER = 10, 20, 30, 40, 50
ACCESS_LEVEL_NAMES = {
    GUEST: "guest",
    REPORTER: "reporter",
    DEVELOPER: "developer",
    MAINTAINER: "maintainer",
    OWNER: "owner",
}
# Personal access tokens look like GitLab's (glpat- prefix, 20 url-safe characters).
TOKEN_PREFIX = "glpat-"
TOKEN_BYTES = 15
STATE_FILE = "state.json"
STATE_VERSION = 1
# The GitLab version the stand-in claims (GET /version): 18.7 lists tag protection
# rules over REST (doc/api/container_registry_protection_tag_rules.md).
DEFAULT_GITLAB_VERSION = "18.7.0"


def utcnow() -> datetime.datetime:
    """Now, timezone-aware UTC, to the millisecond like GitLab's JSON."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(value: datetime.datetime | None) -> str | None:
    """GitLab's timestamp format: ``2024-05-01T12:00:00.000Z``."""
    if value is None:
        return None
    value = value.astimezone(datetime.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_iso(text: str | None) -> datetime.datetime | None:
    """The inverse of :func:`iso` (accepts any RFC 3339 text)."""
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_token() -> Secret:
    """A random personal access token."""
    return Secret(TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES))


@dataclass
class UserRecord:
    """A GitLab user with one personal access token."""

    id: int
    username: str
    name: str
    is_admin: bool
    token: Secret = field(repr=False)
    state: str = "active"
    created_at: datetime.datetime = field(default_factory=utcnow)


@dataclass
class GroupRecord:
    """A group (namespace of kind ``group``), possibly nested."""

    id: int
    name: str
    path: str
    full_path: str
    parent_id: int | None = None
    created_at: datetime.datetime = field(default_factory=utcnow)

    @property
    def kind(self) -> str:
        return "group"


@dataclass
class ProjectRecord:
    """A project: where it lives, who made it, and its cleanup policy."""

    id: int
    name: str
    path: str
    namespace_id: int
    namespace_kind: str  # "group" or "user"
    namespace_full_path: str
    creator_id: int
    policy: dict[str, Any]
    created_at: datetime.datetime = field(default_factory=utcnow)
    last_activity_at: datetime.datetime = field(default_factory=utcnow)
    registry_access_level: str = "enabled"

    @property
    def full_path(self) -> str:
        return f"{self.namespace_full_path}/{self.path}"


@dataclass
class RepositoryRecord:
    """What GitLab stores about a container repository (the rest is in the registry)."""

    id: int
    path: str
    created_at: datetime.datetime = field(default_factory=utcnow)


def default_policy(now: datetime.datetime | None = None) -> dict[str, Any]:
    """GitLab's default policy for a new project (disabled), with next_run_at."""
    policy = dict(POLICY_DEFAULTS)
    policy["next_run_at"] = next_run_at(policy.get("cadence") or "1d", now)
    return policy


def next_run_at(cadence: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """When a policy with this cadence runs next: now + cadence (set on every save)."""
    return (now or utcnow()) + parse_duration(cadence, field="cadence")


class SandboxState:
    """The stand-in's data, thread-safe, optionally persisted under ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.lock = threading.RLock()
        self.data_dir = Path(data_dir) if data_dir else None
        self.users: dict[int, UserRecord] = {}
        self.groups: dict[int, GroupRecord] = {}
        self.projects: dict[int, ProjectRecord] = {}
        # (project_id or group key, user_id) -> access level; groups keyed "g<id>".
        self.project_members: dict[tuple[int, int], int] = {}
        self.group_members: dict[tuple[int, int], int] = {}
        self.repositories: dict[str, RepositoryRecord] = {}
        self.settings: dict[str, Any] = dict(REGISTRY_SETTINGS)  # GitLab's defaults
        self.bulk_delete_requests: dict[int, datetime.datetime] = {}
        self.bulk_delete_results: dict[int, list[str]] = {}  # repository id -> deleted tags
        # Repository paths deleted through the API: hidden until something is pushed again.
        self.deleted_repositories: set[str] = set()
        self._init_fidelity()
        self.request_counts: collections.Counter[str] = collections.Counter()
        self.registry_reads: collections.Counter[str] = collections.Counter()
        self._throttle_left = 0
        self._throttle_retry_after = 0
        self._next_id: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ ids
    def _new_id(self, kind: str, start: int = 1) -> int:
        with self.lock:
            if self._next_id[kind] < start:
                self._next_id[kind] = start
            value = self._next_id[kind]
            self._next_id[kind] += 1
            return value

    # ------------------------------------------------------------ creation
    def add_user(
        self, username: str, *, admin: bool = False, name: str | None = None
    ) -> UserRecord:
        """A new user with a fresh random token."""
        with self.lock:
            if self.user_by_username(username):
                raise ValidationError("username", f"{username!r} is taken")
            user = UserRecord(
                id=self._new_id("user"),
                username=username,
                name=name or username.title(),
                is_admin=admin,
                token=new_token(),
            )
            self.users[user.id] = user
            self.save()
            return user

    def add_group(
        self, path: str, *, parent: GroupRecord | None = None, name: str | None = None
    ) -> GroupRecord:
        """A new group (``parent`` makes it a subgroup)."""
        with self.lock:
            full_path = f"{parent.full_path}/{path}" if parent else path
            group = GroupRecord(
                id=self._new_id("namespace", start=100),
                name=name or path.replace("-", " ").title(),
                path=path,
                full_path=full_path,
                parent_id=parent.id if parent else None,
            )
            self.groups[group.id] = group
            self.save()
            return group

    def add_project(
        self,
        namespace: GroupRecord | UserRecord,
        path: str,
        *,
        creator: UserRecord,
        name: str | None = None,
        created_at: datetime.datetime | None = None,
    ) -> ProjectRecord:
        """A new project in a group or a user's namespace, with GitLab's default policy."""
        with self.lock:
            if isinstance(namespace, GroupRecord):
                ns_id, kind, ns_path = namespace.id, "group", namespace.full_path
            else:
                ns_id, kind, ns_path = namespace.id + 10_000, "user", namespace.username
            if self.project_by_path(f"{ns_path}/{path}"):
                raise ValidationError("path", f"{ns_path}/{path} has already been taken")
            now = created_at or utcnow()
            project = ProjectRecord(
                id=self._new_id("project"),
                name=name or path,
                path=path,
                namespace_id=ns_id,
                namespace_kind=kind,
                namespace_full_path=ns_path,
                creator_id=creator.id,
                policy=default_policy(now),
                created_at=now,
                last_activity_at=now,
            )
            self.projects[project.id] = project
            self.save()
            return project

    def add_member(
        self, target: ProjectRecord | GroupRecord, user: UserRecord, access_level: int
    ) -> None:
        """Make ``user`` a member of a project or group at ``access_level``."""
        with self.lock:
            if isinstance(target, ProjectRecord):
                self.project_members[(target.id, user.id)] = access_level
            else:
                self.group_members[(target.id, user.id)] = access_level
            self.save()

    def set_policy(
        self, project: ProjectRecord, attrs: Mapping[str, Any], *, validate: bool = True
    ) -> None:
        """Update a project's policy; next_run_at is reset to now + cadence (GitLab's rule).

        ``validate=False`` stores what it is given (for seeding a broken policy).
        """
        with self.lock:
            current = {k: v for k, v in project.policy.items() if k != "next_run_at"}
            if validate:
                policy = validate_policy_attributes(
                    attrs, current=current, options=self.policy_options()
                )
            else:
                policy = {**current, **attrs}
            policy = {k: v for k, v in policy.items() if k != "next_run_at"}
            try:
                policy["next_run_at"] = next_run_at(policy.get("cadence") or "1d")
            except ValidationError:
                policy["next_run_at"] = project.policy.get("next_run_at")
            project.policy = policy
            project.last_activity_at = utcnow()
            self.save()

    def set_registry_access_level(self, project: ProjectRecord, level: str) -> None:
        """Set a project's container_registry_access_level (disabled, private, enabled)."""
        with self.lock:
            project.registry_access_level = level
            project.last_activity_at = utcnow()
            self.save()

    # ------------------------------------------------------------- lookups
    def user_by_username(self, username: str) -> UserRecord | None:
        with self.lock:
            return next((u for u in self.users.values() if u.username == username), None)

    def user_by_token(self, token: str) -> UserRecord | None:
        """The user whose personal access token this is (constant-time compare)."""
        if not token:
            return None
        with self.lock:
            users = list(self.users.values())
        for user in users:
            if secrets.compare_digest(user.token.reveal(), token):
                return user
        return None

    def project_by_path(self, full_path: str) -> ProjectRecord | None:
        lowered = full_path.lower()
        with self.lock:
            projects = list(self.projects.values())
        return next((p for p in projects if p.full_path.lower() == lowered), None)

    def group_by_path(self, full_path: str) -> GroupRecord | None:
        lowered = full_path.lower()
        with self.lock:
            groups = list(self.groups.values())
        return next((g for g in groups if g.full_path.lower() == lowered), None)

    def group_ancestry(self, group_id: int) -> list[GroupRecord]:
        """The group and its parents, innermost first."""
        chain = []
        with self.lock:
            group = self.groups.get(group_id)
            while group is not None:
                chain.append(group)
                group = self.groups.get(group.parent_id) if group.parent_id else None
        return chain

    def access_level(self, project: ProjectRecord, user: UserRecord) -> int:
        """The user's effective access level on a project (direct or inherited; 0 = none)."""
        with self.lock:
            levels = [self.project_members.get((project.id, user.id), 0)]
            if project.namespace_kind == "group":
                for group in self.group_ancestry(project.namespace_id):
                    levels.append(self.group_members.get((group.id, user.id), 0))
            elif project.namespace_id - 10_000 == user.id:
                levels.append(OWNER)
            return max(levels)

    def visible_projects(self, user: UserRecord) -> list[ProjectRecord]:
        """Projects the user may see: all for an admin, member projects otherwise."""
        with self.lock:
            projects = sorted(self.projects.values(), key=lambda p: p.id)
            if user.is_admin:
                return projects
            return [p for p in projects if self.access_level(p, user) >= GUEST]

    def project_for_repository(self, path: str) -> ProjectRecord | None:
        """The project owning a repository path: the longest project path that prefixes it."""
        lowered = path.lower()
        best: ProjectRecord | None = None
        with self.lock:
            projects = list(self.projects.values())
        for project in projects:
            full = project.full_path.lower()
            inside = lowered == full or lowered.startswith(full + "/")
            if inside and (best is None or len(full) > len(best.full_path)):
                best = project
        return best

    def repository_record(self, path: str) -> RepositoryRecord:
        """The stable id of a repository path, assigned the first time it is seen."""
        with self.lock:
            record = self.repositories.get(path)
            if record is None:
                record = RepositoryRecord(id=self._new_id("repository"), path=path)
                self.repositories[path] = record
                self.save()
            return record

    def repository_by_id(self, repository_id: int) -> RepositoryRecord | None:
        with self.lock:
            return next((r for r in self.repositories.values() if r.id == repository_id), None)

    def forget_repository(self, path: str) -> None:
        """Drop a repository's record (after the repository was deleted)."""
        with self.lock:
            self.repositories.pop(path, None)
            self.save()

    def mark_repository_deleted(self, path: str) -> None:
        """Hide a repository deleted through the API and drop its record."""
        with self.lock:
            self.deleted_repositories.add(path)
            self.forget_repository(path)

    def is_repository_deleted(self, path: str) -> bool:
        with self.lock:
            return path in self.deleted_repositories

    def restore_repository(self, path: str) -> None:
        """Show a deleted repository again (something was pushed to it)."""
        with self.lock:
            if path in self.deleted_repositories:
                self.deleted_repositories.discard(path)
                self.save()

    def group_tree_ids(self, group: GroupRecord) -> set[int]:
        """The ids of ``group`` and of every subgroup below it."""
        prefix = group.full_path + "/"
        with self.lock:
            below = {g.id for g in self.groups.values() if g.full_path.startswith(prefix)}
        return {group.id} | below

    def is_group_member(self, group: GroupRecord, user: UserRecord) -> bool:
        """Whether ``user`` is a member of ``group`` or one of its parents."""
        with self.lock:
            chain = self.group_ancestry(group.id)
            return any(self.group_members.get((g.id, user.id), 0) >= GUEST for g in chain)

    # ------------------------------------------- GitLab version, tag rules, push times
    def _init_fidelity(self) -> None:
        """What the stand-in knows beyond users and projects: the GitLab version it
        claims, the older_than values it accepts (None: its version's), tag protection
        rules per project, and when each tag was pushed (the GitLab registry API's
        created_at/updated_at)."""
        self.gitlab_version = DEFAULT_GITLAB_VERSION
        self.older_than_options: tuple[str, ...] | None = None
        self.tag_rules: dict[int, list[dict[str, Any]]] = {}
        # repository path -> tag -> {"digest", "created_at", "updated_at"} (ISO text)
        self.tag_pushes: dict[str, dict[str, dict[str, Any]]] = {}
        # Gitlab::CleanupTagsService::TAGS_PAGE_SIZE; a test hook as GitLab's own spec
        # stubs it (stub_const) to see keep_n applied per page.
        self.cleanup_page_size = GITLAB_TAGS_PAGE_SIZE

    def policy_options(self) -> PolicyOptions:
        """The policy values this stand-in's GitLab accepts."""
        with self.lock:
            values = self.older_than_options
            version = self.gitlab_version
        if values is not None:
            return PolicyOptions(older_than=tuple(values), source=f"GitLab {version} (set)")
        return PolicyOptions.for_gitlab(version)

    def set_gitlab(
        self, version: str | None = None, older_than: tuple[str, ...] | None = None
    ) -> None:
        """Claim another GitLab version and/or accept exactly ``older_than`` values."""
        with self.lock:
            if version is not None:
                self.gitlab_version = version
            if older_than is not None:
                unknown = [v for v in older_than if v not in OLDER_THAN_OPTIONS]
                if unknown:
                    raise ValidationError("older_than", f"no GitLab accepts {unknown}")
                self.older_than_options = tuple(older_than)
            self.save()

    def add_tag_rule(
        self,
        project: ProjectRecord,
        pattern: str,
        push: str | None = "maintainer",
        delete: str | None = "maintainer",
    ) -> dict[str, Any]:
        """A container tag protection rule (both levels None: an immutability rule)."""
        TagProtectionRule(pattern, push, delete)  # GitLab's validation: RE2, not blank
        with self.lock:
            rules = self.tag_rules.setdefault(project.id, [])
            if any(rule["tag_name_pattern"] == pattern for rule in rules):
                raise ValidationError("tag_name_pattern", "has already been taken")
            row = {
                "id": self._new_id("tag_rule"),
                "project_id": project.id,
                "tag_name_pattern": pattern,
                "minimum_access_level_for_push": push,
                "minimum_access_level_for_delete": delete,
            }
            rules.append(row)
            self.save()
            return dict(row)

    def rules_of(self, project_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(rule) for rule in self.tag_rules.get(project_id, [])]

    def record_push(self, path: str, tag: str, digest: str, when: datetime.datetime) -> None:
        """A tag was pushed: created now when new; updated now when it moved."""
        with self.lock:
            tags = self.tag_pushes.setdefault(path, {})
            known = tags.get(tag)
            if known is None:
                tags[tag] = {"digest": digest, "created_at": iso(when), "updated_at": None}
            elif known["digest"] != digest:
                known.update(digest=digest, updated_at=iso(when))
            # Not saved here: a seed pushes thousands of tags; the sandbox saves on stop.

    def record_tag_deleted(self, path: str, tag: str) -> None:
        with self.lock:
            self.tag_pushes.get(path, {}).pop(tag, None)
            self.save()

    def set_tag_times(
        self,
        path: str,
        tag: str,
        *,
        created_at: datetime.datetime | None,
        updated_at: datetime.datetime | None = None,
    ) -> None:
        """Test hook: when ``path:tag`` was first pushed and last re-pushed.

        ``created_at=None`` makes the GitLab API answer null, which a real registry
        never does (GitLab's own spec stubs it to reach the "unknown date" branch).
        """
        with self.lock:
            entry = self.tag_pushes.setdefault(path, {}).setdefault(tag, {"digest": None})
            entry.update(created_at=iso(created_at), updated_at=iso(updated_at))
            self.save()

    def tag_push(self, path: str, tag: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.tag_pushes.get(path, {}).get(tag)
            return dict(found) if found else None

    def _fidelity_json(self) -> dict[str, Any]:
        return {
            "gitlab_version": self.gitlab_version,
            "older_than_options": list(self.older_than_options)
            if self.older_than_options is not None
            else None,
            "tag_rules": {str(k): v for k, v in self.tag_rules.items()},
            "tag_pushes": self.tag_pushes,
        }

    def _load_fidelity(self, data: Mapping[str, Any]) -> None:
        self.gitlab_version = data.get("gitlab_version") or DEFAULT_GITLAB_VERSION
        older = data.get("older_than_options")
        self.older_than_options = tuple(older) if older is not None else None
        self.tag_rules = {int(k): list(v) for k, v in (data.get("tag_rules") or {}).items()}
        self.tag_pushes = dict(data.get("tag_pushes") or {})

    # ----------------------------------------------------------- test hooks
    def throttle(self, n_requests: int, retry_after: int = 1) -> None:
        """Answer the next ``n_requests`` API requests with 429 and Retry-After."""
        with self.lock:
            self._throttle_left = n_requests
            self._throttle_retry_after = retry_after

    def take_throttle(self) -> int | None:
        """Retry-After seconds when this request must be throttled, else None."""
        with self.lock:
            if self._throttle_left <= 0:
                return None
            self._throttle_left -= 1
            return self._throttle_retry_after

    def count_request(self, kind: str) -> None:
        with self.lock:
            self.request_counts[kind] += 1

    def count_registry_read(self, kind: str) -> None:
        with self.lock:
            self.registry_reads[kind] += 1

    def reset_counters(self) -> None:
        """Zero request_counts and registry_reads (between measured steps)."""
        with self.lock:
            self.request_counts.clear()
            self.registry_reads.clear()

    # ---------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        """Everything persistent, tokens included (the file is written 0600)."""
        with self.lock:
            return {
                "version": STATE_VERSION,
                "next_id": dict(self._next_id),
                "users": [
                    {**_plain(asdict(u)), "token": u.token.reveal()} for u in self.users.values()
                ],
                "groups": [_plain(asdict(g)) for g in self.groups.values()],
                "projects": [_plain(asdict(p)) for p in self.projects.values()],
                "project_members": [[p, u, lvl] for (p, u), lvl in self.project_members.items()],
                "group_members": [[g, u, lvl] for (g, u), lvl in self.group_members.items()],
                "repositories": [_plain(asdict(r)) for r in self.repositories.values()],
                "settings": self.settings,
                "deleted_repositories": sorted(self.deleted_repositories),
                "bulk_delete_requests": {
                    str(k): iso(v) for k, v in self.bulk_delete_requests.items()
                },
                **self._fidelity_json(),
            }

    def save(self) -> None:
        """Write the state file (0600: it holds tokens) when a data dir is kept."""
        if self.data_dir is None:
            return
        with self.lock:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path = self.data_dir / STATE_FILE
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(self.to_json(), handle, indent=1)
            os.replace(tmp, path)

    @classmethod
    def load(cls, data_dir: str | os.PathLike[str]) -> SandboxState:
        """The state saved under ``data_dir``, or an empty one when none was saved."""
        state = cls(data_dir)
        path = Path(data_dir) / STATE_FILE
        if not path.exists():
            return state
        data = json.loads(path.read_text())
        state._next_id.update(data.get("next_id", {}))
        for raw in data["users"]:
            raw = _dates(raw, "created_at")
            raw["token"] = Secret(raw["token"])
            state.users[raw["id"]] = UserRecord(**raw)
        for raw in data["groups"]:
            state.groups[raw["id"]] = GroupRecord(**_dates(raw, "created_at"))
        for raw in data["projects"]:
            raw = _dates(raw, "created_at", "last_activity_at")
            raw["policy"] = _dates(raw["policy"], "next_run_at")
            state.projects[raw["id"]] = ProjectRecord(**raw)
        state.project_members = {(p, u): lvl for p, u, lvl in data["project_members"]}
        state.group_members = {(g, u): lvl for g, u, lvl in data["group_members"]}
        for raw in data["repositories"]:
            record = RepositoryRecord(**_dates(raw, "created_at"))
            state.repositories[record.path] = record
        state.settings.update(data.get("settings", {}))
        state.deleted_repositories = set(data.get("deleted_repositories", []))
        state.bulk_delete_requests = {
            int(k): when
            for k, v in data.get("bulk_delete_requests", {}).items()
            if (when := parse_iso(v)) is not None  # saved by save(): always a time
        }
        state._load_fidelity(data)
        return state


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """Dates to ISO text, recursively, for JSON."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, datetime.datetime):
            out[key] = iso(value)
        elif isinstance(value, dict):
            out[key] = _plain(value)
        else:
            out[key] = value
    return out


def _dates(raw: dict[str, Any], *keys: str) -> dict[str, Any]:
    raw = dict(raw)
    for key in keys:
        if isinstance(raw.get(key), str):
            raw[key] = parse_iso(raw[key])
    return raw
