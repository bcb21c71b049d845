"""The GitLab client against the sandbox's API stand-in (and the real registry behind it)."""

from __future__ import annotations

import datetime

import pytest
import requests

from regops.errors import GitLabForbidden, GitLabNotFound, GitLabRateLimited, GitLabUnauthorized
from regops.gitlab.client import GitLabClient
from regops.http import HTTPSettings
from regops.sandbox.seed import INVALID_REGEX

pytestmark = pytest.mark.registry

DEMO_PROJECTS = {
    "platform/base-images",
    "platform/tools",
    "apps/web",
    "apps/mobile/android",
    "apps/mobile/ios",
    "root/scratch",
}
DEV_PROJECTS = {"apps/web", "apps/mobile/android", "apps/mobile/ios"}


def client_for(sandbox, user="admin", **http) -> GitLabClient:
    token = sandbox.admin_token if user == "admin" else sandbox.user(user).token
    return GitLabClient(sandbox.gitlab_url, token, http=HTTPSettings(**http))


@pytest.fixture(scope="module")
def admin(sandbox) -> GitLabClient:
    return client_for(sandbox)


@pytest.fixture(scope="module")
def dev(sandbox) -> GitLabClient:
    return client_for(sandbox, "dev")


def repos_by_path(client, project) -> dict[str, dict]:
    return {r["path"]: r for r in client.project_repositories(project, tags_count=True)}


# ---------------------------------------------------------------- users, version
def test_version_and_current_user(admin, dev):
    assert admin.version()["version"]
    me = admin.current_user()
    assert me["username"] == "root" and me["is_admin"] is True
    other = dev.current_user()
    assert other["username"] == "dev"
    assert "is_admin" not in other  # GitLab shows is_admin to admins only
    assert admin.user(other["id"])["is_admin"] is False


def test_wrong_token_is_401_with_gitlab_body(sandbox):
    bad = GitLabClient(sandbox.gitlab_url, "glpat-not-a-real-token-xx")
    with pytest.raises(GitLabUnauthorized) as info:
        bad.current_user()
    assert "401 Unauthorized" in str(info.value)
    assert "not-a-real" not in str(info.value)
    answer = requests.get(f"{sandbox.gitlab_url}/api/v4/user", timeout=5)
    assert answer.status_code == 401 and answer.json() == {"message": "401 Unauthorized"}


def test_token_accepted_as_query_and_bearer(sandbox):
    token = sandbox.user_token.reveal()
    url = f"{sandbox.gitlab_url}/api/v4/user"
    assert requests.get(url, params={"private_token": token}, timeout=5).json()["username"] == "dev"
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(url, headers=bearer, timeout=5).json()["username"] == "dev"


# ---------------------------------------------------------------------- projects
def test_admin_sees_every_project_keyset(admin):
    projects = list(admin.projects())
    assert {p["path_with_namespace"] for p in projects} == DEMO_PROJECTS
    ids = [p["id"] for p in projects]
    assert ids == sorted(ids)


def test_keyset_pagination_follows_link_across_pages(sandbox, admin):
    pages = []
    url = f"{sandbox.gitlab_url}/api/v4/projects"
    params = {"pagination": "keyset", "order_by": "id", "sort": "asc", "per_page": 2}
    headers = {"PRIVATE-TOKEN": sandbox.admin_token.reveal()}
    while url:
        answer = requests.get(url, params=params, headers=headers, timeout=5)
        assert "X-Total" not in answer.headers  # keyset answers carry only Link
        pages.append([p["id"] for p in answer.json()])
        url, params = answer.links.get("next", {}).get("url"), None
    assert [len(p) for p in pages] == [2, 2, 2]
    flat = [i for page in pages for i in page]
    assert flat == sorted(flat) and len(set(flat)) == 6
    assert list(admin.paginate("/projects", {"per_page": 2}, keyset=True)) == list(admin.projects())


def test_projects_desc_gives_newest_first(admin):
    newest = list(admin.projects_desc(4))
    ids = [p["id"] for p in newest]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4
    assert ids[0] == max(p["id"] for p in admin.projects())


def test_offset_pagination_headers(sandbox):
    headers = {"PRIVATE-TOKEN": sandbox.admin_token.reveal()}
    url = f"{sandbox.gitlab_url}/api/v4/projects"
    answer = requests.get(url, params={"per_page": 4, "page": 2}, headers=headers, timeout=5)
    h = answer.headers
    assert (h["X-Page"], h["X-Per-Page"], h["X-Total"], h["X-Total-Pages"]) == ("2", "4", "6", "2")
    assert (h["X-Next-Page"], h["X-Prev-Page"]) == ("", "1")
    assert set(answer.links) == {"prev", "first", "last"}
    assert len(answer.json()) == 2
    big = requests.get(url, params={"per_page": 500}, headers=headers, timeout=5)
    assert big.headers["X-Per-Page"] == "100"  # GitLab caps per_page


def test_project_by_path_and_fields(sandbox, admin):
    project = admin.project("platform/base-images")
    assert project["path_with_namespace"] == "platform/base-images"
    assert project["namespace"]["full_path"] == "platform"
    assert (
        project["container_registry_image_prefix"]
        == f"{sandbox.registry_host}/platform/base-images"
    )
    policy = project["container_expiration_policy"]
    assert policy["enabled"] is True and policy["keep_n"] == 5 and policy["older_than"] == "30d"
    next_run = datetime.datetime.fromisoformat(policy["next_run_at"].replace("Z", "+00:00"))
    assert next_run > datetime.datetime.now(datetime.timezone.utc)
    assert admin.project(project["id"])["id"] == project["id"]
    assert project["creator_id"] == admin.current_user()["id"]


def test_invalid_policy_regex_is_stored_for_audits(admin):
    policy = admin.project("apps/mobile/android")["container_expiration_policy"]
    assert policy["name_regex"] == INVALID_REGEX and policy["enabled"] is True


def test_group_projects_with_and_without_subgroups(admin):
    nested = {p["path_with_namespace"] for p in admin.group_projects("apps")}
    assert nested == DEV_PROJECTS
    direct = {
        p["path_with_namespace"] for p in admin.group_projects("apps", include_subgroups=False)
    }
    assert direct == {"apps/web"}


def test_member_all_includes_inherited(admin, dev):
    dev_id = dev.current_user()["id"]
    member = admin.member("apps/mobile/android", dev_id)  # via group apps
    assert member["username"] == "dev" and member["access_level"] == 30
    with pytest.raises(GitLabNotFound):
        admin.member("platform/tools", dev_id)


# -------------------------------------------------------------- non-admin limits
def test_non_admin_sees_only_member_projects(dev):
    assert {p["path_with_namespace"] for p in dev.projects()} == DEV_PROJECTS
    with pytest.raises(GitLabNotFound) as info:
        dev.project("platform/tools")
    assert "404 Project Not Found" in str(info.value)


def test_non_admin_cannot_read_settings_or_change_others(sandbox, admin, dev):
    def policies() -> dict[str, dict]:
        return {p: admin.project(p)["container_expiration_policy"] for p in DEMO_PROJECTS}

    before = policies()
    with pytest.raises(GitLabForbidden):
        dev.application_settings()
    viewer = client_for(sandbox, "viewer")
    with pytest.raises(GitLabForbidden):  # a Reporter may not change the policy
        viewer.update_project("apps/web", container_expiration_policy_attributes={"keep_n": 5})
    with pytest.raises(GitLabNotFound):  # not a member: the project does not exist for them
        dev.update_project("platform/tools", container_expiration_policy_attributes={"keep_n": 5})
    assert policies() == before  # refused means unchanged (the shared sandbox stays as seeded)


# ------------------------------------------------------------------ repositories
def test_repositories_computed_from_registry(sandbox, admin):
    repos = repos_by_path(admin, "apps/web")
    assert set(repos) == {"apps/web", "apps/web/frontend", "apps/web/backend"}
    root = repos["apps/web"]
    assert root["name"] == "" and root["tags_count"] == 8
    assert root["location"] == f"{sandbox.registry_host}/apps/web"
    assert repos["apps/web/backend"]["tags_count"] == 3  # the untagged manifest has no tag
    nested = repos_by_path(admin, "platform/base-images")
    assert set(nested) == {"platform/base-images", "platform/base-images/debian"}
    assert repos_by_path(admin, "apps/mobile/ios") == {}
    # ids are stable across calls
    assert repos_by_path(admin, "apps/web")["apps/web"]["id"] == root["id"]


def test_repository_by_id_with_tags(admin):
    rid = repos_by_path(admin, "platform/tools")["platform/tools/ci"]["id"]
    repo = admin.repository(rid, tags=True, tags_count=True, size=True)
    assert repo["path"] == "platform/tools/ci" and repo["name"] == "ci"
    assert [t["name"] for t in repo["tags"]] == ["0.9", "1.0", "latest"]
    assert repo["tags_count"] == 3 and repo["size"] is None


def test_tags_paginated_and_sorted_by_name(admin):
    project = admin.project("apps/web")["id"]
    rid = repos_by_path(admin, "apps/web")["apps/web/frontend"]["id"]
    paged = list(
        admin.paginate(f"/projects/{project}/registry/repositories/{rid}/tags", {"per_page": 2})
    )
    names = [t["name"] for t in paged]
    assert len(names) == 13 and names == sorted(names)
    assert paged == list(admin.repository_tags(project, rid))
    assert paged[0]["path"] == f"apps/web/frontend:{names[0]}"


def test_tag_details_cost_one_manifest_and_one_config_read(fresh_sandbox):
    client = client_for(fresh_sandbox)
    rid = repos_by_path(client, "apps/web")["apps/web"]["id"]
    fresh_sandbox.state.reset_counters()
    tag = client.repository_tag("apps/web", rid, "latest")
    assert dict(fresh_sandbox.state.registry_reads) == {"manifest": 1, "config": 1}
    manifest = fresh_sandbox.registry.get_manifest("apps/web", "latest")
    assert tag["digest"] == manifest.digest
    assert tag["revision"] == manifest.config.digest.split(":")[1]
    assert tag["short_revision"] == tag["revision"][:9]
    assert tag["total_size"] == sum(layer.size for layer in manifest.layers)
    created = datetime.datetime.fromisoformat(tag["created_at"].replace("Z", "+00:00"))
    age = datetime.datetime.now(datetime.timezone.utc) - created
    assert datetime.timedelta(days=24) < age < datetime.timedelta(days=26)
    stable = client.repository_tag("apps/web", rid, "stable")
    assert stable["digest"] == tag["digest"]  # tags sharing a digest


def test_oci_index_tag_details_are_404_like_gitlab(admin):
    # GitLab reads with Accept: Docker v2 + OCI image manifest only; the registry answers
    # 404 for an OCI index, Tag#valid? is false, and validate_tag! answers 404 Tag Not Found
    # (lib/api/project_container_repositories.rb, lib/container_registry/tag.rb).
    rid = repos_by_path(admin, "platform/tools")["platform/tools/ci"]["id"]
    with pytest.raises(GitLabNotFound, match="404 Tag Not Found"):
        admin.repository_tag("platform/tools", rid, "1.0")
    listed = [t["name"] for t in admin.repository_tags("platform/tools", rid)]
    assert "1.0" in listed  # still listed: the tags list does not read manifests


def test_unknown_tag_and_repository_are_404(admin):
    rid = repos_by_path(admin, "apps/web")["apps/web"]["id"]
    with pytest.raises(GitLabNotFound):
        admin.repository_tag("apps/web", rid, "no-such-tag")
    with pytest.raises(GitLabNotFound):
        admin.repository(999_999)
    other = repos_by_path(admin, "platform/tools")["platform/tools/ci"]["id"]
    with pytest.raises(GitLabNotFound):  # a repository of another project
        list(admin.repository_tags("apps/web", other))


def test_reporter_reads_registry_but_not_other_projects(sandbox):
    viewer = client_for(sandbox, "viewer")
    assert "apps/web" in repos_by_path(viewer, "apps/web")
    with pytest.raises(GitLabNotFound):
        list(viewer.project_repositories("apps/mobile/android"))


# ------------------------------------------------------------ changing things
def test_policy_update_validates_and_resets_next_run(fresh_sandbox):
    client = client_for(fresh_sandbox)
    before = client.project("apps/web")["container_expiration_policy"]
    updated = client.update_project(
        "apps/web",
        container_expiration_policy_attributes={"enabled": True, "cadence": "7d", "keep_n": 25},
    )["container_expiration_policy"]
    assert updated["enabled"] is True and updated["keep_n"] == 25 and updated["cadence"] == "7d"
    assert updated["older_than"] == before["older_than"]  # untouched attributes stay
    next_run = datetime.datetime.fromisoformat(updated["next_run_at"].replace("Z", "+00:00"))
    expected = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=7)
    assert abs((next_run - expected).total_seconds()) < 60


def test_policy_update_with_form_body(fresh_sandbox):
    answer = requests.put(
        f"{fresh_sandbox.gitlab_url}/api/v4/projects/apps%2Fweb",
        data={"container_expiration_policy_attributes[keep_n]": "50"},
        headers={"PRIVATE-TOKEN": fresh_sandbox.admin_token.reveal()},
        timeout=5,
    )
    assert answer.status_code == 200
    assert answer.json()["container_expiration_policy"]["keep_n"] == 50


def test_policy_with_invalid_regex_gets_gitlab_400(fresh_sandbox):
    # GitLab validates the regexes only when the policy is enabled.
    attrs = {"enabled": True, "name_regex": "([a-z"}
    answer = requests.put(
        f"{fresh_sandbox.gitlab_url}/api/v4/projects/apps%2Fweb",
        json={"container_expiration_policy_attributes": attrs},
        headers={"PRIVATE-TOKEN": fresh_sandbox.admin_token.reveal()},
        timeout=5,
    )
    assert answer.status_code == 400
    body = answer.json()
    messages = body["message"]["container_expiration_policy.name_regex"]
    assert len(messages) == 1 and "RE2" in messages[0]
    policy = client_for(fresh_sandbox).project("apps/web")["container_expiration_policy"]
    assert policy["name_regex"] != "([a-z" and policy["enabled"] is False  # nothing saved


def test_policy_bad_value_rejected(fresh_sandbox):
    client = client_for(fresh_sandbox)
    from regops.errors import GitLabError

    with pytest.raises(GitLabError) as info:
        client.update_project("apps/web", container_expiration_policy_attributes={"keep_n": 3})
    assert info.value.status == 400
    assert "keep_n" in str(info.value)


def test_delete_one_tag_keeps_its_siblings(fresh_sandbox):
    client = client_for(fresh_sandbox)
    rid = repos_by_path(client, "apps/web")["apps/web"]["id"]
    registry = fresh_sandbox.registry
    digest = registry.manifest_digest("apps/web", "v1.5")
    client.delete_repository_tag("apps/web", rid, "latest")
    tags = registry.tags("apps/web")
    assert "latest" not in tags
    assert {"stable", "v1.5", "v1.0"} <= set(tags)  # same digest as latest: still there
    assert registry.manifest_digest("apps/web", "stable") == digest
    with pytest.raises(GitLabNotFound):
        client.delete_repository_tag("apps/web", rid, "latest")


def test_reporter_cannot_delete_a_tag(fresh_sandbox):
    viewer = client_for(fresh_sandbox, "viewer")
    rid = repos_by_path(viewer, "apps/web")["apps/web"]["id"]
    with pytest.raises(GitLabForbidden):
        viewer.delete_repository_tag("apps/web", rid, "v1.0")
    assert "v1.0" in fresh_sandbox.registry.tags("apps/web")


def test_bulk_delete_runs_gitlab_rules_once_an_hour(fresh_sandbox):
    client = client_for(fresh_sandbox)
    rid = repos_by_path(client, "apps/web")["apps/web/frontend"]["id"]
    # main-NNN were built NNN*5 + 0.5 days ago; latest two hours ago.
    client.bulk_delete_repository_tags(
        "apps/web", rid, name_regex_delete="main-.*", keep_n=5, older_than="30d"
    )
    remaining = fresh_sandbox.registry.tags("apps/web/frontend")
    kept = ["latest", *(f"main-{i:03d}" for i in range(6))]  # 5 newest + 25.5 days old
    assert remaining == kept
    deleted = sorted(fresh_sandbox.state.bulk_delete_results[rid])
    assert deleted == [f"main-{i:03d}" for i in range(6, 12)]
    from regops.errors import GitLabError

    with pytest.raises(GitLabError) as info:
        client.bulk_delete_repository_tags("apps/web", rid, name_regex_delete=".*")
    assert info.value.status == 400 and "at most once an hour" in str(info.value)
    assert fresh_sandbox.registry.tags("apps/web/frontend") == kept


def test_bulk_delete_rejects_an_invalid_regex(fresh_sandbox):
    client = client_for(fresh_sandbox)
    rid = repos_by_path(client, "apps/web")["apps/web"]["id"]
    from regops.errors import GitLabError

    with pytest.raises(GitLabError) as info:
        client.bulk_delete_repository_tags("apps/web", rid, name_regex_delete="v1.[0-")
    assert info.value.status == 400 and "name_regex_delete" in str(info.value)
    assert rid not in fresh_sandbox.state.bulk_delete_requests  # no lease taken


def test_bulk_delete_needs_developer(fresh_sandbox):
    viewer = client_for(fresh_sandbox, "viewer")
    rid = repos_by_path(viewer, "apps/web")["apps/web/frontend"]["id"]
    with pytest.raises(GitLabForbidden):  # a Reporter
        viewer.bulk_delete_repository_tags("apps/web", rid, name_regex_delete=".*")
    client_for(fresh_sandbox, "dev").bulk_delete_repository_tags(
        "apps/web", rid, name_regex_delete="nothing-matches"
    )
    assert rid in fresh_sandbox.state.bulk_delete_requests
    assert fresh_sandbox.state.bulk_delete_results[rid] == []


def test_delete_repository(fresh_sandbox):
    client = client_for(fresh_sandbox)
    repos = repos_by_path(client, "apps/web")
    client.delete_repository("apps/web", repos["apps/web/backend"]["id"])
    after = repos_by_path(client, "apps/web")
    assert set(after) == {"apps/web", "apps/web/frontend"}
    assert after["apps/web/frontend"]["tags_count"] == 13
    assert fresh_sandbox.registry.tags("apps/web") == sorted(
        ["latest", "stable", *(f"v1.{i}" for i in range(6))]
    )


def test_application_settings_roundtrip(fresh_sandbox):
    client = client_for(fresh_sandbox)
    settings = client.application_settings()
    assert settings["container_registry_token_expire_delay"] == 5
    assert settings["container_registry_cleanup_tags_service_max_list_size"] == 200
    changed = client.update_application_settings(container_registry_token_expire_delay=15)
    assert changed["container_registry_token_expire_delay"] == 15
    assert client.application_settings()["container_registry_token_expire_delay"] == 15


# -------------------------------------------------------------------- throttling
def test_429_with_retry_after_is_honoured(fresh_sandbox):
    waits: list[float] = []
    client = client_for(fresh_sandbox, sleep=waits.append)
    fresh_sandbox.state.throttle(2, retry_after=7)
    assert client.current_user()["username"] == "root"
    assert waits == [7.0, 7.0]


def test_429_still_after_retries_raises(fresh_sandbox):
    waits: list[float] = []
    client = client_for(fresh_sandbox, sleep=waits.append, max_retries=1)
    fresh_sandbox.state.throttle(5, retry_after=1)
    with pytest.raises(GitLabRateLimited):
        client.version()
    assert waits == [1.0]


def test_request_counts_by_endpoint(fresh_sandbox):
    client = client_for(fresh_sandbox)
    fresh_sandbox.state.reset_counters()
    list(client.projects())
    client.project("apps/web")
    counts = fresh_sandbox.state.request_counts
    assert counts["GET projects"] == 1 and counts["GET project"] == 1
