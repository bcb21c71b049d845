"""Settings: where regops finds GitLab, its token and the registry, and why.

:func:`resolve_settings` takes each setting from the first place that has it:

1. **Arguments** to ``regops.connect(...)`` / ``resolve_settings(...)``
   (``url``, ``private_token``, ``oauth_token``, ``job_token``, ``registry_url``, ...).
2. **Environment**: ``GITLAB_URL``; ``GITLAB_PRIVATE_TOKEN``, else
   ``GITLAB_OAUTH_TOKEN``; in CI, ``CI_SERVER_URL`` + ``CI_JOB_TOKEN``;
   ``REGOPS_REGISTRY_URL``, ``REGOPS_REGISTRY_HOST``, ``REGOPS_REGISTRY_AUTH``,
   ``REGOPS_REGISTRY_KEY``, ``REGOPS_REGISTRY_ISSUER``, ``REGOPS_REGISTRY_SERVICE``,
   ``REGOPS_REGISTRY_USER``, ``REGOPS_REGISTRY_PASSWORD``, ``REGOPS_REGISTRY_STORAGE``,
   ``REGOPS_GITLAB_YML``, ``REGOPS_SSL_VERIFY``, ``REGOPS_TIMEOUT``, and
   ``REGOPS_CONFIG_SECTION`` (which python-gitlab section to read).
3. **python-gitlab configuration file**: ``$PYTHON_GITLAB_CFG``, else the first of
   ``~/.python-gitlab.cfg``, ``$XDG_CONFIG_HOME/python-gitlab.cfg`` (``~/.config``),
   ``/etc/python-gitlab.cfg``. The section is ``REGOPS_CONFIG_SECTION``, else
   ``[global] default = NAME``, else the only section. Keys: ``url``,
   ``private_token`` / ``oauth_token`` / ``job_token`` (``helper: command`` runs a
   credential helper, as python-gitlab does), ``ssl_verify``, ``timeout`` (also
   read from ``[global]``), and regops' own keys in the same section:
   ``regops_registry_url``, ``regops_registry_host``, ``regops_registry_auth``,
   ``regops_registry_key``, ``regops_registry_issuer``, ``regops_registry_service``,
   ``regops_registry_user``, ``regops_registry_password``, ``regops_registry_storage``,
   ``regops_gitlab_yml``.
4. **gitlab.yml** (on the GitLab host: ``/var/opt/gitlab/gitlab-rails/etc/gitlab.yml``
   by default): ``production.gitlab`` host/port/https/relative_url_root give the
   GitLab URL; ``production.registry`` (when ``enabled``) gives ``api_url`` (the
   registry URL), ``host``/``port`` (the registry host in image locations),
   ``key`` (the token signing key), ``issuer`` and ``path`` (the storage root).
   On the GitLab host, then, only a token is needed.
5. **Defaults**: issuer ``gitlab-issuer``, service ``container_registry``,
   TLS verification on, read timeout 60 s.

Registry authentication (``registry_auth``), when not set, is inferred: ``key``
when a signing key is known (tokens minted locally, as GitLab does), else
``basic`` when a registry user and password are set, else ``realm`` when a GitLab
token is set (tokens from GitLab's ``/jwt/auth``; the user name defaults to the
token's user, fetched at connect time), else ``anonymous``.

``Settings.sources`` says where each value came from, e.g. ``"env GITLAB_URL"``,
``"~/.python-gitlab.cfg [local]"``, ``"argument"``, ``"default"``.
"""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from regops.errors import ConfigError
from regops.http import CONNECT_TIMEOUT, READ_TIMEOUT, HTTPSettings
from regops.secrets import MASK, Secret, redact_url

DEFAULT_ISSUER = "gitlab-issuer"  # GitLab's default registry.issuer (Linux package: omnibus-...)
DEFAULT_SERVICE = "container_registry"  # GitLab's token audience for its registry
DEFAULT_GITLAB_YML = "var/opt/gitlab/gitlab-rails/etc/gitlab.yml"  # Linux package, under /
SYSTEM_PYTHON_GITLAB_CFG = "etc/python-gitlab.cfg"  # under /
USER_PYTHON_GITLAB_CFG = ".python-gitlab.cfg"  # under the home directory
CI_JOB_TOKEN_USER = "gitlab-ci-token"  # the user name GitLab expects with a job token
HELPER_PREFIX = "helper:"  # python-gitlab credential helper syntax
HELPER_TIMEOUT = 30  # seconds a credential helper may take
TOKEN_KINDS = ("private", "oauth", "job")
AUTH_MODES = ("key", "realm", "basic", "anonymous")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

# (environment variable, Settings field), in precedence order within the environment.
ENV_FIELDS = (
    ("GITLAB_URL", "gitlab_url"),
    ("CI_SERVER_URL", "gitlab_url"),
    ("REGOPS_REGISTRY_URL", "registry_url"),
    ("REGOPS_REGISTRY_HOST", "registry_host"),
    ("REGOPS_REGISTRY_AUTH", "registry_auth"),
    ("REGOPS_REGISTRY_KEY", "registry_key_path"),
    ("REGOPS_REGISTRY_ISSUER", "registry_issuer"),
    ("REGOPS_REGISTRY_SERVICE", "registry_service"),
    ("REGOPS_REGISTRY_USER", "registry_username"),
    ("REGOPS_REGISTRY_PASSWORD", "registry_password"),
    ("REGOPS_REGISTRY_STORAGE", "registry_storage_path"),
    ("REGOPS_CACHE_DIR", "cache_dir"),
    ("REGOPS_GITLAB_YML", "gitlab_yml_path"),
    ("REGOPS_SSL_VERIFY", "ssl_verify"),
    ("REGOPS_TIMEOUT", "timeout"),
)
ENV_TOKENS = (
    ("GITLAB_PRIVATE_TOKEN", "private"),
    ("GITLAB_OAUTH_TOKEN", "oauth"),
    ("CI_JOB_TOKEN", "job"),
)
INI_TOKENS = (("private_token", "private"), ("oauth_token", "oauth"), ("job_token", "job"))
INI_FIELDS = (
    ("url", "gitlab_url"),
    ("ssl_verify", "ssl_verify"),
    ("timeout", "timeout"),
    ("regops_registry_url", "registry_url"),
    ("regops_registry_host", "registry_host"),
    ("regops_registry_auth", "registry_auth"),
    ("regops_registry_key", "registry_key_path"),
    ("regops_registry_issuer", "registry_issuer"),
    ("regops_registry_service", "registry_service"),
    ("regops_registry_user", "registry_username"),
    ("regops_registry_password", "registry_password"),
    ("regops_registry_storage", "registry_storage_path"),
    ("regops_cache_dir", "cache_dir"),
    ("regops_gitlab_yml", "gitlab_yml_path"),
)
ARGUMENT_ALIASES = {"url": "gitlab_url", "registry_key": "registry_key_path"}
SECRET_FIELDS = frozenset({"token", "registry_password"})
URL_FIELDS = frozenset({"gitlab_url", "registry_url"})  # may carry user:password@
# registry_url "none": no registry, and none looked up in GitLab (tag details via GitLab).
NO_REGISTRY = "none"


@dataclass(frozen=True)
class Settings:
    """Resolved settings; ``sources`` maps each set field to where it came from."""

    gitlab_url: str | None = None
    token: Secret | None = None
    token_kind: str = "private"
    registry_url: str | None = None
    registry_host: str | None = None  # host:port in image locations (gitlab.yml registry.host)
    registry_auth: str | None = None
    registry_key_path: str | None = None
    registry_issuer: str = DEFAULT_ISSUER
    registry_service: str = DEFAULT_SERVICE
    registry_username: str | None = None
    registry_password: Secret | None = None
    registry_storage_path: str | None = None
    cache_dir: str | None = None  # manifests by digest; None: the user cache dir; "none": memory
    ssl_verify: bool | str = True
    timeout: float = READ_TIMEOUT
    gitlab_yml_path: str | None = None
    config_file: str | None = None
    config_section: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={_shown(name, value)!r}" for name, value, _ in self._items() if value
        )
        return f"Settings({shown})"

    def _items(self) -> list[tuple[str, Any, str]]:
        return [
            (f.name, getattr(self, f.name), self.sources.get(f.name, ""))
            for f in fields(self)
            if f.name != "sources"
        ]

    def rows(self) -> list[tuple[str, str, str]]:
        """``(field, value with secrets masked, source)`` for a table."""
        result = []
        for name, value, source in self._items():
            if isinstance(value, Secret):
                text = MASK if value else ""
            else:
                text = "" if value is None else str(_shown(name, value))
            result.append((name, text, source or ("default" if text else "")))
        return result

    @property
    def gitlab_host(self) -> str | None:
        """Host (and port) of the GitLab URL."""
        return url_host(self.gitlab_url) if self.gitlab_url else None

    def http_settings(self, **overrides: Any) -> HTTPSettings:
        """Transport settings from ``ssl_verify`` and ``timeout``."""
        return HTTPSettings(
            timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout),
            verify=self.ssl_verify,
            **overrides,
        )

    def check(self) -> Settings:
        """This object when complete and consistent; else one ConfigError saying what's missing."""
        _check(self)
        return self


def url_host(url: str) -> str | None:
    """``host[:port]`` of a URL, without the ``user:password@`` a netloc may carry."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return netloc or None


def _shown(name: str, value: Any) -> Any:
    """A setting as it may be displayed: URL credentials removed (Secrets mask themselves)."""
    if name in URL_FIELDS and isinstance(value, str):
        return redact_url(value)
    return value


# -- layers -------------------------------------------------------------------------------

Layer = dict[str, tuple[Any, str]]  # field -> (raw value, source)


def resolve_settings(
    *,
    environ: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    system_root: str | os.PathLike[str] = "/",
    **explicit: Any,
) -> Settings:
    """Settings from arguments > environment > python-gitlab INI > gitlab.yml > defaults.

    ``environ``, ``home`` and ``system_root`` (prefix of ``/etc`` and ``/var/opt``)
    exist for tests. Raises ConfigError naming the missing or invalid setting.
    """
    return collect_settings(environ=environ, home=home, system_root=system_root, **explicit).check()


def collect_settings(
    *,
    environ: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    system_root: str | os.PathLike[str] = "/",
    **explicit: Any,
) -> Settings:
    """Like :func:`resolve_settings` but without the completeness check (for display)."""
    env = dict(os.environ if environ is None else environ)
    home_dir = Path(home) if home is not None else Path.home()
    root = Path(system_root)
    layers = [_argument_layer(explicit), _env_layer(env)]
    ini_layer, ini_meta = _ini_layer(layers, env, home_dir, root)
    layers.append(ini_layer)
    layers.append(_gitlab_yml_layer(layers, root, home_dir))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in _field_names():
        for layer in layers:
            if name in layer:
                raw, source = layer[name]
                values[name] = _convert(name, raw, source)
                sources[name] = source
                if name == "token":  # the kind comes with the token, from the same place
                    kind, kind_source = layer.get("token_kind", ("private", source))
                    values["token_kind"] = _convert("token_kind", kind, kind_source)
                    sources["token_kind"] = kind_source
                break
    for key, (value, source) in ini_meta.items():
        if key not in values:
            values[key] = value
            sources[key] = source
    settings = Settings(**values, sources=sources)
    return _infer(settings)


def _field_names() -> list[str]:
    return [f.name for f in fields(Settings) if f.name not in ("sources", "token_kind")]


def _argument_layer(explicit: Mapping[str, Any]) -> Layer:
    layer: Layer = {}
    known = set(_field_names()) | {"token_kind"}
    for key, value in explicit.items():
        if value is None:
            continue
        name = ARGUMENT_ALIASES.get(key, key)
        kind = dict(INI_TOKENS).get(key)
        if kind:
            _set_token(layer, value, kind, f"argument {key}")
        elif name in known:
            layer[name] = (value, "argument")
        else:
            raise ConfigError(f"unknown setting {key!r} (known: {', '.join(sorted(known))})")
    if "token_kind" in layer and "token" not in layer:
        raise ConfigError("token_kind given without token=...")
    return layer


def _set_token(layer: Layer, value: Any, kind: str, source: str) -> None:
    if "token" not in layer:
        layer["token"] = (value, source)
        layer["token_kind"] = (kind, source)


def _env_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for var, name in ENV_FIELDS:
        value = env.get(var, "").strip()
        if value and name not in layer:
            layer[name] = (value, f"env {var}")
    for var, kind in ENV_TOKENS:
        value = env.get(var, "").strip()
        if value:
            _set_token(layer, value, kind, f"env {var}")
    if env.get("REGOPS_CONFIG_SECTION", "").strip():
        layer["config_section"] = (
            env["REGOPS_CONFIG_SECTION"].strip(),
            "env REGOPS_CONFIG_SECTION",
        )
    if env.get("PYTHON_GITLAB_CFG", "").strip():
        layer["config_file"] = (env["PYTHON_GITLAB_CFG"].strip(), "env PYTHON_GITLAB_CFG")
    return layer


def _first(layers: list[Layer], name: str) -> tuple[Any, str] | None:
    for layer in layers:
        if name in layer:
            return layer[name]
    return None


def _display(path: Path, home: Path) -> str:
    """A path as shown in sources: ``~/...`` under the home directory."""
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


# -- python-gitlab INI --------------------------------------------------------------------


def _ini_candidates(env: Mapping[str, str], home: Path, root: Path) -> list[Path]:
    xdg = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return [
        home / USER_PYTHON_GITLAB_CFG,
        xdg / "python-gitlab.cfg",
        root / SYSTEM_PYTHON_GITLAB_CFG,
    ]


def _ini_layer(
    layers: list[Layer], env: Mapping[str, str], home: Path, root: Path
) -> tuple[Layer, dict[str, tuple[Any, str]]]:
    """Values from the python-gitlab file, and (config_file, config_section) metadata."""
    chosen = _first(layers, "config_file")
    path: Path | None
    if chosen:
        path = Path(os.path.expanduser(str(chosen[0])))
        if not path.is_file():
            raise ConfigError(f"config_file: {path} (from {chosen[1]}) does not exist")
    else:
        path = next((p for p in _ini_candidates(env, home, root) if p.is_file()), None)
        if path is None:
            return {}, {}
    shown = _display(path, home)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as exc:
        raise ConfigError(f"cannot read {shown}: {_ini_error(exc)}") from None
    section, section_source = _ini_section(parser, layers, shown)
    meta: dict[str, tuple[Any, str]] = {"config_file": (str(path), "first found")}
    if section is None:
        return {}, meta
    meta["config_section"] = (section, section_source)
    where = f"{shown} [{section}]"
    layer: Layer = {}
    for key in ("ssl_verify", "timeout"):
        if parser.has_option("global", key):
            layer[key] = (parser.get("global", key), f"{shown} [global]")
    items = dict(parser.items(section)) if parser.has_section(section) else {}
    for key, name in INI_FIELDS:
        value = (items.get(key) or "").strip()
        if value:
            layer[name] = (value, where)
    for key, kind in INI_TOKENS:
        value = (items.get(key) or "").strip()
        if value:
            _set_token(layer, _run_helper(value, f"{where} {key}"), kind, where)
    return layer, meta


def _ini_error(exc: Exception) -> str:
    """What is wrong with a python-gitlab file, never quoting its lines (they hold tokens)."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"no [section] header before line {exc.lineno}"
    if isinstance(exc, configparser.ParsingError):
        return "cannot parse line " + ", ".join(str(number) for number, _ in exc.errors)
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"  # duplicate section/option: names only


def _ini_section(
    parser: configparser.ConfigParser, layers: list[Layer], shown: str
) -> tuple[str | None, str]:
    wanted = _first(layers, "config_section")
    if wanted:
        if not parser.has_section(wanted[0]):
            sections = ", ".join(s for s in parser.sections() if s != "global") or "none"
            raise ConfigError(
                f"config_section: no section [{wanted[0]}] in {shown} "
                f"(from {wanted[1]}; sections: {sections})"
            )
        return wanted[0], wanted[1]
    default = parser.get("global", "default", fallback="").strip()
    if default:
        if not parser.has_section(default):
            raise ConfigError(f"{shown} [global] default = {default}: no section [{default}]")
        return default, f"{shown} [global] default"
    others = [s for s in parser.sections() if s != "global"]
    if len(others) == 1:
        return others[0], f"{shown} (only section)"
    return None, ""


def _run_helper(value: str, where: str) -> str:
    """A token value, running a python-gitlab ``helper: command`` if given one."""
    if not value.startswith(HELPER_PREFIX):
        return value
    argv = shlex.split(value[len(HELPER_PREFIX) :].strip())
    if not argv:
        raise ConfigError(f"{where}: empty credential helper")
    argv[0] = os.path.expanduser(argv[0])
    try:
        done = subprocess.run(  # the user's own configured helper
            argv, capture_output=True, text=True, timeout=HELPER_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{where}: credential helper failed: {type(exc).__name__}") from None
    secret = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    if done.returncode != 0 or not secret:
        raise ConfigError(f"{where}: credential helper exited {done.returncode} without a token")
    return secret


# -- gitlab.yml -----------------------------------------------------------------------------


def _gitlab_yml_layer(layers: list[Layer], root: Path, home: Path) -> Layer:
    chosen = _first(layers, "gitlab_yml_path")
    if chosen:
        path = Path(os.path.expanduser(str(chosen[0])))
        if not path.is_file():
            raise ConfigError(f"gitlab_yml_path: {path} (from {chosen[1]}) does not exist")
    else:
        path = root / DEFAULT_GITLAB_YML
        if not path.is_file():
            return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except PermissionError:
        if chosen:
            raise ConfigError(f"gitlab_yml_path: cannot read {path}: permission denied") from None
        return {}  # on the GitLab host as a user who may not read it: not an error
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {type(exc).__name__}") from None
    production = data.get("production") if isinstance(data, dict) else None
    if not isinstance(production, dict):
        raise ConfigError(f"{path}: no 'production' section")
    layer: Layer = {"gitlab_yml_path": (str(path), "default" if not chosen else chosen[1])}
    prefix = f"{path} production"
    _gitlab_url_from_yml(layer, production.get("gitlab"), prefix)
    _registry_from_yml(layer, production.get("registry"), prefix, path)
    return layer


def _gitlab_url_from_yml(layer: Layer, gitlab: Any, prefix: str) -> None:
    if not isinstance(gitlab, dict) or not gitlab.get("host"):
        return
    https = _parse_bool(gitlab.get("https", False), "https", f"{prefix}.gitlab.https")
    scheme = "https" if https else "http"
    port = gitlab.get("port")
    default_port = 443 if https else 80
    if port and not str(port).isdigit():
        raise ConfigError(f"{prefix}.gitlab.port: {port!r} is not a port number")
    netloc = str(gitlab["host"]) + (f":{port}" if port and int(port) != default_port else "")
    root = str(gitlab.get("relative_url_root") or "").rstrip("/")
    layer["gitlab_url"] = (f"{scheme}://{netloc}{root}", f"{prefix}.gitlab.host")


def _registry_from_yml(layer: Layer, registry: Any, prefix: str, path: Path) -> None:
    if not isinstance(registry, dict):
        return
    where = f"{prefix}.registry"
    if not _parse_bool(registry.get("enabled", False), "enabled", f"{where}.enabled"):
        return
    if registry.get("api_url"):
        layer["registry_url"] = (str(registry["api_url"]), f"{where}.api_url")
    if registry.get("host"):
        port = registry.get("port")
        host = f"{registry['host']}:{port}" if port else str(registry["host"])
        layer["registry_host"] = (host, f"{where}.host")
    if registry.get("key"):
        key = Path(str(registry["key"]))
        if not key.is_absolute():  # source installs: relative to the Rails root
            key = path.parent.parent / key
        layer["registry_key_path"] = (str(key), f"{where}.key")
    if registry.get("issuer"):
        layer["registry_issuer"] = (str(registry["issuer"]), f"{where}.issuer")
    if registry.get("path"):
        layer["registry_storage_path"] = (str(registry["path"]), f"{where}.path")


# -- conversion and checks -----------------------------------------------------------------


def _parse_bool(value: Any, name: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}: {value!r} (from {source}) is not true or false")


def _parse_ssl_verify(value: Any, source: str) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in TRUE_WORDS | FALSE_WORDS:
        return text.lower() in TRUE_WORDS
    path = os.path.expanduser(text)
    if os.path.isfile(path):
        return path
    raise ConfigError(
        f"ssl_verify: {text!r} (from {source}) is neither true/false nor an existing CA bundle file"
    )


def _parse_timeout(value: Any, source: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"timeout: {value!r} (from {source}) is not a number of seconds"
        ) from None
    if not number > 0:
        raise ConfigError(f"timeout: {value!r} (from {source}) must be more than 0 seconds")
    return number


def _convert(name: str, raw: Any, source: str) -> Any:
    converters: dict[str, Callable[[Any, str], Any]] = {
        "ssl_verify": _parse_ssl_verify,
        "timeout": _parse_timeout,
    }
    if name in converters:
        return converters[name](raw, source)
    if name in SECRET_FIELDS:
        return raw if isinstance(raw, Secret) else Secret(str(raw))
    if name == "registry_auth":
        mode = str(raw).strip().lower()
        if mode not in AUTH_MODES:
            raise ConfigError(
                f"registry_auth: unknown mode {raw!r} (from {source}); "
                f"expected one of {', '.join(AUTH_MODES)}"
            )
        return mode
    if name == "token_kind" and raw not in TOKEN_KINDS:
        raise ConfigError(f"token_kind: {raw!r} (from {source}); expected one of {TOKEN_KINDS}")
    if isinstance(raw, os.PathLike):
        return os.fspath(raw)
    return str(raw).strip() if isinstance(raw, str) else raw


def _infer(settings: Settings) -> Settings:
    """Fill token_kind's source and the inferred registry auth mode and user name."""
    sources = dict(settings.sources)
    updates: dict[str, Any] = {}
    if settings.registry_url == NO_REGISTRY:
        return replace(settings, sources=sources)
    if settings.registry_url and not settings.registry_auth:
        mode, why = _inferred_auth(settings)
        updates["registry_auth"] = mode
        sources["registry_auth"] = f"inferred ({why})"
    if (
        not settings.registry_username
        and settings.token_kind == "job"
        and settings.token is not None
    ):
        updates["registry_username"] = CI_JOB_TOKEN_USER
        sources["registry_username"] = "inferred (CI job token)"
    if settings.registry_url and not settings.registry_host:
        updates["registry_host"] = url_host(settings.registry_url)
        sources["registry_host"] = "inferred (registry_url)"
    return replace(settings, **updates, sources=sources)


def with_inferred_registry(settings: Settings, host: str, where: str) -> Settings:
    """``settings`` with the registry GitLab tells of (``host``, found in ``where``):
    reached with the GitLab URL's scheme, tokens from GitLab's /jwt/auth (realm mode)."""
    scheme = urlsplit(settings.gitlab_url or "").scheme or "https"
    inferred = replace(
        settings,
        registry_url=f"{scheme}://{host}",
        sources={**settings.sources, "registry_url": f"inferred from GitLab ({where})"},
    )
    return _infer(inferred)


def _inferred_auth(settings: Settings) -> tuple[str, str]:
    if settings.registry_key_path:
        return "key", "signing key known"
    if settings.registry_username and settings.registry_password:
        return "basic", "registry user and password set"
    if settings.token is not None:
        return "realm", "GitLab token set"
    return "anonymous", "no credentials"


def _check(s: Settings) -> None:
    src = s.sources
    if not s.gitlab_url:
        token_note = f" (a token was found in {src['token']})" if s.token is not None else ""
        raise ConfigError(
            "no GitLab URL"
            + token_note
            + ": set GITLAB_URL, pass url=..., add url = ... to a python-gitlab config "
            "section (~/.python-gitlab.cfg), or run on the GitLab host (gitlab.yml)"
        )
    _check_url("gitlab_url", s.gitlab_url, src)
    if s.token is None:
        raise ConfigError(
            f"no GitLab token for {redact_url(s.gitlab_url)} (from {src.get('gitlab_url')}): set "
            "GITLAB_PRIVATE_TOKEN (an admin's personal access token with the api scope), "
            "pass private_token=..., or add private_token = ... to a python-gitlab section"
        )
    if s.registry_url == NO_REGISTRY:
        pass  # explicitly none: not looked up in GitLab either
    elif s.registry_url:
        _check_url("registry_url", s.registry_url, src)
    elif s.registry_auth:
        raise ConfigError(
            f"registry_auth {s.registry_auth!r} (from {src.get('registry_auth')}) "
            "but no registry URL: set REGOPS_REGISTRY_URL or regops_registry_url"
        )
    if s.registry_auth == "key" and not s.registry_key_path:
        raise ConfigError(
            f"registry_auth 'key' (from {src.get('registry_auth')}) needs the signing key: "
            "set REGOPS_REGISTRY_KEY or regops_registry_key (gitlab.yml registry.key)"
        )
    if s.registry_auth == "basic" and not (s.registry_username and s.registry_password):
        raise ConfigError(
            f"registry_auth 'basic' (from {src.get('registry_auth')}) needs "
            "REGOPS_REGISTRY_USER and REGOPS_REGISTRY_PASSWORD"
        )


def _check_url(name: str, url: str, sources: Mapping[str, str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{name}: {redact_url(url)!r} (from {sources.get(name)}) is not an http(s) URL"
        )
