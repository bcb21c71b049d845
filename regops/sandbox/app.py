"""The GitLab API stand-in: the slice of REST v4 and ``/jwt/auth`` regops uses.

A werkzeug WSGI application over :class:`~regops.sandbox.state.SandboxState`
and the real registry. Response shapes, status codes and error bodies follow
GitLab's (``{"message": "404 ProjectRecord Not Found"}``, ``{"error": ...}`` for
bad parameters); container repositories are computed from the registry's
catalog like GitLab's legacy registry integration, and tag details cost
exactly one manifest read and one config read, like GitLab's.

Deliberate simplifications (each visible in the code):

- Every project is private; anonymous requests see nothing.
- Permissions, as GitLab's ProjectPolicy grants them: read the registry =
  Reporter+; push, delete a tag, bulk-delete tags, delete a repository =
  Developer+ (``destroy_container_image`` / ``admin_container_image``);
  change the cleanup policy = Maintainer+; application settings = admin.
  Admins may do everything. In ``/jwt/auth``: ``pull`` Reporter+, ``push``,
  ``delete`` and ``*`` Developer+, ``registry:catalog:*`` admins only.
- The bulk tag delete (``DELETE .../tags``) runs at once with
  :func:`regops.ops.cleanup.plan_cleanup` and the registry's safe tag delete,
  then answers 202 (GitLab runs it in a background worker).
- A repository delete runs at once (GitLab schedules it), then answers 202.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, overload
from urllib.parse import unquote, urlencode

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from regops.errors import (
    PolicyError,
    ProtectedTagError,
    RegistryError,
    RegistryNotFound,
    ValidationError,
)
from regops.gitlab.appsettings import (
    REGISTRY_SETTINGS,
    collect_settings_errors,
    validate_access_level,
)
from regops.gitlab.features import PROTECTION_REST_SINCE
from regops.ops.cleanup import SERVICE_GITLAB, SERVICE_THIRD_PARTY, plan_cleanup
from regops.policy import (
    OLDER_THAN_ENUM,
    CleanupPolicy,
    TagProtection,
    TagProtectionRule,
    parse_version,
    policy_error_body,
    re2_error,
)
from regops.registry.gitlab_api import GitLabRegistryAPI
from regops.registry.resolver import TagResolver
from regops.registry.safe_delete import SafeDelete
from regops.registry.tokens import DEFAULT_ISSUER, DEFAULT_SERVICE, Scope, TokenMinter
from regops.sandbox import state as st
from regops.sandbox.state import ProjectRecord, SandboxState, UserRecord, iso, utcnow
from regops.secrets import SECRET_QUERY_KEYS

log = logging.getLogger("regops.sandbox")

GITLAB_VERSION = "17.5.0"  # the GitLab version the stand-in claims to be
GITLAB_REVISION = "sandbox"
DEFAULT_PER_PAGE = 20  # GitLab's default page size
MAX_PER_PAGE = 100  # GitLab caps per_page at 100
BULK_DELETE_INTERVAL = datetime.timedelta(hours=1)  # GitLab's lease on bulk tag deletes
BULK_DELETE_REPEATED = (
    "This request has already been made. You can run this at most once an hour "
    "for a given container repository"
)
JWT_UNAUTHORIZED = (
    "HTTP Basic: Access denied. If a password was provided for Git authentication, the "
    "password was incorrect or you're required to use a token instead of a password. If a "
    "token was provided, it was either incorrect, expired, or improperly scoped."
)
POLICY_FIELDS = ("cadence", "enabled", "keep_n", "older_than", "name_regex", "name_regex_keep")
# Least access level for each action on a repository
# (GitLab's Auth::ContainerRegistryAuthenticationService).
ACTION_MIN_LEVEL = {
    "pull": st.REPORTER,
    "push": st.DEVELOPER,
    "delete": st.DEVELOPER,
    "*": st.DEVELOPER,
}

ADMIN_LEVEL = 60  # Gitlab::Access::ADMIN
# Access levels of tag protection rules (Gitlab::Access.sym_options_with_admin).
RULE_LEVELS = {"maintainer": st.MAINTAINER, "owner": st.OWNER, "admin": ADMIN_LEVEL}

RegistryFactory = Callable[[], Any]


class ApiError(Exception):
    """An error answer in GitLab's shape."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def not_found(what: str = "") -> ApiError:
    return ApiError(404, {"message": f"404 {what} Not Found" if what else "404 Not found"})


UNAUTHORIZED = ApiError(401, {"message": "401 Unauthorized"})
FORBIDDEN = ApiError(403, {"message": "403 Forbidden"})


def bad_request(error: str) -> ApiError:
    return ApiError(400, {"error": error})


URLS = Map(
    [
        Rule("/api/v4/version", endpoint="version"),
        Rule("/api/v4/user", endpoint="current_user"),
        Rule("/api/v4/users/<int:user_id>", endpoint="user"),
        Rule("/api/v4/projects", endpoint="projects"),
        Rule("/api/v4/projects/<project>", endpoint="project", methods=["GET", "PUT"]),
        Rule("/api/v4/groups/<group>/projects", endpoint="group_projects"),
        Rule("/api/v4/projects/<project>/members/all/<int:user_id>", endpoint="member"),
        Rule("/api/v4/projects/<project>/registry/repositories", endpoint="repositories"),
        Rule(
            "/api/v4/projects/<project>/registry/repositories/<int:rid>",
            endpoint="delete_repository",
            methods=["DELETE"],
        ),
        Rule(
            "/api/v4/projects/<project>/registry/repositories/<int:rid>/tags",
            endpoint="tags",
            methods=["GET", "DELETE"],
        ),
        Rule(
            "/api/v4/projects/<project>/registry/repositories/<int:rid>/tags/<tag>",
            endpoint="tag",
            methods=["GET", "DELETE"],
        ),
        Rule("/api/v4/registry/repositories/<int:rid>", endpoint="repository"),
        Rule("/api/v4/projects/<project>/registry/protection/tag/rules", endpoint="tag_rules"),
        Rule("/api/graphql", endpoint="graphql", methods=["POST"]),
        Rule("/api/v4/application/settings", endpoint="settings", methods=["GET", "PUT"]),
        Rule("/jwt/auth", endpoint="jwt_auth", methods=["GET", "POST"]),
    ]
)


class GitLabStandIn:
    """The WSGI app over ``state``; ``registry`` is an admin RegistryClient (set after start)."""

    def __init__(
        self,
        state: SandboxState,
        registry: Any,
        registry_host: str,
        signing_key: Any,
        *,
        issuer: str = DEFAULT_ISSUER,
        service: str = DEFAULT_SERVICE,
        delay: float = 0.0,
    ) -> None:
        self.delay = delay
        self.state = state
        self.registry = registry  # set once the registry runs (it needs this app's realm)
        self._resolver: TagResolver | None = None
        self.registry_host = registry_host
        self.signing_key = signing_key
        self.issuer = issuer
        self.service = service

    @property
    def resolver(self) -> TagResolver:
        """Tag details, read as regops reads them everywhere (one resolver per registry)."""
        if self.registry is None:
            raise ApiError(503, {"message": "the registry is not running"})
        if self._resolver is None or self._resolver.client is not self.registry:
            self._resolver = TagResolver(self.registry, gitlab_api=self.gitlab_api)
        return self._resolver

    @property
    def gitlab_api(self) -> GitLabRegistryAPI | None:
        """The registry's GitLab API, detected as GitLab does (cached per registry)."""
        if self.registry is None:
            return None
        known = getattr(self, "_gitlab_api", None)
        if known is None or known[0] is not self.registry:
            self._gitlab_api = (self.registry, GitLabRegistryAPI.detect(self.registry))
        return self._gitlab_api[1]

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        # Keep %2F encoded in the path so /projects/group%2Fapp routes as one segment.
        raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if raw_uri:
            environ["PATH_INFO"] = (
                raw_uri.split("?", 1)[0].replace("%2F", "%252F").replace("%2f", "%252F")
            )
            environ["PATH_INFO"] = unquote(environ["PATH_INFO"])
        request = Request(environ)
        return self.dispatch(request)(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = URLS.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
        except NotFound:
            return _json({"error": "404 Not Found"}, 404)
        except HTTPException as exc:
            return _json({"error": exc.name}, exc.code or 400)
        values = {k: unquote(v) if isinstance(v, str) else v for k, v in values.items()}
        self.state.count_request(f"{request.method} {endpoint}")
        if self.delay:
            time.sleep(self.delay)
        try:
            if endpoint != "jwt_auth":
                wait = self.state.take_throttle()
                if wait is not None:
                    raise ApiError(
                        429, {"message": "429 Too Many Requests"}, {"Retry-After": str(wait)}
                    )
            handler = getattr(self, f"on_{endpoint}")
            return handler(request, **values)
        except ApiError as exc:
            return _json(exc.body, exc.status, exc.headers)
        except RegistryError as exc:
            log.warning("registry error in %s: %s", endpoint, exc)
            return _json({"message": "500 Internal Server Error"}, 500)

    # --------------------------------------------------------------- helpers
    @overload
    def authenticate(self, request: Request, *, required: Literal[True] = True) -> UserRecord: ...

    @overload
    def authenticate(self, request: Request, *, required: bool) -> UserRecord | None: ...

    def authenticate(self, request: Request, *, required: bool = True) -> UserRecord | None:
        """The user from PRIVATE-TOKEN, private_token / access_token query, or Bearer."""
        token = request.headers.get("PRIVATE-TOKEN") or request.args.get("private_token")
        token = token or request.args.get("access_token") or request.headers.get("JOB-TOKEN")
        auth = request.headers.get("Authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if not token:
            if required:
                raise UNAUTHORIZED
            return None
        user = self.state.user_by_token(token)
        if user is None or user.state != "active":
            raise UNAUTHORIZED
        return user

    def find_project(
        self, user: UserRecord | None, ident: str, min_level: int = st.GUEST
    ) -> ProjectRecord:
        """A project by id or full path that ``user`` may see (404), at ``min_level`` (403)."""
        project = None
        if ident.isdigit():
            project = self.state.projects.get(int(ident))
        else:
            project = self.state.project_by_path(ident)
        if project is None or user is None:
            raise not_found("Project")
        level = self.level(project, user)
        if level < st.GUEST:
            raise not_found("Project")
        if level < min_level:
            raise FORBIDDEN
        return project

    def level(self, project: ProjectRecord, user: UserRecord) -> int:
        return st.OWNER if user.is_admin else self.state.access_level(project, user)

    def gitlab_url(self, request: Request) -> str:
        return request.host_url.rstrip("/")

    # ------------------------------------------------------------ serializers
    def user_json(self, user: UserRecord, request: Request, *, with_admin: bool) -> dict[str, Any]:
        data = {
            "id": user.id,
            "username": user.username,
            "name": user.name,
            "state": user.state,
            "locked": False,
            "avatar_url": None,
            "web_url": f"{self.gitlab_url(request)}/{user.username}",
            "created_at": iso(user.created_at),
        }
        if with_admin:
            data["is_admin"] = user.is_admin
        return data

    def namespace_json(self, project: ProjectRecord, request: Request) -> dict[str, Any]:
        base = self.gitlab_url(request)
        if project.namespace_kind == "group":
            group = self.state.groups[project.namespace_id]
            return {
                "id": group.id,
                "name": group.name,
                "path": group.path,
                "kind": "group",
                "full_path": group.full_path,
                "parent_id": group.parent_id,
                "avatar_url": None,
                "web_url": f"{base}/groups/{group.full_path}",
            }
        owner = self.state.users[project.namespace_id - 10_000]
        return {
            "id": project.namespace_id,
            "name": owner.name,
            "path": owner.username,
            "kind": "user",
            "full_path": owner.username,
            "parent_id": None,
            "avatar_url": None,
            "web_url": f"{base}/{owner.username}",
        }

    def namespace_name(self, project: ProjectRecord) -> str:
        if project.namespace_kind == "group":
            names = [g.name for g in reversed(self.state.group_ancestry(project.namespace_id))]
        else:
            names = [self.state.users[project.namespace_id - 10_000].name]
        return " / ".join([*names, project.name])

    def project_json(self, project: ProjectRecord, request: Request) -> dict[str, Any]:
        policy = {key: project.policy.get(key) for key in POLICY_FIELDS}
        policy["next_run_at"] = iso(project.policy.get("next_run_at"))
        full = project.full_path
        return {
            "id": project.id,
            "description": None,
            "name": project.name,
            "name_with_namespace": self.namespace_name(project),
            "path": project.path,
            "path_with_namespace": full,
            "created_at": iso(project.created_at),
            "default_branch": "main",
            "web_url": f"{self.gitlab_url(request)}/{full}",
            "visibility": "private",
            "namespace": self.namespace_json(project, request),
            "creator_id": project.creator_id,
            "last_activity_at": iso(project.last_activity_at),
            "archived": False,
            "container_registry_enabled": project.registry_access_level != "disabled",
            "container_registry_access_level": project.registry_access_level,
            "container_registry_image_prefix": f"{self.registry_host}/{full.lower()}",
            "container_expiration_policy": policy,
        }

    # ------------------------------------------------------------ endpoints
    def on_version(self, request: Request) -> Response:
        self.authenticate(request)
        version = self.state.gitlab_version or GITLAB_VERSION
        return _json({"version": version, "revision": GITLAB_REVISION, "enterprise": False})

    def on_current_user(self, request: Request) -> Response:
        user = self.authenticate(request)
        return _json(self.user_json(user, request, with_admin=user.is_admin))

    def on_user(self, request: Request, user_id: int) -> Response:
        viewer = self.authenticate(request)
        user = self.state.users.get(user_id)
        if user is None:
            raise not_found("User")
        return _json(self.user_json(user, request, with_admin=viewer.is_admin))

    def on_projects(self, request: Request) -> Response:
        user = self.authenticate(request, required=False)
        projects = self.state.visible_projects(user) if user else []
        return self.project_list(request, projects)

    def on_group_projects(self, request: Request, group: str) -> Response:
        user = self.authenticate(request, required=False)
        found = (
            self.state.groups.get(int(group))
            if group.isdigit()
            else self.state.group_by_path(group)
        )
        if found is None or user is None:
            raise not_found("Group")
        subgroups = _bool(request.args.get("include_subgroups"), "include_subgroups")
        tree = self.state.group_tree_ids(found)
        in_tree = [
            p
            for p in self.state.visible_projects(user)
            if p.namespace_kind == "group" and p.namespace_id in tree
        ]
        # A private group is visible to admins, its members, and members of its projects.
        if not (user.is_admin or in_tree or self.state.is_group_member(found, user)):
            raise not_found("Group")
        projects = in_tree if subgroups else [p for p in in_tree if p.namespace_id == found.id]
        return self.project_list(request, projects)

    def project_list(self, request: Request, projects: list[ProjectRecord]) -> Response:
        order_by = request.args.get("order_by", "created_at")
        sort = request.args.get("sort", "desc")
        if sort not in ("asc", "desc"):
            raise bad_request("sort does not have a valid value")
        if order_by not in ("id", "name", "path", "created_at", "last_activity_at"):
            raise bad_request("order_by does not have a valid value")
        key = {
            "id": lambda p: p.id,
            "name": lambda p: (p.name.lower(), p.id),
            "path": lambda p: (p.path, p.id),
            "created_at": lambda p: (p.created_at, p.id),
            "last_activity_at": lambda p: (p.last_activity_at, p.id),
        }[order_by]
        projects = sorted(projects, key=key, reverse=sort == "desc")
        search = request.args.get("search")
        if search:
            projects = [p for p in projects if search.lower() in p.full_path.lower()]
        rows = lambda items: [self.project_json(p, request) for p in items]  # noqa: E731
        if request.args.get("pagination") == "keyset":
            if order_by != "id":
                raise ApiError(
                    405,
                    {
                        "message": "405 Method Not Allowed - Keyset pagination is not yet "
                        "available for this type of request"
                    },
                )
            return keyset_page(request, projects, rows, sort)
        return offset_page(request, projects, rows)

    def on_project(self, request: Request, project: str) -> Response:
        user = self.authenticate(request, required=False)
        if request.method == "GET":
            found = self.find_project(user, project)
            return _json(self.project_json(found, request))
        found = self.find_project(user, project, st.MAINTAINER)
        level = registry_access_update(request_params(request))
        attrs = policy_attributes(request)
        if attrs:
            try:
                self.state.set_policy(found, attrs)
            except PolicyError as exc:
                raise ApiError(400, policy_error_body(exc)) from None
        if level is not None:
            self.state.set_registry_access_level(found, level)
        return _json(self.project_json(found, request))

    def on_member(self, request: Request, project: str, user_id: int) -> Response:
        user = self.authenticate(request, required=False)
        found = self.find_project(user, project)
        member = self.state.users.get(user_id)
        level = self.state.access_level(found, member) if member else 0
        if member is None or level < st.GUEST:
            raise not_found("Member")
        data = self.user_json(member, request, with_admin=False)
        data.update({"access_level": level, "expires_at": None, "membership_state": "active"})
        return _json(data)

    # -------------------------------------------------------- registry data
    def project_repositories(self, project: ProjectRecord) -> list[tuple[st.RepositoryRecord, str]]:
        """(record, name) of every registry repository of the project, by id."""
        full = project.full_path.lower()
        found = []
        for path in self.registry.catalog():
            if path == full:
                name = ""
            elif path.startswith(full + "/"):
                if self.state.project_for_repository(path) is not project:
                    continue  # it belongs to a nested project
                name = path[len(full) + 1 :]
            else:
                continue
            if self.state.is_repository_deleted(path):
                if not self.safe_tags(path):
                    continue
                self.state.restore_repository(path)  # pushed again since the delete
            found.append((self.state.repository_record(path), name))
        return sorted(found, key=lambda item: item[0].id)

    def safe_tags(self, path: str) -> list[str]:
        try:
            return self.registry.tags(path)
        except RegistryNotFound:
            return []

    def repository_json(
        self,
        record: st.RepositoryRecord,
        name: str,
        project: ProjectRecord,
        request: Request,
        *,
        tags: bool = False,
        tags_count: bool = False,
        size: bool = False,
    ) -> dict[str, Any]:
        # Keys in the order of GitLab's Repository entity (lib/api/entities/container_registry.rb).
        data: dict[str, Any] = {
            "id": record.id,
            "name": name,
            "path": record.path,
            "project_id": project.id,
            "location": f"{self.registry_host}/{record.path}",
            "created_at": iso(record.created_at),
            "cleanup_policy_started_at": None,
        }
        if tags or tags_count:
            names = self.safe_tags(record.path)
            if tags_count:
                data["tags_count"] = len(names)
            if tags:
                data["tags"] = [self.tag_row(record.path, t) for t in names]
        user = self.authenticate(request, required=False)
        if user is not None and self.level(project, user) >= st.DEVELOPER:  # admin_container_image
            data["delete_api_path"] = (
                f"{self.gitlab_url(request)}/api/v4/projects/{project.id}"
                f"/registry/repositories/{record.id}"
            )
        if size:  # only GitLab's registry with its metadata database knows
            data["size"] = self.repository_size(record.path)
        data["status"] = None
        return data

    def repository_size(self, path: str) -> int | None:
        """``ContainerRepository#size``: the GitLab API's ``size=self``, else nil."""
        api = self.gitlab_api
        if api is None:
            return None
        try:
            return api.repository(path, size="self").size_bytes
        except RegistryNotFound:
            return None

    def tag_row(self, path: str, tag: str) -> dict[str, Any]:
        return {
            "name": tag,
            "path": f"{path}:{tag}",
            "location": f"{self.registry_host}/{path}:{tag}",
        }

    def find_repository(self, project: ProjectRecord, rid: int) -> tuple[st.RepositoryRecord, str]:
        """A known repository of the project, by id: a database lookup in GitLab.

        No catalog read: like GitLab's ``container_repositories`` row, the record
        exists once the repository has been listed (that is where ids come from).
        """
        check_registry_enabled(project)
        record = self.state.repository_by_id(rid)
        if (
            record is None
            or self.state.is_repository_deleted(record.path)
            or self.state.project_for_repository(record.path) is not project
        ):
            raise not_found("Repository")
        full = project.full_path.lower()
        return record, "" if record.path == full else record.path[len(full) + 1 :]

    def on_repositories(self, request: Request, project: str) -> Response:
        user = self.authenticate(request, required=False)
        found = self.find_project(user, project, st.REPORTER)
        check_registry_enabled(found)
        tags = _bool(request.args.get("tags"), "tags")
        count = _bool(request.args.get("tags_count"), "tags_count")
        items = self.project_repositories(found)
        rows = lambda page: [  # noqa: E731
            self.repository_json(r, n, found, request, tags=tags, tags_count=count) for r, n in page
        ]
        return offset_page(request, items, rows)

    def on_repository(self, request: Request, rid: int) -> Response:
        user = self.authenticate(request, required=False)
        record = self.state.repository_by_id(rid)
        project = self.state.project_for_repository(record.path) if record else None
        if record is None or project is None or user is None:
            raise not_found("Repository")
        if self.level(project, user) < st.REPORTER:
            raise not_found("Repository")
        record, name = self.find_repository(project, rid)
        args = request.args
        return _json(
            self.repository_json(
                record,
                name,
                project,
                request,
                tags=_bool(args.get("tags"), "tags"),
                tags_count=_bool(args.get("tags_count"), "tags_count"),
                size=_bool(args.get("size"), "size"),
            )
        )

    def on_delete_repository(self, request: Request, project: str, rid: int) -> Response:
        user = self.authenticate(request, required=False)
        found = self.find_project(user, project, st.DEVELOPER)
        record, _ = self.find_repository(found, rid)
        names = self.safe_tags(record.path)
        if names:
            SafeDelete(self.registry).delete_tags(record.path, names)
        self.state.mark_repository_deleted(record.path)
        return Response(status=202)

    def on_tags(self, request: Request, project: str, rid: int) -> Response:
        user = self.authenticate(request, required=False)
        if request.method == "DELETE":
            return self.bulk_delete(request, user, project, rid)
        found = self.find_project(user, project, st.REPORTER)
        record, _ = self.find_repository(found, rid)
        if request.args.get("pagination") == "keyset":
            return self.keyset_tags(request, record.path)
        names = self.safe_tags(record.path)  # sorted by name, as GitLab sorts them
        return offset_page(
            request, names, lambda page: [self.tag_row(record.path, t) for t in page]
        )

    def keyset_tags(self, request: Request, path: str) -> Response:
        """Keyset tags: only with the registry's GitLab API (GitLab: ``not_allowed!``)."""
        api = self.gitlab_api
        if api is None:
            raise ApiError(405, {"message": "405 Method Not Allowed"})
        per_page = min(max(_int_arg(request, "per_page", DEFAULT_PER_PAGE) or 1, 1), MAX_PER_PAGE)
        descending = request.args.get("sort") == "desc"
        last = request.args.get("last")
        names = sorted((tag.name for tag in api.tags(path)), reverse=descending)
        if last is not None:
            names = [n for n in names if (n < last if descending else n > last)]
        page = names[:per_page]
        response = _json([self.tag_row(path, name) for name in page])
        if len(names) > per_page:
            sort = "desc" if descending else "asc"
            url = _link(request, per_page=per_page, last=page[-1], sort=sort)
            response.headers["Link"] = f'<{url}>; rel="next"'
        return response

    def bulk_delete(
        self, request: Request, user: UserRecord | None, project: str, rid: int
    ) -> Response:
        """GitLab's bulk tag delete: validated, leased for an hour, then run (202).

        GitLab runs it in a worker; the stand-in runs it before answering, so
        the result is visible at once (``state.bulk_delete_results[rid]``).
        """
        found = self.find_project(user, project, st.DEVELOPER)
        record, _ = self.find_repository(found, rid)
        params = bulk_delete_params(request_params(request))
        try:
            CleanupPolicy.parse(params)
        except PolicyError as exc:  # a run parameter Grape let through (older_than)
            raise bad_request(f"{exc.field} is invalid") from None
        now = utcnow()
        with self.state.lock:
            last = self.state.bulk_delete_requests.get(record.id)
            if last is not None and now - last < BULK_DELETE_INTERVAL:
                raise ApiError(400, {"message": BULK_DELETE_REPEATED})
            self.state.bulk_delete_requests[record.id] = now
            self.state.save()
        deleted = self.run_cleanup(record.path, params, found, user)
        with self.state.lock:
            self.state.bulk_delete_results[record.id] = deleted
        return Response(status=202)

    def run_cleanup(
        self,
        path: str,
        params: Mapping[str, Any],
        project: ProjectRecord | None = None,
        user: UserRecord | None = None,
    ) -> list[str]:
        """Delete what GitLab's cleanup service for this registry would; returns the
        deleted tag names. The GitLab-API service (push time, pages of 1000) when
        the registry has that API, the third-party one otherwise; protected tags
        kept as GitLab's delete service keeps them for ``user`` (a policy run: no user).
        """
        protection = self.protection_for(project, user) if project is not None else None
        if self.gitlab_api is not None:
            tags: list[Any] = self.resolver.api_tags(path)
            plan = plan_cleanup(
                tags,
                params,
                repository=path,
                service=SERVICE_GITLAB,
                protection=protection,
                page_size=self.state.cleanup_page_size,
            )
        else:
            tags = [_TagTime(name, self.created_at(path, name)) for name in self.safe_tags(path)]
            settings = self.state.settings
            max_list = int(settings["container_registry_cleanup_tags_service_max_list_size"])
            plan = plan_cleanup(
                tags,
                params,
                max_list_size=max_list,
                repository=path,
                service=SERVICE_THIRD_PARTY,
                protection=protection,
            )
        names = plan.names_to_delete
        if names:
            result = SafeDelete(self.registry).delete_tags(path, names)
            return list(result.deleted)
        return []

    def protection_for(self, project: ProjectRecord, user: UserRecord | None) -> TagProtection:
        """The rules GitLab's delete service applies for ``user``
        (ContainerRegistry::Protection::Concerns::TagRule, Community Edition): every
        mutable rule without a user; none for an admin; for others the rules whose
        delete level is above the user's."""
        rules = [
            TagProtectionRule.from_api(row)
            for row in self.state.rules_of(project.id)
            if row["minimum_access_level_for_delete"] is not None  # CE: mutable rules only
        ]
        if user is not None:
            if user.is_admin:
                return TagProtection()
            level = self.level(project, user)
            rules = [
                r
                for r in rules
                if RULE_LEVELS.get(r.minimum_access_level_for_delete or "", 0) > level
            ]
        return TagProtection(tuple(rules), f"GitLab {self.state.gitlab_version}")

    def created_at(self, path: str, tag: str) -> datetime.datetime | None:
        """A tag's config ``created``; None for an index or a tag gone meanwhile."""
        details = self.resolver.tag(path, tag)
        return details.created_at if details is not None else None

    def on_tag(self, request: Request, project: str, rid: int, tag: str) -> Response:
        user = self.authenticate(request, required=False)
        need = st.DEVELOPER if request.method == "DELETE" else st.REPORTER
        found = self.find_project(user, project, need)
        record, _ = self.find_repository(found, rid)
        if tag not in self.safe_tags(record.path):
            raise not_found("Tag")
        if request.method == "DELETE":
            rules = self.protection_for(found, user)
            deleter = SafeDelete(self.registry, protection=lambda _path: rules)
            try:
                result = deleter.delete_tags(record.path, [tag])
            except ProtectedTagError:  # GitLab: forbidden!(PROTECTED_TAGS_ERROR_MESSAGE)
                raise ApiError(
                    403, {"message": "403 Forbidden - cannot delete protected tag(s)"}
                ) from None
            if tag not in result.deleted:
                raise ApiError(400, {"message": "400 Bad request"})  # GitLab: bad_request!
            return Response(status=200)
        return _json(self.tag_details(record.path, tag))

    def tag_details(self, path: str, tag: str) -> dict[str, Any]:
        """GitLab's TagDetails entity (lib/api/entities/container_registry.rb).

        GitLab reads the manifest with its Accept (a Docker list's amd64 child),
        then the config; an OCI index answers 404 there, so the tag is not
        ``valid?`` and the endpoint answers 404 Tag Not Found. ``created_at`` is a
        Ruby DateTime: JSON ``...000+00:00``, not ``Z``.
        """
        details = self.resolver.tag(path, tag)
        if details is None or details.gitlab is None:
            raise not_found("Tag")
        self.state.count_registry_read("manifest")
        if details.revision:
            self.state.count_registry_read("config")
        data = self.tag_row(path, tag)
        data.update(
            revision=details.revision,
            short_revision=details.short_revision,
            digest=str(details.digest) if details.digest else None,
            created_at=datetime_json(details.created_at),
            total_size=details.total_size,
        )
        return data

    # ------------------------------------------------- tag protection and GraphQL
    def on_tag_rules(self, request: Request, project: str) -> Response:
        """``GET /projects/:id/registry/protection/tag/rules`` (GitLab 18.7+), Maintainer+."""
        version = parse_version(self.state.gitlab_version)
        if version is not None and version < PROTECTION_REST_SINCE:
            raise ApiError(404, {"error": "404 Not Found"})
        user = self.authenticate(request, required=False)
        found = self.find_project(user, project, st.MAINTAINER)
        return offset_page(request, self.state.rules_of(found.id), lambda rows: rows)

    def on_graphql(self, request: Request) -> Response:
        """The one GraphQL query regops sends: the older_than enum's values
        (``__type(name: "ContainerExpirationPolicyOlderThanEnum")``)."""
        self.authenticate(request)
        body = request.get_json(silent=True) or {}
        query = str(body.get("query") or "")
        name = (body.get("variables") or {}).get("name")
        if "__type" not in query or name != "ContainerExpirationPolicyOlderThanEnum":
            return _json({"errors": [{"message": "the stand-in answers only __type queries"}]})
        allowed = set(self.state.policy_options().older_than)
        values = [{"name": enum} for enum, value in OLDER_THAN_ENUM.items() if value in allowed]
        return _json({"data": {"__type": {"enumValues": values}}})

    # ------------------------------------------------------------ settings
    def on_settings(self, request: Request) -> Response:
        user = self.authenticate(request)
        if not user.is_admin:
            raise FORBIDDEN
        if request.method == "PUT":
            updates = settings_update(request_params(request))
            with self.state.lock:
                self.state.settings.update(updates)
                self.state.save()
        with self.state.lock:
            settings = dict(self.state.settings)
        return _json(settings)

    # ----------------------------------------------------------------- JWT
    def on_jwt_auth(self, request: Request) -> Response:
        params = request_params(request) if request.method == "POST" else {}
        args = {**request.args.to_dict(), **{k: v for k, v in params.items() if isinstance(v, str)}}
        if args.get("service") != self.service:
            return Response(status=404)
        user = self.basic_user(request, params)
        raw_scopes = request.args.getlist("scope") + (
            [params["scope"]] if "scope" in params else []
        )
        # Query and form scopes both land in ``params`` on a POST: count each once.
        scopes = list(dict.fromkeys(s for text in raw_scopes for s in text.split(" ") if s))
        if not scopes and user is None:
            return _json({"errors": [{"code": "DENIED", "message": "access forbidden"}]}, 403)
        granted = [g for g in (self.grant(user, text) for text in scopes) if g is not None]
        lifetime = int(self.state.settings["container_registry_token_expire_delay"]) * 60
        minter = TokenMinter(
            self.signing_key,
            issuer=self.issuer,
            service=self.service,
            subject=user.username if user else None,
            lifetime=lifetime,
        )
        token = minter.mint(granted).reveal()
        return _json({"token": token})

    def basic_user(self, request: Request, params: Mapping[str, Any]) -> UserRecord | None:
        """The user from HTTP basic (or a password-grant form); 401 when wrong."""
        auth = request.authorization
        username = password = None
        if auth is not None and auth.type == "basic":
            username, password = auth.username, auth.password
        elif params.get("username") and params.get("password"):
            username, password = params["username"], params["password"]
        if username is None:
            return None
        user = self.state.user_by_token(password or "")
        if user is None or user.username != username or user.state != "active":
            raise ApiError(401, {"errors": [{"code": "UNAUTHORIZED", "message": JWT_UNAUTHORIZED}]})
        return user

    def grant(self, user: UserRecord | None, text: str) -> Scope | None:
        """The part of one requested scope GitLab would grant ``user`` (None: nothing)."""
        try:
            scope = Scope.parse(text)
        except ValidationError:
            return None
        if scope.type == "registry":
            if user and user.is_admin and scope.name == "catalog" and scope.actions == ("*",):
                return scope
            return None
        if scope.type != "repository" or user is None:
            return None
        project = self.state.project_for_repository(scope.name)
        if project is None or project.registry_access_level == "disabled":
            return None  # Auth::ContainerRegistryAuthenticationService#can_access?
        level = self.level(project, user)
        actions = tuple(a for a in scope.actions if level >= ACTION_MIN_LEVEL.get(a, math.inf))
        if "push" in actions:
            # GitLab creates the repository's record when it grants a push token.
            self.state.repository_record(scope.name.lower())
        return Scope(scope.type, scope.name, actions) if actions else None

    def register_repositories(self) -> None:
        """Give every project repository in the registry its record (GitLab: one per push)."""
        for path in sorted(self.registry.catalog()):
            if self.state.project_for_repository(path) is not None:
                self.state.repository_record(path)


# --------------------------------------------------------------------- helpers
def datetime_json(value: datetime.datetime | None) -> str | None:
    """A Ruby DateTime as GitLab's JSON writes it: milliseconds and ``+00:00``.

    (ActiveSupport's ``DateTime#as_json``; Rails' time columns write ``Z``: :func:`iso`.)
    """
    if value is None:
        return None
    value = value.astimezone(datetime.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+00:00"


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _bool(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "t"):
        return True
    if lowered in ("false", "0", "no", "f"):
        return False
    raise bad_request(f"{name} is invalid")


def _coerce(value: Any, default: Any, name: str) -> Any:
    """A settings value converted to the type of its default (400 when it does not fit)."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else _bool(str(value), name)
    if isinstance(default, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad_request(f"{name} is invalid") from None
    return value


def request_params(request: Request) -> dict[str, Any]:
    """Parameters from a JSON body, a form body, or the query string (GitLab takes all three)."""
    params: dict[str, Any] = dict(request.args.to_dict())
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        if body is None and request.get_data():
            raise bad_request("400 Bad request - the request body is not valid JSON")
        if isinstance(body, dict):
            params.update(body)
    else:
        params.update(request.form.to_dict())
    return params


class _TagTime:
    """What plan_cleanup needs of a tag: its name and created_at."""

    def __init__(self, name: str, created_at: datetime.datetime | None) -> None:
        self.name = name
        self.created_at = created_at


BULK_DELETE_KEYS = ("name_regex_delete", "name_regex", "name_regex_keep", "keep_n", "older_than")


def bulk_delete_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The bulk delete API's parameters, validated as Grape does (400 otherwise).

    lib/api/project_container_repositories.rb declares, in this order:
    name_regex_delete, name_regex (String, untrusted_regexp), at_least_one_of them,
    name_regex_keep (String, untrusted_regexp), keep_n (Integer), older_than (String).
    Grape checks them in that order and joins every message with ", "
    (``{"error": ...}``); a given key counts as present even when blank, as in Grape.
    """
    chosen = {k: params[k] for k in BULK_DELETE_KEYS if k in params and params[k] is not None}
    errors: list[str] = []
    for key in ("name_regex_delete", "name_regex"):
        errors.extend(_regex_param_errors(chosen, key))
    if "name_regex" not in chosen and "name_regex_delete" not in chosen:
        errors.append(
            "name_regex, name_regex_delete are missing, at least one parameter must be provided"
        )
    errors.extend(_regex_param_errors(chosen, "name_regex_keep"))
    if chosen.get("keep_n") == "":
        del chosen["keep_n"]
    elif "keep_n" in chosen:
        try:
            chosen["keep_n"] = int(chosen["keep_n"])
        except (TypeError, ValueError):
            errors.append("keep_n is invalid")
    if "older_than" in chosen and not isinstance(chosen["older_than"], str):
        errors.append("older_than is invalid")
    if errors:
        raise bad_request(", ".join(errors))
    return chosen


def _regex_param_errors(chosen: Mapping[str, Any], key: str) -> list[str]:
    """Grape's String type, then API::Validations::Validators::UntrustedRegexp."""
    if key not in chosen:
        return []
    value = chosen[key]
    if not isinstance(value, str):
        return [f"{key} is invalid"]
    error = re2_error(value) if value else None
    return [f"{key} is an invalid regexp: {error}"] if error else []


def policy_attributes(request: Request) -> dict[str, Any]:
    """``container_expiration_policy_attributes`` from JSON or ``attrs[key]=`` form fields."""
    params = request_params(request)
    prefix = "container_expiration_policy_attributes"
    attrs = params.get(prefix)
    if attrs is None:
        attrs = {
            key[len(prefix) + 1 : -1]: value
            for key, value in params.items()
            if key.startswith(prefix + "[") and key.endswith("]")
        }
    if not isinstance(attrs, dict):
        raise bad_request(f"{prefix} is invalid")
    attrs = {k: v for k, v in attrs.items() if k in POLICY_FIELDS}  # Grape drops unknown keys
    if "enabled" in attrs and not isinstance(attrs["enabled"], bool):
        attrs["enabled"] = _bool(str(attrs["enabled"]), f"{prefix}[enabled]")
    if "keep_n" in attrs and attrs["keep_n"] not in (None, ""):
        try:
            attrs["keep_n"] = int(attrs["keep_n"])
        except (TypeError, ValueError):
            raise bad_request(f"{prefix}[keep_n] is invalid") from None
    for key in ("cadence", "older_than", "name_regex", "name_regex_keep"):
        if key in attrs and attrs[key] is not None and not isinstance(attrs[key], str):
            raise bad_request(f"{prefix}[{key}] is invalid")
    return attrs


@overload
def _int_arg(request: Request, name: str, default: int) -> int: ...


@overload
def _int_arg(request: Request, name: str, default: None = None) -> int | None: ...


def _int_arg(request: Request, name: str, default: int | None = None) -> int | None:
    """An integer query parameter (400 naming it when it is not one)."""
    value = request.args.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} is invalid") from None


def _page_args(request: Request) -> tuple[int, int]:
    page = max(_int_arg(request, "page", 1), 1)
    per_page = min(max(_int_arg(request, "per_page", DEFAULT_PER_PAGE), 1), MAX_PER_PAGE)
    return page, per_page


def _link(request: Request, drop: Collection[str] = (), **changes: Any) -> str:
    """The request's URL with ``changes`` to its query, without credentials or ``drop``."""
    args = {
        k: v
        for k, v in request.args.to_dict().items()
        if k.lower() not in SECRET_QUERY_KEYS and k not in drop  # never echo credentials
    }
    args.update({k: str(v) for k, v in changes.items()})
    return f"{request.base_url}?{urlencode(sorted(args.items()))}"


def offset_page(
    request: Request, items: list[Any], rows: Callable[[list[Any]], list[Any]]
) -> Response:
    """One page with GitLab's offset pagination headers."""
    page, per_page = _page_args(request)
    total = len(items)
    pages = max(1, math.ceil(total / per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    response = _json(rows(chunk))
    headers = response.headers
    headers["X-Page"] = str(page)
    headers["X-Per-Page"] = str(per_page)
    headers["X-Total"] = str(total)
    headers["X-Total-Pages"] = str(pages)
    headers["X-Next-Page"] = str(page + 1) if page < pages else ""
    headers["X-Prev-Page"] = str(page - 1) if page > 1 else ""
    links = []
    if page > 1:
        links.append(f'<{_link(request, page=page - 1, per_page=per_page)}>; rel="prev"')
    if page < pages:
        links.append(f'<{_link(request, page=page + 1, per_page=per_page)}>; rel="next"')
    links.append(f'<{_link(request, page=1, per_page=per_page)}>; rel="first"')
    links.append(f'<{_link(request, page=pages, per_page=per_page)}>; rel="last"')
    headers["Link"] = ", ".join(links)
    return response


def keyset_page(
    request: Request,
    projects: list[ProjectRecord],
    rows: Callable[[list[Any]], list[Any]],
    sort: str,
) -> Response:
    """One page of keyset pagination (``id_after`` / ``id_before``): only a Link header."""
    _, per_page = _page_args(request)
    after = _int_arg(request, "id_after")
    before = _int_arg(request, "id_before")
    # id_after / id_before are filters of GET /projects, whatever the sort.
    if after is not None:
        projects = [p for p in projects if p.id > after]
    if before is not None:
        projects = [p for p in projects if p.id < before]
    chunk = projects[:per_page]
    response = _json(rows(chunk))
    if len(projects) > per_page:
        cursor = {"id_after": chunk[-1].id} if sort == "asc" else {"id_before": chunk[-1].id}
        url = _link(request, {"page"}, per_page=per_page, **cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response


# --------------------------------------------------------- registry settings and access
REGISTRY_DISABLED = ApiError(403, {"message": "403 Forbidden"})


def check_registry_enabled(project: ProjectRecord) -> None:
    """403 when the project's registry is disabled: ProjectPolicy's ``container_registry_disabled``
    rule prevents reading, updating and destroying container images, admins included."""
    if project.registry_access_level == "disabled":
        raise REGISTRY_DISABLED


def registry_access_update(params: Mapping[str, Any]) -> str | None:
    """``container_registry_access_level`` (or the deprecated boolean) from a project PUT."""
    if "container_registry_access_level" in params:
        try:
            return validate_access_level(params["container_registry_access_level"])
        except ValidationError:
            raise bad_request(
                "container_registry_access_level does not have a valid value"
            ) from None
    if "container_registry_enabled" in params:
        enabled = params["container_registry_enabled"]
        if not isinstance(enabled, bool):
            enabled = _bool(str(enabled), "container_registry_enabled")
        return "enabled" if enabled else "disabled"
    return None


def settings_update(params: Mapping[str, Any]) -> dict[str, Any]:
    """The registry settings of a PUT, validated as ApplicationSetting does (400 with
    ``{"message": {field: [messages]}}`` otherwise); other settings are not modelled."""
    given = {k: v for k, v in params.items() if k in REGISTRY_SETTINGS}
    values, errors = collect_settings_errors(given)
    if errors:
        raise ApiError(400, {"message": errors})
    return values
