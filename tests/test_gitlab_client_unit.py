"""GitLabClient against `responses` mocks shaped like GitLab's REST API documentation.

Each payload names the doc page (gitlab doc/api/...) its shape comes from.
"""

from __future__ import annotations

import itertools
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from regops.errors import (
    GitLabError,
    GitLabForbidden,
    GitLabNotFound,
    GitLabRateLimited,
    GitLabUnauthorized,
    ValidationError,
)
from regops.gitlab import client as gitlab_client
from regops.gitlab.client import GitLabClient, encode_id, flatten_message
from regops.http import HTTPSettings
from regops.secrets import Secret

BASE = "https://gitlab.example.com"
API = BASE + "/api/v4"
TOKEN = "glpat-unit-test-secret-123"

# doc/api/container_registry.md "Within a project" (List registry repositories)
REPOSITORIES = [
    {
        "id": 1,
        "name": "",
        "path": "group/project",
        "project_id": 9,
        "location": "gitlab.example.com:5000/group/project",
        "created_at": "2019-01-10T13:38:57.391Z",
        "cleanup_policy_started_at": "2020-01-10T15:40:57.391Z",
        "status": None,
    },
    {
        "id": 2,
        "name": "releases",
        "path": "group/project/releases",
        "project_id": 9,
        "location": "gitlab.example.com:5000/group/project/releases",
        "created_at": "2019-01-10T13:39:08.229Z",
        "cleanup_policy_started_at": "2020-08-17T03:12:35.489Z",
        "status": "delete_ongoing",
    },
]
# doc/api/container_registry.md "Get details of a single repository"
REPOSITORY = {
    "id": 2,
    "name": "",
    "path": "group/project",
    "project_id": 9,
    "location": "gitlab.example.com:5000/group/project",
    "created_at": "2019-01-10T13:38:57.391Z",
    "cleanup_policy_started_at": "2020-08-17T03:12:35.489Z",
    "tags_count": 1,
    "tags": [
        {
            "name": "0.0.1",
            "path": "group/project:0.0.1",
            "location": "gitlab.example.com:5000/group/project:0.0.1",
        }
    ],
    "size": 2818413,
    "status": "delete_scheduled",
}
# doc/api/container_registry.md "List registry repository tags"
TAGS = [
    {"name": "A", "path": "group/project:A", "location": "gitlab.example.com:5000/group/project:A"},
    {
        "name": "latest",
        "path": "group/project:latest",
        "location": "gitlab.example.com:5000/group/project:latest",
    },
]
# doc/api/container_registry.md "Get details of a registry repository tag"
TAG = {
    "name": "v10.0.0",
    "path": "group/project:latest",
    "location": "gitlab.example.com:5000/group/project:latest",
    "revision": "e9ed9d87c881d8c2fd3a31b41904d01ba0b836e7fd15240d774d811a1c248181",
    "short_revision": "e9ed9d87c",
    "digest": "sha256:c3490dcf10ffb6530c1303522a1405dfaf7daecd8f38d3e6a1ba19ea1f8a1751",
    "created_at": "2019-01-06T16:49:51.272+00:00",
    "total_size": 350224384,
}
# doc/api/version.md
VERSION = {"version": "8.13.0-pre", "revision": "4e963fe"}
# doc/api/users.md "Single user" (For admin), trimmed to the fields regops reads and a few more
USER = {
    "id": 1,
    "username": "john_smith",
    "email": "john@example.com",
    "name": "John Smith",
    "state": "active",
    "avatar_url": "http://localhost:3000/uploads/user/avatar/1/index.jpg",
    "web_url": "http://localhost:3000/john_smith",
    "created_at": "2012-05-23T08:00:58Z",
    "is_admin": False,
    "bio": "",
    "location": None,
    "public_email": "john@example.com",
    "last_sign_in_at": "2012-06-01T11:41:01Z",
    "confirmed_at": "2012-05-23T09:05:22Z",
    "projects_limit": 100,
    "two_factor_enabled": True,
    "external": False,
    "private_profile": False,
}
# doc/api/members.md "Get a member of a project, including inherited and invited members"
MEMBER = {
    "id": 1,
    "username": "raymond_smith",
    "name": "Raymond Smith",
    "state": "active",
    "avatar_url": "https://www.gravatar.com/avatar/c2525a7f58ae3776070e44c106c48e15?s=80&d=identicon",
    "web_url": "http://192.168.1.8:3000/root",
    "access_level": 30,
    "created_at": "2012-10-22T14:13:35Z",
    "expires_at": None,
    "group_saml_identity": None,
}
# doc/api/settings.md "Get details on current application settings" (registry keys + neighbours)
SETTINGS = {
    "default_project_visibility": "private",
    "gravatar_enabled": True,
    "container_expiration_policies_enable_historic_entries": True,
    "container_registry_cleanup_tags_service_max_list_size": 200,
    "container_registry_delete_tags_service_timeout": 250,
    "container_registry_expiration_policies_caching": True,
    "container_registry_expiration_policies_worker_capacity": 4,
    "container_registry_token_expire_delay": 5,
}


def project(project_id: int, path: str = "diaspora/diaspora-project-site") -> dict:
    """doc/api/projects.md "Get a single project", trimmed; policy as in its example."""
    namespace, name = path.rsplit("/", 1)
    return {
        "id": project_id,
        "description": None,
        "name": name,
        "name_with_namespace": f"{namespace} / {name}",
        "path": name,
        "path_with_namespace": path,
        "container_registry_access_level": "enabled",
        "container_expiration_policy": {
            "cadence": "7d",
            "enabled": False,
            "keep_n": None,
            "older_than": None,
            "name_regex": None,
            "name_regex_delete": None,
            "name_regex_keep": None,
            "next_run_at": "2020-01-07T21:42:58.658Z",
        },
        "created_at": "2013-09-30T13:46:02Z",
        "last_activity_at": "2013-09-30T13:46:02Z",
        "creator_id": 3,
        "namespace": {"id": 3, "name": namespace, "path": namespace, "kind": "group"},
    }


class FakeSleep:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def gl(sleep: FakeSleep) -> GitLabClient:
    return GitLabClient(BASE, Secret(TOKEN), http=HTTPSettings(sleep=sleep, max_retries=2))


def query(call) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


# -- auth headers ----------------------------------------------------------------------


@responses.activate
@pytest.mark.parametrize(
    ("kind", "header", "value"),
    [
        ("private", "PRIVATE-TOKEN", TOKEN),
        ("oauth", "Authorization", f"Bearer {TOKEN}"),
        ("job", "JOB-TOKEN", TOKEN),
    ],
)
def test_token_kinds_send_their_header(kind, header, value):
    responses.get(API + "/version", json=VERSION)
    client = GitLabClient(BASE, Secret(TOKEN), token_kind=kind)
    assert client.version() == VERSION
    sent = responses.calls[0].request.headers
    assert sent[header] == value
    others = {"PRIVATE-TOKEN", "Authorization", "JOB-TOKEN"} - {header}
    assert not others & set(sent)


@responses.activate
def test_anonymous_sends_no_token():
    responses.get(API + "/version", json=VERSION)
    GitLabClient(BASE + "/api/v4/").version()
    sent = responses.calls[0].request.headers
    assert "PRIVATE-TOKEN" not in sent and "Authorization" not in sent


def test_unknown_token_kind_rejected():
    with pytest.raises(ValidationError, match="token_kind"):
        GitLabClient(BASE, Secret(TOKEN), token_kind="password")


def test_bad_url_rejected():
    with pytest.raises(ValidationError, match="gitlab_url"):
        GitLabClient("gitlab.example.com", Secret(TOKEN))


@responses.activate
def test_relative_url_root_kept():
    responses.get("https://example.com/gitlab/api/v4/version", json=VERSION)
    client = GitLabClient("https://example.com/gitlab/", Secret(TOKEN))
    assert client.version()["version"] == "8.13.0-pre"


# -- every call --------------------------------------------------------------------------


@responses.activate
def test_instance_calls(gl):
    responses.get(API + "/user", json={**USER, "is_admin": True})
    responses.get(API + "/users/1", json=USER)
    responses.get(API + "/application/settings", json=SETTINGS)
    put = responses.put(
        API + "/application/settings",
        json={**SETTINGS, "container_registry_token_expire_delay": 15},
    )
    assert gl.current_user()["is_admin"] is True
    assert gl.user(1)["username"] == "john_smith"
    assert gl.application_settings()["container_registry_cleanup_tags_service_max_list_size"] == 200
    result = gl.update_application_settings(container_registry_token_expire_delay=15)
    assert result["container_registry_token_expire_delay"] == 15
    assert json.loads(put.calls[0].request.body) == {"container_registry_token_expire_delay": 15}
    assert gl.request_count == 4


@responses.activate
def test_project_by_id_and_by_encoded_path(gl):
    responses.get(API + "/projects/5", json=project(5))
    responses.get(API + "/projects/diaspora%2Fdiaspora-project-site", json=project(5))
    assert gl.project(5)["container_expiration_policy"]["cadence"] == "7d"
    by_path = gl.project("diaspora/diaspora-project-site")
    assert by_path["path_with_namespace"] == "diaspora/diaspora-project-site"
    assert (
        responses.calls[1].request.path_url == "/api/v4/projects/diaspora%2Fdiaspora-project-site"
    )


def test_encode_id():
    assert encode_id(42) == "42"
    assert encode_id("group/sub/project") == "group%2Fsub%2Fproject"
    with pytest.raises(ValidationError):
        encode_id("")


@responses.activate
def test_update_project_sends_policy_attributes(gl):
    attrs = {"enabled": True, "cadence": "1month", "keep_n": 1, "older_than": "14d"}
    updated = project(5)
    updated["container_expiration_policy"].update(attrs)
    call = responses.put(API + "/projects/5", json=updated)
    result = gl.update_project(5, container_expiration_policy_attributes=attrs)
    assert result["container_expiration_policy"]["keep_n"] == 1
    assert json.loads(call.calls[0].request.body) == {
        "container_expiration_policy_attributes": attrs
    }


@responses.activate
def test_update_project_is_resent_after_a_503(gl, sleep):
    # The same values sent twice change nothing: a PUT of a policy is retried like a GET.
    responses.put(API + "/projects/5", status=503)
    responses.put(API + "/projects/5", json=project(5))
    gl.update_project(5, container_expiration_policy_attributes={"keep_n": 5})
    assert [c.request.method for c in responses.calls] == ["PUT", "PUT"]


@responses.activate
def test_a_plain_put_is_not_resent_after_a_503(gl):
    responses.put(API + "/projects/5/other", status=503)
    with pytest.raises(GitLabError):
        gl.request("PUT", "/projects/5/other")
    assert len(responses.calls) == 1


@responses.activate
def test_member_uses_members_all(gl):
    responses.get(API + "/projects/9/members/all/1", json=MEMBER)
    assert gl.member(9, 1)["access_level"] == 30


@responses.activate
def test_registry_calls(gl):
    listing = responses.get(API + "/projects/9/registry/repositories", json=REPOSITORIES)
    responses.get(API + "/registry/repositories/2", json=REPOSITORY)
    responses.get(API + "/projects/9/registry/repositories/2/tags", json=TAGS)
    responses.get(API + "/projects/9/registry/repositories/2/tags/v10.0.0", json=TAG)
    assert [r["path"] for r in gl.project_repositories(9, tags_count=True)] == [
        "group/project",
        "group/project/releases",
    ]
    assert query(listing.calls[0]) == {"tags_count": ["true"], "per_page": ["100"]}
    assert gl.repository(2, tags=True, tags_count=True, size=True)["size"] == 2818413
    assert query(responses.calls[1]) == {
        "tags": ["true"],
        "tags_count": ["true"],
        "size": ["true"],
    }
    assert [t["name"] for t in gl.repository_tags(9, 2)] == ["A", "latest"]
    assert gl.repository_tag(9, 2, "v10.0.0")["total_size"] == 350224384


@responses.activate
def test_deletes(gl):
    one = responses.delete(API + "/projects/9/registry/repositories/2/tags/v1.0", status=200)
    bulk = responses.delete(API + "/projects/9/registry/repositories/2/tags", status=202)
    repo = responses.delete(API + "/projects/9/registry/repositories/2", status=202)
    gl.delete_repository_tag(9, 2, "v1.0")
    gl.bulk_delete_repository_tags(9, 2, name_regex_delete=".*", keep_n=5, older_than="2d")
    gl.delete_repository(9, 2)
    assert one.call_count == bulk.call_count == repo.call_count == 1
    assert parse_qs(bulk.calls[0].request.body) == {
        "name_regex_delete": [".*"],
        "keep_n": ["5"],
        "older_than": ["2d"],
    }


def test_bulk_delete_needs_a_regex_and_known_params(gl):
    with pytest.raises(ValidationError, match="name_regex_delete"):
        gl.bulk_delete_repository_tags(9, 2, keep_n=5)
    with pytest.raises(ValidationError, match="keep"):
        gl.bulk_delete_repository_tags(9, 2, name_regex_delete=".*", keep=5)


@responses.activate
def test_tag_name_is_encoded(gl):
    responses.delete(API + "/projects/9/registry/repositories/2/tags/a%2Fb", status=200)
    gl.delete_repository_tag(9, 2, "a/b")
    assert responses.calls[0].request.path_url.endswith("/tags/a%2Fb")


# -- pagination --------------------------------------------------------------------------


@responses.activate
def test_projects_keyset_follows_link_to_the_end(gl):
    # doc/api/rest/_index.md "Keyset-based pagination": Link: <...&id_after=42>; rel="next"
    first = f"{API}/projects?pagination=keyset&per_page=100&order_by=id&sort=asc&id_after=2"
    second = f"{API}/projects?pagination=keyset&per_page=100&order_by=id&sort=asc&id_after=4"
    responses.get(
        API + "/projects",
        json=[project(1, "a/one"), project(2, "a/two")],
        headers={"Link": f'<{first}>; rel="next"'},
        match=[
            responses.matchers.query_param_matcher(
                {
                    "pagination": "keyset",
                    "per_page": "100",
                    "order_by": "id",
                    "sort": "asc",
                    "archived": "false",
                }
            )
        ],
    )
    responses.get(
        API + "/projects",
        json=[project(3, "a/three"), project(4, "a/four")],
        headers={"Link": f'<{second}>; rel="next"'},
        match=[
            responses.matchers.query_param_matcher(
                {
                    "pagination": "keyset",
                    "per_page": "100",
                    "order_by": "id",
                    "sort": "asc",
                    "id_after": "2",
                }
            )
        ],
    )
    responses.get(
        API + "/projects",
        json=[project(5, "a/five")],
        match=[
            responses.matchers.query_param_matcher(
                {
                    "pagination": "keyset",
                    "per_page": "100",
                    "order_by": "id",
                    "sort": "asc",
                    "id_after": "4",
                }
            )
        ],
    )
    ids = [p["id"] for p in gl.projects(archived=False)]
    assert ids == [1, 2, 3, 4, 5]
    assert len(responses.calls) == 3


def test_projects_rejects_unknown_filter(gl):
    with pytest.raises(ValidationError, match="serch"):
        list(gl.projects(serch="x"))


@responses.activate
def test_projects_desc_stops_after_limit(gl):
    page2 = f"{API}/projects?pagination=keyset&per_page=3&order_by=id&sort=desc&id_before=9"
    page3 = f"{API}/projects?pagination=keyset&per_page=3&order_by=id&sort=desc&id_before=7"
    keyset_desc = {"pagination": "keyset", "per_page": "3", "order_by": "id", "sort": "desc"}
    # A page shorter than per_page (e.g. projects hidden from this user) still links on.
    responses.get(
        API + "/projects",
        json=[project(10, "a/ten"), project(9, "a/nine")],
        headers={"Link": f'<{page2}>; rel="next"'},
        match=[responses.matchers.query_param_matcher(keyset_desc)],
    )
    second = responses.get(
        API + "/projects",
        json=[project(8, "a/eight"), project(7, "a/seven")],
        headers={"Link": f'<{page3}>; rel="next"'},
        match=[responses.matchers.query_param_matcher({**keyset_desc, "id_before": "9"})],
    )
    third = responses.get(
        API + "/projects",
        json=[project(6, "a/six")],
        match=[responses.matchers.query_param_matcher({**keyset_desc, "id_before": "7"})],
    )
    assert [p["id"] for p in gl.projects_desc(3)] == [10, 9, 8]
    assert second.call_count == 1
    assert third.call_count == 0  # no request for a page beyond the limit
    assert list(gl.projects_desc(0)) == []


@responses.activate
def test_offset_pagination_by_link_header(gl):
    # doc/api/rest/_index.md "Pagination Link header": prev/next/first/last + x-* headers
    url = API + "/projects/9/registry/repositories/2/tags"

    def page(n: int) -> str:
        return f"<{url}?page={n}&per_page=100>"

    responses.get(
        url,
        json=TAGS[:1],
        headers={
            "Link": f'{page(2)}; rel="next", {page(1)}; rel="first", {page(2)}; rel="last"',
            "X-Next-Page": "2",
            "X-Page": "1",
            "X-Total-Pages": "2",
        },
        match=[responses.matchers.query_param_matcher({"per_page": "100"})],
    )
    responses.get(
        url,
        json=TAGS[1:],
        headers={"X-Page": "2", "X-Total-Pages": "2", "X-Next-Page": ""},
        match=[responses.matchers.query_param_matcher({"per_page": "100", "page": "2"})],
    )
    assert [t["name"] for t in gl.repository_tags(9, 2)] == ["A", "latest"]


@responses.activate
def test_offset_pagination_by_x_next_page_only(gl):
    # Link header stripped by a proxy; X-Next-Page still says where to go.
    url = API + "/groups/my-group/projects"
    responses.get(
        url,
        json=[project(1, "my-group/a")],
        headers={"X-Next-Page": "2", "X-Page": "1"},
        match=[
            responses.matchers.query_param_matcher(
                {"per_page": "100", "include_subgroups": "true", "order_by": "id", "sort": "asc"}
            )
        ],
    )
    responses.get(
        url,
        json=[project(2, "my-group/sub/b")],
        headers={"X-Next-Page": "", "X-Page": "2"},
        match=[
            responses.matchers.query_param_matcher(
                {
                    "per_page": "100",
                    "include_subgroups": "true",
                    "order_by": "id",
                    "sort": "asc",
                    "page": "2",
                }
            )
        ],
    )
    assert [p["id"] for p in gl.group_projects("my-group")] == [1, 2]


@responses.activate
def test_more_pages_announced_but_no_link_is_an_error(gl):
    url = API + "/projects/9/registry/repositories"
    responses.get(url, json=REPOSITORIES, headers={"X-Total-Pages": "3", "X-Page": "1"})
    with pytest.raises(GitLabError, match="partial list"):
        list(gl.project_repositories(9))


@responses.activate
def test_next_link_on_another_host_is_rebased(gl):
    # A misconfigured external_url gives http:// links; the token must stay on our host.
    url = API + "/projects/9/registry/repositories/2/tags"
    responses.get(
        url,
        json=TAGS[:1],
        headers={
            "Link": "<http://internal:8080/api/v4/projects/9/registry/repositories/2/tags"
            '?page=2&per_page=100>; rel="next"'
        },
        match=[responses.matchers.query_param_matcher({"per_page": "100"})],
    )
    responses.get(
        url,
        json=TAGS[1:],
        match=[responses.matchers.query_param_matcher({"per_page": "100", "page": "2"})],
    )
    assert len(list(gl.repository_tags(9, 2))) == 2
    assert all(c.request.url.startswith(API) for c in responses.calls)


@responses.activate
def test_non_list_page_is_an_error(gl):
    responses.get(API + "/projects/9/registry/repositories", json={"message": "oops"})
    with pytest.raises(GitLabError, match="expected a list"):
        list(gl.project_repositories(9))


LOOP_GUARD = 50  # items taken from a looping list before the test gives up on an error


@responses.activate
def test_next_link_to_the_same_page_is_an_error_not_a_loop(gl):
    url = API + "/projects/9/registry/repositories/2/tags"
    same = f"{url}?per_page=100"  # what GitLab answers when it repeats the page it served
    responses.get(url, json=TAGS, headers={"Link": f'<{same}>; rel="next"'})
    with pytest.raises(GitLabError) as info:
        list(itertools.islice(gl.repository_tags(9, 2), LOOP_GUARD))
    assert str(info.value) == (
        f"GET {same} -> 200: the next-page link points at a page already read "
        "(after 1 pages): refusing to loop"
    )
    assert len(responses.calls) == 1


@responses.activate
def test_next_link_back_to_an_earlier_page_is_an_error_with_secrets_redacted(gl):
    # Page 2 links back to itself; the link carries a token in its query (a proxy's doing).
    url = API + "/groups/7/projects"
    page2 = f"{url}?page=2&per_page=100&private_token={TOKEN}"
    first = {"per_page": "100", "include_subgroups": "true", "order_by": "id", "sort": "asc"}
    responses.get(
        url,
        json=[project(1, "g/a")],
        headers={"Link": f'<{page2}>; rel="next"'},
        match=[responses.matchers.query_param_matcher(first)],
    )
    responses.get(
        url,
        json=[project(2, "g/b")],
        headers={"Link": f'<{page2}>; rel="next"'},
        match=[responses.matchers.query_param_matcher({"page": "2"}, strict_match=False)],
    )
    with pytest.raises(GitLabError, match="page already read") as info:
        list(itertools.islice(gl.group_projects(7), LOOP_GUARD))
    assert TOKEN not in str(info.value)
    assert f"GET {url}?page=2&per_page=100&private_token=*** -> 200" in str(info.value)
    assert len(responses.calls) == 2


@responses.activate
def test_x_next_page_repeating_a_page_is_an_error(gl):
    url = API + "/projects/9/registry/repositories"
    responses.get(url, json=REPOSITORIES, headers={"X-Next-Page": "2"})
    with pytest.raises(GitLabError, match="page already read"):
        list(itertools.islice(gl.project_repositories(9), LOOP_GUARD))
    assert len(responses.calls) == 2  # page 1, page 2 (which names itself next)


@responses.activate
def test_page_count_is_bounded(gl, monkeypatch):
    monkeypatch.setattr(gitlab_client, "MAX_PAGES", 3, raising=False)
    url = API + "/projects/9/registry/repositories/2/tags"

    def endless(request):
        page = int(parse_qs(urlsplit(request.url).query).get("page", ["1"])[0])
        link = f'<{url}?page={page + 1}&per_page=100>; rel="next"'
        return 200, {"Link": link}, json.dumps(TAGS[:1])

    responses.add_callback(responses.GET, url, callback=endless)
    with pytest.raises(GitLabError, match="more than 3 pages"):
        list(itertools.islice(gl.repository_tags(9, 2), LOOP_GUARD))
    assert len(responses.calls) == 3


@responses.activate
def test_list_page_that_is_not_json_is_a_one_line_error(gl):
    url = API + "/projects/9/registry/repositories"
    responses.get(url, body="<html><body>502 Bad Gateway</body></html>", status=200)
    with pytest.raises(GitLabError) as info:
        list(gl.project_repositories(9))
    assert str(info.value) == f"GET {url}?per_page=100 -> 200: answer is not JSON"


# -- rate limiting -----------------------------------------------------------------------


@responses.activate
def test_get_429_waits_retry_after_then_succeeds(gl, sleep):
    responses.get(API + "/version", status=429, body="Retry later\n", headers={"Retry-After": "7"})
    responses.get(API + "/version", json=VERSION)
    assert gl.version() == VERSION
    assert sleep.calls == [7.0]
    assert gl.request_count == 2


@responses.activate
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_write_429_waits_and_retries(gl, sleep, method):
    # Rack::Attack refuses before processing, so a rate-limited write is safe to resend.
    url = API + "/projects/9/registry/repositories/2/tags/v1"
    path = "/projects/9/registry/repositories/2/tags/v1"
    responses.add(method, url, status=429, body="Retry later\n", headers={"Retry-After": "3"})
    responses.add(method, url, status=200, json={})
    gl.request(method, path)
    assert sleep.calls == [3.0]
    assert len(responses.calls) == 2


@responses.activate
def test_ratelimit_reset_is_honoured_for_writes(gl, sleep):
    responses.delete(
        API + "/projects/9/registry/repositories/2", status=429, headers={"RateLimit-Reset": "4"}
    )
    responses.delete(API + "/projects/9/registry/repositories/2", status=202)
    gl.delete_repository(9, 2)
    assert sleep.calls == [4.0]


@responses.activate
def test_still_limited_raises_rate_limited(gl, sleep):
    responses.get(API + "/version", status=429, body="Retry later\n", headers={"Retry-After": "1"})
    with pytest.raises(GitLabRateLimited) as caught:
        gl.version()
    assert caught.value.status == 429
    assert sleep.calls == [1.0, 1.0]  # max_retries=2
    assert "Retry later" in str(caught.value)


@responses.activate
def test_write_still_limited_raises(gl, sleep):
    responses.put(API + "/projects/5", status=429, headers={"Retry-After": "2"})
    with pytest.raises(GitLabRateLimited):
        gl.update_project(5, description="x")
    assert sleep.calls == [2.0, 2.0]


@responses.activate
def test_no_retry_of_writes_on_502(gl, sleep):
    responses.delete(
        API + "/projects/9/registry/repositories/2/tags/v1", status=502, body="Bad Gateway"
    )
    with pytest.raises(GitLabError) as caught:
        gl.delete_repository_tag(9, 2, "v1")
    assert caught.value.status == 502
    assert len(responses.calls) == 1 and sleep.calls == []


# -- errors ------------------------------------------------------------------------------


@responses.activate
@pytest.mark.parametrize(
    ("status", "body", "cls", "detail"),
    [
        (401, {"message": "401 Unauthorized"}, GitLabUnauthorized, "401 Unauthorized"),
        (403, {"message": "403 Forbidden"}, GitLabForbidden, "403 Forbidden"),
        (404, {"message": "404 Project Not Found"}, GitLabNotFound, "404 Project Not Found"),
        (
            401,
            {"error": "invalid_token", "error_description": "Token was revoked."},
            GitLabUnauthorized,
            "invalid_token: Token was revoked.",
        ),
        (
            400,
            {"message": {"container_expiration_policy.name_regex": ["not valid RE2 syntax"]}},
            GitLabError,
            "container_expiration_policy.name_regex: not valid RE2 syntax",
        ),
        (
            400,
            {"error": "name_regex_delete is missing"},
            GitLabError,
            "name_regex_delete is missing",
        ),
        (500, "<html>Internal Server Error</html>", GitLabError, "Internal Server Error"),
    ],
)
def test_error_answers_become_typed_errors(gl, status, body, cls, detail):
    kwargs = {"json": body} if isinstance(body, dict) else {"body": body}
    responses.get(API + "/projects/5", status=status, **kwargs)
    with pytest.raises(cls) as caught:
        gl.project(5)
    err = caught.value
    assert type(err) is cls
    assert err.status == status and err.method == "GET"
    assert err.url == API + "/projects/5"
    assert detail in err.detail
    assert f"GET {API}/projects/5 -> {status}" in str(err)


def test_flatten_message_shapes():
    assert flatten_message("404 Not found") == "404 Not found"
    assert flatten_message(["a", "b"]) == "a, b"
    assert (
        flatten_message({"name": ["has already been taken"], "path": ["is too long", "bad"]})
        == "name: has already been taken; path: is too long, bad"
    )
    assert flatten_message({"base": {"nested": ["x"]}}) == "base: nested: x"
    assert flatten_message(None) == ""


@responses.activate
def test_token_never_in_errors_or_reprs(gl):
    responses.get(
        API + "/projects/5", status=401, json={"message": f"401 Unauthorized token {TOKEN}"}
    )
    with pytest.raises(GitLabUnauthorized) as caught:
        gl.project(5)
    for text in (str(caught.value), repr(caught.value), caught.value.detail, repr(gl)):
        assert TOKEN not in text
    assert "private token" in repr(gl)
    assert repr(GitLabClient(BASE)).endswith("(anonymous)>")


def test_projects_desc_checks_filters_before_iteration(gl):
    with pytest.raises(ValidationError, match="serch"):
        gl.projects_desc(3, serch="x")  # raised at the call, not at the first next()


@responses.activate
def test_count_projects_reads_x_total_and_says_when_gitlab_does_not_offer_it(gl):
    # GitLab omits X-Total (and X-Total-Pages) above 10,000 rows (doc/api/rest/index.md,
    # "Pagination response headers").
    responses.get(API + "/projects", json=[{"id": 1}], headers={"X-Total": "1234"})
    responses.get(API + "/projects", json=[{"id": 1}], headers={})
    assert gl.count_projects(archived=False) == 1234
    assert gl.count_projects() is None
    sent = query(responses.calls[0])
    assert sent["per_page"] == ["1"] and sent["archived"] == ["false"]
    with pytest.raises(ValidationError):
        gl.count_projects(nonsense=1)
