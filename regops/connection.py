"""Connection: one GitLab client and one registry client, and the default connection.

>>> import regops
>>> conn = regops.connect()              # doctest: +SKIP  (settings: see regops.config)
>>> conn.describe()["gitlab_version"]    # doctest: +SKIP
'17.5.1'

Models use :func:`default_connection`, which is the last :func:`connect` or,
when none was made, one resolved from the environment and config files.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from regops.config import NO_REGISTRY, Settings, resolve_settings, url_host, with_inferred_registry
from regops.errors import ConfigError, GitLabError, TransportError
from regops.gitlab import features
from regops.gitlab.client import GitLabClient
from regops.ops.cleanup import SERVICE_GITLAB, SERVICE_THIRD_PARTY
from regops.policy import PolicyOptions
from regops.registry import tokens
from regops.registry.cache import ContentCache, default_cache_dir
from regops.registry.client import RegistryClient
from regops.registry.gitlab_api import GitLabRegistryAPI, gitlab_would_delete_by_tag
from regops.registry.resolver import TagResolver
from regops.secrets import redact_url

log = logging.getLogger("regops.connection")
NO_CACHE_WORDS = frozenset({"none", "off", "memory"})  # cache_dir values: keep it in memory

_default: Connection | None = None
_lock = threading.Lock()


class Connection:
    """A GitLab client (``.gitlab``), a registry client (``.registry``, or None),
    and the tag resolver every reader of tags shares (``.resolver``).

    Nothing is sent on creation; the registry client is built on first use
    (realm auth without a user name asks GitLab who the token belongs to).
    The resolver reads manifests by digest through the on-disk content cache
    (``cache_dir``; the user cache directory by default), so a second session
    reads from disk what the first fetched.
    """

    def __init__(self, settings: Settings, *, gitlab: GitLabClient | None = None) -> None:
        self.settings = settings.check()
        self.http = settings.http_settings()
        self.gitlab = gitlab or GitLabClient(
            settings.gitlab_url or "", settings.token, settings.token_kind, http=self.http
        )
        self._registry: RegistryClient | None = None
        self._registry_built = False
        self._resolver: TagResolver | None = None
        self._user: dict | None = None
        self._lock = threading.Lock()
        self._version: str | None = None
        self._options: PolicyOptions | None = None
        self._api_checked = False
        self._api: GitLabRegistryAPI | None = None
        self._protection: dict[int | str, features.ProtectionRead] = {}
        self._delete_note: str | None = None
        self._delete_note_known = False

    def __repr__(self) -> str:
        known = self.settings.registry_url not in (None, NO_REGISTRY)
        mode = self.settings.registry_auth if known else "none"
        registry = redact_url(self.settings.registry_url or "") if known else "-"
        return (
            f"<Connection gitlab={redact_url(self.settings.gitlab_url or '')} "
            f"registry={registry} ({mode})>"
        )

    @property
    def registry_host(self) -> str | None:
        """``host:port`` used in image locations (``registry.example.com:5050/g/p:tag``)."""
        if self.settings.registry_host:
            return self.settings.registry_host
        if self.settings.registry_url and self.settings.registry_url != NO_REGISTRY:
            return url_host(self.settings.registry_url)
        return None

    @property
    def registry(self) -> RegistryClient | None:
        """The registry client, or None when there is none (not configured, and GitLab
        tells of none; ``registry_url = "none"``: not asked)."""
        if not self._registry_built:
            with self._lock:
                if not self._registry_built:
                    try:
                        self._registry = self._build_registry()
                    except _NotNow:
                        return None  # GitLab could not be asked: asked again next time
                    self._registry_built = True
        return self._registry

    @property
    def cache(self) -> ContentCache:
        """The content cache the resolver reads through."""
        resolver = self.resolver
        if resolver is None:
            raise ConfigError("no registry configured: nothing to cache")
        return resolver.cache

    @property
    def resolver(self) -> TagResolver | None:
        """The connection's tag resolver (None without a registry)."""
        registry = self.registry
        if registry is None:
            return None
        api = self.gitlab_registry_api
        with self._lock:
            if self._resolver is None:
                self._resolver = TagResolver(registry, self._content_cache(), gitlab_api=api)
            return self._resolver

    # -- what this GitLab and registry have (each asked once) ---------------------

    @property
    def gitlab_registry_api(self) -> GitLabRegistryAPI | None:
        """The registry's GitLab API (metadata database), or None: GitLab's compliance
        check (``GET /gitlab/v1/`` is 200 or 401), asked once."""
        if not self._api_checked:
            registry = self.registry
            api = GitLabRegistryAPI.detect(registry) if registry is not None else None
            with self._lock:
                self._api, self._api_checked = api, True
        return self._api

    @property
    def cleanup_service(self) -> str:
        """The cleanup service GitLab runs for this registry: ``gitlab`` or ``third_party``."""
        return SERVICE_GITLAB if self.gitlab_registry_api is not None else SERVICE_THIRD_PARTY

    @property
    def gitlab_version(self) -> str | None:
        """``GET /version`` (asked once)."""
        if self._version is None:
            self._version = features.gitlab_version(self.gitlab) or ""
        return self._version or None

    def policy_options(self) -> PolicyOptions:
        """The cleanup-policy values this GitLab accepts (its GraphQL enum; asked once)."""
        if self._options is None:
            self._options = features.policy_options(self.gitlab, self.gitlab_version)
        return self._options

    def tag_protection(self, project_id: int | str) -> features.ProtectionRead:
        """The project's tag protection rules, read once per project."""
        known = self._protection.get(project_id)
        if known is None:
            known = features.tag_protection(self.gitlab, project_id, self.gitlab_version)
            self._protection[project_id] = known
        return known

    def delete_method_note(self) -> str | None:
        """A plan note when GitLab's own cleanup could not delete on this registry.

        GitLab probes ``OPTIONS /v2/name/manifests/tag``; a registry that lists
        DELETE there but cannot delete a tag by name (the plain Distribution
        registry: 400 DIGEST_INVALID) makes GitLab's run delete nothing.
        """
        registry = self.registry
        if registry is None or self._delete_note_known:
            return self._delete_note
        note = None
        if gitlab_would_delete_by_tag(registry) and not registry.features.tag_delete:
            note = (
                "GitLab's own cleanup deletes nothing on this registry: GitLab's probe "
                "(OPTIONS /v2/name/manifests/tag) sees Allow: DELETE, so GitLab deletes tags "
                "by name, which this registry refuses (400 DIGEST_INVALID). regops deletes "
                "these tags with its placeholder method instead (a throw-away manifest under "
                "each tag, then one DELETE by its digest), which works here."
            )
        self._delete_note, self._delete_note_known = note, True
        return note

    def _content_cache(self) -> ContentCache:
        setting = self.settings.cache_dir
        if setting is not None and setting.strip().lower() in NO_CACHE_WORDS:
            return ContentCache()
        return ContentCache(Path(setting) if setting else default_cache_dir())

    def current_user(self) -> dict:
        """``GET /user``, fetched once."""
        if self._user is None:
            self._user = self.gitlab.current_user()
        return self._user

    def _build_registry(self) -> RegistryClient | None:
        s = self.settings
        if s.registry_url == NO_REGISTRY:
            return None
        if not s.registry_url:
            inferred = self._infer_registry()
            if inferred is None:
                return None
            self.settings = s = inferred
        assert s.registry_url is not None
        return RegistryClient(s.registry_url, self._registry_auth(), http=self.http)

    def _infer_registry(self) -> Settings | None:
        """The settings with the registry GitLab advertises, when none is configured.

        One request: the newest project's ``container_registry_image_prefix``
        (``registry.example.com:5050/group/project``) names the registry's host.
        None when GitLab shows none (registry off, no project visible) or
        cannot be asked.
        """
        try:
            newest = next(iter(self.gitlab.projects_desc(1)), None)
        except GitLabError as exc:  # an answer: this token cannot list projects
            log.info("GitLab did not say where its registry is: %s", exc)
            return None
        except TransportError as exc:
            log.info("could not ask GitLab where its registry is: %s", exc)
            raise _NotNow from None
        prefix = newest.get("container_registry_image_prefix") if newest else None
        if not isinstance(prefix, str) or not prefix.strip():
            return None
        host = prefix.strip().split("/", 1)[0]
        where = f"project {newest.get('id') if newest else '?'}'s container_registry_image_prefix"
        log.info("registry %s inferred from GitLab (%s)", host, where)
        return with_inferred_registry(self.settings, host, where).check()

    def _registry_auth(self) -> tokens.RegistryAuth:
        s = self.settings
        mode = s.registry_auth or "anonymous"
        if mode == "key":
            key = tokens.load_signing_key(s.registry_key_path or "")
            minter = tokens.TokenMinter(
                key, s.registry_issuer, s.registry_service, subject=s.registry_username
            )
            return tokens.KeyAuth(minter)
        if mode == "realm":
            username = s.registry_username or self._token_username()
            secret = s.registry_password or s.token
            # The token goes to GitLab's own origin only (scheme, host and port), plus
            # the registry's origin (RealmAuth.bind); never to another port of a host.
            origins = [s.gitlab_url] if s.gitlab_url else []
            return tokens.RealmAuth(username, secret, allowed_origins=origins)
        if mode == "basic":
            return tokens.BasicAuth(s.registry_username or "", s.registry_password or "")
        return tokens.AnonymousAuth()

    def _token_username(self) -> str:
        try:
            return str(self.current_user()["username"])
        except (GitLabError, KeyError) as exc:
            raise ConfigError(
                "registry_auth 'realm' needs a user name: set REGOPS_REGISTRY_USER "
                f"(asking GitLab GET /user for it failed: {exc})"
            ) from None

    def describe(self) -> dict[str, object]:
        """GitLab URL, version, user, is_admin and registry mode and where its URL came
        from, for banners (2 requests; 3 when the registry's URL is asked of GitLab).

        The registry's variant (which GitLab cleanup service runs) is
        :attr:`cleanup_service`: it asks the registry.
        """
        user = self.current_user()
        if not self.settings.registry_url:
            self.registry  # noqa: B018 - built now: its URL comes from GitLab
        s = self.settings
        known = s.registry_url not in (None, NO_REGISTRY)
        return {
            "gitlab_url": redact_url(s.gitlab_url or ""),
            "gitlab_version": self.gitlab_version,
            "user": user.get("username"),
            "is_admin": bool(user.get("is_admin", False)),
            "registry_url": redact_url(s.registry_url or "") if known else None,
            "registry_host": self.registry_host if known else None,
            "registry_auth": s.registry_auth if known else None,
            "registry_source": s.sources.get("registry_url") if known else None,
        }

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.gitlab.session.close()
        if self._registry is not None and hasattr(self._registry, "session"):
            self._registry.session.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NotNow(Exception):
    """The registry's location could not be asked of GitLab this time."""


def connect(settings: Settings | None = None, **explicit: Any) -> Connection:
    """A new Connection from ``settings`` or resolved ones; it becomes the default."""
    if settings is not None and explicit:
        raise ConfigError(
            f"connect(): pass either a Settings or keyword settings, not both "
            f"(got {', '.join(sorted(explicit))} beside a Settings)"
        )
    connection = Connection(settings if settings is not None else resolve_settings(**explicit))
    set_default_connection(connection)
    return connection


def set_default_connection(connection: Connection | None) -> None:
    """Make ``connection`` the one models use (None forgets it)."""
    global _default
    with _lock:
        _default = connection


def default_connection() -> Connection:
    """The default connection, resolving one from the environment if none was made."""
    global _default
    with _lock:
        if _default is not None:
            return _default
        try:
            _default = Connection(resolve_settings())
        except ConfigError as exc:
            raise ConfigError(
                f"no connection: call regops.connect(url=..., private_token=...) or "
                f"configure the environment ({exc})"
            ) from None
        return _default
