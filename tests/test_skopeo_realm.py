"""Registry tokens from the stand-in's /jwt/auth, used by skopeo and by regops' RealmAuth."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import jwt
import pytest
import requests

from regops.errors import RegistryDenied, RegistryUnauthorized, TokenError
from regops.registry.client import RegistryClient
from regops.registry.keys import load_certificate
from regops.registry.tokens import RealmAuth
from tests.skopeo import skopeo_list_tags

pytestmark = pytest.mark.registry


def get_token(sandbox, username, password, *scopes, service="container_registry"):
    return requests.get(
        f"{sandbox.gitlab_url}/jwt/auth",
        params=[("service", service), *(("scope", s) for s in scopes)],
        auth=(username, password) if username else None,
        timeout=10,
    )


def access(sandbox, answer) -> dict[str, list[str]]:
    """The token's grants, verified with the sandbox certificate: {"type:name": actions}."""
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"token"}  # GitLab's JwtController answers only the token
    key = load_certificate(sandbox.cert_path).public_key()
    claims = jwt.decode(
        body["token"],
        key,
        algorithms=["RS256"],
        audience="container_registry",
        issuer="gitlab-issuer",
    )
    return {f"{a['type']}:{a['name']}": a["actions"] for a in claims["access"]}, claims


def test_developer_gets_pull_push_delete_on_member_project(sandbox):
    token = sandbox.user_token.reveal()
    grants, claims = access(
        sandbox,
        get_token(
            sandbox,
            "dev",
            token,
            "repository:apps/web/frontend:pull,push,delete",
            "repository:platform/tools/ci:pull registry:catalog:*",
        ),
    )
    assert claims["sub"] == "dev"
    assert claims["exp"] - claims["iat"] == 300  # container_registry_token_expire_delay 5 min
    assert grants == {"repository:apps/web/frontend": ["delete", "pull", "push"]}


def test_reporter_only_pulls(sandbox):
    token = sandbox.user("viewer").token.reveal()
    grants, _ = access(
        sandbox, get_token(sandbox, "viewer", token, "repository:apps/web:pull,push,delete")
    )
    assert grants == {"repository:apps/web": ["pull"]}


def test_admin_gets_catalog_and_everything(sandbox):
    token = sandbox.admin_token.reveal()
    grants, _ = access(
        sandbox,
        get_token(sandbox, "root", token, "registry:catalog:*", "repository:platform/tools:*"),
    )
    assert grants == {"registry:catalog": ["*"], "repository:platform/tools": ["*"]}


def test_no_access_outside_projects(sandbox):
    token = sandbox.admin_token.reveal()
    grants, _ = access(sandbox, get_token(sandbox, "root", token, "repository:nowhere/x:pull"))
    assert grants == {}


def test_bad_credentials_are_401_like_gitlab(sandbox):
    answer = get_token(sandbox, "dev", "glpat-wrong-wrong-wrong", "repository:apps/web:pull")
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"
    wrong_user = get_token(sandbox, "root", sandbox.user_token.reveal(), "repository:apps/web:pull")
    assert wrong_user.status_code == 401


def test_unknown_service_is_404_and_anonymous_without_scope_403(sandbox):
    assert (
        get_token(sandbox, "dev", sandbox.user_token.reveal(), service="other").status_code == 404
    )
    assert get_token(sandbox, None, None).status_code == 403


def test_realm_auth_connection_reads_tags_but_not_catalog(sandbox, user_connection):
    registry = user_connection.registry
    assert "latest" in registry.tags("apps/web")
    with pytest.raises((RegistryDenied, RegistryUnauthorized)):
        list(registry.catalog())
    with pytest.raises((RegistryDenied, RegistryUnauthorized)):
        registry.tags("platform/tools/ci")  # not a member


def test_realm_on_gitlab_port_needs_gitlab_origin_trusted(sandbox):
    """Registry and GitLab stand-in share 127.0.0.1 on two ports: the port decides."""
    gitlab, registry = urlsplit(sandbox.gitlab_url), urlsplit(sandbox.registry_url)
    assert gitlab.hostname == registry.hostname and gitlab.port != registry.port
    token = sandbox.user_token.reveal()
    bare = RegistryClient(sandbox.registry_url, RealmAuth("dev", token))
    with pytest.raises(TokenError, match=f"realm http://127.0.0.1:{gitlab.port}: not the"):
        bare.tags("apps/web")
    assert bare.request_count == 1  # the registry's 401; nothing went to the realm
    trusted = RealmAuth("dev", token, allowed_origins=[sandbox.gitlab_url])
    assert "latest" in RegistryClient(sandbox.registry_url, trusted).tags("apps/web")


def test_key_auth_connection_lists_catalog(sandbox_connection):
    catalog = set(sandbox_connection.registry.catalog())
    assert {"apps/web", "platform/tools/ci", "apps/mobile/android"} <= catalog


@pytest.mark.skopeo
def test_skopeo_logs_in_through_jwt_auth_and_lists_tags(sandbox):
    result = skopeo_list_tags(sandbox.registry_host, "apps/web", "dev", sandbox.user_token.reveal())
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert sorted(listed["Tags"]) == sandbox.registry.tags("apps/web")
    assert "latest" in listed["Tags"]


@pytest.mark.skopeo
def test_skopeo_is_refused_outside_membership(sandbox):
    result = skopeo_list_tags(
        sandbox.registry_host, "platform/tools/ci", "dev", sandbox.user_token.reveal()
    )
    assert result.returncode != 0
    assert "unauthorized" in result.stderr.lower() or "denied" in result.stderr.lower()
