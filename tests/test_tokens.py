"""Tokens: scopes, minting like GitLab, challenges, and the auth strategies.

Acceptance is checked against the REAL docker-registry (fixtures_registry).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regops.errors import KeyFileError, TokenError, ValidationError
from regops.registry.keys import generate_key, libtrust_kid
from regops.registry.tokens import (
    AnonymousAuth,
    BasicAuth,
    KeyAuth,
    RealmAuth,
    Scope,
    TokenMinter,
    decode_unverified,
    normalize_scopes,
    parse_challenge,
)
from regops.secrets import Secret
from tests.fixtures_registry import TEST_ISSUER, TEST_SERVICE, push_blob
from tests.leaks import assert_hidden

CATALOG = Scope.catalog()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- scopes


def test_scope_parse_and_str_round_trip():
    scope = Scope.parse("repository:group/app:pull,push")
    assert scope == Scope("repository", "group/app", ("pull", "push"))
    assert str(scope) == "repository:group/app:pull,push"
    assert Scope.parse("repository:localhost:5000/app:pull").name == "localhost:5000/app"
    assert str(Scope.catalog()) == "registry:catalog:*"
    assert Scope.repository("a/b") == Scope("repository", "a/b", ("pull",))


@pytest.mark.parametrize(
    "text", ["", "repository", "repository:app", "repository::pull", ":app:pull", "r:a:", "r:a:P!"]
)
def test_scope_parse_rejects_malformed(text):
    with pytest.raises(ValidationError) as info:
        Scope.parse(text)
    assert info.value.field == "scope"


def test_normalize_scopes_merges_and_orders():
    scopes = normalize_scopes(
        ["repository:b:push", Scope.repository("a"), "repository:b:pull", "repository:b:push"]
    )
    assert scopes == (
        Scope("repository", "a", ("pull",)),
        Scope("repository", "b", ("pull", "push")),
    )


# --------------------------------------------------------------------------- minting


def test_minted_token_has_gitlab_shape(minter, signing_material):
    now = 1_700_000_000
    token = minter.mint([Scope.repository("g/p", "pull", "push"), CATALOG], now=now)
    assert isinstance(token, Secret)
    decoded = decode_unverified(token)
    header, claims = decoded["header"], decoded["claims"]
    assert header == {"alg": "RS256", "typ": "JWT", "kid": minter.kid}
    assert claims["iss"] == TEST_ISSUER
    assert claims["aud"] == TEST_SERVICE  # a string, as GitLab sends it
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (now, now - 5, now + 300)
    assert "sub" not in claims
    assert len(claims["jti"]) >= 32
    assert claims["access"] == [
        {"type": "registry", "name": "catalog", "actions": ["*"]},
        {"type": "repository", "name": "g/p", "actions": ["pull", "push"]},
    ]
    # The signature verifies with the certificate's public key.
    public = signing_material.key.public_key()
    jwt.decode(token.reveal(), public, algorithms=["RS256"], audience=TEST_SERVICE, leeway=10**10)


def test_subject_and_unique_jti(signing_material):
    minter = TokenMinter(signing_material.key, subject="root")
    first, second = (decode_unverified(minter.mint([CATALOG]))["claims"] for _ in range(2))
    assert first["sub"] == "root"
    assert first["jti"] != second["jti"]


def test_libtrust_kid_format(signing_material):
    kid = libtrust_kid(signing_material.key)
    groups = kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    assert set(kid.replace(":", "")) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert libtrust_kid(signing_material.key.public_key()) == kid


def test_minter_needs_a_key_object():
    with pytest.raises(KeyFileError):
        TokenMinter("/etc/gitlab/registry.key")  # type: ignore[arg-type]


def test_reprs_hide_secrets(minter, signing_material):
    token = minter.mint([CATALOG])
    assert_hidden(token, repr(token))
    assert "PRIVATE" not in repr(minter) and minter.kid in repr(minter)
    basic = BasicAuth("admin", "s3cret-password")
    realm = RealmAuth("admin", "glpat-very-secret-token")
    assert "s3cret-password" not in repr(basic)
    assert "glpat-very-secret-token" not in repr(realm)
    assert "glpat-very-secret-token" not in repr(realm.__dict__)


# --------------------------------------------------------------------------- the real registry


def _get(session, url, token):
    return session.get(url, headers={"Authorization": f"Bearer {token.reveal()}"})


@pytest.mark.registry
def test_registry_accepts_minted_catalog_token(registry_server, minter, http_session):
    response = _get(http_session, f"{registry_server.url}/v2/_catalog", minter.mint([CATALOG]))
    assert response.status_code == 200
    assert "repositories" in response.json()


@pytest.mark.registry
def test_registry_accepts_push_with_push_scope(registry_server, minter, http_session):
    repo = "tokens/push"
    auth = "Bearer " + minter.mint([Scope.repository(repo, "pull", "push")]).reveal()
    digest = push_blob(http_session, registry_server.url, auth, repo, b"token push test blob")
    head = http_session.head(
        f"{registry_server.url}/v2/{repo}/blobs/{digest}", headers={"Authorization": auth}
    )
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(b"token push test blob")


@pytest.mark.registry
def test_registry_refuses_push_with_pull_scope(registry_server, minter, http_session):
    token = minter.mint([Scope.repository("tokens/pullonly", "pull")])
    response = http_session.post(
        f"{registry_server.url}/v2/tokens/pullonly/blobs/uploads/",
        headers={"Authorization": f"Bearer {token.reveal()}"},
    )
    assert response.status_code == 401
    challenge = parse_challenge(response.headers["WWW-Authenticate"])
    assert challenge.error == "insufficient_scope"
    assert Scope("repository", "tokens/pullonly", ("pull", "push")) in [
        normalize_scopes([s])[0] for s in challenge.scopes
    ]


def _refused(session, server, token) -> str | None:
    response = _get(session, f"{server.url}/v2/_catalog", token)
    assert response.status_code == 401, response.text
    return parse_challenge(response.headers.get("WWW-Authenticate")).error


@pytest.mark.registry
def test_registry_refuses_wrong_key(registry_server, http_session):
    other = TokenMinter(generate_key("rsa", 2048), issuer=TEST_ISSUER, service=TEST_SERVICE)
    assert _refused(http_session, registry_server, other.mint([CATALOG])) == "invalid_token"


@pytest.mark.registry
def test_registry_refuses_wrong_issuer(registry_server, signing_material, http_session):
    wrong = TokenMinter(signing_material.key, issuer="someone-else", service=TEST_SERVICE)
    assert _refused(http_session, registry_server, wrong.mint([CATALOG])) == "invalid_token"


@pytest.mark.registry
def test_registry_refuses_wrong_audience(registry_server, signing_material, http_session):
    wrong = TokenMinter(signing_material.key, issuer=TEST_ISSUER, service="other_registry")
    assert _refused(http_session, registry_server, wrong.mint([CATALOG])) == "invalid_token"


@pytest.mark.registry
def test_registry_refuses_expired_token(registry_server, minter, http_session):
    # Expired more than the registry's 60 s leeway ago.
    token = minter.mint([CATALOG], now=time.time() - 3600)
    assert _refused(http_session, registry_server, token) == "invalid_token"
    fresh = _get(http_session, f"{registry_server.url}/v2/_catalog", minter.mint([CATALOG]))
    assert fresh.status_code == 200


@pytest.mark.registry
def test_registry_looks_the_key_up_by_libtrust_kid(registry_server, minter, signing_material):
    from regops.http import make_session

    session = make_session()
    claims = minter.claims([CATALOG])
    url = f"{registry_server.url}/v2/_catalog"
    for kid, status in ((minter.kid, 200), ("AAAA:" + minter.kid[5:], 401)):
        raw = jwt.encode(claims, signing_material.key, algorithm="RS256", headers={"kid": kid})
        assert session.get(url, headers={"Authorization": f"Bearer {raw}"}).status_code == status


@pytest.mark.registry
def test_registry_accepts_es256_tokens(tmp_path, http_session):
    from regops.registry.keys import write_key_and_certificate
    from regops.sandbox.registry_server import RegistryServer

    key = generate_key("ec")
    _, cert = write_key_and_certificate(tmp_path / "ec", key)
    minter = TokenMinter(key, issuer=TEST_ISSUER)
    assert decode_unverified(minter.mint([CATALOG]))["header"]["alg"] == "ES256"
    with RegistryServer(tmp_path / "reg", cert, "http://127.0.0.1:9/auth", issuer=TEST_ISSUER) as s:
        assert _get(http_session, f"{s.url}/v2/_catalog", minter.mint([CATALOG])).status_code == 200


# --------------------------------------------------------------------------- challenges


def test_parse_challenge_full():
    header = (
        'Bearer realm="https://gitlab.example.com/jwt/auth",service="container_registry",'
        'scope="repository:a/b:pull repository:c:pull,push",error="insufficient_scope"'
    )
    challenge = parse_challenge(header)
    assert challenge.is_bearer
    assert challenge.realm == "https://gitlab.example.com/jwt/auth"
    assert challenge.service == "container_registry"
    assert challenge.scopes == (
        Scope("repository", "a/b", ("pull",)),
        Scope("repository", "c", ("pull", "push")),
    )
    assert challenge.error == "insufficient_scope"


def test_parse_challenge_quoting_and_spacing():
    header = 'bearer  Realm = "https://h/a,b\\"c" , service=registry.io, error=invalid_token'
    challenge = parse_challenge(header)
    assert challenge.scheme == "bearer" and challenge.is_bearer
    assert challenge.realm == 'https://h/a,b"c'
    assert challenge.service == "registry.io"
    assert challenge.error == "invalid_token"
    assert challenge.scopes == ()


@pytest.mark.parametrize("header", [None, "", "   ", "Basic", 'Bearer realm="unterminated'])
def test_parse_challenge_degenerate(header):
    challenge = parse_challenge(header)
    assert challenge.realm is None and challenge.scopes == ()


def test_parse_challenge_skips_unreadable_scopes():
    challenge = parse_challenge('Bearer realm="r",scope="nonsense repository:x:pull"')
    assert challenge.scopes == (Scope("repository", "x", ("pull",)),)


@given(st.text(max_size=200))
def test_parse_challenge_never_raises(text):
    parse_challenge(text)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=50))
def test_parse_challenge_quoted_values_round_trip(value):
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    assert parse_challenge(f'Bearer realm="{quoted}",service="s"').params["realm"] == value


# --------------------------------------------------------------------------- simple strategies


def test_anonymous_and_basic():
    assert AnonymousAuth().authorization([CATALOG], None) is None
    assert AnonymousAuth().refresh(parse_challenge("Bearer realm=x"), [CATALOG], None) is False
    basic = BasicAuth("admin", Secret("pa:ss"))
    value = basic.authorization([CATALOG], None)
    assert base64.b64decode(value.split()[1]) == b"admin:pa:ss"
    assert basic.refresh(parse_challenge("Basic realm=x"), [CATALOG], None) is False


# --------------------------------------------------------------------------- KeyAuth


def test_key_auth_caches_per_scope_set_and_renews(minter):
    clock = FakeClock()
    auth = KeyAuth(minter, clock=clock)
    pull_a = [Scope.repository("a", "pull")]
    first = auth.authorization(pull_a, None)
    assert auth.authorization([Scope.repository("a", "pull")], None) == first
    assert auth.authorization([CATALOG], None) != first
    both = auth.authorization([CATALOG, *pull_a], None)
    assert auth.authorization([*pull_a, CATALOG], None) == both  # order does not matter
    assert auth.tokens_obtained == 3
    clock.now += 300 - 31  # still more than 30 s left
    assert auth.authorization(pull_a, None) == first
    clock.now += 2  # within 30 s of expiry: renewed
    renewed = auth.authorization(pull_a, None)
    assert renewed != first
    claims = decode_unverified(renewed.split()[1])["claims"]
    assert claims["iat"] == int(clock.now)


def test_key_auth_refresh_retries_once_then_gives_up(minter):
    auth = KeyAuth(minter)
    scopes = [Scope.repository("a", "pull")]
    old = auth.authorization(scopes, None)
    challenge = parse_challenge('Bearer realm="r",error="invalid_token"')
    assert auth.refresh(challenge, scopes, None) is True
    new = auth.authorization(scopes, None)
    assert new != old
    assert auth.refresh(challenge, scopes, None) is False  # a fresh token was refused too


def test_key_auth_refresh_adds_challenge_scopes(minter):
    auth = KeyAuth(minter)
    scopes = [Scope.repository("a", "pull")]
    auth.authorization(scopes, None)
    challenge = parse_challenge('Bearer realm="r",scope="repository:a:pull,push"')
    assert auth.refresh(challenge, scopes, None) is True
    claims = decode_unverified(auth.authorization(scopes, None).split()[1])["claims"]
    assert claims["access"] == [{"type": "repository", "name": "a", "actions": ["pull", "push"]}]


def test_key_auth_is_thread_safe(minter):
    auth = KeyAuth(minter)
    scopes = [Scope.repository("a", "pull")]
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(auth.authorization(scopes, None)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 8
    assert auth.tokens_obtained == 1


@pytest.mark.registry
def test_key_auth_against_registry(registry_server, key_auth, http_session):
    header = key_auth.authorization([CATALOG], http_session)
    response = http_session.get(
        f"{registry_server.url}/v2/_catalog", headers={"Authorization": header}
    )
    assert response.status_code == 200


# --------------------------------------------------------------------------- RealmAuth

REALM_USER = "admin"
REALM_PASSWORD = "glpat-realm-test-password"


class Realm:
    """A tiny GitLab ``/jwt/auth`` stand-in, on its own loopback address."""

    def __init__(self, minter: TokenMinter, host: str = "127.0.0.1") -> None:
        self.minter = minter
        self.requests: list[dict] = []
        self.body_key = "token"
        self.expires_in: int | None = None
        self.status = 200
        realm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                auth = self.headers.get("Authorization", "")
                user = password = None
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                realm.requests.append({"path": parts.path, "query": query, "user": user})
                if realm.status != 200 or (user, password) != (REALM_USER, REALM_PASSWORD):
                    self.send_response(realm.status if realm.status != 200 else 401)
                    self.end_headers()
                    return
                scopes = [Scope.parse(s) for s in query.get("scope", [])]
                body = {realm.body_key: realm.minter.mint(scopes).reveal()}
                if realm.expires_in is not None:
                    body["expires_in"] = realm.expires_in
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_port}/jwt/auth"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def realm(minter):
    server = Realm(minter)
    yield server
    server.close()


@pytest.fixture(scope="module")
def realm_and_registry(minter, signing_material, tmp_path_factory):
    """A realm server and a real registry whose challenges point at it."""
    from regops.sandbox.registry_server import RegistryServer

    server = Realm(minter)
    registry = RegistryServer(
        tmp_path_factory.mktemp("realm-registry"),
        signing_material.cert_path,
        server.url,
        issuer=TEST_ISSUER,
        service=TEST_SERVICE,
    )
    with registry:
        yield server, registry
    server.close()


@pytest.fixture
def realm_registry(realm_and_registry, minter):
    """(realm, registry) with the realm's request log cleared and its minter reset."""
    server, registry = realm_and_registry
    server.requests.clear()
    server.minter = minter
    server.body_key, server.expires_in, server.status = "token", None, 200
    return server, registry


def _challenge(realm_url: str, scope: str, error: str | None = None):
    text = f'Bearer realm="{realm_url}",service="{TEST_SERVICE}",scope="{scope}"'
    return parse_challenge(text + (f',error="{error}"' if error else ""))


def call(session, auth, method, url, scopes):
    """What RegistryClient does: header, request, on 401 refresh and retry once."""
    header = auth.authorization(scopes, session)
    response = session.request(method, url, headers={"Authorization": header} if header else {})
    if response.status_code == 401:
        challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
        if auth.refresh(challenge, scopes, session):
            header = auth.authorization(scopes, session)
            response = session.request(method, url, headers={"Authorization": header})
    return response


@pytest.mark.registry
def test_realm_auth_follows_challenge_and_caches(realm_registry, http_session):
    realm, registry = realm_registry
    # The realm is GitLab's origin (as Connection passes settings.gitlab_url).
    auth = RealmAuth(REALM_USER, REALM_PASSWORD, allowed_origins=[realm.url]).bind(registry.url)
    scopes = [CATALOG]
    assert auth.authorization(scopes, http_session) is None  # realm not known yet
    response = call(http_session, auth, "GET", f"{registry.url}/v2/_catalog", scopes)
    assert response.status_code == 200
    assert len(realm.requests) == 1
    sent = realm.requests[0]
    assert sent["user"] == REALM_USER
    assert sent["query"] == {"service": [TEST_SERVICE], "scope": ["registry:catalog:*"]}
    # Same scopes again: cached, no realm request.
    assert call(http_session, auth, "GET", f"{registry.url}/v2/_catalog", scopes).ok
    assert len(realm.requests) == 1
    # New scopes: the realm is known now, asked directly, one scope parameter per scope.
    two = [Scope.repository("x/y", "pull"), Scope.repository("z", "pull", "push")]
    assert auth.authorization(two, http_session).startswith("Bearer ")
    assert realm.requests[-1]["query"]["scope"] == ["repository:x/y:pull", "repository:z:pull,push"]
    assert len(realm.requests) == 2


def test_realm_auth_refuses_a_third_host_without_sending(realm, minter, http_session):
    other = Realm(minter, host="127.0.0.2")
    try:
        auth = RealmAuth(REALM_USER, REALM_PASSWORD).bind("http://127.0.0.1:5000")
        with pytest.raises(TokenError) as info:
            auth.refresh(_challenge(other.url, "registry:catalog:*"), [CATALOG], http_session)
        assert "127.0.0.2" in str(info.value)
        assert REALM_PASSWORD not in str(info.value)
        assert other.requests == []
        # Listed in allowed_origins: trusted.
        port = urlsplit(other.url).port
        allowed = RealmAuth(
            REALM_USER, REALM_PASSWORD, allowed_origins=[f"http://127.0.0.2:{port}"]
        )
        allowed.bind("http://127.0.0.1:5000")
        assert allowed.refresh(_challenge(other.url, "registry:catalog:*"), [CATALOG], http_session)
        assert len(other.requests) == 1
    finally:
        other.close()


def test_realm_auth_registry_origin_is_trusted(realm, http_session):
    port = urlsplit(realm.url).port
    auth = RealmAuth(REALM_USER, REALM_PASSWORD, registry_url=f"http://127.0.0.1:{port}")
    assert auth.refresh(_challenge(realm.url, "registry:catalog:*"), [CATALOG], http_session)
    assert len(realm.requests) == 1 and realm.requests[0]["user"] == REALM_USER


def test_realm_auth_refuses_the_registry_host_on_another_port(realm, http_session):
    """Same host, other port: another server (another user's, maybe); no credentials."""
    auth = RealmAuth(REALM_USER, REALM_PASSWORD, registry_url="http://127.0.0.1:1")
    with pytest.raises(TokenError) as info:
        auth.refresh(_challenge(realm.url, "registry:catalog:*"), [CATALOG], http_session)
    port = urlsplit(realm.url).port
    assert str(info.value) == (
        f"refusing to send credentials to token realm http://127.0.0.1:{port}: not the "
        "registry's origin nor an allowed one (scheme, host and port must all match)"
    )
    assert realm.requests == []
    # The same for an allowed origin on that host: the port is part of it.
    allowed = RealmAuth(REALM_USER, REALM_PASSWORD, allowed_origins=["http://127.0.0.1:2"])
    allowed.bind("http://127.0.0.1:1")
    with pytest.raises(TokenError, match=f"127.0.0.1:{port}"):
        allowed.refresh(_challenge(realm.url, "registry:catalog:*"), [CATALOG], http_session)
    assert realm.requests == []


def test_realm_auth_refuses_the_registry_origin_under_another_scheme(realm, http_session):
    """https://host:port realm for an http://host:port registry: another origin."""
    port = urlsplit(realm.url).port
    auth = RealmAuth(REALM_USER, REALM_PASSWORD, registry_url=f"http://127.0.0.1:{port}")
    secure = f"https://127.0.0.1:{port}/jwt/auth"
    with pytest.raises(TokenError, match=f"https://127.0.0.1:{port}: not the registry's origin"):
        auth.refresh(_challenge(secure, "registry:catalog:*"), [CATALOG], http_session)
    assert realm.requests == []


def test_realm_auth_default_port_is_the_same_origin():
    auth = RealmAuth(REALM_USER, REALM_PASSWORD, allowed_origins=["https://gitlab.example.com"])
    auth.bind("https://registry.example.com:5050")
    auth.check_realm("https://GITLAB.example.com:443/jwt/auth")  # no error
    auth.check_realm("https://registry.example.com:5050/jwt/auth")
    for refused in (
        "https://gitlab.example.com:8443/jwt/auth",
        "https://registry.example.com/jwt/auth",
        "https://registry.example.com:5051/jwt/auth",
    ):
        with pytest.raises(TokenError, match="refusing to send credentials"):
            auth.check_realm(refused)


@pytest.mark.parametrize("value", ["gitlab.example.com", "gitlab.example.com:443", "ftp://x", ""])
def test_realm_auth_allowed_origins_need_a_scheme(value):
    with pytest.raises(ValidationError, match="allowed_origins"):
        RealmAuth(REALM_USER, REALM_PASSWORD, allowed_origins=[value])


@pytest.mark.registry
def test_real_registry_challenge_to_another_port_gets_no_credentials(realm_registry, http_session):
    """The real registry on 127.0.0.1:R challenges with a realm on 127.0.0.1:P."""
    realm, registry = realm_registry
    auth = RealmAuth(REALM_USER, REALM_PASSWORD).bind(registry.url)
    with pytest.raises(TokenError, match="refusing to send credentials"):
        call(http_session, auth, "GET", f"{registry.url}/v2/_catalog", [CATALOG])
    assert realm.requests == []


def test_realm_auth_configured_realm_is_trusted_but_not_others(realm, minter, http_session):
    auth = RealmAuth(REALM_USER, REALM_PASSWORD, realm=realm.url).bind("http://registry.test:5000")
    assert auth.authorization([CATALOG], http_session).startswith("Bearer ")
    other = Realm(minter, host="127.0.0.2")
    try:
        with pytest.raises(TokenError, match=r"127\.0\.0\.2"):
            auth.refresh(_challenge(other.url, "registry:catalog:*"), [CATALOG], http_session)
        assert other.requests == []
    finally:
        other.close()


def test_realm_auth_refuses_http_realm_for_https_registry(realm, http_session):
    auth = RealmAuth(REALM_USER, REALM_PASSWORD, allowed_origins=[realm.url])
    auth.bind("https://127.0.0.1:5000")
    with pytest.raises(TokenError, match="plain-HTTP"):
        auth.refresh(_challenge(realm.url, "registry:catalog:*"), [CATALOG], http_session)
    assert realm.requests == []


@pytest.mark.registry
def test_realm_auth_invalid_token_gets_a_new_one(realm_registry, minter, http_session):
    realm, registry_server = realm_registry
    stale = TokenMinter(minter._key, issuer="stale-issuer", service=TEST_SERVICE)
    realm.minter = stale
    auth = RealmAuth(REALM_USER, REALM_PASSWORD, realm=realm.url, service=TEST_SERVICE)
    auth.bind(registry_server.url)
    url = f"{registry_server.url}/v2/_catalog"
    auth.authorization([CATALOG], http_session)  # cached; goes bad (say, a key rotation)
    realm.minter = minter
    response = call(http_session, auth, "GET", url, [CATALOG])
    assert response.status_code == 200
    assert len(realm.requests) == 2


@pytest.mark.registry
def test_realm_auth_gives_up_when_fresh_token_is_refused(realm_registry, minter, http_session):
    realm, registry_server = realm_registry
    realm.minter = TokenMinter(minter._key, issuer="stale-issuer", service=TEST_SERVICE)
    auth = RealmAuth(REALM_USER, REALM_PASSWORD, realm=realm.url, service=TEST_SERVICE)
    auth.bind(registry_server.url)
    response = call(http_session, auth, "GET", f"{registry_server.url}/v2/_catalog", [CATALOG])
    assert response.status_code == 401
    assert len(realm.requests) == 2  # the first token, then one retry
    refused = parse_challenge(response.headers["WWW-Authenticate"])
    assert refused.error == "invalid_token"
    assert auth.refresh(refused, [CATALOG], http_session) is False
    assert len(realm.requests) == 2


def test_realm_auth_expiry_from_expires_in_and_access_token(realm, http_session):
    clock = FakeClock(time.time())
    realm.body_key = "access_token"
    realm.expires_in = 120
    auth = RealmAuth(
        REALM_USER, REALM_PASSWORD, realm=realm.url, registry_url="http://127.0.0.1:1", clock=clock
    )
    first = auth.authorization([CATALOG], http_session)
    assert first.startswith("Bearer ")
    clock.now += 120 - 31
    assert auth.authorization([CATALOG], http_session) == first
    clock.now += 2
    auth.authorization([CATALOG], http_session)
    assert len(realm.requests) == 2


def test_realm_auth_expiry_from_jwt_exp(realm, minter, http_session):
    clock = FakeClock(time.time())
    auth = RealmAuth(
        REALM_USER, REALM_PASSWORD, realm=realm.url, registry_url="http://127.0.0.1:1", clock=clock
    )
    auth.authorization([CATALOG], http_session)
    clock.now += minter.lifetime - 40
    auth.authorization([CATALOG], http_session)
    assert len(realm.requests) == 1
    clock.now += 15  # 25 s before exp
    auth.authorization([CATALOG], http_session)
    assert len(realm.requests) == 2


def test_realm_auth_wrong_credentials_is_a_token_error(realm, http_session):
    auth = RealmAuth(REALM_USER, "glpat-wrong-password-value", realm=realm.url)
    auth.bind("http://127.0.0.1:1")
    with pytest.raises(TokenError) as info:
        auth.authorization([CATALOG], http_session)
    message = str(info.value)
    assert "401" in message and REALM_USER in message
    assert "glpat-wrong-password-value" not in message


def test_realm_auth_non_json_answer(http_session):
    class Plain(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwt/auth"
        auth = RealmAuth(REALM_USER, REALM_PASSWORD, realm=url, registry_url="http://127.0.0.1:1")
        with pytest.raises(TokenError, match="JSON"):
            auth.authorization([CATALOG], http_session)
    finally:
        server.shutdown()
        server.server_close()


def test_refresh_after_another_thread_renewed_the_token_retries_with_it(minter):
    """Two workers refused with the same token: the second reuses the first's new token."""
    auth = KeyAuth(minter)
    scopes = [Scope.repository("a", "pull")]
    challenge = parse_challenge('Bearer realm="r",error="invalid_token"')
    stale = auth.authorization(scopes, None)  # this thread's request, refused below
    other: list[bool] = []

    def worker() -> None:  # another thread: same token, refused, renews it
        auth.authorization(scopes, None)
        other.append(auth.refresh(challenge, scopes, None))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert other == [True] and auth.tokens_obtained == 2
    assert auth.refresh(challenge, scopes, None) is True  # not "a fresh token was refused"
    assert auth.tokens_obtained == 2  # the other thread's token is reused, none minted
    fresh = auth.authorization(scopes, None)
    assert fresh != stale
    assert auth.refresh(challenge, scopes, None) is False  # that one refused too: give up


def test_tokens_for_different_scope_sets_are_fetched_concurrently():
    """A slow token fetch for one repository does not hold up another repository's."""
    import threading

    from regops.registry.tokens import IssuedToken, _CachingAuth

    started = threading.Barrier(2, timeout=5)

    class SlowAuth(_CachingAuth):
        def _obtain(self, scopes, session, challenge):
            started.wait()  # both fetches must be in flight at once, or this times out
            now = time.time()
            return IssuedToken(Secret(f"token-for-{scopes[0].name}"), now + 300, now)

    auth = SlowAuth(renew_before=30, clock=time.time)
    results = {}

    def fetch(name):
        results[name] = auth.authorization([Scope.repository(name, "pull")], session=None)

    threads = [threading.Thread(target=fetch, args=(n,)) for n in ("group/a", "group/b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {"group/a": "Bearer token-for-group/a", "group/b": "Bearer token-for-group/b"}
    assert auth.tokens_obtained == 2
