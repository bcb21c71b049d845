"""Registry tokens: scopes, minting them like GitLab, challenges, auth strategies.

A registry behind GitLab accepts JWTs signed with GitLab's key. regops either
signs its own (:class:`KeyAuth`, for admins who hold the key) or asks GitLab's
``/jwt/auth`` realm for one (:class:`RealmAuth`, with a personal access token).

>>> minter = TokenMinter(load_signing_key("/var/opt/gitlab/gitlab-rails/etc/gitlab-registry.key"))
>>> minter.mint([Scope.parse("repository:group/app:pull")])  # doctest: +SKIP
Secret('***')
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt

from regops.config import DEFAULT_ISSUER, DEFAULT_SERVICE
from regops.errors import KeyFileError, TokenError, ValidationError
from regops.http import origin_text, url_origin
from regops.registry.keys import PrivateKey, libtrust_kid, load_private_key, signing_algorithm
from regops.secrets import Secret, redact_url

__all__ = [
    "AnonymousAuth",
    "BasicAuth",
    "Challenge",
    "IssuedToken",
    "KeyAuth",
    "RealmAuth",
    "RegistryAuth",
    "Scope",
    "TokenMinter",
    "decode_unverified",
    "libtrust_kid",
    "load_signing_key",
    "normalize_scopes",
    "parse_challenge",
]

TOKEN_LIFETIME = 300  # seconds: GitLab's default container_registry_token_expire_delay (5 min)
NBF_SKEW = 5  # seconds GitLab back-dates nbf by, for clocks slightly ahead
RENEW_BEFORE = 30.0  # seconds before expiry a cached token is replaced
REALM_DEFAULT_LIFETIME = 60.0  # seconds, when the realm says nothing (Docker's default)
CATALOG_SCOPE_NAME = "catalog"
KEYS_KEPT = 4096  # scope tuples whose normalised form is remembered (one per repository)
_SCOPE_ACTION = re.compile(r"^[a-z*][a-z0-9_*-]*$")


@dataclass(frozen=True, order=True)
class Scope:
    """One access request: ``repository:group/app:pull,push``."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        """``type:name:actions``; the name may hold ``:`` (a host with a port)."""
        if not isinstance(text, str) or text.count(":") < 2:
            raise ValidationError("scope", f"expected type:name:actions, got {text!r}")
        kind, rest = text.split(":", 1)
        name, actions = rest.rsplit(":", 1)
        parsed = tuple(a for a in actions.split(",") if a)
        if not kind or not name or not parsed:
            raise ValidationError("scope", f"expected type:name:actions, got {text!r}")
        bad = [a for a in parsed if not _SCOPE_ACTION.match(a)]
        if bad:
            raise ValidationError("scope", f"invalid action {bad[0]!r} in {text!r}")
        return cls(kind, name, parsed)

    @classmethod
    def repository(cls, name: str, *actions: str) -> Scope:
        """Access to one repository (default: pull)."""
        return cls("repository", name, tuple(actions) or ("pull",))

    @classmethod
    def catalog(cls) -> Scope:
        """Access to ``/v2/_catalog``, as GitLab grants it to admins."""
        return cls("registry", CATALOG_SCOPE_NAME, ("*",))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def claim(self) -> dict[str, Any]:
        """The ``access`` entry of a token granting this scope."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def normalize_scopes(scopes: Iterable[Scope | str]) -> tuple[Scope, ...]:
    """Scopes merged by (type, name), actions de-duplicated and sorted: a cache key."""
    merged: dict[tuple[str, str], set[str]] = {}
    for scope in scopes:
        if isinstance(scope, str):
            scope = Scope.parse(scope)
        merged.setdefault((scope.type, scope.name), set()).update(scope.actions)
    return tuple(Scope(t, n, tuple(sorted(a))) for (t, n), a in sorted(merged.items()))


def load_signing_key(path: str | os.PathLike[str]) -> PrivateKey:
    """The token signing key in a PEM file (KeyFileError when unusable)."""
    key = load_private_key(path)
    signing_algorithm(key)
    return key


@dataclass(frozen=True)
class IssuedToken:
    """A token with the time (epoch seconds) it stops being valid."""

    token: Secret
    expires_at: float
    obtained_at: float


class TokenMinter:
    """Signs registry tokens exactly as GitLab does (RS256/ES256, libtrust kid)."""

    def __init__(
        self,
        key: PrivateKey,
        issuer: str = DEFAULT_ISSUER,
        service: str = DEFAULT_SERVICE,
        subject: str | None = None,
        lifetime: int = TOKEN_LIFETIME,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(key, (str, os.PathLike)):
            raise KeyFileError("TokenMinter needs a key object; use load_signing_key(path)")
        self._key = key
        self.algorithm = signing_algorithm(key)
        self.kid = libtrust_kid(key)
        self.issuer = issuer
        self.service = service
        self.subject = subject
        self.lifetime = int(lifetime)
        self.clock = clock

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **options: Any) -> TokenMinter:
        """A minter for the key in a PEM file."""
        return cls(load_signing_key(path), **options)

    def __repr__(self) -> str:
        return (
            f"TokenMinter(kid={self.kid!r}, alg={self.algorithm}, issuer={self.issuer!r}, "
            f"service={self.service!r}, lifetime={self.lifetime})"
        )

    def claims(
        self,
        scopes: Iterable[Scope | str],
        *,
        now: float | None = None,
        lifetime: int | None = None,
    ) -> dict[str, Any]:
        """The JWT claims GitLab would put in a token for ``scopes``."""
        issued = int(self.clock() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.service,
            "iat": issued,
            "nbf": issued - NBF_SKEW,
            "exp": issued + (self.lifetime if lifetime is None else int(lifetime)),
            "jti": str(uuid.uuid4()),
            "access": [scope.claim() for scope in normalize_scopes(scopes)],
        }
        if self.subject:
            claims["sub"] = self.subject
        return claims

    def issue(
        self,
        scopes: Iterable[Scope | str],
        *,
        now: float | None = None,
        lifetime: int | None = None,
    ) -> IssuedToken:
        """A signed token and its expiry."""
        claims = self.claims(scopes, now=now, lifetime=lifetime)
        headers = {"kid": self.kid, "typ": "JWT"}
        try:
            token = jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise TokenError(f"cannot sign a registry token: {type(exc).__name__}") from None
        return IssuedToken(Secret(token), float(claims["exp"]), float(claims["iat"]))

    def mint(
        self,
        scopes: Iterable[Scope | str],
        *,
        now: float | None = None,
        lifetime: int | None = None,
    ) -> Secret:
        """A signed token for ``scopes`` (a Secret)."""
        return self.issue(scopes, now=now, lifetime=lifetime).token


# --------------------------------------------------------------------------- challenges

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(
    rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|([^\s,\"]*))\s*(?:,|$)", re.DOTALL
)


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    realm: str | None = None
    service: str | None = None
    scopes: tuple[Scope, ...] = ()
    error: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_bearer(self) -> bool:
        return self.scheme.lower() == "bearer"


def parse_challenge(header: str | None) -> Challenge:
    """Parse ``Bearer realm="…",service="…",scope="a b",error="…"``; never raises.

    >>> parse_challenge('Bearer realm="https://g/jwt/auth",scope="registry:catalog:*"').scopes
    (Scope(type='registry', name='catalog', actions=('*',)),)
    """
    text = (header or "").strip()
    if not text:
        return Challenge(scheme="")
    scheme, _, rest = text.partition(" ")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if not match:
            break  # malformed tail: keep what parsed so far
        name = match.group(1).lower()
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params.setdefault(name, value)
        position = match.end()
    return Challenge(
        scheme=scheme,
        realm=params.get("realm") or None,
        service=params.get("service"),
        scopes=_parse_scope_list(params.get("scope", "")),
        error=params.get("error") or None,
        params=params,
    )


def _parse_scope_list(text: str) -> tuple[Scope, ...]:
    scopes = []
    for item in text.split():
        try:
            scopes.append(Scope.parse(item))
        except ValidationError:
            continue  # a scope we cannot read is one we cannot ask for either
    return tuple(scopes)


# --------------------------------------------------------------------------- strategies


class RegistryAuth:
    """How the registry client authenticates; subclasses implement the two hooks.

    ``authorization(scopes, session)`` gives the Authorization header value for a
    request needing ``scopes`` (or None); ``refresh(challenge, scopes, session)``
    is called on a 401 and answers whether a retry may succeed.
    """

    def bind(self, registry_url: str) -> RegistryAuth:
        """Tell the strategy which registry it serves (RealmAuth trusts that host)."""
        return self

    def authorization(self, scopes: Iterable[Scope], session: Any) -> str | None:
        raise NotImplementedError

    def refresh(self, challenge: Challenge, scopes: Iterable[Scope], session: Any) -> bool:
        raise NotImplementedError


class AnonymousAuth(RegistryAuth):
    """No credentials at all."""

    def authorization(self, scopes: Iterable[Scope], session: Any) -> str | None:
        return None

    def refresh(self, challenge: Challenge, scopes: Iterable[Scope], session: Any) -> bool:
        return False

    def __repr__(self) -> str:
        return "AnonymousAuth()"


class BasicAuth(RegistryAuth):
    """HTTP basic credentials sent with every request (registries without tokens)."""

    def __init__(self, username: str, password: str | Secret) -> None:
        self.username = username
        self.password = Secret(password)

    def authorization(self, scopes: Iterable[Scope], session: Any) -> str | None:
        raw = f"{self.username}:{self.password.reveal()}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def refresh(self, challenge: Challenge, scopes: Iterable[Scope], session: Any) -> bool:
        return False

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password={self.password!r})"


@dataclass
class _Entry:
    issued: IssuedToken
    refreshed: bool  # obtained because the registry refused the previous one
    # The Authorization value, built once per token; never in a repr (it is the secret).
    header: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.header = "Bearer " + self.issued.token.reveal()


class _TokenCache:
    """Tokens per normalised scope set, replaced ``RENEW_BEFORE`` s before expiry."""

    def __init__(self, clock: Callable[[], float], renew_before: float) -> None:
        self.clock = clock
        self.renew_before = renew_before
        self._entries: dict[tuple[Scope, ...], _Entry] = {}

    def get(self, key: tuple[Scope, ...]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._due(entry):
            self._entries.pop(key, None)  # another scope set's refresh may have put it back
            return None
        return entry

    def _due(self, entry: _Entry) -> bool:
        issued = entry.issued
        margin = min(self.renew_before, (issued.expires_at - issued.obtained_at) / 2)
        return self.clock() >= issued.expires_at - margin

    def peek(self, key: tuple[Scope, ...]) -> _Entry | None:
        """The entry when it is cached and not due for renewal; never changes the cache.

        Safe without the lock: one dict read, and entries are replaced, never mutated.
        """
        entry = self._entries.get(key)
        if entry is None or self._due(entry):
            return None
        return entry

    def put(self, key: tuple[Scope, ...], entry: _Entry) -> None:
        self._entries[key] = entry

    def __len__(self) -> int:
        return len(self._entries)


class _CachingAuth(RegistryAuth):
    """Shared logic: a token per scope set, one retry with a fresh token on a 401."""

    def __init__(self, *, renew_before: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._cache = _TokenCache(clock, renew_before)
        self._lock = threading.Lock()  # guards _key_locks and the counter
        self._key_locks: dict[tuple[Scope, ...], threading.Lock] = {}
        self._sent = threading.local()  # per thread: (scope key, entry) last handed out
        self.tokens_obtained = 0
        self._keys: dict[tuple[Scope, ...], tuple[Scope, ...]] = {}  # scopes -> cache key

    def _lock_for(self, key: tuple[Scope, ...]) -> threading.Lock:
        """One lock per scope set: fetches for different repositories run concurrently."""
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _count_obtained(self) -> None:
        with self._lock:
            self.tokens_obtained += 1

    def _obtain(
        self, scopes: tuple[Scope, ...], session: Any, challenge: Challenge | None
    ) -> IssuedToken | None:
        raise NotImplementedError

    def _key(self, scopes: Iterable[Scope]) -> tuple[Scope, ...]:
        """The cache key of ``scopes``, normalised once per distinct tuple of scopes."""
        if not isinstance(scopes, tuple):
            return normalize_scopes(scopes)
        key = self._keys.get(scopes)
        if key is None:
            key = normalize_scopes(scopes)
            if len(self._keys) >= KEYS_KEPT:
                self._keys.clear()
            self._keys[scopes] = key
        return key

    def authorization(self, scopes: Iterable[Scope], session: Any) -> str | None:
        key = self._key(scopes)
        entry = self._cache.peek(key)  # no lock for a cached token: one per request
        if entry is None:
            with self._lock_for(key):
                entry = self._cache.get(key)
                if entry is None:
                    issued = self._obtain(key, session, None)
                    if issued is not None:
                        entry = _Entry(issued, refreshed=False)
                        self._cache.put(key, entry)
                        self._count_obtained()
        self._sent.last = (key, entry)
        return None if entry is None else entry.header

    def refresh(self, challenge: Challenge, scopes: Iterable[Scope], session: Any) -> bool:
        requested = tuple(scopes)
        key = normalize_scopes(requested)
        wanted = normalize_scopes((*requested, *challenge.scopes))
        sent_key, sent = getattr(self._sent, "last", (None, None))
        with self._lock_for(key):
            previous = self._cache.get(key)
            if previous is not None and sent_key == key and previous is not sent:
                return True  # another thread replaced the token this request was refused with
            if previous is not None and previous.refreshed and wanted == key:
                return False  # a fresh token for these very scopes was refused already
            issued = self._obtain(wanted, session, challenge)
            if issued is None:
                return False
            self._count_obtained()
            entry = _Entry(issued, refreshed=True)
            self._cache.put(key, entry)
            self._cache.put(wanted, entry)
        return True


class KeyAuth(_CachingAuth):
    """Tokens signed locally with GitLab's key, cached per scope set."""

    def __init__(
        self,
        minter: TokenMinter,
        *,
        renew_before: float = RENEW_BEFORE,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(renew_before=renew_before, clock=clock or minter.clock)
        self.minter = minter

    def _obtain(
        self, scopes: tuple[Scope, ...], session: Any, challenge: Challenge | None
    ) -> IssuedToken:
        return self.minter.issue(scopes, now=self.clock())

    def __repr__(self) -> str:
        return f"KeyAuth({self.minter!r})"


class RealmAuth(_CachingAuth):
    """Tokens from the challenge's realm (GitLab ``/jwt/auth``) with HTTP basic.

    Credentials go only to a realm on an exact origin (scheme, host AND port)
    that is trusted: the registry's own (see :meth:`bind`), one of
    ``allowed_origins`` (``https://gitlab.example.com``; a path is ignored), or
    that of an explicitly given ``realm``. A challenge pointing anywhere else,
    the registry's host on another port included, is refused, as is a plain-HTTP
    realm for an HTTPS registry.
    """

    def __init__(
        self,
        username: str | None,
        token: str | Secret | None,
        allowed_origins: Iterable[str] = (),
        *,
        registry_url: str | None = None,
        realm: str | None = None,
        service: str | None = None,
        renew_before: float = RENEW_BEFORE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(renew_before=renew_before, clock=clock)
        self.username = username
        self.token = Secret(token) if token is not None else None
        trusted = set()
        for value in allowed_origins:
            origin = url_origin(value)
            if origin is None:
                raise ValidationError(
                    "allowed_origins",
                    f"expected an http(s)://host[:port] origin, got {redact_url(str(value))!r}",
                )
            trusted.add(origin)
        configured = url_origin(realm) if realm else None
        if configured is not None:  # a realm the caller configured is trusted like an allowed one
            trusted.add(configured)
        self.allowed_origins = frozenset(trusted)
        self.registry_url: str | None = None
        self.realm = realm
        self.service = service
        if registry_url:
            self.bind(registry_url)

    def bind(self, registry_url: str) -> RealmAuth:
        """Trust realms on the exact origin of ``registry_url``; returns self."""
        self.registry_url = registry_url.rstrip("/")
        return self

    def __repr__(self) -> str:
        origins = sorted(origin_text(o) for o in self.allowed_origins)
        return (
            f"RealmAuth(username={self.username!r}, token={self.token!r}, "
            f"realm={self.realm!r}, allowed_origins={origins!r})"
        )

    def check_realm(self, realm: str) -> None:
        """Raise TokenError unless credentials may be sent to ``realm``."""
        origin = url_origin(realm)
        if origin is None:
            raise TokenError(f"registry token realm {redact_url(realm)!r} is not an HTTP URL")
        registry = url_origin(self.registry_url) if self.registry_url else None
        if registry and registry[0] == "https" and origin[0] != "https":
            raise TokenError(
                f"refusing plain-HTTP token realm {origin_text(origin)} for an HTTPS registry"
            )
        trusted = set(self.allowed_origins)
        if registry:
            trusted.add(registry)
        if origin not in trusted:
            raise TokenError(
                f"refusing to send credentials to token realm {origin_text(origin)}: not the "
                "registry's origin nor an allowed one (scheme, host and port must all match)"
            )

    def _obtain(
        self, scopes: tuple[Scope, ...], session: Any, challenge: Challenge | None
    ) -> IssuedToken | None:
        if challenge is not None and challenge.is_bearer and challenge.realm:
            self.check_realm(challenge.realm)
            self.realm = challenge.realm
            self.service = challenge.service or self.service
        if not self.realm:
            return None  # no challenge seen yet: send no header, learn the realm from the 401
        self.check_realm(self.realm)
        return self._request_token(scopes, session)

    def _request_token(self, scopes: tuple[Scope, ...], session: Any) -> IssuedToken:
        params: list[tuple[str, str]] = []
        if self.service:
            params.append(("service", self.service))
        params.extend(("scope", str(scope)) for scope in scopes)
        auth = None
        if self.username and self.token:
            auth = (self.username, self.token.reveal())
        realm_host = urlsplit(self.realm or "").netloc
        started = self.clock()
        response = session.get(self.realm, params=params, auth=auth)
        if response.status_code != 200:
            raise TokenError(
                f"token realm {realm_host} answered {response.status_code} for user "
                f"{self.username or '(anonymous)'} and scopes {' '.join(map(str, scopes))}"
            )
        try:
            body = response.json()
        except ValueError:
            raise TokenError(f"token realm {realm_host} did not answer JSON") from None
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise TokenError(f"token realm {realm_host} answered without a token")
        token = Secret(value)
        return IssuedToken(token, _expiry(value, body, started), started)


def _expiry(value: str, body: dict[str, Any], started: float) -> float:
    """When a realm token expires: ``expires_in``, else the JWT's ``exp``, else 60 s."""
    expires_in = body.get("expires_in")
    if isinstance(expires_in, (int, float)) and expires_in > 0:
        return started + float(expires_in)
    try:
        exp = jwt.decode(value, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        exp = None
    if isinstance(exp, (int, float)):
        return float(exp)
    return started + REALM_DEFAULT_LIFETIME


def decode_unverified(token: str | Secret) -> dict[str, Any]:
    """Header and claims of a token, without checking the signature (for tests, doctor)."""
    raw = token.reveal() if isinstance(token, Secret) else token
    try:
        header = jwt.get_unverified_header(raw)
        claims = jwt.decode(raw, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise TokenError(f"not a JWT: {type(exc).__name__}") from None
    return {"header": header, "claims": json.loads(json.dumps(claims))}
