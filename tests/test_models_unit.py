"""The object model against `responses` mocks shaped like GitLab's REST API docs.

A tiny fake GitLab (callbacks on regex URLs) serves lists in small pages so every
list is followed past its first page: keyset `Link` for /projects, offset
`Link` + `X-Next-Page` elsewhere.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import responses

from regops.config import Settings
from regops.connection import Connection
from regops.errors import (
    DoesNotExist,
    PolicyError,
    PolicyNotApplied,
    UpdateAllError,
    ValidationError,
)
from regops.models import (
    ContainerRepository,
    ExpirationPolicy,
    Project,
    Tag,
    User,
)
from regops.secrets import Secret

BASE = "https://gitlab.example.com"
API = BASE + "/api/v4"
TOKEN = "glpat-models-unit-secret-42"
PAGE = 2  # items per page the fake serves, whatever per_page asks: forces pagination
DIGEST = "sha256:" + "a" * 64
CONFIG_DIGEST = "sha256:" + "b" * 64


def policy(**changes):
    """doc/api/projects.md: a project's container_expiration_policy."""
    return {
        "cadence": "1d",
        "enabled": False,
        "keep_n": 10,
        "older_than": "90d",
        "name_regex": ".*",
        "name_regex_keep": None,
        "next_run_at": "2024-05-02T10:00:00.000Z",
        **changes,
    }


def project(pid: int, **changes):
    return {
        "id": pid,
        "name": f"app{pid}",
        "path": f"app{pid}",
        "path_with_namespace": f"group/app{pid}",
        "creator_id": 7,
        "visibility": "private",
        "archived": False,
        "created_at": "2024-01-01T00:00:00.000Z",
        "last_activity_at": "2024-05-01T00:00:00.000Z",
        "container_expiration_policy": policy(),
        **changes,
    }


class FakeGitLab:
    """Projects, repositories, tags, users and members in memory, served in pages."""

    def __init__(self, mock: responses.RequestsMock) -> None:
        self.projects = {pid: project(pid) for pid in range(1, 6)}
        self.repositories = {
            1: [self.repo(11, 1, ""), self.repo(12, 1, "api"), self.repo(13, 1, "web")],
            2: [],
        }
        self.tags = {11: ["1.0", "1.1", "2.0", "latest", "v3"]}
        self.users = {7: {"id": 7, "username": "root", "name": "Admin", "state": "active"}}
        self.members = {(1, 7): {"id": 7, "username": "root", "access_level": 50}}
        self.ignore_policy_updates = False
        self.offer_total = True
        self.puts: list[dict] = []
        self.mock = mock
        route = mock.add_callback
        route("GET", re.compile(rf"{API}/projects(\?.*)?$"), self.list_projects)
        route("GET", re.compile(rf"{API}/projects/[^/?]+(\?.*)?$"), self.get_project)
        route("PUT", re.compile(rf"{API}/projects/[^/?]+$"), self.put_project)
        route("GET", re.compile(rf"{API}/projects/\d+/registry/repositories(\?.*)?$"), self.repos)
        route("GET", re.compile(rf"{API}/registry/repositories/\d+(\?.*)?$"), self.get_repo)
        route("GET", re.compile(rf"{API}/projects/\d+/registry/repositories/\d+/tags(\?.*)?$"),
              self.list_tags)  # fmt: skip
        route("GET", re.compile(rf"{API}/projects/\d+/registry/repositories/\d+/tags/[^/?]+$"),
              self.get_tag)  # fmt: skip
        route("GET", re.compile(rf"{API}/users/\d+$"), self.get_user)
        route("GET", re.compile(rf"{API}/user$"), lambda r: (200, {}, json.dumps(self.users[7])))
        route("GET", re.compile(rf"{API}/projects/\d+/members/all/\d+$"), self.member)
        # What the models ask of GitLab itself: its version (policy values, tag protection
        # rules: none before 17.9) and the older_than enum (GraphQL introspection).
        route("GET", re.compile(rf"{API}/version$"), lambda r: (200, {}, '{"version": "17.5.1"}'))
        route("POST", re.compile(rf"{BASE}/api/graphql$"), self.older_than_enum)

    @staticmethod
    def older_than_enum(request) -> tuple:
        names = ["SEVEN_DAYS", "FOURTEEN_DAYS", "THIRTY_DAYS", "SIXTY_DAYS", "NINETY_DAYS"]
        body = {"data": {"__type": {"enumValues": [{"name": n} for n in names]}}}
        return 200, {}, json.dumps(body)

    @staticmethod
    def repo(rid: int, pid: int, name: str) -> dict:
        path = f"group/app{pid}" + (f"/{name}" if name else "")
        return {
            "id": rid,
            "name": name,
            "path": path,
            "project_id": pid,
            "location": f"registry.example.com:5050/{path}",
            "created_at": "2024-01-01T00:00:00.000Z",
            "cleanup_policy_started_at": None,
            "status": None,
            "tags_count": 5,
        }

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def query(request) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(request.url).query).items()}

    def offset_page(self, request, items: list) -> tuple:
        params = self.query(request)
        page = int(params.get("page", "1"))
        chunk = items[(page - 1) * PAGE : page * PAGE]
        headers = {"X-Total": str(len(items)), "X-Page": str(page)}
        if page * PAGE < len(items):
            nxt = urlencode({**params, "page": page + 1})
            url = request.url.split("?")[0]
            headers["Link"] = f'<{url}?{nxt}>; rel="next"'
            headers["X-Next-Page"] = str(page + 1)
        return 200, headers, json.dumps(chunk)

    @staticmethod
    def pid(request) -> int:
        return int(urlsplit(request.url).path.split("/")[4])

    # -- routes ----------------------------------------------------------------------

    def list_projects(self, request):
        params = self.query(request)
        items = sorted(self.projects.values(), key=lambda p: p["id"])
        if params.get("archived") == "true":
            items = [p for p in items if p["archived"]]
        if params.get("pagination") != "keyset":
            status, headers, body = self.offset_page(request, items)
            if not self.offer_total:
                headers.pop("X-Total")
            return status, headers, body
        descending = params.get("sort") == "desc"
        items = sorted(items, key=lambda p: p["id"], reverse=descending)
        if "id_after" in params:
            items = [p for p in items if p["id"] > int(params["id_after"])]
        if "id_before" in params:
            items = [p for p in items if p["id"] < int(params["id_before"])]
        chunk = items[:PAGE]
        headers = {}
        if len(items) > PAGE:
            key = "id_before" if descending else "id_after"
            rest = {k: v for k, v in params.items() if k not in ("id_after", "id_before")}
            nxt = urlencode({**rest, key: chunk[-1]["id"]})
            headers["Link"] = f'<{API}/projects?{nxt}>; rel="next"'
        return 200, headers, json.dumps(chunk)

    def get_project(self, request):
        key = urlsplit(request.url).path.split("/")[4]
        key = key.replace("%2F", "/")
        for item in self.projects.values():
            if str(item["id"]) == key or item["path_with_namespace"] == key:
                return 200, {}, json.dumps(item)
        return 404, {}, json.dumps({"message": "404 Project Not Found"})

    def put_project(self, request):
        pid = self.pid(request)
        body = json.loads(request.body)
        self.puts.append(body)
        attrs = body.get("container_expiration_policy_attributes", {})
        if not self.ignore_policy_updates:
            self.projects[pid]["container_expiration_policy"].update(attrs)
        return 200, {}, json.dumps(self.projects[pid])

    def repos(self, request):
        return self.offset_page(request, self.repositories.get(self.pid(request), []))

    def get_repo(self, request):
        rid = int(urlsplit(request.url).path.split("/")[-1])
        for repos in self.repositories.values():
            for repo in repos:
                if repo["id"] == rid:
                    return 200, {}, json.dumps(repo)
        return 404, {}, json.dumps({"message": "404 Repository Not Found"})

    def list_tags(self, request):
        rid = int(urlsplit(request.url).path.split("/")[-2])
        repo = self.find_repo(rid)
        rows = [self.tag_row(repo, name) for name in self.tags.get(rid, [])]
        return self.offset_page(request, rows)

    def find_repo(self, rid: int) -> dict:
        return next(r for repos in self.repositories.values() for r in repos if r["id"] == rid)

    @staticmethod
    def tag_row(repo: dict, name: str) -> dict:
        return {
            "name": name,
            "path": f"{repo['path']}:{name}",
            "location": f"{repo['location']}:{name}",
        }

    def get_tag(self, request):
        parts = urlsplit(request.url).path.split("/")
        rid, name = int(parts[-3]), parts[-1]
        if name not in self.tags.get(rid, []):
            return 404, {}, json.dumps({"message": "404 Tag Not Found"})
        row = self.tag_row(self.find_repo(rid), name)
        row.update(
            revision=CONFIG_DIGEST[7:],
            short_revision=CONFIG_DIGEST[7:16],
            digest=DIGEST,
            created_at="2024-03-01T12:00:00.000+00:00",
            total_size=1024,
        )
        return 200, {}, json.dumps(row)

    def get_user(self, request):
        uid = int(urlsplit(request.url).path.split("/")[-1])
        if uid not in self.users:
            return 404, {}, json.dumps({"message": "404 User Not Found"})
        return 200, {}, json.dumps(self.users[uid])

    def member(self, request):
        parts = urlsplit(request.url).path.split("/")
        key = (int(parts[4]), int(parts[-1]))
        if key not in self.members:
            return 404, {}, json.dumps({"message": "404 Member Not Found"})
        return 200, {}, json.dumps(self.members[key])


@pytest.fixture
def gitlab():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeGitLab(mock)


@pytest.fixture
def conn(gitlab):
    return Connection(Settings(gitlab_url=BASE, token=Secret(TOKEN), registry_url="none"))


def calls(gitlab: FakeGitLab, pattern: str) -> list[str]:
    return [c.request.url for c in gitlab.mock.calls if re.search(pattern, c.request.url)]


# -- finders and queries ---------------------------------------------------------------


def test_find_and_find_by(conn):
    p = Project.find(3, connection=conn)
    assert (p.id, p.full_path, p.path_with_namespace) == (3, "group/app3", "group/app3")
    assert Project.find_by(full_path="group/app4", connection=conn).id == 4


def test_find_missing_raises_model_does_not_exist_with_id(conn):
    with pytest.raises(Project.DoesNotExist, match="Project 99 not found") as info:
        Project.find(99, connection=conn)
    assert isinstance(info.value, DoesNotExist)
    assert not issubclass(Project.DoesNotExist, User.DoesNotExist)
    with pytest.raises(User.DoesNotExist, match="User 5"):
        User.find(5, connection=conn)
    with pytest.raises(ContainerRepository.DoesNotExist, match="ContainerRepository 404"):
        ContainerRepository.find(404, connection=conn)


def test_all_follows_keyset_pages(conn, gitlab):
    ids = [p.id for p in Project.all(connection=conn)]
    assert ids == [1, 2, 3, 4, 5]
    assert len(calls(gitlab, r"/projects\?")) == 3  # pages of 2, 2, 1
    assert all("pagination=keyset" in url for url in calls(gitlab, r"/projects\?"))


def test_last_uses_descending_order_and_returns_ascending(conn, gitlab):
    last = Project.last(3, connection=conn)
    assert [p.id for p in last] == [3, 4, 5]
    assert all("sort=desc" in url for url in calls(gitlab, r"/projects\?"))
    assert Project.last(connection=conn).id == 5
    assert [p.id for p in Project.first(3, connection=conn)] == [1, 2, 3]
    assert Project.first(connection=conn).id == 1
    sent = len(gitlab.mock.calls)
    assert list(Project.first(0, connection=conn)) == [] == list(Project.last(0, connection=conn))
    assert len(gitlab.mock.calls) == sent
    with pytest.raises(ValidationError, match="n: expected a whole number"):
        Project.last(-1, connection=conn)


def test_where_filters_server_side_and_is_immutable(conn, gitlab):
    gitlab.projects[2]["archived"] = True
    base = Project.where(connection=conn)
    archived = base.where(archived=True)
    assert [p.id for p in archived] == [2]
    assert base.filters == {}
    assert "archived=true" in calls(gitlab, r"/projects\?")[-1]


def test_where_unknown_filter_names_it_and_lists_supported(conn, gitlab):
    with pytest.raises(ValidationError) as info:
        Project.where(name_like="x", connection=conn)
    text = str(info.value)
    assert info.value.field == "name_like"
    assert "name_like" in text and "search" in text and "id_after" in text
    assert not gitlab.mock.calls  # nothing sent
    with pytest.raises(ValidationError, match="visibility"):
        Project.where(visibility="secret", connection=conn)


def test_count_uses_x_total_then_counts(conn, gitlab):
    assert Project.count(connection=conn) == 5
    assert len(gitlab.mock.calls) == 1
    gitlab.offer_total = False
    assert Project.where(connection=conn).count() == 5


def test_find_each_streams(conn, gitlab):
    stream = Project.find_each(connection=conn)
    assert next(stream).id == 1
    assert len(gitlab.mock.calls) == 1  # only the first page so far


# -- relations -------------------------------------------------------------------------


def test_relations_are_lazy_cached_and_reloaded(conn, gitlab):
    p = Project.find(1, connection=conn)
    repos = p.container_repositories
    assert [r.id for r in repos] == [11, 12, 13]  # two offset pages
    assert len(calls(gitlab, r"/registry/repositories")) == 2
    assert p.container_repositories is repos
    assert repos[0].project is p
    assert p.creator.username == "root"
    policy = p.container_expiration_policy
    assert (policy.project_id, policy.keep_n) == (1, 10)
    p.reload()
    assert p.container_repositories is not repos
    assert len(calls(gitlab, r"/registry/repositories")) == 4


def test_repository_find_project_and_tags_listed_via_gitlab(conn, gitlab):
    repo = ContainerRepository.find(11, connection=conn)
    assert repo.project.id == 1
    tags = repo.tags
    assert [t.name for t in tags] == ["1.0", "1.1", "2.0", "latest", "v3"]  # 3 pages
    assert tags[0].repository is repo
    assert tags[0].path == "group/app1:1.0"
    with pytest.raises(AttributeError, match="listed, not fetched"):
        _ = tags[0].total_size
    with pytest.raises(AttributeError, match="has no attribute 'colour'"):
        _ = tags[0].colour


def test_tag_details_from_gitlab(conn, gitlab):
    repo = ContainerRepository.find(11, connection=conn)
    tag = repo.tags[0].reload()
    assert tag.digest == DIGEST and tag.total_size == 1024
    assert tag.repository is repo  # reload keeps the owner
    assert tag.short_revision == CONFIG_DIGEST[7:16]
    assert tag.created_at.isoformat() == "2024-03-01T12:00:00+00:00"
    with pytest.raises(AttributeError, match="tag-details endpoint does not give it"):
        _ = tag.layers
    detailed = repo.load_tags()
    assert len(detailed) == 5 and all(t.total_size == 1024 for t in detailed)
    assert len(calls(gitlab, r"/tags/")) == 1 + 5
    assert repo.tags is detailed


def test_missing_attribute_on_list_answer(conn):
    p = Project(
        {"id": 1, "path_with_namespace": "group/app1"}, connection=conn
    )  # e.g. a simple=true row
    with pytest.raises(AttributeError, match=r"Project.creator_id: not in GitLab's answer"):
        _ = p.creator_id


# -- policies --------------------------------------------------------------------------


def test_policy_update_applies_and_rereads(conn, gitlab):
    pol = ExpirationPolicy.find_by(project_id=1, connection=conn)
    pol.update(keep_n="5", older_than="14d", enabled=True)
    assert gitlab.puts == [
        {
            "container_expiration_policy_attributes": {
                "keep_n": 5,
                "older_than": "14d",
                "enabled": True,
            }
        }
    ]
    assert (pol.keep_n, pol.older_than, pol.enabled) == (5, "14d", True)


def test_policy_update_gitlab_ignored_is_an_error(conn, gitlab):
    gitlab.ignore_policy_updates = True
    pol = ExpirationPolicy.find_by(project_id=1, connection=conn)
    with pytest.raises(PolicyNotApplied) as info:
        pol.update(keep_n=5, cadence="7d")
    assert info.value.fields == {"keep_n": (5, 10), "cadence": ("7d", "1d")}
    assert "keep_n" in str(info.value) and "cadence" in str(info.value)
    assert pol.keep_n == 10  # shows what GitLab really has


def test_policy_update_invalid_sends_nothing(conn, gitlab):
    pol = ExpirationPolicy.find_by(project_id=1, connection=conn)
    conn.policy_options()  # what this GitLab accepts: read once per connection (2 GETs)
    sent_before = len(gitlab.mock.calls)
    with pytest.raises(PolicyError, match="keep_n: is not included in the list"):
        pol.update(keep_n=7)
    with pytest.raises(PolicyError, match="not valid RE2 syntax"):
        pol.update(enabled=True, name_regex="(?<=v)1")
    with pytest.raises(PolicyError, match="name_regex: can't be blank"):
        pol.update(enabled=True, name_regex="")
    assert len(gitlab.mock.calls) == sent_before and not gitlab.puts


def test_policy_attributes_use_rails_names(conn):
    pol = ExpirationPolicy.find_by(project_id=2, connection=conn)
    assert list(pol.attributes) == [
        "cadence",
        "enabled",
        "keep_n",
        "older_than",
        "name_regex",
        "name_regex_keep",
        "next_run_at",
        "project_id",
    ]
    assert pol.attributes["project_id"] == 2
    # Rails' find_by: nil when there is none
    assert ExpirationPolicy.find_by(project_id=77, connection=conn) is None


def test_policy_where_across_pages_with_repositories_update_all(conn, gitlab):
    gitlab.projects[3]["container_expiration_policy"]["enabled"] = True
    disabled = ExpirationPolicy.where(enabled=False, connection=conn)
    assert [p.project_id for p in disabled] == [1, 2, 4, 5]
    assert [p.project_id for p in disabled.with_repositories()] == [1]
    with pytest.raises(ValidationError, match="supported: cadence"):
        ExpirationPolicy.where(colour="red", connection=conn)
    updated = disabled.with_repositories().update_all(enabled=True)
    assert [p.project_id for p in updated] == [1]
    assert gitlab.projects[1]["container_expiration_policy"]["enabled"] is True
    assert gitlab.projects[2]["container_expiration_policy"]["enabled"] is False


def test_update_all_collects_failures(conn, gitlab):
    gitlab.ignore_policy_updates = True
    with pytest.raises(UpdateAllError) as info:
        ExpirationPolicy.where(enabled=False, connection=conn).update_all(keep_n=5)
    assert sorted(info.value.failed) == [1, 2, 3, 4, 5]
    with pytest.raises(PolicyError):
        ExpirationPolicy.where(connection=conn).update_all(keep_n=3)


def test_policy_plan_over_all_repositories(conn, gitlab):
    gitlab.tags = {11: ["1.0", "latest"], 12: ["x"], 13: []}
    pol = ExpirationPolicy.find_by(project_id=1, connection=conn)
    plan = pol.plan()
    assert [p.repository for p in plan] == ["group/app1", "group/app1/api", "group/app1/web"]
    assert plan[0].kept["latest"] == "latest"
    assert "3 repositories" in repr(plan)


# -- users -----------------------------------------------------------------------------


def test_user_find_current_access_level(conn):
    user = User.find(7, connection=conn)
    assert (user.username, user.name, user.state) == ("root", "Admin", "active")
    assert User.current(connection=conn).id == 7
    assert user.access_level(Project.find(1, connection=conn)) == 50
    assert user.access_level(2) == 0
    with pytest.raises(AttributeError, match="only to administrators"):
        _ = user.is_admin


# -- display ---------------------------------------------------------------------------


def test_reprs_are_short_and_secret_free(conn):
    p = Project.find(1, connection=conn)
    repo = p.container_repositories[0]
    texts = [repr(p), repr(repo), repr(p.container_expiration_policy), repr(conn)]
    assert repr(p) == "<Project id=1 path_with_namespace='group/app1'>"
    assert all(TOKEN not in t and len(t) < 200 for t in texts)
    assert "container_repositories" in dir(p) and "creator" in dir(p)
    assert "tags" in dir(repo) and "path" in dir(repo)
    tag = Tag({"name": "x"}, repository=repo)
    assert repr(tag) == "<Tag group/app1:x>"


def test_ipython_tab_completion_offers_fields_and_relations_without_requests(conn, gitlab):
    from IPython.core.completer import provisionalcompleter
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.user_ns["p"] = Project.find(1, connection=conn)
    sent = len(gitlab.mock.calls)
    with provisionalcompleter():
        found = [c.text for c in shell.Completer.completions("p.contai", 8)]
        found += [c.text for c in shell.Completer.completions("p.creat", 7)]
    assert {
        "container_repositories",
        "container_expiration_policy",
        "creator",
        "creator_id",
    } <= set(found)
    assert len(gitlab.mock.calls) == sent  # completing never loads a relation
