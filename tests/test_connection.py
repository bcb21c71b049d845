"""Connection: client wiring per registry auth mode, the default connection, describe()."""

from __future__ import annotations

import pytest
import responses

from regops import connection as connection_module
from regops.config import resolve_settings
from regops.connection import Connection, connect, default_connection, set_default_connection
from regops.errors import ConfigError, KeyFileError, RegistryUnauthorized
from regops.registry.client import RegistryClient
from regops.registry.tokens import AnonymousAuth, BasicAuth, KeyAuth, RealmAuth, Scope
from regops.secrets import Secret
from tests.fixtures_registry import TEST_ISSUER, TEST_SERVICE

GITLAB = "https://gitlab.example.com"
TOKEN = "glpat-connection-test-ZZ99"
# doc/api/users.md "For admin" (trimmed)
ADMIN_USER = {
    "id": 1,
    "username": "root",
    "name": "Administrator",
    "state": "active",
    "is_admin": True,
}
# doc/api/version.md
VERSION = {"version": "8.13.0-pre", "revision": "4e963fe"}


def settings(tmp_path, **explicit):
    explicit.setdefault("url", GITLAB)
    explicit.setdefault("private_token", TOKEN)
    return resolve_settings(environ={}, home=tmp_path, system_root=tmp_path, **explicit)


@pytest.fixture(autouse=True)
def no_default():
    set_default_connection(None)
    yield
    set_default_connection(None)


def test_gitlab_client_and_repr(tmp_path):
    conn = Connection(
        settings(tmp_path, oauth_token=TOKEN, private_token=None, registry_url="none")
    )
    assert conn.gitlab.url == GITLAB and conn.gitlab.token_kind == "oauth"
    assert conn.registry is None and conn.registry_host is None
    text = repr(conn) + repr(conn.gitlab) + repr(conn.settings)
    assert TOKEN not in text
    assert repr(conn) == f"<Connection gitlab={GITLAB} registry=- (none)>"


def test_timeout_and_verify_reach_the_transport(tmp_path):
    conn = Connection(settings(tmp_path, timeout=7, ssl_verify=False))
    assert conn.gitlab.session.settings.timeout == (3.05, 7.0)
    assert conn.gitlab.session.verify is False


def test_registry_host_prefers_gitlab_yml_host(tmp_path):
    conn = Connection(
        settings(
            tmp_path,
            registry_url="http://127.0.0.1:5000",
            registry_auth="anonymous",
            registry_host="registry.example.com:5050",
        )
    )
    assert conn.registry_host == "registry.example.com:5050"
    conn = Connection(
        settings(tmp_path, registry_url="https://reg.example.com:5050", registry_auth="anonymous")
    )
    assert conn.registry_host == "reg.example.com:5050"
    assert isinstance(conn.registry, RegistryClient)
    assert isinstance(conn.registry.auth, AnonymousAuth)


def test_basic_auth(tmp_path):
    conn = Connection(
        settings(
            tmp_path,
            registry_url="https://r.example",
            registry_username="bob",
            registry_password="pw-secret-77",
        )
    )
    assert conn.settings.registry_auth == "basic"
    assert isinstance(conn.registry.auth, BasicAuth)
    assert "pw-secret-77" not in repr(conn.registry) + repr(conn)


@responses.activate
def test_realm_auth_asks_gitlab_for_the_user_name_once(tmp_path):
    users = responses.get(GITLAB + "/api/v4/user", json=ADMIN_USER)
    responses.get(GITLAB + "/api/v4/version", json=VERSION)
    conn = Connection(settings(tmp_path, registry_url="https://registry.example.com:5050"))
    assert conn.settings.registry_auth == "realm"
    auth = conn.registry.auth
    assert isinstance(auth, RealmAuth)
    assert auth.username == "root"
    assert auth.token == Secret(TOKEN)
    # GitLab's exact origin only (the registry's own is trusted through bind()).
    assert auth.allowed_origins == {("https", "gitlab.example.com", 443)}
    assert conn.registry is conn.registry  # built once
    conn.describe()
    assert users.call_count == 1


@responses.activate
def test_realm_user_name_failure_is_a_config_error(tmp_path):
    responses.get(GITLAB + "/api/v4/user", status=401, json={"message": "401 Unauthorized"})
    conn = Connection(settings(tmp_path, registry_url="https://r.example"))
    with pytest.raises(ConfigError, match="REGOPS_REGISTRY_USER") as caught:
        _ = conn.registry
    assert TOKEN not in str(caught.value)


def test_realm_with_explicit_user_sends_nothing(tmp_path):
    conn = Connection(
        settings(tmp_path, registry_url="https://r.example", registry_username="ci-bot")
    )
    assert conn.registry.auth.username == "ci-bot"  # no HTTP mock: a request would fail


def test_key_auth_missing_key_file(tmp_path):
    conn = Connection(
        settings(
            tmp_path, registry_url="https://r.example", registry_key=str(tmp_path / "missing.key")
        )
    )
    with pytest.raises(KeyFileError):
        _ = conn.registry


@pytest.mark.registry
def test_key_auth_against_the_real_registry(tmp_path, registry_server, signing_material):
    conn = Connection(
        settings(
            tmp_path,
            registry_url=registry_server.url,
            registry_key=str(signing_material.key_path),
            registry_issuer=TEST_ISSUER,
            registry_service=TEST_SERVICE,
        )
    )
    assert isinstance(conn.registry.auth, KeyAuth)
    assert conn.registry.auth.minter.issuer == TEST_ISSUER
    conn.registry.ping()
    assert isinstance(list(conn.registry.catalog()), list)
    assert conn.registry_host == registry_server.url.split("://", 1)[1]


@pytest.mark.registry
def test_wrong_issuer_is_refused_by_the_real_registry(tmp_path, registry_server, signing_material):
    conn = Connection(
        settings(
            tmp_path,
            registry_url=registry_server.url,
            registry_key=str(signing_material.key_path),
            registry_issuer="not-the-issuer",
            registry_service=TEST_SERVICE,
        )
    )
    with pytest.raises(RegistryUnauthorized):
        conn.registry.tags("some/repo")
    assert Scope.repository("some/repo", "pull")  # scope building stays importable


@responses.activate
def test_describe(tmp_path):
    responses.get(GITLAB + "/api/v4/user", json=ADMIN_USER)
    responses.get(GITLAB + "/api/v4/version", json=VERSION)
    conn = Connection(
        settings(tmp_path, registry_url="https://r.example:5050", registry_auth="anonymous")
    )
    info = conn.describe()
    assert info == {
        "gitlab_url": GITLAB,
        "gitlab_version": "8.13.0-pre",
        "user": "root",
        "is_admin": True,
        "registry_url": "https://r.example:5050",
        "registry_host": "r.example:5050",
        "registry_auth": "anonymous",
        "registry_source": "argument",
    }


@responses.activate
def test_the_registry_is_asked_of_gitlab_when_not_configured(tmp_path):
    # doc/api/projects.md: a project's container_registry_image_prefix names the registry
    responses.get(
        GITLAB + "/api/v4/projects",
        json=[{"id": 7, "container_registry_image_prefix": "registry.example.com:5050/g/app"}],
    )
    responses.get(GITLAB + "/api/v4/user", json=ADMIN_USER)  # realm mode: whose token
    conn = Connection(settings(tmp_path))
    registry = conn.registry
    assert registry is not None and registry.url == "https://registry.example.com:5050"
    assert conn.settings.registry_auth == "realm"  # GitLab's /jwt/auth with the same token
    assert conn.registry_host == "registry.example.com:5050"
    assert "inferred from GitLab" in conn.settings.sources["registry_url"]
    assert len(responses.calls) == 2  # the project, then the token's user name, once
    conn.registry  # noqa: B018
    assert len(responses.calls) == 2


@responses.activate
def test_no_registry_when_gitlab_tells_of_none(tmp_path):
    responses.get(GITLAB + "/api/v4/projects", json=[{"id": 7}])  # registry off: no prefix
    assert Connection(settings(tmp_path)).registry is None
    conn = Connection(settings(tmp_path, registry_url="none"))  # "none": not even asked
    assert conn.registry is None and len(responses.calls) == 1


def test_connect_sets_the_default(tmp_path):
    conn = connect(settings(tmp_path))
    assert default_connection() is conn
    other = connect(url="https://other.example", private_token=TOKEN)
    assert default_connection() is other and other.gitlab.url == "https://other.example"


def test_default_connection_from_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(
        connection_module, "resolve_settings", lambda: settings(tmp_path, url="https://env.example")
    )
    conn = default_connection()
    assert conn.gitlab.url == "https://env.example"
    assert default_connection() is conn


def test_no_default_connection(tmp_path, monkeypatch):
    monkeypatch.setattr(
        connection_module,
        "resolve_settings",
        lambda: resolve_settings(environ={}, home=tmp_path, system_root=tmp_path),
    )
    with pytest.raises(ConfigError, match=r"no connection: call regops\.connect\(") as caught:
        default_connection()
    assert "no GitLab URL" in str(caught.value)


def test_connection_rejects_incomplete_settings(tmp_path):
    from regops.config import collect_settings

    incomplete = collect_settings(environ={}, home=tmp_path, system_root=tmp_path)
    with pytest.raises(ConfigError, match="no GitLab URL"):
        Connection(incomplete)


def test_connect_refuses_settings_and_keywords_together():
    from regops.config import resolve_settings
    from regops.connection import connect
    from regops.errors import ConfigError

    settings = resolve_settings(
        url="https://gitlab.example.com", private_token="glpat-example-000", environ={}
    )
    with pytest.raises(ConfigError, match="not both") as info:
        connect(settings, registry_url="https://registry.example.com")
    assert "glpat-example-000" not in str(info.value)
