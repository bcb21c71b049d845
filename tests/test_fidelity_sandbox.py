"""The stand-in in both registry variants: GitLab's cleanup scenarios end to end,
re-pushed tags, protected tags, policy values, the GitLab registry API, shapes.

``v2``: the plain Distribution registry, GitLab's ThirdParty::CleanupTagsService.
``gitlab``: GitLab's registry API in front of it (metadata database),
Gitlab::CleanupTagsService. Expected values are GitLab's spec outcomes (pinned
below), or computed here from the registry's files and raw JSON answers.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from regops.console import banner
from regops.errors import PolicyError, ProtectedTagError
from regops.models import ContainerRepository, ExpirationPolicy, Project
from regops.ops import usage
from regops.ops.apply import DeleteTarget, apply_plan
from regops.policy import TagProtection, TagProtectionRule
from regops.registry.safe_delete import SafeDelete
from regops.registry.tokens import Scope, TokenMinter, load_signing_key
from regops.sandbox import Sandbox
from tests import oracle
from tests.fixtures_sandbox import _copy
from tests.images import build_image, build_index, push_image, push_index, random_layer
from tests.skopeo import skopeo_digest

pytestmark = pytest.mark.registry

PROJECT = "apps/web"  # spec repositories go under it: apps/web/spec-<n>


def _ago(**delta: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(**delta)


@pytest.fixture(scope="module", params=["v2", "gitlab"])
def variant(request, sandbox_template, tmp_path_factory):
    """One sandbox per registry variant for this module (each test uses repositories
    of its own, so the tests do not see each other's deletes)."""
    data = _copy(sandbox_template, tmp_path_factory.mktemp(f"fidelity-{request.param}") / "d")
    with Sandbox(data, registry_api=request.param) as sandbox:
        yield sandbox


@pytest.fixture(params=["v2", "gitlab"])
def fresh_variant(request, sandbox_template, tmp_path):
    data = _copy(sandbox_template, tmp_path / f"sandbox-{request.param}")
    with Sandbox(data, registry_api=request.param) as sandbox:
        yield sandbox


def _minter(sandbox: Sandbox) -> TokenMinter:
    key = load_signing_key(sandbox.key_path)
    return TokenMinter(key, issuer=sandbox.issuer, service=sandbox.service)


def _gitlab(sandbox: Sandbox, method: str, path: str, user: str = "root", **kwargs: Any):
    token = sandbox.user(user).token.reveal()
    return requests.request(
        method,
        f"{sandbox.gitlab_url}/api/v4{path}",
        headers={"PRIVATE-TOKEN": token},
        timeout=30,
        **kwargs,
    )


_counter = iter(range(1000))


def push_spec_tags(sandbox: Sandbox) -> tuple[str, int]:
    """GitLab's spec tags in a new repository: ``latest A Ba Bb C D E``.

    Third party (build time, the image config): latest and A share an image built an
    hour ago, Ba and Bb one built 5 days ago, C one built a month ago, D a config
    without ``created``, E an OCI index (GitLab's Accept gets no manifest for it).
    GitLab API (push time): the same dates set as the spec's tag_raw_response does
    (B* as updated_at, the others as created_at; D and E none).
    """
    repo = f"{PROJECT}/spec-{next(_counter)}"
    client = sandbox.registry
    layer = random_layer(seed=1234)
    hour, five, month = _ago(hours=1), _ago(days=5), _ago(days=30)
    push_image(client, repo, build_image([layer], hour), ["latest", "A"])
    push_image(client, repo, build_image([layer], five), ["Ba", "Bb"])
    push_image(client, repo, build_image([layer], month), ["C"])
    push_image(client, repo, build_image([layer], None), ["D"])
    children = [build_image([layer], month, oci=True)]
    push_index(client, repo, build_index(children, oci=True), ["E"])
    times = {"latest": (hour, None), "A": (hour, None), "Ba": (None, five),
             "Bb": (None, _ago(days=6)), "C": (month, None), "D": (None, None),
             "E": (None, None)}  # fmt: skip
    for tag, (created, updated) in times.items():
        sandbox.state.set_tag_times(repo, tag, created_at=created, updated_at=updated)
    sandbox.app.register_repositories()
    return repo, sandbox.state.repository_record(repo).id


def bulk_delete(sandbox: Sandbox, rid: int, params: dict[str, Any]) -> set[str]:
    project_id = sandbox.state.project_by_path(PROJECT).id
    answer = _gitlab(
        sandbox, "DELETE", f"/projects/{project_id}/registry/repositories/{rid}/tags", data=params
    )
    assert answer.status_code == 202, answer.text
    return set(sandbox.state.bulk_delete_results[rid])


# GitLab's spec outcomes (the bulk-delete API has no keep_latest parameter).
THIRD_PARTY_SPEC = [  # third_party/cleanup_tags_service_spec.rb
    ({"name_regex_delete": ".*"}, {"A", "Ba", "Bb", "C", "D", "E"}),
    ({"name_regex": ".*"}, {"A", "Ba", "Bb", "C", "D", "E"}),
    ({"name_regex_delete": "C|D"}, {"C", "D"}),
    ({"name_regex_delete": "C|D", "name_regex_keep": "C"}, {"D"}),
    ({"name_regex": "C|D", "name_regex_delete": "D"}, {"D"}),
    ({"name_regex_delete": ".*", "name_regex_keep": "B.*"}, {"A", "C", "D", "E"}),
    ({"name_regex": "A|B.*|C", "keep_n": 1}, {"Bb", "Ba", "C"}),
    ({"name_regex": "A|B.*|C"}, {"A", "Ba", "Bb", "C"}),
    ({"name_regex_delete": ".*", "keep_n": 3}, {"Bb", "Ba", "C"}),
    ({"name_regex_delete": ".*", "older_than": "1 day"}, {"Ba", "Bb", "C"}),
    ({"name_regex_delete": ".*", "keep_n": 1, "older_than": "1 day"}, {"Bb", "Ba", "C"}),
]
GITLAB_SPEC_SINGLE_PAGE = [  # gitlab/cleanup_tags_service_spec.rb, 'with a single tags page'
    ({"name_regex_delete": ".*"}, {"A", "Ba", "Bb", "C", "D", "E"}),
    ({"name_regex_delete": "C|D"}, {"C", "D"}),
    ({"name_regex_delete": "C|D", "name_regex_keep": "C"}, {"D"}),
    ({"name_regex_delete": ".*", "name_regex_keep": "B.*"}, {"A", "C", "D", "E"}),
    ({"name_regex": "A|B.*|C", "keep_n": 1}, {"Ba", "Bb", "C"}),
    ({"name_regex": "A|B.*|C"}, {"A", "Ba", "Bb", "C"}),
    ({"name_regex_delete": ".*", "keep_n": 3}, {"Ba", "Bb", "C"}),
    ({"name_regex_delete": ".*", "older_than": "1 day"}, {"Ba", "Bb", "C"}),
    ({"name_regex_delete": ".*", "keep_n": 1, "older_than": "1 day"}, {"Ba", "Bb", "C"}),
]


def test_gitlabs_spec_scenarios_through_the_bulk_delete(variant):
    scenarios = THIRD_PARTY_SPEC if variant.registry_api == "v2" else GITLAB_SPEC_SINGLE_PAGE
    for params, deleted in scenarios:
        repo, rid = push_spec_tags(variant)
        assert bulk_delete(variant, rid, params) == deleted, params
        remaining = set(oracle.tag_links(variant.storage_path, repo))
        assert remaining == {"latest", "A", "Ba", "Bb", "C", "D", "E"} - deleted, params


@pytest.mark.parametrize("variant", ["gitlab"], indirect=True)
@pytest.mark.parametrize(
    ("params", "deleted"),
    [
        # The API lists by name: pages [A Ba] [Bb C] [D E] [latest]; keep_n per page.
        ({"name_regex": "A|B.*|C", "keep_n": 1}, {"Ba", "C"}),
        ({"name_regex_delete": ".*", "keep_n": 1, "older_than": "1 day"}, {"Ba", "C"}),
        ({"name_regex_delete": ".*", "keep_n": 3}, set()),
    ],
)
def test_keep_n_applies_per_page_on_gitlabs_registry(variant, params, deleted):
    variant.state.cleanup_page_size = 2  # GitLab's spec: stub_const TAGS_PAGE_SIZE
    try:
        _repo, rid = push_spec_tags(variant)
        assert bulk_delete(variant, rid, params) == deleted
    finally:
        variant.state.cleanup_page_size = 1000


def test_a_re_pushed_tag_is_kept_only_by_gitlabs_service(variant):
    """Built 120 days ago and first pushed then, re-pushed yesterday."""
    repo = f"{PROJECT}/repushed-{next(_counter)}"
    built = _ago(days=120)
    push_image(variant.registry, repo, build_image([random_layer(seed=77)], built), ["v1"])
    variant.state.set_tag_times(repo, "v1", created_at=built, updated_at=_ago(days=1))
    variant.app.register_repositories()
    conn = variant.connect()
    [found] = [
        r
        for r in Project.find_by(full_path=PROJECT, connection=conn).container_repositories
        if r.path == repo
    ]
    plan = found.plan_cleanup({"name_regex_delete": ".*", "older_than": "90d"})
    gitlab = variant.registry_api == "gitlab"
    assert plan.service == ("gitlab" if gitlab else "third_party")
    assert plan.names_to_delete == ([] if gitlab else ["v1"])
    rid = variant.state.repository_record(repo).id
    assert bulk_delete(variant, rid, {"name_regex_delete": ".*", "older_than": "90d"}) == (
        set() if gitlab else {"v1"}
    )


# -- protected tags ------------------------------------------------------------------


def test_a_protected_tag_survives_apply_on_the_real_registry(fresh_variant):
    sandbox = fresh_variant
    project = sandbox.state.project_by_path(PROJECT)
    sandbox.state.add_tag_rule(project, r"^v1\.0$", "maintainer", "maintainer")
    sandbox.state.add_tag_rule(project, r"^stable$", None, None)  # immutable
    minter = _minter(sandbox)
    before = {t: skopeo_digest(sandbox.registry_host, PROJECT, t, minter) for t in ("v1.0", "v1.1")}
    assert all(before.values())
    conn = sandbox.connect()
    repo = next(
        r
        for r in Project.find_by(full_path=PROJECT, connection=conn).container_repositories
        if r.path == PROJECT
    )
    plan = repo.plan_cleanup({"name_regex_delete": "v1\\.[01]|stable", "keep_n": 0})
    assert plan.protected == {"v1.0": "protected", "stable": "immutable"}
    assert plan.names_to_delete == ["v1.1"]
    # Asked directly: a plan's targets plus the protected tags, by name.
    links = oracle.tag_links(sandbox.storage_path, PROJECT)
    targets = [DeleteTarget(PROJECT, t, links[t]) for t in ("v1.0", "stable", "v1.1")]
    rules = plan.target.protection
    result = apply_plan(targets, conn.registry, protection=rules)
    outcome = {o.tag: (o.result, o.error or "") for o in result.outcomes}
    assert outcome["v1.1"][0] == "deleted"
    assert outcome["v1.0"][0] == "failed" and "protected by GitLab tag rule" in outcome["v1.0"][1]
    assert outcome["stable"][0] == "failed" and "immutable" in outcome["stable"][1]
    assert skopeo_digest(sandbox.registry_host, PROJECT, "v1.0", minter) == before["v1.0"]
    assert skopeo_digest(sandbox.registry_host, PROJECT, "stable", minter) is not None
    assert skopeo_digest(sandbox.registry_host, PROJECT, "v1.1", minter) is None
    # The delete path itself refuses, before any request.
    deleter = SafeDelete(conn.registry, protection=lambda _repo: rules)
    with pytest.raises(ProtectedTagError, match=r"v1\.0"):
        deleter.delete_tags(PROJECT, ["v1.0"])
    assert skopeo_digest(sandbox.registry_host, PROJECT, "v1.0", minter) == before["v1.0"]


def test_gitlab_rest_refuses_deleting_a_protected_tag_for_a_developer(fresh_variant):
    sandbox = fresh_variant
    project = sandbox.state.project_by_path(PROJECT)
    sandbox.state.add_tag_rule(project, "^v1", "maintainer", "maintainer")
    rid = sandbox.state.repository_record(PROJECT).id
    url = f"/projects/{project.id}/registry/repositories/{rid}/tags/v1.0"
    refused = _gitlab(sandbox, "DELETE", url, user="dev")
    assert (refused.status_code, refused.json()) == (
        403,
        {"message": "403 Forbidden - cannot delete protected tag(s)"},
    )
    rules = _gitlab(sandbox, "GET", f"/projects/{project.id}/registry/protection/tag/rules")
    assert rules.status_code == 200
    assert [r["tag_name_pattern"] for r in rules.json()] == ["^v1"]
    shown = Project.find_by(full_path=PROJECT, connection=sandbox.connect()).tag_protection
    assert shown.reason("v1.5") == "protected" and shown.reason("main") is None
    assert "'^v1': push maintainer, delete maintainer" in repr(shown)  # the console's view
    assert _gitlab(sandbox, "DELETE", url).status_code == 200  # an admin (CE): no rule applies


# -- policy values -----------------------------------------------------------------------


def test_older_than_60d_round_trips_through_update_all(fresh_sandbox):
    conn = fresh_sandbox.connect()
    projects = Project.where(search="platform", connection=conn)  # valid stored policies
    query = ExpirationPolicy.where(projects=projects, connection=conn)
    updated = query.update_all(older_than="60d")
    assert len(updated) >= 2
    for policy in updated:
        stored = conn.gitlab.project(policy.project_id)["container_expiration_policy"]
        assert stored["older_than"] == "60d"


def test_policy_values_follow_the_connected_gitlab(fresh_sandbox):
    state = fresh_sandbox.state
    project = state.project_by_path(PROJECT)
    state.set_gitlab(version="14.3.0")
    old = ExpirationPolicy.find_by(project_id=project.id, connection=fresh_sandbox.connect())
    with pytest.raises(PolicyError, match="older_than"):
        old.update(older_than="60d")  # refused before anything is sent
    assert state.projects[project.id].policy["older_than"] != "60d"
    state.set_gitlab(version="18.7.0", older_than=("1d", "7d", "60d", "1095d"))
    new = ExpirationPolicy.find_by(project_id=project.id, connection=fresh_sandbox.connect())
    new.update(older_than="1095d")  # read from the stand-in's GraphQL enum
    assert state.projects[project.id].policy["older_than"] == "1095d"
    with pytest.raises(PolicyError):
        new.update(older_than="14d")  # this GitLab does not offer it


# -- the registry's GitLab API, usage, the delete method, the banner -------------------


def _api_json(sandbox: Sandbox, path: str, scope: str) -> requests.Response:
    token = _minter(sandbox).mint([Scope.repository(scope, "pull")]).reveal()
    return requests.get(
        f"{sandbox.registry_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


@pytest.mark.parametrize("variant", ["gitlab"], indirect=True)
def test_usage_takes_gitlabs_sizes_from_its_api(variant):
    conn = variant.connect()
    refs = usage.select_projects(conn.gitlab, projects=["platform/tools", "apps/mobile/android"])
    resolver = conn.resolver  # GitLab's compliance check (GET /gitlab/v1/) happens here, once
    before = conn.registry.request_count
    report = usage.by_project(refs, gitlab=conn.gitlab, resolver=resolver)
    assert report.ok
    repositories = 0
    for row in report.projects:
        expected = 0
        for repo in oracle.repositories(variant.storage_path):
            if repo == row.full_path or repo.startswith(row.full_path + "/"):
                repositories += 1
                page = _api_json(variant, f"/gitlab/v1/repositories/{repo}/tags/list/?n=1000", repo)
                assert page.status_code == 200 and "Link" not in page.headers
                expected += sum(t["size_bytes"] for t in page.json())
        assert row.registry_size_bytes == expected > 0, row.full_path
    # the fast path: one tags-list page per repository, no request per tag
    assert conn.registry.request_count - before == repositories
    extended = usage.by_project(refs, gitlab=conn.gitlab, resolver=conn.resolver, extended=True)
    for row in extended.projects:
        answer = _api_json(
            variant,
            f"/gitlab/v1/repositories/{row.full_path}/?size=self_with_descendants",
            f"{row.full_path}/*",
        )
        assert row.gitlab_registry_size == answer.json()["size_bytes"]


def test_gitlabs_own_delete_method_on_each_variant(variant):
    """GitLab probes OPTIONS /v2/name/manifests/tag; plain Distribution says DELETE there
    and then refuses a delete by tag (400), so GitLab's own run deletes nothing on it."""
    repo = f"{PROJECT}/delete-{next(_counter)}"
    token = _minter(variant).mint([Scope.repository(repo, "pull", "delete")]).reveal()
    auth = {"Authorization": f"Bearer {token}"}
    probe = requests.options(f"{variant.registry_url}/v2/name/manifests/tag", headers=auth)
    assert probe.status_code == 200 and "DELETE" in probe.headers["Allow"]
    push_image(variant.registry, repo, build_image([random_layer(seed=55)]), ["gone", "kept"])
    answer = requests.delete(f"{variant.registry_url}/v2/{repo}/manifests/gone", headers=auth)
    remaining = set(oracle.tag_links(variant.storage_path, repo))
    variant.app.register_repositories()
    [found] = [
        r
        for r in Project.find_by(
            full_path=PROJECT, connection=variant.connect()
        ).container_repositories
        if r.path == repo
    ]
    notes = [w for w in found.plan_cleanup({"name_regex_delete": "x"}).warnings if "probe" in w]
    if variant.registry_api == "v2":
        assert answer.status_code == 400 and "DIGEST_INVALID" in answer.text
        assert remaining == {"gone", "kept"}
        assert len(notes) == 1 and "deletes nothing on this registry" in notes[0]
    else:
        assert answer.status_code == 202 and remaining == {"kept"}
        assert notes == []


def test_tag_details_and_repository_shapes(variant):
    conn = variant.connect()
    project = conn.gitlab.project(PROJECT)
    rid = variant.state.repository_record(PROJECT).id
    details = _gitlab(
        variant, "GET", f"/projects/{project['id']}/registry/repositories/{rid}/tags/v1.0"
    )
    assert details.status_code == 200
    # TagDetails#created_at is a Ruby DateTime: "...000+00:00"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", details.json()["created_at"]
    )
    listed = _gitlab(variant, "GET", f"/projects/{project['id']}/registry/repositories")
    assert list(listed.json()[0])[:7] == [
        "id", "name", "path", "project_id", "location", "created_at", "cleanup_policy_started_at"
    ]  # fmt: skip
    assert listed.json()[0]["delete_api_path"].endswith(
        f"/api/v4/projects/{project['id']}/registry/repositories/{listed.json()[0]['id']}"
    )
    viewer = _gitlab(variant, "GET", f"/projects/{project['id']}/registry/repositories", "viewer")
    assert viewer.status_code == 200 and "delete_api_path" not in viewer.json()[0]  # a Reporter
    keyset = _gitlab(
        variant,
        "GET",
        f"/projects/{project['id']}/registry/repositories/{rid}/tags",
        params={"pagination": "keyset", "per_page": 2},
    )
    if variant.registry_api == "v2":
        assert (keyset.status_code, keyset.json()) == (405, {"message": "405 Method Not Allowed"})
    else:
        names = sorted(oracle.tag_links(variant.storage_path, PROJECT))
        assert [t["name"] for t in keyset.json()] == names[:2]
        assert f"last={names[1]}" in keyset.headers["Link"]
    size = conn.gitlab.repository(rid, size=True)["size"]
    assert (size is None) is (variant.registry_api == "v2")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "name_regex, name_regex_delete are missing, at least one parameter must be provided"),
        (
            {"name_regex_delete": "(a", "keep_n": "x"},
            "name_regex_delete is an invalid regexp: missing ): (a, keep_n is invalid",
        ),
        (
            {"name_regex_keep": "*", "keep_n": "1"},
            "name_regex, name_regex_delete are missing, at least one parameter must be provided, "
            "name_regex_keep is an invalid regexp: no argument for repetition operator: *",
        ),
    ],
)
def test_bulk_delete_errors_have_grapes_wording_and_order(sandbox, params, message):
    project = sandbox.state.project_by_path(PROJECT)
    rid = sandbox.state.repository_record(PROJECT).id
    answer = _gitlab(
        sandbox, "DELETE", f"/projects/{project.id}/registry/repositories/{rid}/tags", data=params
    )
    assert (answer.status_code, answer.json()) == (400, {"error": message})


def test_console_banner_names_the_variant(variant):
    text = banner(variant.connect())
    if variant.registry_api == "gitlab":
        assert (
            "GitLab API /gitlab/v1/ (metadata database): GitLab's Gitlab::CleanupTagsService"
            in text
        )
    else:
        assert "v2 API only: GitLab's ThirdParty::CleanupTagsService" in text


def test_the_protection_lookup_of_the_models_reaches_apply(fresh_variant):
    """A project plan's targets carry the rules: PolicyPlan.apply() refuses the tag too."""
    sandbox = fresh_variant
    project = sandbox.state.project_by_path(PROJECT)
    sandbox.state.add_tag_rule(project, "^v1\\.5$", "owner", "owner")
    conn = sandbox.connect()
    policy = ExpirationPolicy.find_by(project_id=project.id, connection=conn)
    plan = policy.plan(overrides={"name_regex": "v1\\.5", "keep_n": 1, "older_than": None})
    assert all("v1.5" not in p.names_to_delete for p in plan)
    [web] = [p for p in plan if p.repository == PROJECT]
    web.to_delete.append(next(d.tag for d in web.decisions if d.name == "v1.5"))  # forced
    result = plan.apply(conn)
    [outcome] = [o for o in result.outcomes if o.tag == "v1.5"]
    assert outcome.result == "failed" and "protected" in (outcome.error or "")
    assert "v1.5" in oracle.tag_links(sandbox.storage_path, PROJECT)
    assert isinstance(web.target.protection, TagProtection)
    assert web.target.protection.rules == (TagProtectionRule("^v1\\.5$", "owner", "owner", 1),)


def test_repository_model_of_the_gitlab_variant_lists_by_the_api(variant):
    conn = variant.connect()
    rid = variant.state.repository_record(PROJECT).id
    tags = ContainerRepository.find(rid, connection=conn).tags
    assert [t.name for t in tags] == sorted(t.name for t in tags)
    if variant.registry_api == "gitlab":
        rows = _api_json(variant, f"/gitlab/v1/repositories/{PROJECT}/tags/list/", PROJECT).json()
        assert {t.name: t.total_size for t in tags} == {r["name"]: r["size_bytes"] for r in rows}
