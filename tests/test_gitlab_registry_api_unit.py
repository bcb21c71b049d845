"""GitLabRegistryAPI against `responses` mocks shaped as GitLab's own client specs.

Payload sources, named per test: gitlabhq
spec/lib/container_registry/gitlab_api_client_spec.rb (tags rows, sub-repository
rows, next-page links, the 401 compliance case), the registry's handler
registry/handlers/gitlab_api.go (RepositoryAPIResponse: name, path, size_bytes,
size_precision, created_at; the NAME_UNKNOWN 404), and lib/container_registry/
client.rb (the OPTIONS tag-delete probe).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from regops.errors import RegistryError, RegistryNotFound, ValidationError
from regops.http import HTTPSettings
from regops.registry.client import RegistryClient
from regops.registry.gitlab_api import GitLabRegistryAPI, gitlab_would_delete_by_tag
from regops.registry.resolver import TagResolver, gitlab_tag_of_row
from regops.registry.tokens import AnonymousAuth

REG = "https://registry.example.com"
PATH = "namespace/path/to/repository"
TAGS_URL = f"{REG}/gitlab/v1/repositories/{PATH}/tags/list/"
# gitlab_api_client_spec.rb '#tags' response (created_at written out as the API writes it)
SPEC_TAGS = [
    {
        "name": "0.1.0",
        "digest": "sha256:" + "1" * 64,
        "config_digest": "sha256:" + "3" * 64,
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "size_bytes": 1234567890,
        "created_at": "2024-05-01T12:00:00.000Z",
    },
    {
        "name": "latest",
        "digest": "sha256:" + "2" * 64,
        "config_digest": "sha256:" + "4" * 64,
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "size_bytes": 1234567892,
        "created_at": "2024-05-01T11:55:00.000Z",
        "updated_at": "2024-05-02T08:00:00.000+00:00",
    },
]


def api() -> GitLabRegistryAPI:
    client = RegistryClient(REG, AnonymousAuth(), http=HTTPSettings(max_retries=0))
    return GitLabRegistryAPI(client)


@responses.activate
@pytest.mark.parametrize(("status", "supported"), [(200, True), (401, True), (404, False)])
def test_compliance_check_is_gitlabs(status: int, supported: bool):
    # gitlab_api_client_spec.rb: 'with 401 response' -> truthy; Distribution answers 404
    probe = responses.get(f"{REG}/gitlab/v1/", status=status, body="")
    found = GitLabRegistryAPI.detect(RegistryClient(REG, AnonymousAuth()))
    assert (found is not None) is supported
    if found is not None:
        assert found.supported and probe.call_count == 1  # asked once


@responses.activate
def test_tags_pages_follow_the_last_of_the_next_link():
    # 'with a response with a link header containing next page': GitLab reads only 'last'
    first = responses.get(
        TAGS_URL,
        json=SPEC_TAGS[:1],
        headers={"Link": f'</gitlab/v1/repositories/{PATH}/tags/list/?last=0.1.0&n=1>; rel="next"'},
        match=[responses.matchers.query_param_matcher({"n": "1"})],
    )
    second = responses.get(
        TAGS_URL,
        json=SPEC_TAGS[1:],
        match=[responses.matchers.query_param_matcher({"n": "1", "last": "0.1.0"})],
    )
    tags = api().tags(PATH, page_size=1)
    assert [t.name for t in tags] == ["0.1.0", "latest"]
    assert first.call_count == second.call_count == 1
    latest = tags[1]
    assert latest.size_bytes == 1234567892 and latest.revision == "4" * 64
    assert latest.updated_at is not None and latest.pushed_at == latest.updated_at
    assert tags[0].pushed_at == tags[0].created_at


@responses.activate
def test_gitlab_fields_of_a_row_are_transform_tags_page():
    # app/models/container_repository.rb transform_tags_page: total_size = size_bytes,
    # revision = config_digest hex (or ""), dates from the API.
    row = dict(SPEC_TAGS[0])
    del row["config_digest"]  # an index has none
    responses.get(TAGS_URL, json=[row])
    [tag] = api().tags(PATH)
    gitlab = gitlab_tag_of_row(tag)
    assert (gitlab.total_size, gitlab.revision, gitlab.short_revision) == (1234567890, "", "")
    assert str(gitlab.digest) == "sha256:" + "1" * 64 and gitlab.source == "gitlab_api"


@responses.activate
def test_a_page_that_does_not_move_is_refused():
    link = f'</gitlab/v1/repositories/{PATH}/tags/list/?last=0.1.0&n=1>; rel="next"'
    responses.get(TAGS_URL, json=SPEC_TAGS[:1], headers={"Link": link})
    with pytest.raises(RegistryError, match="does not move past"):
        api().tags(PATH, page_size=1)


@responses.activate
@pytest.mark.parametrize(
    "row",
    [
        {"name": "a", "digest": "sha256:zz"},
        {"name": "a", "digest": "sha256:" + "1" * 64, "size_bytes": "12"},
        {"name": "a", "digest": "sha256:" + "1" * 64, "created_at": "yesterday"},
        "a string",
    ],
)
def test_a_row_not_of_the_spec_shape_is_an_error(row: object):
    responses.get(TAGS_URL, json=[row])
    with pytest.raises(RegistryError, match="not the GitLab API's shape"):
        api().tags(PATH)


@responses.activate
def test_an_answer_of_the_wrong_json_kind_is_named():
    responses.get(TAGS_URL, json={"name": "0.1.0"})
    with pytest.raises(RegistryError, match="expected a JSON list, got dict"):
        api().tags(PATH)
    responses.get(f"{REG}/gitlab/v1/repositories/group/project/", json=[{"path": "x"}])
    with pytest.raises(RegistryError, match="expected a JSON object, got list"):
        api().repository("group/project")
    responses.get(f"{REG}/gitlab/v1/repositories/group/other/", body="<html>")
    with pytest.raises(RegistryError, match="answer is not JSON"):
        api().repository("group/other")


def test_page_size_is_checked_before_any_request():
    with pytest.raises(ValidationError, match=r"1\.\.1000"):
        api().tags_page(PATH, page_size=1001)


@responses.activate
def test_repository_details_with_sizes():
    # registry/handlers/gitlab_api.go RepositoryAPIResponse
    details = responses.get(
        f"{REG}/gitlab/v1/repositories/group/project/",
        json={
            "name": "project",
            "path": "group/project",
            "size_bytes": 2_014_592,
            "size_precision": "default",
            "created_at": "2022-06-07T12:11:13.633Z",
        },
    )
    got = api().repository("group/project", size="self_with_descendants")
    assert got.size_bytes == 2_014_592 and got.path == "group/project"
    assert parse_qs(urlsplit(details.calls[0].request.url).query) == {
        "size": ["self_with_descendants"]
    }
    with pytest.raises(ValidationError):
        api().repository("group/project", size="everything")


@responses.activate
def test_repository_not_known_is_not_found():
    responses.get(
        f"{REG}/gitlab/v1/repositories/group/none/",
        status=404,
        json={"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]},
    )
    with pytest.raises(RegistryNotFound):
        api().repository("group/none", size="self")


@responses.activate
def test_sub_repositories_are_paged():
    # gitlab_api_client_spec.rb '#sub_repositories_with_tag' rows and 'link header' case
    url = f"{REG}/gitlab/v1/repository-paths/gitlab-org/build/cng/repositories/list/"
    rows = [
        {
            "name": "docker-alpine",
            "path": "gitlab-org/build/cng/docker-alpine",
            "created_at": "2022-06-07T12:11:13.633+00:00",
            "updated_at": "2022-06-07T14:37:49.251+00:00",
        },
        {
            "name": "git-base",
            "path": "gitlab-org/build/cng/git-base",
            "created_at": "2022-06-07T12:11:13.633+00:00",
            "updated_at": "2022-06-07T14:37:49.251+00:00",
        },
    ]
    link = '</x?last=gitlab-org%2Fbuild%2Fcng%2Fdocker-alpine&n=1>; rel="next"'
    responses.get(url, json=rows[:1], headers={"Link": link})
    responses.get(url, json=rows[1:])
    found = list(api().sub_repositories("gitlab-org/build/cng", page_size=1))
    assert [r.path for r in found] == [row["path"] for row in rows]


@responses.activate
@pytest.mark.parametrize(
    ("status", "allow", "deletes_by_tag"),
    [
        (200, "DELETE, GET, HEAD, PUT", True),  # what Distribution 2.8 answers (checked live)
        (200, "GET, HEAD", False),
        (404, "", False),
    ],
)
def test_gitlabs_own_delete_probe(status: int, allow: str, deletes_by_tag: bool):
    # lib/container_registry/client.rb supports_tag_delete?: OPTIONS /v2/name/manifests/tag
    responses.add(
        "OPTIONS", f"{REG}/v2/name/manifests/tag", status=status, headers={"Allow": allow}
    )
    client = RegistryClient(REG, AnonymousAuth())
    assert gitlab_would_delete_by_tag(client) is deletes_by_tag


@responses.activate
def test_resolver_takes_gitlabs_fields_from_the_api():
    responses.get(TAGS_URL, json=SPEC_TAGS)
    client = RegistryClient(REG, AnonymousAuth())
    resolver = TagResolver(client, gitlab_api=GitLabRegistryAPI(client))
    found = resolver.api_tags(PATH)
    assert [d.name for d in found] == ["0.1.0", "latest"]
    assert [d.total_size for d in found] == [1234567890, 1234567892]
    assert found[1].manifest is None and str(found[1].manifest_digest) == SPEC_TAGS[1]["digest"]
    assert resolver.requests == 1  # one page: one request for every tag
