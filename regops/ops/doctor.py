"""``regops doctor``: the registry configuration the admin guide describes, checked row by row.

Plain values in (a parsed registry ``config.yml``, GitLab's config from
gitlab.yml or gitlab.rb, the signing key, a GitLab client, HTTP settings),
rows out: one :class:`Row` per check with ``status`` (``ok``, ``warn``,
``fail``, ``skipped``), what is wrong (``detail``) and the exact lines that fix
it (``fix``). :func:`run_checks` runs them all; :func:`exit_code` turns the
worst status into 0 (ok/skipped), 1 (warn) or 2 (fail).

Secrets (the notification secret, the signing key, S3 keys) are compared,
never shown: a row says "differs", not the value.

Which GitLab facts each check reproduces (GitLab's source):

- service ``container_registry``: ``Auth::ContainerRegistryAuthenticationService::AUDIENCE``;
  ``JwtController`` answers 404 for any other service.
- realm ``<external_url>/jwt/auth``: the Linux package's registry config template
  (``registry-config.yml.erb``: ``realm: <%= @token_realm %>/jwt/auth``).
- issuer: ``gitlab_rails['registry_issuer']`` (default ``omnibus-gitlab-issuer``),
  written to both sides by the Linux package.
- the notification secret: ``API::ContainerRegistryEvent`` compares the whole
  ``Authorization`` header with ``Gitlab.config.registry.notification_secret``
  (``Devise.secure_compare``) and answers 401 otherwise.
- ``threshold`` -> ``maxretries``: GitLab deprecation "Replace threshold with
  maxretries for container registry notifications" (17.1, removal 19.0).
- ``container_registry_token_expire_delay`` (minutes, > 0, default 5) and the
  cleanup worker settings (integers >= 0): ``ApplicationSetting`` validations.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from regops.config import DEFAULT_SERVICE, Settings
from regops.errors import (
    GitLabError,
    GitLabForbidden,
    GitLabUnauthorized,
    KeyFileError,
    RegistryError,
    RegistryUnauthorized,
    RegopsError,
    TokenError,
    TransportError,
)
from regops.gitlab.client import GitLabClient
from regops.gitlab.configfile import GitLabConfig, load_gitlab_config
from regops.http import HTTPSettings, url_origin
from regops.ops.registry_access import UnusedScan, find_unused_registries
from regops.registry.client import RegistryClient
from regops.registry.configfile import NotificationEndpoint, RegistryConfig
from regops.registry.keys import PrivateKey, libtrust_kid, load_private_key
from regops.registry.probe import peer_certificate, post_events, probe_v2, verify_certificate
from regops.registry.s3 import S3Target, head_bucket
from regops.registry.tokens import KeyAuth, RealmAuth, RegistryAuth, TokenMinter
from regops.secrets import Secret, redact_url

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
STATUSES = (OK, WARN, FAIL, SKIPPED)
SEVERITY = {OK: 0, SKIPPED: 0, WARN: 1, FAIL: 2}
EXIT_BY_SEVERITY = {0: 0, 1: 1, 2: 2}  # ok/skipped -> 0, warn -> 1, fail -> 2
EXPIRY_WARNING = datetime.timedelta(days=30)  # the guide's "not expiring within 30 days"
JWT_AUTH_PATH = "/jwt/auth"  # GitLab's token realm (JwtController)
GITLAB_EVENTS_PATH = "/api/v4/container_registry_event/events"  # API::ContainerRegistryEvent
DEFAULT_TOKEN_MINUTES = 5  # GitLab's default container_registry_token_expire_delay
PUSH_RATE_MB_S = 10  # a modest upload rate, to turn token minutes into a layer size
SHOWN_PROJECTS = 5  # project paths a row names before "... and N more"
UNUSED_SHARE_WARNING = (
    0.5  # unused share of enabled registries that questions the new-project default
)
CATALOG_PAGE = 100  # repositories compared to tell two registry addresses apart
NO_REDIRECT_DRIVERS = frozenset({"filesystem", "inmemory"})  # serve blobs themselves
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class Row:
    """One check's result: ``check``, ``status``, ``detail`` (what is wrong), ``fix`` (lines)."""

    check: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass
class DoctorInput:
    """Everything the checks read; each field may be missing (its checks are then skipped)."""

    registry_config: RegistryConfig | None = None
    registry_config_path: str | None = None
    registry_config_error: str | None = None
    gitlab_config: GitLabConfig | None = None
    gitlab_config_path: str | None = None
    gitlab_config_error: str | None = None
    gitlab_url: str | None = None
    registry_url: str | None = None  # where GitLab talks to the registry (registry_api_url)
    registry_host: str | None = None  # host[:port] users push to
    issuer: str | None = None
    signing_key: PrivateKey | None = field(default=None, repr=False)
    signing_key_source: str | None = None
    signing_key_error: str | None = None
    notification_secret: Secret | None = field(default=None, repr=False)
    gitlab: GitLabClient | None = None
    gitlab_username: str | None = None
    gitlab_token: Secret | None = field(default=None, repr=False)
    http: HTTPSettings = field(default_factory=HTTPSettings)
    ca_bundle: str | None = None
    live: bool = True
    scan_projects: bool = True
    now: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
    )


def load_signing_key(
    config: GitLabConfig | None, fallback_path: str | None
) -> tuple[PrivateKey | None, str | None, str | None]:
    """(key, where from, error): gitlab.rb's ``registry['internal_key']``, else the key file."""
    if config is not None and config.internal_key is not None:
        try:
            key = serialization.load_pem_private_key(
                config.internal_key.reveal().encode(), password=None
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return None, None, f"{config.source('internal_key')}: not a PEM private key"
        return key, config.source("internal_key"), None  # type: ignore[return-value]
    path = (config.registry_key_path if config else None) or fallback_path
    if not path:
        return None, None, None
    try:
        return load_private_key(path), str(path), None
    except KeyFileError as exc:
        return None, None, str(exc)


def build_input(
    *,
    registry_config_path: str | None,
    gitlab_config_path: str | None,
    settings: Settings | None = None,
    gitlab: GitLabClient | None = None,
    live: bool = True,
    scan_projects: bool = True,
    now: datetime.datetime | None = None,
) -> DoctorInput:
    """Read the two config files (an unreadable one becomes a failed row) and merge
    them with regops' settings: the GitLab config wins, settings fill the gaps."""
    given = DoctorInput(
        registry_config_path=registry_config_path,
        gitlab_config_path=gitlab_config_path,
        gitlab=gitlab,
        live=live,
        scan_projects=scan_projects,
    )
    if now is not None:
        given.now = now
    if registry_config_path:
        try:
            given.registry_config = RegistryConfig.load(registry_config_path)
        except RegopsError as exc:
            given.registry_config_error = str(exc)
    if gitlab_config_path:
        try:
            given.gitlab_config = load_gitlab_config(gitlab_config_path)
        except RegopsError as exc:
            given.gitlab_config_error = str(exc)
    config = given.gitlab_config
    s = settings
    explicit = s.sources if s is not None else {}
    given.gitlab_url = (config.gitlab_url if config else None) or (s.gitlab_url if s else None)
    given.registry_url = (config.registry_api_url if config else None) or (
        s.registry_url if s else None
    )
    given.registry_host = (config.registry_host if config else None) or (
        s.registry_host if s else None
    )
    given.issuer = (config.registry_issuer if config else None) or (
        s.registry_issuer if s is not None and "registry_issuer" in explicit else None
    )
    key, source, error = load_signing_key(config, s.registry_key_path if s else None)
    given.signing_key, given.signing_key_source, given.signing_key_error = key, source, error
    given.notification_secret = config.notification_secret if config else None
    if s is not None:
        given.http = s.http_settings()
        given.ca_bundle = s.ssl_verify if isinstance(s.ssl_verify, str) else None
        given.gitlab_token = s.token
        given.gitlab_username = s.registry_username
    return given


# -- running --------------------------------------------------------------------------------------

Check = Callable[["_Context"], list[Row]]


class _Context:
    """The input plus what several checks share (computed once)."""

    def __init__(self, given: DoctorInput) -> None:
        self.i = given
        self._scan: UnusedScan | None = None
        self._scan_error: str | None = None
        self._scanned = False

    @property
    def token(self) -> dict[str, Any] | None:
        return self.i.registry_config.token_auth if self.i.registry_config else None

    def expected_realm(self) -> str | None:
        return self.i.gitlab_url.rstrip("/") + JWT_AUTH_PATH if self.i.gitlab_url else None

    def unused_scan(self) -> tuple[UnusedScan | None, str | None]:
        if not self._scanned:
            self._scanned = True
            if self.i.gitlab is not None and self.i.live and self.i.scan_projects:
                try:
                    self._scan = find_unused_registries(self.i.gitlab)
                except GitLabError as exc:
                    self._scan_error = str(exc)
                except TransportError as exc:
                    self._scan_error = str(exc)
        return self._scan, self._scan_error


def run_checks(given: DoctorInput) -> list[Row]:
    """Every check, in the order of the admin guide's sections."""
    context = _Context(given)
    rows: list[Row] = []
    for check in CHECKS:
        rows.extend(guard(check)(context))
    return rows


def worst(rows: Iterable[Row]) -> str:
    """The most severe status among ``rows`` (``ok`` for none)."""
    ranked = sorted(rows, key=lambda row: SEVERITY[row.status], reverse=True)
    return ranked[0].status if ranked else OK


def exit_code(rows: Iterable[Row]) -> int:
    """0 when every row is ok or skipped, 1 with a warning, 2 with a failure."""
    return EXIT_BY_SEVERITY[SEVERITY[worst(rows)]]


def _row(check: str, status: str, detail: str, *fix: str) -> list[Row]:
    return [Row(check, status, detail, "\n".join(fix))]


# -- configuration files --------------------------------------------------------------------------


def check_registry_config(c: _Context) -> list[Row]:
    i = c.i
    if i.registry_config_error:
        return _row("registry.config", FAIL, i.registry_config_error)
    if i.registry_config is None:
        return _row(
            "registry.config",
            SKIPPED,
            "no registry config.yml given or found at /var/opt/gitlab/registry/config.yml: "
            "registry-side checks skipped",
            "regops doctor --registry-config /path/to/registry/config.yml",
        )
    return _row("registry.config", OK, f"read {i.registry_config.path}")


def check_gitlab_config(c: _Context) -> list[Row]:
    i = c.i
    if i.gitlab_config_error:
        return _row("gitlab.config", FAIL, i.gitlab_config_error)
    if i.gitlab_config is None:
        return _row(
            "gitlab.config",
            SKIPPED,
            "no gitlab.yml or gitlab.rb given or found: GitLab-side values come from regops' "
            "settings only",
            "regops doctor --gitlab-config /etc/gitlab/gitlab.rb",
        )
    config = i.gitlab_config
    detail = f"read {config.path} ({config.kind})"
    if config.skipped_lines:
        lines = ", ".join(str(n) for n in config.skipped_lines[:10])
        return _row(
            "gitlab.config",
            WARN,
            f"{detail}; lines not plain Ruby literals, not evaluated: {lines}",
            "check those lines by hand, or point --gitlab-config at the rendered gitlab.yml",
        )
    return _row("gitlab.config", OK, detail)


def check_registry_enabled(c: _Context) -> list[Row]:
    config = c.i.gitlab_config
    if config is None:
        return _row("gitlab.registry-enabled", SKIPPED, "no GitLab config")
    if config.registry_enabled:
        return _row(
            "gitlab.registry-enabled",
            OK,
            f"registry enabled in GitLab ({config.source('registry_enabled')})",
        )
    return _row(
        "gitlab.registry-enabled",
        FAIL,
        f"GitLab has the registry disabled ({config.source('registry_enabled')}): "
        "no registry tokens, pages or API",
        "gitlab.rb: registry_external_url 'https://registry.example.com'",
        "gitlab.yml: production.registry.enabled: true",
    )


# -- token authentication -------------------------------------------------------------------------


def _auth_fix(c: _Context) -> list[str]:
    realm = c.expected_realm() or "https://gitlab.example.com/jwt/auth"
    issuer = c.i.issuer or "omnibus-gitlab-issuer"
    return [
        "config.yml:",
        "auth:",
        "  token:",
        f"    realm: {realm}",
        f"    service: {DEFAULT_SERVICE}",
        f"    issuer: {issuer}",
        "    rootcertbundle: /var/opt/gitlab/registry/gitlab-registry.crt",
        "(the Linux package writes this section itself when registry_external_url is set)",
    ]


def check_token_auth(c: _Context) -> list[Row]:
    config = c.i.registry_config
    if config is None:
        return _row("auth.token", SKIPPED, "no registry config")
    if c.token is not None:
        return _row("auth.token", OK, "token authentication configured")
    others = ", ".join(sorted(str(k) for k in config.auth)) or "none"
    what = (
        "no auth section: anyone who reaches the registry can pull, push and delete"
        if not config.auth
        else f"auth is {others}, not token: GitLab's tokens are refused and GitLab cannot "
        "grant access per project"
    )
    return _row("auth.token", FAIL, what, *_auth_fix(c))


def _same_url(a: str, b: str) -> bool:
    return url_origin(a) == url_origin(b) and (
        urlsplit(a).path.rstrip("/") == urlsplit(b).path.rstrip("/")
    )


def check_realm(c: _Context) -> list[Row]:
    if c.token is None:
        return _row("auth.realm", SKIPPED, "no token auth")
    expected = c.expected_realm()
    if expected is None:
        return _row("auth.realm", SKIPPED, "GitLab's URL unknown (no GitLab config, no GITLAB_URL)")
    realm = str(c.token.get("realm") or "")
    if realm and _same_url(realm, expected):
        return _row("auth.realm", OK, f"realm is GitLab's {expected}")
    shown = redact_url(realm) if realm else "(missing)"
    return _row(
        "auth.realm",
        FAIL,
        f"realm is {shown}, GitLab's is {expected}: clients ask the wrong place for tokens",
        f"config.yml: auth.token.realm: {expected}",
        f"gitlab.rb: registry['token_realm'] = \"{c.i.gitlab_url}\"",
    )


def check_service(c: _Context) -> list[Row]:
    if c.token is None:
        return _row("auth.service", SKIPPED, "no token auth")
    service = str(c.token.get("service") or "")
    if service == DEFAULT_SERVICE:
        return _row("auth.service", OK, f"service is {DEFAULT_SERVICE}")
    return _row(
        "auth.service",
        FAIL,
        f"service is {service or '(missing)'!s}; GitLab issues tokens only for "
        f"{DEFAULT_SERVICE} (/jwt/auth answers 404 for any other)",
        f"config.yml: auth.token.service: {DEFAULT_SERVICE}",
    )


def check_issuer(c: _Context) -> list[Row]:
    if c.token is None:
        return _row("auth.issuer", SKIPPED, "no token auth")
    if not c.i.issuer:
        return _row("auth.issuer", SKIPPED, "GitLab's issuer unknown (no GitLab config)")
    issuer = str(c.token.get("issuer") or "")
    if issuer == c.i.issuer:
        return _row("auth.issuer", OK, f"issuer {issuer} on both sides")
    where = c.i.gitlab_config.source("registry_issuer") if c.i.gitlab_config else "settings"
    return _row(
        "auth.issuer",
        FAIL,
        f"registry expects issuer {issuer or '(missing)'}, GitLab signs as {c.i.issuer} "
        f"({where}): every GitLab token is refused",
        f"gitlab.rb: gitlab_rails['registry_issuer'] = \"{c.i.issuer}\"  (then gitlab-ctl "
        "reconfigure: the Linux package writes it to both sides)",
        f"config.yml: auth.token.issuer: {c.i.issuer}",
    )


def _bundle(c: _Context) -> tuple[str | None, list[x509.Certificate], str | None]:
    """(where, certificates, error) of the rootcertbundle (or gitlab.rb's certificate)."""
    if c.token is not None:
        path = c.token.get("rootcertbundle")
        if not path:
            return None, [], "auth.token.rootcertbundle is not set"
        try:
            with open(str(path), "rb") as handle:
                data = handle.read()
        except OSError as exc:
            return str(path), [], f"rootcertbundle {path}: cannot read ({exc.strerror})"
        where = str(path)
    elif c.i.gitlab_config is not None and c.i.gitlab_config.internal_certificate:
        data = c.i.gitlab_config.internal_certificate.encode()
        where = c.i.gitlab_config.source("internal_certificate")
    else:
        return None, [], None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        return where, [], f"{where}: no PEM certificate in it"
    return where, certificates, None


def _public_der(key: Any) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_rootcertbundle(c: _Context) -> list[Row]:
    name = "auth.rootcertbundle"
    where, certificates, error = _bundle(c)
    if where is None and error is None:
        return _row(name, SKIPPED, "no token auth and no registry['internal_certificate']")
    fix = (
        "regops keys check <GitLab's key> <rootcertbundle> tells whether a pair matches;",
        "a new pair: regops keys generate --out DIR prints the gitlab.rb lines",
        "registry['internal_key'] and registry['internal_certificate'] (gitlab-ctl reconfigure)",
    )
    if error is not None:
        return _row(name, FAIL, error, *fix)
    if c.i.signing_key is None:
        why = c.i.signing_key_error or (
            "GitLab's signing key is not known here (gitlab.yml registry.key, gitlab.rb "
            "registry['internal_key'] or REGOPS_REGISTRY_KEY); run on the GitLab host"
        )
        return _row(name, SKIPPED, f"{len(certificates)} certificate(s) in {where}; {why}")
    wanted = _public_der(c.i.signing_key.public_key())
    for number, certificate in enumerate(certificates, start=1):
        if _public_der(certificate.public_key()) == wanted:
            return _row(
                name,
                OK,
                f"certificate {number} of {len(certificates)} in {where} holds the public key "
                f"of GitLab's signing key (kid {libtrust_kid(c.i.signing_key)})",
            )
    return _row(
        name,
        FAIL,
        f"no certificate in {where} ({len(certificates)}) holds the public key of GitLab's "
        f"signing key ({c.i.signing_key_source}): every token GitLab signs is refused",
        *fix,
    )


def _expiry(certificate: x509.Certificate, now: datetime.datetime) -> tuple[str, str]:
    """(status, text) for a certificate's validity at ``now``."""
    ends = certificate.not_valid_after_utc
    day = ends.strftime("%Y-%m-%d")
    if ends <= now:
        return FAIL, f"expired on {day}"
    left = ends - now
    if left < EXPIRY_WARNING:
        return WARN, f"expires on {day}, in {left.days} days"
    return OK, f"valid until {day}"


def check_token_certificate(c: _Context) -> list[Row]:
    name = "tls.token-certificate"
    where, certificates, error = _bundle(c)
    if not certificates:
        return _row(name, SKIPPED, error or "no token certificate to read")
    results = [_expiry(cert, c.i.now) for cert in certificates]
    status = max((s for s, _ in results), key=lambda s: SEVERITY[s])
    texts = "; ".join(f"certificate {n}: {text}" for n, (_, text) in enumerate(results, 1))
    if status == OK:
        return _row(name, OK, f"{where}: {texts}")
    # Distribution looks kid-signed tokens (GitLab's) up by key and does not check dates;
    # x5c-chained tokens and anything verifying the bundle do: a warning, not a failure.
    return _row(
        name,
        WARN,
        f"{where}: {texts} (GitLab's kid-signed tokens still verify; renew before "
        "anything checks the dates)",
        "regops keys generate --out DIR, then install the printed registry['internal_key'] "
        "and registry['internal_certificate'] lines (gitlab-ctl reconfigure)",
    )


# -- storage --------------------------------------------------------------------------------------


def check_delete(c: _Context) -> list[Row]:
    config = c.i.registry_config
    if config is None:
        return _row("storage.delete", SKIPPED, "no registry config")
    if config.delete_enabled:
        return _row("storage.delete", OK, "storage.delete.enabled: true")
    return _row(
        "storage.delete",
        FAIL,
        "deletes are disabled: cleanup policies and regops cannot delete tags "
        "(DELETE answers 405 UNSUPPORTED)",
        "config.yml: storage.delete.enabled: true",
        "gitlab.rb: registry['storage_delete_enabled'] = true",
    )


def check_readonly(c: _Context) -> list[Row]:
    config = c.i.registry_config
    if config is None:
        return _row("storage.readonly", SKIPPED, "no registry config")
    if not config.readonly:
        return _row("storage.readonly", OK, "not in read-only maintenance mode")
    return _row(
        "storage.readonly",
        WARN,
        "read-only maintenance mode: pulls work, pushes and deletes answer 405 "
        "(right during garbage collection, wrong afterwards)",
        "config.yml: storage.maintenance.readonly.enabled: false",
        "gitlab.rb: registry['storage'] = { ..., 'maintenance' => { 'readonly' => "
        "{ 'enabled' => false } } }",
    )


def _is_local(host: str) -> bool:
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def check_redirect(c: _Context) -> list[Row]:
    config = c.i.registry_config
    if config is None:
        return _row("storage.redirect", SKIPPED, "no registry config")
    driver = config.driver
    if driver in NO_REDIRECT_DRIVERS:
        return _row(
            "storage.redirect", SKIPPED, f"{driver} driver: the registry serves blobs itself"
        )
    if config.redirect_disabled:
        return _row(
            "storage.redirect", OK, f"{driver}: redirects disabled, blobs go through the registry"
        )
    endpoint = config.driver_parameters().get("regionendpoint")
    host = (
        urlsplit(str(endpoint) if "://" in str(endpoint) else f"//{endpoint}").hostname
        if endpoint
        else None
    )
    if host and _is_local(host):
        return _row(
            "storage.redirect",
            FAIL,
            f"{driver}: clients are redirected to the bucket at {host}, a local address "
            "they cannot reach: pulls fail",
            "config.yml: storage.redirect.disable: true",
            "gitlab.rb: registry['storage'] = { ..., 'redirect' => { 'disable' => true } }",
        )
    target = host or f"the {driver} service"
    return _row(
        "storage.redirect",
        OK,
        f"{driver}: clients download blobs from {target} directly (they must reach it; "
        "disable redirects for hosts that cannot)",
    )


def _s3(c: _Context) -> dict[str, Any] | None:
    config = c.i.registry_config
    if config is None or config.driver != "s3":
        return None
    return config.driver_parameters()


def check_s3_encryption(c: _Context) -> list[Row]:
    params = _s3(c)
    if params is None:
        return _row("storage.s3-encryption", SKIPPED, "not the s3 driver")
    if str(params.get("encrypt", False)).lower() in ("true", "1"):
        how = "with KMS key " + str(params["keyid"]) if params.get("keyid") else "SSE-S3"
        return _row("storage.s3-encryption", OK, f"server-side encryption on ({how})")
    return _row(
        "storage.s3-encryption",
        WARN,
        "objects are stored without server-side encryption (encrypt is not true)",
        "config.yml: storage.s3.encrypt: true  (and keyid: <KMS key id> for KMS)",
        "gitlab.rb: registry['storage'] = { 's3' => { ..., 'encrypt' => true } }",
    )


def check_s3_endpoint(c: _Context) -> list[Row]:
    params = _s3(c)
    if params is None:
        return _row("storage.s3-endpoint", SKIPPED, "not the s3 driver")
    missing = [key for key in ("bucket", "region") if not params.get(key)]
    if missing:
        return _row(
            "storage.s3-endpoint",
            FAIL,
            f"the s3 driver needs {' and '.join(missing)}",
            *(f"config.yml: storage.s3.{key}: <{key}>" for key in missing),
        )
    target = S3Target.from_driver(params)
    url = target.bucket_url()
    host = urlsplit(url).hostname or ""
    if url.startswith("http://") and not _is_local(host):
        return _row(
            "storage.s3-endpoint",
            WARN,
            f"S3 over plain HTTP to {host}: signed requests and layers cross the network "
            "unencrypted",
            "config.yml: storage.s3.secure: true and an https:// regionendpoint",
        )
    return _row("storage.s3-endpoint", OK, f"bucket {target.bucket} at {redact_url(url)}")


def check_s3_bucket(c: _Context) -> list[Row]:
    params = _s3(c)
    name = "storage.s3-bucket"
    if params is None:
        return _row(name, SKIPPED, "not the s3 driver")
    if not c.i.live:
        return _row(name, SKIPPED, "offline")
    target = S3Target.from_driver(params)
    if not target.bucket:
        return _row(name, SKIPPED, "no bucket configured")
    try:
        answer = head_bucket(target, c.i.http, c.i.now)
    except TransportError as exc:
        return _row(name, FAIL, f"S3 endpoint unreachable: {exc}")
    who = "configured credentials" if target.access_key else "no credentials (instance role?)"
    if answer.status == 200:
        return _row(name, OK, f"bucket {target.bucket} answers with the {who}")
    if answer.region and answer.region != target.region:
        return _row(
            name,
            FAIL,
            f"bucket {target.bucket} is in region {answer.region}, config says {target.region}",
            f"config.yml: storage.s3.region: {answer.region}",
        )
    reasons = {403: "the credentials are refused", 404: "no such bucket", 401: "unauthenticated"}
    return _row(
        name,
        FAIL,
        f"HEAD bucket {target.bucket} with the {who} answered {answer.status}: "
        f"{reasons.get(answer.status, 'unexpected answer')}",
        "check storage.s3.accesskey/secretkey (or the instance role) and the bucket name",
    )


# -- TLS ------------------------------------------------------------------------------------------


def check_registry_tls(c: _Context) -> list[Row]:
    name = "tls.registry-endpoint"
    config = c.i.registry_config
    if config is not None and config.tls_certificate:
        try:
            with open(config.tls_certificate, "rb") as handle:
                certificate = x509.load_pem_x509_certificates(handle.read())[0]
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "no PEM certificate in it"
            return _row(name, FAIL, f"http.tls.certificate {config.tls_certificate}: {reason}")
        status, text = _expiry(certificate, c.i.now)
        return _row(
            name,
            status,
            f"http.tls.certificate {config.tls_certificate}: {text}",
            *(["renew the certificate before it expires"] if status != OK else []),
        )
    urls = [u for u in (c.i.registry_url,) if u and u.startswith("https://")]
    if not urls:
        return _row(name, SKIPPED, "no TLS certificate configured and no https:// registry URL")
    if not c.i.live:
        return _row(name, SKIPPED, "offline")
    url = urls[0]
    try:
        certificate = peer_certificate(url, c.i.http.timeout[0])
    except TransportError as exc:
        return _row(name, FAIL, str(exc))
    status, text = _expiry(certificate, c.i.now)
    problem = verify_certificate(url, c.i.http.timeout[0], c.i.ca_bundle)
    detail = f"{redact_url(url)}: {text}"
    if problem is not None:
        detail += f"; not trusted here ({problem})"
        status = max(status, WARN, key=lambda s: SEVERITY[s])
    fix = [] if status == OK else ["renew the certificate (and chain) the registry presents"]
    return _row(name, status, detail, *fix)


# -- notifications --------------------------------------------------------------------------------


def check_notifications(c: _Context) -> list[Row]:
    config = c.i.registry_config
    if config is None:
        return _row("notifications", SKIPPED, "no registry config")
    endpoints = config.notification_endpoints
    if not endpoints:
        return _row("notifications", SKIPPED, "no notification endpoints configured")
    rows: list[Row] = []
    for endpoint in endpoints:
        prefix = f"notifications.{endpoint.name}"
        if endpoint.disabled:
            rows += _row(prefix, SKIPPED, "endpoint disabled")
            continue
        rows += _endpoint_secret(c, endpoint, prefix)
        rows += _endpoint_retries(endpoint, prefix)
        rows += _endpoint_reachable(c, endpoint, prefix)
    return rows


def _endpoint_secret(c: _Context, endpoint: NotificationEndpoint, prefix: str) -> list[Row]:
    name = f"{prefix}.secret"
    fix = (
        f"config.yml: notifications.endpoints[{endpoint.index}].headers.Authorization: "
        "[<GitLab's notification secret>]",
        "gitlab.rb: the endpoint's 'headers' => { 'Authorization' => [<the same value as "
        "gitlab_rails['registry_notification_secret']>] }",
    )
    if c.i.notification_secret is None:
        return _row(
            name,
            SKIPPED,
            "GitLab's notification secret unknown (gitlab.yml "
            "registry.notification_secret / gitlab.rb registry_notification_secret)",
        )
    values = endpoint.header("Authorization")
    if not values:
        return _row(
            name,
            FAIL,
            "sends no Authorization header: the listener answers 401 and the registry "
            "retries the same events forever",
            *fix,
        )
    secret = c.i.notification_secret.reveal().encode()
    if any(hmac.compare_digest(value.encode(), secret) for value in values):
        return _row(name, OK, "Authorization header equals GitLab's notification secret")
    return _row(
        name,
        FAIL,
        "Authorization header differs from GitLab's notification secret: the listener "
        "answers 401 and events are never delivered",
        *fix,
    )


def _endpoint_retries(endpoint: NotificationEndpoint, prefix: str) -> list[Row]:
    name = f"{prefix}.retries"
    raw = endpoint.raw
    if "threshold" in raw:
        retries = raw.get("maxretries") or raw["threshold"]
        return _row(
            name,
            WARN,
            f"threshold is deprecated for GitLab's registry (GitLab 17.1; removed in 19.0): "
            f"use maxretries{' (set too: remove threshold)' if 'maxretries' in raw else ''}. "
            "Upstream Distribution 2.x reads only threshold",
            f"config.yml: notifications.endpoints[{endpoint.index}]: replace "
            f"threshold: {raw['threshold']} with maxretries: {retries}",
            f"gitlab.rb: in registry['notifications'], 'maxretries' => {retries} instead of "
            "'threshold'",
        )
    if "maxretries" in raw:
        return _row(
            name, OK, f"maxretries {raw['maxretries']}, backoff {raw.get('backoff', 'default')}"
        )
    return _row(name, OK, "registry defaults for retries and backoff")


def _endpoint_reachable(c: _Context, endpoint: NotificationEndpoint, prefix: str) -> list[Row]:
    name = f"{prefix}.reachable"
    if not endpoint.url:
        return _row(
            name,
            FAIL,
            "endpoint has no url",
            f"config.yml: notifications.endpoints[{endpoint.index}].url: "
            f"https://gitlab.example.com{GITLAB_EVENTS_PATH}",
        )
    shown = redact_url(endpoint.url)
    if not c.i.live:
        return _row(name, SKIPPED, f"offline ({shown})")
    try:
        status = post_events(endpoint.url, endpoint.headers, c.i.http)
    except TransportError as exc:
        return _row(
            name,
            FAIL,
            f"{shown} unreachable ({exc.message.rpartition(': ')[2]}): the registry keeps "
            "events in memory and retries; a registry restart loses them",
            "start the listener, or fix notifications.endpoints[].url",
        )
    if 200 <= status < 400:
        return _row(name, OK, f"{shown} accepts an empty events envelope ({status})")
    if status in (401, 403):
        return _row(name, FAIL, f"{shown} refuses the configured Authorization header ({status})")
    return _row(
        name,
        FAIL,
        f"{shown} answered {status} to an events envelope",
        "check the url path (GitLab's is " + GITLAB_EVENTS_PATH + ")",
    )


# -- live registry --------------------------------------------------------------------------------


def check_api_url(c: _Context) -> list[Row]:
    name = "gitlab.api-url"
    config = c.i.registry_config
    if not c.i.registry_url:
        return _row(name, SKIPPED, "registry_api_url unknown")
    addr = str(config.http.get("addr") or "") if config else ""
    if not addr:
        return _row(name, OK, f"GitLab talks to the registry at {redact_url(c.i.registry_url)}")
    host, _, port = addr.rpartition(":")
    api = urlsplit(c.i.registry_url)
    api_port = api.port or (443 if api.scheme == "https" else 80)
    local = {"", "0.0.0.0", "::", "[::]"}
    same_host = (
        host in local or host == api.hostname or (_is_local(host) and _is_local(api.hostname or ""))
    )
    if str(api_port) == port and same_host:
        return _row(
            name,
            OK,
            f"registry_api_url {redact_url(c.i.registry_url)} is where the registry "
            f"listens ({addr})",
        )
    return _row(
        name,
        WARN,
        f"GitLab calls the registry at {redact_url(c.i.registry_url)} but it listens on {addr} "
        "(right only behind a proxy)",
        "gitlab.rb: gitlab_rails['registry_api_url'] = "
        f'"http://{addr.replace("0.0.0.0", "localhost")}"',
    )


def check_v2(c: _Context) -> list[Row]:
    name = "live.v2"
    if not c.i.registry_url:
        return _row(name, SKIPPED, "registry URL unknown")
    if not c.i.live:
        return _row(name, SKIPPED, "offline")
    url = redact_url(c.i.registry_url)
    try:
        answer = probe_v2(c.i.registry_url, c.i.http)
    except TransportError as exc:
        return _row(name, FAIL, f"registry unreachable: {exc}")
    if answer.status == 200:
        return _row(
            name,
            FAIL,
            f"{url}/v2/ answers 200 without credentials: anyone can push and delete",
            *_auth_fix(c),
        )
    if answer.status != 401 or not answer.challenge.is_bearer:
        return _row(
            name, FAIL, f"{url}/v2/ answered {answer.status} (expected 401 with a Bearer challenge)"
        )
    expected = c.expected_realm()
    realm = answer.challenge.realm or ""
    if expected and not _same_url(realm, expected):
        return _row(
            name,
            FAIL,
            f"{url}/v2/ sends clients to realm {redact_url(realm)}, not GitLab's {expected}",
            f"config.yml: auth.token.realm: {expected}",
        )
    version = f", GitLab registry {answer.gitlab_version}" if answer.gitlab_version else ""
    return _row(name, OK, f"{url}/v2/ answers 401 with realm {redact_url(realm)}{version}")


def _auth(c: _Context) -> tuple[RegistryAuth | None, str]:
    if c.i.signing_key is not None and c.i.issuer:
        minter = TokenMinter(c.i.signing_key, issuer=c.i.issuer, service=DEFAULT_SERVICE)
        return KeyAuth(minter), f"a token signed with GitLab's key (kid {minter.kid})"
    if c.i.gitlab_token is not None and c.i.gitlab_username and c.i.gitlab_url:
        auth = RealmAuth(c.i.gitlab_username, c.i.gitlab_token, allowed_origins=[c.i.gitlab_url])
        return auth, f"a token from {c.i.gitlab_url}{JWT_AUTH_PATH} for {c.i.gitlab_username}"
    return None, ""


def check_token_accepted(c: _Context) -> list[Row]:
    name = "live.token"
    if not c.i.registry_url:
        return _row(name, SKIPPED, "registry URL unknown")
    if not c.i.live:
        return _row(name, SKIPPED, "offline")
    auth, what = _auth(c)
    if auth is None:
        return _row(
            name, SKIPPED, "no signing key and no GitLab token to get a registry token with"
        )
    client = RegistryClient(c.i.registry_url, auth, http=_no_retries(c.i.http))
    try:
        client.ping()
    except RegistryUnauthorized:
        return _row(
            name,
            FAIL,
            f"the registry refused {what}: issuer, service or certificate bundle do not match "
            "(see the auth.* rows)",
        )
    except (RegistryError, TokenError, TransportError) as exc:
        return _row(name, FAIL, f"getting through with {what} failed: {exc}")
    finally:
        client.session.close()
    return _row(name, OK, f"the registry accepts {what}")


def _no_retries(http: HTTPSettings) -> HTTPSettings:
    return HTTPSettings(timeout=http.timeout, verify=http.verify, max_retries=0)


def check_same_registry(c: _Context) -> list[Row]:
    name = "live.registry-host"
    host, api = c.i.registry_host, c.i.registry_url
    if not host or not api:
        return _row(name, SKIPPED, "registry host or registry_api_url unknown")
    if urlsplit(api).netloc.lower() == host.lower():
        return _row(name, OK, f"users and GitLab use the same address {host}")
    if not c.i.live:
        return _row(name, SKIPPED, "offline")
    user_url, error = None, ""
    for scheme in ("https", "http"):
        try:
            answer = probe_v2(f"{scheme}://{host}", c.i.http)
        except TransportError as exc:
            error = str(exc)
            continue
        user_url = f"{scheme}://{host}"
        break
    if user_url is None:
        return _row(
            name,
            FAIL,
            f"the registry host users see ({host}) does not answer: {error}",
            "gitlab.rb: gitlab_rails['registry_host'] / ['registry_port']: what users reach",
        )
    auth, _ = _auth(c)
    if isinstance(auth, KeyAuth):
        catalogs = []
        for url in (user_url, api):
            client = RegistryClient(url, auth, http=_no_retries(c.i.http))
            try:
                catalogs.append(_first_page(client))
            except (RegistryError, TransportError) as exc:
                return _row(name, FAIL, f"{redact_url(url)}: {exc}")
            finally:
                client.session.close()
        if catalogs[0] == catalogs[1]:
            return _row(
                name,
                OK,
                f"{host} (users) and {redact_url(api)} (GitLab) list the same "
                f"repositories ({len(catalogs[0])} compared)",
            )
        return _row(
            name,
            FAIL,
            f"{host} (users) and {redact_url(api)} (GitLab) list different repositories: "
            "two registries",
            "gitlab.rb: gitlab_rails['registry_api_url'] must reach the registry users push to",
        )
    try:
        other = probe_v2(api, c.i.http)
    except TransportError as exc:
        return _row(name, FAIL, f"registry_api_url unreachable: {exc}")
    if (answer.challenge.realm, answer.challenge.service) == (
        other.challenge.realm,
        other.challenge.service,
    ):
        return _row(
            name,
            OK,
            f"{host} and {redact_url(api)} send the same challenge "
            "(catalogs not compared: no signing key)",
        )
    return _row(
        name, FAIL, f"{host} and {redact_url(api)} send different challenges: two registries"
    )


def _first_page(client: RegistryClient) -> list[str]:
    names = []
    for repository in client.catalog(page_size=CATALOG_PAGE):
        names.append(repository)
        if len(names) >= CATALOG_PAGE:
            break
    return sorted(names)


# -- GitLab ---------------------------------------------------------------------------------------


def check_gitlab_api(c: _Context) -> list[Row]:
    name = "live.gitlab-api"
    if c.i.gitlab is None:
        return _row(name, SKIPPED, "no GitLab URL and token (GITLAB_URL, GITLAB_PRIVATE_TOKEN)")
    if not c.i.live:
        return _row(name, SKIPPED, "offline")
    try:
        version = c.i.gitlab.version()
    except GitLabUnauthorized:
        return _row(
            name,
            FAIL,
            f"{c.i.gitlab.url}: the token is refused (401)",
            "set GITLAB_PRIVATE_TOKEN to an admin's token with the api scope",
        )
    except (GitLabError, TransportError) as exc:
        return _row(name, FAIL, str(exc))
    return _row(name, OK, f"GitLab {version.get('version')} answers at {c.i.gitlab.url}")


def _settings(c: _Context) -> tuple[dict[str, Any] | None, list[Row] | None, str]:
    if c.i.gitlab is None or not c.i.live:
        return None, None, "no GitLab API" if c.i.gitlab is None else "offline"
    try:
        return c.i.gitlab.application_settings(), None, ""
    except GitLabForbidden:
        return None, None, "reading application settings needs an admin token"
    except (GitLabError, TransportError) as exc:
        return None, None, str(exc)


def check_token_duration(c: _Context) -> list[Row]:
    name = "gitlab.token-duration"
    settings, _, why = _settings(c)
    if settings is None:
        return _row(name, SKIPPED, why)
    minutes = settings.get("container_registry_token_expire_delay")
    if not isinstance(minutes, int):
        return _row(name, SKIPPED, "container_registry_token_expire_delay not in GitLab's answer")
    size_gb = minutes * 60 * PUSH_RATE_MB_S / 1000
    meaning = (
        f"registry tokens last {minutes} min: at {PUSH_RATE_MB_S} MB/s a push can upload "
        f"about {size_gb:g} GB before its token expires"
    )
    if minutes < DEFAULT_TOKEN_MINUTES:
        return _row(
            name,
            WARN,
            f"{meaning}; shorter than GitLab's default {DEFAULT_TOKEN_MINUTES}: large pushes "
            "fail with 'unauthorized'",
            "ApplicationSettings.current().update(container_registry_token_expire_delay=30)",
            "or: PUT /api/v4/application/settings container_registry_token_expire_delay=30",
        )
    return _row(name, OK, meaning)


def check_cleanup_workers(c: _Context) -> list[Row]:
    name = "gitlab.cleanup-workers"
    settings, _, why = _settings(c)
    if settings is None:
        return _row(name, SKIPPED, why)
    capacity = settings.get("container_registry_expiration_policies_worker_capacity")
    max_list = settings.get("container_registry_cleanup_tags_service_max_list_size")
    timeout = settings.get("container_registry_delete_tags_service_timeout")
    summary = (
        f"worker capacity {capacity}, at most {max_list or 'unlimited'} tags per run, "
        f"{timeout or 'no'} s delete timeout"
    )
    if capacity == 0:
        return _row(
            name,
            WARN,
            f"{summary}: no cleanup worker runs, so no cleanup policy ever runs",
            "ApplicationSettings.current().update(container_registry_expiration_policies_worker_capacity=4)",
        )
    return _row(name, OK, summary)


def check_unused_registries(c: _Context) -> list[Row]:
    name = "projects.unused-registries"
    if c.i.gitlab is None:
        return _row(name, SKIPPED, "no GitLab API")
    if not c.i.live or not c.i.scan_projects:
        return _row(name, SKIPPED, "offline" if not c.i.live else "project scan not asked for")
    scan, error = c.unused_scan()
    if scan is None:
        return _row(name, SKIPPED, f"could not list projects: {error}")
    if not scan.unused:
        return _row(name, OK, f"{scan.enabled} projects have the registry enabled; all have images")
    paths = ", ".join(p.path for p in scan.unused[:SHOWN_PROJECTS])
    more = (
        f" and {len(scan.unused) - SHOWN_PROJECTS} more"
        if len(scan.unused) > SHOWN_PROJECTS
        else ""
    )
    return _row(
        name,
        WARN,
        f"{len(scan.unused)} of {scan.enabled} projects with the registry enabled have no "
        f"images: {paths}{more}",
        "python recipes/disable_unused_registries.py            # lists them (dry run)",
        "python recipes/disable_unused_registries.py --execute  # disables them",
    )


def check_new_project_default(c: _Context) -> list[Row]:
    name = "projects.new-project-default"
    config = c.i.gitlab_config
    if config is None:
        return _row(name, SKIPPED, "no GitLab config")
    where = config.source("default_projects_registry")
    if not config.default_projects_registry:
        return _row(name, OK, f"new projects start with the registry disabled ({where})")
    scan, _ = c.unused_scan()
    if (
        scan is not None
        and scan.enabled
        and len(scan.unused) / scan.enabled >= UNUSED_SHARE_WARNING
    ):
        share = round(100 * len(scan.unused) / scan.enabled)
        return _row(
            name,
            WARN,
            f"new projects get the registry ({where}) and {share}% of enabled registries "
            "are unused",
            "gitlab.rb: "
            "gitlab_rails['gitlab_default_projects_features_container_registry'] = false",
            "gitlab.yml: production.gitlab.default_projects_features.container_registry: false",
        )
    return _row(name, OK, f"new projects get the registry enabled ({where})")


CHECKS: tuple[Check, ...] = (
    check_registry_config,
    check_gitlab_config,
    check_registry_enabled,
    check_token_auth,
    check_realm,
    check_service,
    check_issuer,
    check_rootcertbundle,
    check_token_certificate,
    check_api_url,
    check_v2,
    check_token_accepted,
    check_same_registry,
    check_gitlab_api,
    check_delete,
    check_readonly,
    check_redirect,
    check_s3_encryption,
    check_s3_endpoint,
    check_s3_bucket,
    check_registry_tls,
    check_token_duration,
    check_cleanup_workers,
    check_notifications,
    check_unused_registries,
    check_new_project_default,
)


def guard(check: Check) -> Check:
    """``check`` with a RegopsError turned into a failed row (the error is the row)."""

    def run(c: _Context) -> list[Row]:
        try:
            return check(c)
        except RegopsError as exc:
            return _row(check.__name__.removeprefix("check_").replace("_", "-"), FAIL, str(exc))

    return run
