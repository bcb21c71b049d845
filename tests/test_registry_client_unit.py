"""RegistryClient against `responses` mocks shaped like the Distribution API docs.

Payload shapes follow distribution's docs/spec/api.md (errors, _catalog, tags/list,
blob uploads) and GitLab's registry headers (docs/spec/gitlab/api.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from regops.errors import (
    ManifestError,
    RegistryDenied,
    RegistryError,
    RegistryNotFound,
    RegistryUnauthorized,
    RegistryUnsupported,
    TokenError,
    ValidationError,
)
from regops.http import HTTPSettings
from regops.registry import client as registry_client
from regops.registry.cache import ContentCache, default_cache_dir
from regops.registry.client import (
    RegistryClient,
    error_from_response,
    repository_scopes,
)
from regops.registry.manifest import DOCKER_MANIFEST, MANIFEST_ACCEPT, OCI_INDEX, parse_manifest
from regops.registry.reference import Digest
from regops.registry.resolver import TagResolver
from regops.registry.safe_delete import (
    PLACEHOLDER_ANNOTATION,
    Placeholder,
    SafeDelete,
    TagDeleteResult,
    is_placeholder,
)
from regops.registry.tokens import AnonymousAuth, RealmAuth, Scope
from regops.secrets import Secret
from tests.images import build_index, simple_image
from tests.leanmock import lean_via_responses  # noqa: F401  (a fixture)

# The hot reads go through the session's lean path (urllib3): answered by `responses` too.
pytestmark = pytest.mark.usefixtures("lean_via_responses")

REG = "https://registry.example.com"
V2 = REG + "/v2"
TOKEN_VALUE = "unit-registry-token-abcdef"
LOOP_GUARD = 50  # names taken from a looping catalog before the test gives up on an error
ERR_UNKNOWN = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}


class FakeAuth(AnonymousAuth):
    """Records the scopes asked for; refresh gives a new token a limited number of times."""

    def __init__(self, refreshes: int = 1) -> None:
        self.asked: list[tuple[Scope, ...]] = []
        self.challenges = []
        self.refreshes = refreshes
        self.generation = 0

    def authorization(self, scopes, session):
        self.asked.append(tuple(scopes))
        return f"Bearer {TOKEN_VALUE}-{self.generation}"

    def refresh(self, challenge, scopes, session):
        self.challenges.append(challenge)
        if self.refreshes <= 0:
            return False
        self.refreshes -= 1
        self.generation += 1
        return True


@pytest.fixture
def auth():
    return FakeAuth()


@pytest.fixture
def client(auth):
    return RegistryClient(REG, auth, http=HTTPSettings(max_retries=2, sleep=lambda s: None))


def _query(call) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


# --------------------------------------------------------------------------- scopes


def test_repository_scopes_per_method():
    assert repository_scopes("GET", "g/a") == (Scope("repository", "g/a", ("pull",)),)
    assert repository_scopes("head", "g/a") == (Scope("repository", "g/a", ("pull",)),)
    assert repository_scopes("PUT", "g/a") == (Scope("repository", "g/a", ("pull", "push")),)
    assert repository_scopes("POST", "g/a") == (Scope("repository", "g/a", ("pull", "push")),)
    assert repository_scopes("DELETE", "g/a") == (Scope("repository", "g/a", ("delete",)),)
    with pytest.raises(ValidationError):
        repository_scopes("TRACE", "g/a")


def test_bad_url_and_names_refused_before_any_request():
    with pytest.raises(ValidationError, match="registry_url"):
        RegistryClient("registry.example.com")
    client = RegistryClient(REG)
    with pytest.raises(ValidationError, match="repository"):
        client.tags("Group/App")
    with pytest.raises(ValidationError, match="tag"):
        client.get_manifest("g/app", "bad tag!")
    assert client.request_count == 0


# --------------------------------------------------------------------------- listing


@responses.activate
def test_catalog_follows_relative_links_and_empty_pages(client, auth):
    responses.get(
        f"{V2}/_catalog",
        json={"repositories": ["a/one", "a/two"]},
        headers={"Link": '</v2/_catalog?last=a%2Ftwo&n=2>; rel="next"'},
        match=[responses.matchers.query_param_matcher({"n": "2"})],
    )
    responses.get(
        f"{V2}/_catalog",
        json={"repositories": []},  # an empty page that still links on
        headers={"Link": '</v2/_catalog?last=a%2Ftwo&n=2&x=1>; rel="next"'},
        match=[responses.matchers.query_param_matcher({"n": "2", "last": "a/two"})],
    )
    responses.get(
        f"{V2}/_catalog",
        json={"repositories": ["b/three"]},
        match=[responses.matchers.query_param_matcher({"n": "2", "last": "a/two", "x": "1"})],
    )
    assert list(client.catalog(page_size=2)) == ["a/one", "a/two", "b/three"]
    assert len(responses.calls) == 3
    assert all(scopes == (Scope.catalog(),) for scopes in auth.asked)
    assert client.request_count == 3


@pytest.mark.parametrize("size", [0, 1001, "10", None])
def test_catalog_page_size_limits(client, size):
    with pytest.raises(ValidationError, match="page_size"):
        list(client.catalog(page_size=size))


@responses.activate
def test_catalog_null_repositories_and_absolute_link(client):
    responses.get(
        f"{V2}/_catalog",
        json={"repositories": ["x"]},
        headers={"Link": f'<{V2}/_catalog?last=x&n=100>; rel="next"'},
        match=[responses.matchers.query_param_matcher({"n": "100"})],
    )
    responses.get(
        f"{V2}/_catalog",
        json={"repositories": None},
        match=[responses.matchers.query_param_matcher({"n": "100", "last": "x"})],
    )
    assert list(client.catalog()) == ["x"]


@responses.activate
def test_catalog_link_loop_is_an_error(client):
    responses.get(
        f"{V2}/_catalog",
        json={"repositories": ["x"]},
        headers={"Link": '</v2/_catalog?n=5>; rel="next"'},
    )
    with pytest.raises(RegistryError, match="loops back"):
        list(client.catalog(page_size=5))


@responses.activate
def test_catalog_link_back_to_an_earlier_page_is_an_error(client):
    responses.get(
        f"{V2}/_catalog",
        json={"repositories": ["a"]},
        headers={"Link": '</v2/_catalog?last=a&n=1>; rel="next"'},
        match=[responses.matchers.query_param_matcher({"n": "1"})],
    )
    responses.get(
        f"{V2}/_catalog",
        json={"repositories": ["b"]},
        headers={"Link": '</v2/_catalog?n=1>; rel="next"'},  # back to the first page
        match=[responses.matchers.query_param_matcher({"last": "a", "n": "1"})],
    )
    with pytest.raises(RegistryError) as info:
        list(itertools.islice(client.catalog(page_size=1), LOOP_GUARD))
    assert str(info.value) == (
        f"GET {V2}/_catalog?n=1 -> 200: Link header loops back to a page already read"
    )
    assert len(responses.calls) == 2


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example.org/v2/g/app/tags/list?last=a&n=1",  # another host
        "https://registry.example.com:5050/v2/g/app/tags/list?last=a&n=1",  # another port
        "http://registry.example.com/v2/g/app/tags/list?last=a&n=1",  # another scheme
        "//evil.example.org/v2/g/app/tags/list?last=a&n=1",  # scheme-relative
    ],
)
@responses.activate
def test_tags_link_to_another_origin_is_refused_not_merged(client, link):
    responses.get(
        f"{V2}/g/app/tags/list", json={"tags": ["a"]}, headers={"Link": f'<{link}>; rel="next"'}
    )
    shown = link if link.startswith("http") else "https:" + link
    foreign = responses.get(shown.split("?")[0], json={"tags": ["evil"]})
    with pytest.raises(RegistryError) as info:
        client.tags("g/app")
    assert str(info.value) == (
        f"GET {shown} -> 200: the next-page Link leads away from {REG}: refusing to follow it"
    )
    assert foreign.call_count == 0
    assert len(responses.calls) == 1


@responses.activate
def test_catalog_page_count_is_bounded(client, monkeypatch):
    monkeypatch.setattr(registry_client, "MAX_PAGES", 3)

    def endless(request):
        last = int(parse_qs(urlsplit(request.url).query).get("last", ["0"])[0])
        link = f'</v2/_catalog?last={last + 1}&n=1>; rel="next"'
        return 200, {"Link": link}, json.dumps({"repositories": [f"r{last + 1}"]})

    responses.add_callback(responses.GET, f"{V2}/_catalog", callback=endless)
    with pytest.raises(RegistryError, match="more than 3 pages"):
        list(client.catalog(page_size=1))
    assert len(responses.calls) == 3


@responses.activate
def test_catalog_not_json_is_an_error(client):
    responses.get(f"{V2}/_catalog", body="<html>proxy</html>")
    with pytest.raises(RegistryError, match="not JSON"):
        list(client.catalog())


@responses.activate
def test_tags_sorted_null_and_paginated(client, auth):
    responses.get(f"{V2}/g/app/tags/list", json={"name": "g/app", "tags": ["v2", "latest", "v10"]})
    assert client.tags("g/app") == ["latest", "v10", "v2"]
    assert auth.asked[-1] == (Scope.repository("g/app", "pull"),)
    responses.replace(responses.GET, f"{V2}/g/app/tags/list", json={"name": "g/app", "tags": None})
    assert client.tags("g/app") == []


@responses.activate
def test_tags_follow_link_like_gitlab_registry(client):
    responses.get(
        f"{V2}/g/app/tags/list",
        json={"tags": ["b", "a"]},
        headers={"Link": '</v2/g/app/tags/list?last=b&n=2>; rel="next"'},
        match=[responses.matchers.query_param_matcher({})],
    )
    responses.get(
        f"{V2}/g/app/tags/list",
        json={"tags": ["c"]},
        match=[responses.matchers.query_param_matcher({"last": "b", "n": "2"})],
    )
    assert client.tags("g/app") == ["a", "b", "c"]


@responses.activate
def test_tags_of_unknown_repository(client):
    responses.get(
        f"{V2}/g/none/tags/list",
        status=404,
        json={"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]},
    )
    with pytest.raises(RegistryNotFound) as info:
        client.tags("g/none")
    assert info.value.codes == ("NAME_UNKNOWN",)
    assert "repository name not known" in str(info.value)


# --------------------------------------------------------------------------- auth


@responses.activate
def test_challenge_refresh_and_single_retry(client, auth):
    challenge = (
        'Bearer realm="https://gitlab.example.com/jwt/auth",service="container_registry",'
        'scope="repository:g/app:pull"'
    )
    responses.get(f"{V2}/g/app/tags/list", status=401, headers={"WWW-Authenticate": challenge})
    responses.get(f"{V2}/g/app/tags/list", json={"tags": ["1"]})
    assert client.tags("g/app") == ["1"]
    assert len(auth.challenges) == 1
    assert auth.challenges[0].realm == "https://gitlab.example.com/jwt/auth"
    assert auth.challenges[0].scopes == (Scope.repository("g/app", "pull"),)
    assert responses.calls[0].request.headers["Authorization"].endswith("-0")
    assert responses.calls[1].request.headers["Authorization"].endswith("-1")


@responses.activate
def test_refused_token_after_refresh_is_unauthorized_and_secret_free(client, auth):
    challenge = (
        'Bearer realm="https://g/jwt/auth",service="container_registry",error="invalid_token"'
    )
    body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
    for _ in range(3):
        responses.get(
            f"{V2}/g/app/tags/list", status=401, json=body, headers={"WWW-Authenticate": challenge}
        )
    with pytest.raises(RegistryUnauthorized) as info:
        client.tags("g/app")
    error = info.value
    assert error.status == 401 and error.codes == ("UNAUTHORIZED",)
    assert "refused the token" in str(error) and "invalid_token" in str(error)
    assert "issuer" in str(error) and "expiry" in str(error)
    assert TOKEN_VALUE not in str(error) + repr(error)
    assert len(responses.calls) == 2  # the request and ONE retry


@responses.activate
def test_no_retry_when_refresh_says_no(auth):
    auth.refreshes = 0
    client = RegistryClient(REG, auth)
    responses.get(f"{V2}/", status=401, headers={"WWW-Authenticate": 'Bearer realm="x"'})
    with pytest.raises(RegistryUnauthorized, match="no accepted credentials"):
        client.ping()
    assert len(responses.calls) == 1


@responses.activate
def test_insufficient_scope_is_denied(client):
    challenge = (
        'Bearer realm="https://g/jwt/auth",service="container_registry",'
        'scope="repository:g/app:delete",error="insufficient_scope"'
    )
    body = {"errors": [{"code": "DENIED", "message": "requested access to the resource is denied"}]}
    digest = Digest.of(b"m")
    for _ in range(2):
        responses.delete(
            f"{V2}/g/app/manifests/{digest}",
            status=401,
            json=body,
            headers={"WWW-Authenticate": challenge},
        )
    with pytest.raises(RegistryDenied) as info:
        client.delete_manifest("g/app", digest)
    assert "repository:g/app:delete" in str(info.value)
    assert info.value.codes == ("DENIED",)


@responses.activate
def test_realm_auth_end_to_end_with_basic_credentials():
    pat = Secret("glpat-unit-personal-token")
    auth = RealmAuth("admin", pat)
    client = RegistryClient(REG, auth)
    challenge = f'Bearer realm="{REG}/jwt/auth",service="container_registry"'
    responses.get(f"{V2}/g/app/tags/list", status=401, headers={"WWW-Authenticate": challenge})
    responses.get(f"{REG}/jwt/auth", json={"token": TOKEN_VALUE, "expires_in": 300})
    responses.get(f"{V2}/g/app/tags/list", json={"tags": ["x"]})
    assert client.tags("g/app") == ["x"]
    realm_call = responses.calls[1]
    assert realm_call.request.headers["Authorization"].startswith("Basic ")
    assert _query(realm_call)["scope"] == ["repository:g/app:pull"]
    assert responses.calls[2].request.headers["Authorization"] == f"Bearer {TOKEN_VALUE}"


@responses.activate
def test_realm_on_foreign_host_is_refused():
    client = RegistryClient(REG, RealmAuth("admin", Secret("glpat-unit-personal-token")))
    challenge = 'Bearer realm="https://evil.example.org/jwt/auth",service="container_registry"'
    responses.get(f"{V2}/g/app/tags/list", status=401, headers={"WWW-Authenticate": challenge})
    with pytest.raises(TokenError, match=r"evil\.example\.org"):
        client.tags("g/app")
    assert len(responses.calls) == 1


# --------------------------------------------------------------------------- errors


def _response(status, body=b"", headers=None):
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response.headers.update(headers or {})
    return response


@pytest.mark.parametrize(
    "status, cls",
    [
        (401, RegistryUnauthorized),
        (403, RegistryDenied),
        (404, RegistryNotFound),
        (405, RegistryUnsupported),
        (400, RegistryError),
        (500, RegistryError),
    ],
)
def test_error_classes_by_status(status, cls):
    error = error_from_response("GET", f"{V2}/x", _response(status, ERR_UNKNOWN))
    assert type(error) is cls
    assert error.codes == ("MANIFEST_UNKNOWN",)
    assert error.status == status and "manifest unknown" in str(error)


def test_error_with_several_codes_and_detail():
    body = {
        "errors": [
            {"code": "BLOB_UNKNOWN", "message": "blob unknown", "detail": {"digest": "sha256:x"}},
            {"code": "NAME_INVALID", "message": "invalid name"},
        ]
    }
    error = error_from_response("PUT", f"{V2}/x", _response(400, body))
    assert error.codes == ("BLOB_UNKNOWN", "NAME_INVALID")
    assert "blob unknown" in str(error) and '"digest": "sha256:x"' in str(error)
    assert "invalid name" in str(error)


def test_plain_text_405_from_read_only_registry():
    error = error_from_response("DELETE", f"{V2}/x", _response(405, b"Method not allowed\n"))
    assert isinstance(error, RegistryUnsupported)
    assert error.codes == ()
    assert "Method not allowed" in str(error) and "read-only" in str(error)


def test_non_json_error_body_is_kept_short():
    error = error_from_response("GET", f"{V2}/x", _response(502, b"<html>" + b"x" * 5000))
    assert type(error) is RegistryError and len(str(error)) < 500


def test_error_text_never_holds_a_token():
    Secret(TOKEN_VALUE)  # registered, as every real token is
    body = {"errors": [{"code": "DENIED", "message": f"bad Bearer {TOKEN_VALUE}"}]}
    error = error_from_response("GET", f"{V2}/x?token={TOKEN_VALUE}", _response(403, body))
    assert TOKEN_VALUE not in str(error) + error.url + error.detail


# --------------------------------------------------------------------------- ping


@responses.activate
def test_ping_reads_gitlab_headers(client, auth):
    responses.get(
        f"{V2}/",
        json={},
        headers={
            "Gitlab-Container-Registry-Version": "v3.88.0-gitlab",
            "Gitlab-Container-Registry-Features": "tag_delete, online_gc",
            "Gitlab-Container-Registry-Database-Enabled": "true",
        },
    )
    responses.get(f"{REG}/gitlab/v1/", status=401)
    features = client.ping()
    assert features.gitlab_version == "v3.88.0-gitlab" and features.is_gitlab
    assert features.features == frozenset({"tag_delete", "online_gc"})
    assert features.tag_delete and features.database_enabled and features.gitlab_api
    assert auth.asked[0] == ()  # /v2/ needs no scope
    assert client.supports_tag_delete("g/app")  # from features: no OPTIONS request
    assert len(responses.calls) == 2


@responses.activate
def test_ping_plain_distribution(client):
    responses.get(f"{V2}/", json={})
    responses.get(f"{REG}/gitlab/v1/", status=404, body="404 page not found")
    features = client.ping()
    assert features == type(features)(None, frozenset(), False, False, False)
    assert not features.is_gitlab


@responses.activate
def test_tag_delete_detected_by_options_and_cached(client):
    responses.get(f"{V2}/", json={})
    responses.get(f"{REG}/gitlab/v1/", status=404)
    responses.add("OPTIONS", f"{V2}/g/app/tags/reference/latest", headers={"Allow": "DELETE, GET"})
    responses.add("OPTIONS", f"{V2}/g/other/tags/reference/latest", status=404)
    assert client.supports_tag_delete("g/app") is True
    assert client.supports_tag_delete("g/app") is True
    assert client.supports_tag_delete("g/other") is False
    assert len(responses.calls) == 4  # ping, probe, and one OPTIONS per repository


# --------------------------------------------------------------------------- manifests


@responses.activate
def test_get_manifest_sends_accept_and_verifies_digest(client):
    image = simple_image(1)
    headers = {"Docker-Content-Digest": image.digest, "Content-Type": DOCKER_MANIFEST}
    responses.get(f"{V2}/g/app/manifests/latest", body=image.manifest, headers=headers)
    manifest = client.get_manifest("g/app", "latest")
    assert manifest.digest == image.digest and manifest.total_size == image.total_size
    assert responses.calls[0].request.headers["Accept"] == MANIFEST_ACCEPT


@responses.activate
def test_get_manifest_by_digest_with_wrong_content(client):
    image, other = simple_image(1), simple_image(2)
    responses.get(
        f"{V2}/g/app/manifests/{image.digest}",
        body=other.manifest,
        headers={"Content-Type": DOCKER_MANIFEST},
    )
    with pytest.raises(ManifestError, match=f"expected {image.digest}"):
        client.get_manifest("g/app", image.digest)


@responses.activate
def test_get_manifest_header_digest_mismatch(client):
    image = simple_image(1)
    headers = {"Docker-Content-Digest": Digest.of(b"x"), "Content-Type": DOCKER_MANIFEST}
    responses.get(f"{V2}/g/app/manifests/v1", body=image.manifest, headers=headers)
    with pytest.raises(ManifestError, match="expected"):
        client.get_manifest("g/app", "v1")


@responses.activate
@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"{not json", DOCKER_MANIFEST, "not valid JSON"),
        (b'{"schemaVersion":2,"mediaType":"application/x-unknown"}', "", "unknown manifest"),
        (b'{"schemaVersion":2,"config":{}}', "application/x-weird", "unknown manifest"),
        (b'{"schemaVersion":2,"mediaType":"' + OCI_INDEX.encode() + b'"}', OCI_INDEX, "manifests"),
    ],
)
def test_malformed_and_unknown_manifests(client, body, content_type, message):
    responses.get(f"{V2}/g/app/manifests/x", body=body, headers={"Content-Type": content_type})
    with pytest.raises(ManifestError, match=message):
        client.get_manifest("g/app", "x")


@responses.activate
def test_manifest_digest_by_head(client):
    digest = Digest.of(b"m")
    responses.head(f"{V2}/g/app/manifests/v1", headers={"Docker-Content-Digest": digest})
    assert client.manifest_digest("g/app", "v1") == digest
    assert responses.calls[0].request.headers["Accept"] == MANIFEST_ACCEPT


@responses.activate
def test_manifest_digest_falls_back_to_get_without_header(client):
    index = build_index([simple_image(1), simple_image(2, architecture="arm64")], oci=True)
    responses.head(f"{V2}/g/app/manifests/v1")
    headers = {"Content-Type": OCI_INDEX}
    responses.get(f"{V2}/g/app/manifests/v1", body=index.manifest, headers=headers)
    assert client.manifest_digest("g/app", "v1") == index.digest


@responses.activate
def test_manifest_head_404(client):
    responses.head(f"{V2}/g/app/manifests/gone", status=404)
    with pytest.raises(RegistryNotFound):
        client.manifest_digest("g/app", "gone")


@responses.activate
def test_put_manifest_is_retried_as_idempotent(client, auth):
    image = simple_image(1)
    responses.put(f"{V2}/g/app/manifests/v1", status=503)
    responses.put(
        f"{V2}/g/app/manifests/v1", status=201, headers={"Docker-Content-Digest": image.digest}
    )
    assert client.put_manifest("g/app", "v1", image.manifest, DOCKER_MANIFEST) == image.digest
    assert len(responses.calls) == 2
    assert responses.calls[1].request.headers["Content-Type"] == DOCKER_MANIFEST
    assert responses.calls[1].request.body == image.manifest
    assert auth.asked[-1] == (Scope.repository("g/app", "pull", "push"),)


def test_delete_manifest_refuses_tags_without_a_request(client):
    with pytest.raises(ValidationError, match="use SafeDelete"):
        client.delete_manifest("g/app", "latest")
    with pytest.raises(ValidationError):
        client.delete_manifest("g/app", "sha256:short")
    assert client.request_count == 0


@responses.activate
def test_delete_manifest_by_digest(client, auth):
    digest = Digest.of(b"m")
    responses.delete(f"{V2}/g/app/manifests/{digest}", status=202)
    client.delete_manifest("g/app", digest)
    assert auth.asked[-1] == (Scope.repository("g/app", "delete"),)


@responses.activate
def test_delete_manifest_when_delete_disabled(client):
    digest = Digest.of(b"m")
    body = {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]}
    responses.delete(f"{V2}/g/app/manifests/{digest}", status=405, json=body)
    with pytest.raises(RegistryUnsupported) as info:
        client.delete_manifest("g/app", digest)
    assert info.value.codes == ("UNSUPPORTED",)


# --------------------------------------------------------------------------- blobs


@responses.activate
def test_blob_size(client):
    digest = Digest.of(b"abc")
    responses.head(f"{V2}/g/app/blobs/{digest}", headers={"Content-Length": "3"})
    assert client.blob_size("g/app", digest) == 3
    responses.replace(responses.HEAD, f"{V2}/g/app/blobs/{digest}", status=404)
    assert client.blob_size("g/app", digest) is None


@responses.activate
def test_get_blob_redirect_drops_authorization_and_verifies(client):
    data = b'{"created": "2024-01-01T00:00:00Z"}'
    digest = Digest.of(data)
    storage = "https://s3.example.net/bucket/blob?X-Amz-Signature=sig"
    responses.get(f"{V2}/g/app/blobs/{digest}", status=307, headers={"Location": storage})
    responses.get(storage, body=data)
    config = client.get_config("g/app", digest)
    assert config.created.year == 2024
    assert responses.calls[0].request.headers["Authorization"].startswith("Bearer ")
    assert "Authorization" not in responses.calls[1].request.headers


@responses.activate
def test_get_blob_with_wrong_content(client):
    digest = Digest.of(b"right")
    responses.get(f"{V2}/g/app/blobs/{digest}", body=b"wrong")
    with pytest.raises(RegistryError, match="DIGEST_INVALID") as info:
        client.get_blob("g/app", digest)
    assert info.value.codes == ("DIGEST_INVALID",)


@pytest.mark.parametrize(
    "location",
    [
        "/v2/g/app/blobs/uploads/uuid-1?_state=abc",
        f"{REG}/v2/g/app/blobs/uploads/uuid-1?_state=abc",
    ],
)
@responses.activate
def test_upload_blob_post_then_put_keeping_state(client, location):
    data = b"layer bytes"
    digest = Digest.of(data)
    responses.head(f"{V2}/g/app/blobs/{digest}", status=404)
    responses.post(f"{V2}/g/app/blobs/uploads/", status=202, headers={"Location": location})
    responses.put(f"{V2}/g/app/blobs/uploads/uuid-1", status=201)
    assert client.upload_blob("g/app", data) == digest
    put = responses.calls[2].request
    assert _query(responses.calls[2]) == {"_state": ["abc"], "digest": [digest]}
    assert put.body == data
    assert put.headers["Authorization"].startswith("Bearer ")


@responses.activate
def test_upload_blob_skipped_when_present(client):
    data = b"already there"
    responses.head(f"{V2}/g/app/blobs/{Digest.of(data)}", headers={"Content-Length": "13"})
    assert client.upload_blob("g/app", data) == Digest.of(data)
    assert len(responses.calls) == 1


@responses.activate
def test_upload_location_on_another_host_gets_no_token(client):
    data = b"x"
    responses.head(f"{V2}/g/app/blobs/{Digest.of(data)}", status=404)
    other = "https://upload.example.net/up/1?_state=s"
    responses.post(f"{V2}/g/app/blobs/uploads/", status=202, headers={"Location": other})
    responses.put("https://upload.example.net/up/1", status=201)
    client.upload_blob("g/app", data)
    assert "Authorization" not in responses.calls[2].request.headers


@responses.activate
def test_mount_blob_mounted(client, auth):
    digest = Digest.of(b"shared")
    responses.post(f"{V2}/g/app/blobs/uploads/", status=201)
    assert client.mount_blob("g/app", digest, "g/base") is True
    assert _query(responses.calls[0]) == {"mount": [digest], "from": ["g/base"]}
    assert Scope.repository("g/base", "pull") in auth.asked[-1]


@responses.activate
def test_mount_blob_not_mounted_cancels_upload(client):
    digest = Digest.of(b"shared")
    location = "/v2/g/app/blobs/uploads/uuid-2?_state=q"
    responses.post(f"{V2}/g/app/blobs/uploads/", status=202, headers={"Location": location})
    responses.delete(f"{V2}/g/app/blobs/uploads/uuid-2", status=204)
    assert client.mount_blob("g/app", digest, "g/base") is False
    assert responses.calls[1].request.method == "DELETE"


@responses.activate
def test_delete_manifest_is_retried_and_404_after_a_lost_answer_means_done(client):
    # An idempotent DELETE: a 503 is retried; with missing_ok a 404 is "already gone".
    digest = Digest.of(b"m")
    url = f"{V2}/g/app/manifests/{digest}"
    responses.delete(url, status=503)
    responses.delete(url, status=404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
    assert client.delete_manifest("g/app", digest, missing_ok=True) is False
    assert [c.request.method for c in responses.calls] == ["DELETE", "DELETE"]
    responses.delete(url, status=404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
    with pytest.raises(RegistryNotFound):
        client.delete_manifest("g/app", digest)


@responses.activate
def test_upload_blob_starts_over_after_a_lost_put_answer(client):
    data = b"config"
    digest = Digest.of(data)
    blob = f"{V2}/g/app/blobs/{digest}"
    location = "/v2/g/app/blobs/uploads/u1?_state=s"
    responses.head(blob, status=404)  # not there yet
    responses.post(f"{V2}/g/app/blobs/uploads/", status=202, headers={"Location": location})
    responses.put(f"{V2}/g/app/blobs/uploads/u1", status=503)  # the PUT is not repeated as is
    responses.head(blob, status=200, headers={"Content-Length": str(len(data))})  # it arrived
    assert client.upload_blob("g/app", data) == digest
    methods = [c.request.method for c in responses.calls]
    assert methods == ["HEAD", "POST", "PUT", "HEAD"]


# --------------------------------------------------------------------------- safe delete


def _tag_delete_registry(manifests: dict[str, bytes]):
    responses.get(f"{V2}/", json={}, headers={"Gitlab-Container-Registry-Features": "tag_delete"})
    responses.get(f"{REG}/gitlab/v1/", status=401)
    responses.get(f"{V2}/g/app/tags/list", json={"tags": ["a", "b", "c", "keep"]})
    for tag, raw in manifests.items():
        responses.get(
            f"{V2}/g/app/manifests/{tag}",
            body=raw,
            headers={"Content-Type": DOCKER_MANIFEST, "Docker-Content-Digest": Digest.of(raw)},
        )


@responses.activate
def test_delete_tags_with_tag_delete_feature(client):
    image = simple_image(1)
    _tag_delete_registry({"a": image.manifest, "b": image.manifest})
    responses.delete(f"{V2}/g/app/manifests/a", status=202)
    responses.delete(f"{V2}/g/app/manifests/b", status=404)  # gone meanwhile: already done
    result = SafeDelete(client).delete_tags("g/app", ["a", "b", "a", "nope"])
    assert result == TagDeleteResult(("a",), ("nope", "b"), "tag_delete")
    deletes = [c.request.url for c in responses.calls if c.request.method == "DELETE"]
    assert deletes == [f"{V2}/g/app/manifests/a", f"{V2}/g/app/manifests/b"]  # never "keep"


@responses.activate
def test_delete_tag_by_name_is_retried(client):
    _tag_delete_registry({})
    responses.delete(f"{V2}/g/app/manifests/a", status=503)
    responses.delete(f"{V2}/g/app/manifests/a", status=202)
    assert client.delete_tag("g/app", "a") is True
    assert [c.request.method for c in responses.calls] == ["DELETE", "DELETE"]


@responses.activate
def test_delete_tags_falls_back_to_tags_reference_path(client):
    _tag_delete_registry({"c": simple_image(2).manifest})
    refused = {"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match"}]}
    responses.delete(f"{V2}/g/app/manifests/c", status=400, json=refused)
    responses.delete(f"{V2}/g/app/tags/reference/c", status=202)
    assert SafeDelete(client).delete_tags("g/app", ["c"]).deleted == ("c",)


@responses.activate
def test_delete_tags_nothing_present_makes_no_change(client):
    responses.get(f"{V2}/g/app/tags/list", json={"tags": ["keep"]})
    result = SafeDelete(client).delete_tags("g/app", ["x", "y"])
    assert result == TagDeleteResult((), ("x", "y"), "none")
    assert [c.request.method for c in responses.calls] == ["GET"]


def test_delete_tags_validates_names_first(client):
    with pytest.raises(ValidationError, match="tag"):
        SafeDelete(client).delete_tags("g/app", ["ok", "not ok"])
    assert SafeDelete(client).delete_tags("g/app", []) == TagDeleteResult((), (), "none")
    assert client.request_count == 0


def test_placeholder_is_unique_config_only_and_marked():
    one, two = Placeholder.create(), Placeholder.create()
    assert one.manifest != two.manifest and one.config != two.config
    document = json.loads(one.manifest)
    assert document["mediaType"] == DOCKER_MANIFEST and document["layers"] == []
    assert document["config"]["digest"] == "sha256:" + hashlib.sha256(one.config).hexdigest()
    assert document["config"]["size"] == len(one.config)
    assert PLACEHOLDER_ANNOTATION in document["annotations"]
    assert one.digest == "sha256:" + hashlib.sha256(one.manifest).hexdigest()
    assert is_placeholder(parse_manifest(one.manifest))
    assert not is_placeholder(parse_manifest(simple_image(3).manifest))


# --------------------------------------------------------------------------- content cache


def test_cache_refuses_content_that_does_not_match(tmp_path):
    cache = ContentCache(tmp_path)
    with pytest.raises(ValidationError, match="not cached"):
        cache.put(Digest.of(b"a"), b"b")
    assert cache.get(Digest.of(b"a")) is None
    assert list(tmp_path.rglob("*")) == []


def test_cache_memory_only_counts_hits_and_misses():
    cache = ContentCache()
    digest = Digest.of(b"manifest")
    assert cache.get(digest) is None
    cache.put(digest, b"manifest")
    assert cache.get(digest) == b"manifest" and cache.get(digest) == b"manifest"
    assert (cache.hits, cache.misses) == (2, 1)
    assert digest in cache and "sha256:nope" not in cache and 5 not in cache
    with pytest.raises(ValidationError, match="no directory"):
        cache.path(digest)


def test_cache_disk_layout_and_no_temporary_files(tmp_path):
    cache = ContentCache(tmp_path)
    digest = Digest.of(b"config")
    cache.put(digest, b"config")
    path = tmp_path / "sha256" / digest.hex[:2] / digest.hex
    assert cache.path(digest) == path and path.read_bytes() == b"config"
    assert [p.name for p in path.parent.iterdir()] == [digest.hex]
    fresh = ContentCache(tmp_path)  # a new process reads what the first wrote
    assert fresh.get(digest) == b"config" and fresh.hits == 1


def test_cache_drops_a_corrupt_file(tmp_path):
    cache = ContentCache(tmp_path)
    digest = Digest.of(b"good")
    cache.put(digest, b"good")
    cache.path(digest).write_bytes(b"evil")
    fresh = ContentCache(tmp_path)
    assert fresh.get(digest) is None and fresh.misses == 1
    assert not cache.path(digest).exists()


def test_cache_memory_is_bounded_and_disk_keeps_the_rest(tmp_path):
    cache = ContentCache(tmp_path, memory_entries=2)
    items = [f"item {i}".encode() for i in range(5)]
    for item in items:
        cache.put(Digest.of(item), item)
    assert len(cache._memory) == 2
    assert all(cache.get(Digest.of(item)) == item for item in items)
    memory_only = ContentCache(memory_entries=1)
    for item in items[:2]:
        memory_only.put(Digest.of(item), item)
    assert memory_only.get(Digest.of(items[0])) is None


def test_cache_is_thread_safe(tmp_path):
    cache = ContentCache(tmp_path)
    blobs = [f"blob {i}".encode() * 50 for i in range(20)]

    def work(index: int) -> bool:
        data = blobs[index % len(blobs)]
        digest = Digest.of(data)
        cache.put(digest, data)
        return cache.get(digest) == data

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(400)))
    assert cache.hits + cache.misses == 400
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == len(blobs) and not any(p.name.startswith(".tmp") for p in files)


def test_default_cache_dir_is_under_the_user_cache():
    path = default_cache_dir()
    assert path.name == "content" and path.parent.name == "regops"


class CountingClient:
    """Stands in for RegistryClient: serves one image, counts calls, slow on purpose."""

    url = "https://registry.example.com"

    def __init__(self, image, delay: float = 0.0) -> None:
        self.image = image
        self.calls = 0
        self.delay = delay
        self.lock = threading.Lock()

    def _count(self) -> None:
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)  # long enough for every other thread to ask meanwhile

    def get_manifest(self, repo, digest):
        self._count()
        return parse_manifest(self.image.manifest, digest=digest)

    def get_blob(self, repo, digest):
        self._count()
        return self.image.config


def test_resolver_fetches_each_digest_once_even_under_concurrency():
    image = simple_image(7)
    client = CountingClient(image, delay=0.05)
    resolver = TagResolver(client, ContentCache())  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=16) as pool:
        manifests = list(pool.map(lambda _: resolver.manifest("g/a", image.digest), range(16)))
        configs = list(pool.map(lambda _: resolver.config("g/b", image.config_digest), range(16)))
    assert client.calls == 2  # one manifest, one config, whatever the number of threads
    assert all(m.digest == image.digest for m in manifests)
    assert all(c.created is not None for c in configs)
    assert resolver.requests == 2 and resolver.memo_hits == 30
