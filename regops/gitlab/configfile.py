"""GitLab's side of the registry configuration, read from gitlab.yml or gitlab.rb.

:func:`load_gitlab_config` reads either file and answers the same
:class:`GitLabConfig`: the GitLab URL, whether the registry is enabled, the
host users see (``registry_host``/``registry_port``), ``registry_api_url``,
the token issuer and signing key, the notification secret and the
new-project default for the registry. Each value says where it came from
(``sources``), so a fix can name the line to change.

gitlab.yml (``/var/opt/gitlab/gitlab-rails/etc/gitlab.yml``) is what the
Linux package renders from gitlab.rb: every value is resolved there. In
gitlab.rb, settings left out take the Linux package's defaults (named
constants below, from omnibus-gitlab ``files/gitlab-cookbooks/gitlab/attributes/default.rb``).

Secrets (``notification_secret``, ``internal_key``) are :class:`Secret`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from regops.configtext import parse_yaml, read_config_text
from regops.errors import ConfigError
from regops.gitlab.ruby import GitLabRb, read_gitlab_rb
from regops.secrets import Secret

OMNIBUS_GITLAB_YML = "/var/opt/gitlab/gitlab-rails/etc/gitlab.yml"  # rendered by reconfigure
OMNIBUS_GITLAB_RB = "/etc/gitlab/gitlab.rb"  # what the admin edits
# Linux package defaults for settings a gitlab.rb leaves out.
OMNIBUS_ISSUER = "omnibus-gitlab-issuer"  # gitlab_rails['registry_issuer']
OMNIBUS_KEY_PATH = "/var/opt/gitlab/gitlab-rails/etc/gitlab-registry.key"  # registry_key_path
OMNIBUS_REGISTRY_HTTP_ADDR = "localhost:5000"  # registry['registry_http_addr']
SOURCE_ISSUER = "gitlab-issuer"  # gitlab.yml.example's registry.issuer
DEFAULT = "Linux package default"
WHAT = "GitLab config"


@dataclass
class GitLabConfig:
    """The registry-related settings of GitLab, with where each came from."""

    path: str
    kind: str  # "gitlab.yml" or "gitlab.rb"
    gitlab_url: str | None = None
    registry_enabled: bool | None = None
    registry_host: str | None = None  # host[:port] in image paths users copy
    registry_api_url: str | None = None
    registry_issuer: str | None = None
    registry_key_path: str | None = None
    internal_key: Secret | None = None  # registry['internal_key'] (gitlab.rb)
    internal_certificate: str | None = None  # registry['internal_certificate'] (gitlab.rb)
    notification_secret: Secret | None = None
    default_projects_registry: bool | None = None  # new projects get the registry
    sources: dict[str, str] = field(default_factory=dict)
    skipped_lines: list[int] = field(default_factory=list)

    def source(self, name: str) -> str:
        return self.sources.get(name, "not set")

    def __repr__(self) -> str:
        return f"<GitLabConfig {self.kind} {self.path}>"

    @property
    def is_rb(self) -> bool:
        return self.kind == "gitlab.rb"


def find_gitlab_config(root: str | os.PathLike[str] = "/") -> Path | None:
    """gitlab.yml where the Linux package renders it, else /etc/gitlab/gitlab.rb."""
    base = Path(root)
    for candidate in (OMNIBUS_GITLAB_YML, OMNIBUS_GITLAB_RB):
        path = base / candidate.lstrip("/")
        if path.is_file():
            return path
    return None


def load_gitlab_config(path: str | os.PathLike[str]) -> GitLabConfig:
    """Read gitlab.yml or gitlab.rb (by name, else by content); ConfigError when unreadable."""
    target = Path(path)
    text = read_config_text(target, WHAT)
    if target.suffix == ".rb" or (
        target.suffix not in (".yml", ".yaml") and "production:" not in text
    ):
        return _from_rb(str(target), read_gitlab_rb(text))
    return _from_yml(str(target), parse_yaml(text, f"{WHAT} {target}"))


# -- gitlab.yml ------------------------------------------------------------------------------


def _from_yml(path: str, data: Any) -> GitLabConfig:
    production = data.get("production") if isinstance(data, dict) else None
    if not isinstance(production, dict):
        raise ConfigError(f"GitLab config {path}: no 'production' section")
    config = GitLabConfig(path=path, kind="gitlab.yml")
    where = "gitlab.yml production"
    gitlab = production.get("gitlab")
    if isinstance(gitlab, dict) and gitlab.get("host"):
        https = _truthy(gitlab.get("https"))
        port = gitlab.get("port")
        default_port = 443 if https else 80
        netloc = str(gitlab["host"]) + (f":{port}" if port and int(port) != default_port else "")
        root = str(gitlab.get("relative_url_root") or "").rstrip("/")
        config.gitlab_url = f"{'https' if https else 'http'}://{netloc}{root}"
        config.sources["gitlab_url"] = f"{where}.gitlab.host"
        features = gitlab.get("default_projects_features")
        if isinstance(features, dict) and "container_registry" in features:
            config.default_projects_registry = _truthy(features["container_registry"])
            config.sources["default_projects_registry"] = (
                f"{where}.gitlab.default_projects_features.container_registry"
            )
    registry = production.get("registry")
    if isinstance(registry, dict):
        reg = f"{where}.registry"
        config.registry_enabled = _truthy(registry.get("enabled"))
        config.sources["registry_enabled"] = f"{reg}.enabled"
        if registry.get("host"):
            port = registry.get("port")
            config.registry_host = f"{registry['host']}:{port}" if port else str(registry["host"])
            config.sources["registry_host"] = f"{reg}.host"
        _set(config, "registry_api_url", registry.get("api_url"), f"{reg}.api_url")
        _set(config, "registry_issuer", registry.get("issuer"), f"{reg}.issuer")
        if registry.get("key"):
            key = Path(str(registry["key"]))
            if not key.is_absolute():  # source installs: relative to the Rails root
                key = Path(path).parent.parent / key
            config.registry_key_path = str(key)
            config.sources["registry_key_path"] = f"{reg}.key"
        if registry.get("notification_secret"):
            config.notification_secret = Secret(str(registry["notification_secret"]))
            config.sources["notification_secret"] = f"{reg}.notification_secret"
    if config.default_projects_registry is None:
        config.default_projects_registry = True  # GitLab's default when the key is absent
        config.sources["default_projects_registry"] = "GitLab default"
    return config


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def _set(config: GitLabConfig, name: str, value: Any, source: str) -> None:
    if value not in (None, ""):
        setattr(config, name, str(value))
        config.sources[name] = source


# -- gitlab.rb -------------------------------------------------------------------------------


def _from_rb(path: str, rb: GitLabRb) -> GitLabConfig:
    config = GitLabConfig(path=path, kind="gitlab.rb", skipped_lines=list(rb.skipped))

    def line(*key: str) -> str:
        number = rb.line_of(*key)
        return f"gitlab.rb line {number}" if number else DEFAULT

    external = rb.get("external_url")
    if isinstance(external, str) and external:
        config.gitlab_url = external.rstrip("/")
        config.sources["gitlab_url"] = line("external_url")
    registry_external = rb.get("registry_external_url")
    enabled = rb.get("gitlab_rails", "registry_enabled")
    if enabled is None:
        enabled = bool(registry_external) or rb.get("registry", "enable")
        config.sources["registry_enabled"] = (
            line("registry_external_url") if registry_external else line("registry", "enable")
        )
    else:
        config.sources["registry_enabled"] = line("gitlab_rails", "registry_enabled")
    config.registry_enabled = bool(enabled)
    host = rb.get("gitlab_rails", "registry_host")
    if host:
        port = rb.get("gitlab_rails", "registry_port")
        config.registry_host = f"{host}:{port}" if port else str(host)
        config.sources["registry_host"] = line("gitlab_rails", "registry_host")
    elif isinstance(registry_external, str) and registry_external:
        config.registry_host = urlsplit(registry_external).netloc or None
        config.sources["registry_host"] = line("registry_external_url")
    api_url = rb.get("gitlab_rails", "registry_api_url")
    if api_url:
        config.registry_api_url = str(api_url)
        config.sources["registry_api_url"] = line("gitlab_rails", "registry_api_url")
    elif config.registry_enabled:
        addr = rb.get("registry", "registry_http_addr") or OMNIBUS_REGISTRY_HTTP_ADDR
        config.registry_api_url = f"http://{addr}"
        config.sources["registry_api_url"] = (
            line("registry", "registry_http_addr") + " (registry_http_addr)"
            if rb.get("registry", "registry_http_addr")
            else DEFAULT
        )
    issuer = rb.get("gitlab_rails", "registry_issuer")
    config.registry_issuer = str(issuer) if issuer else OMNIBUS_ISSUER
    config.sources["registry_issuer"] = line("gitlab_rails", "registry_issuer")
    key_path = rb.get("gitlab_rails", "registry_key_path")
    config.registry_key_path = str(key_path) if key_path else OMNIBUS_KEY_PATH
    config.sources["registry_key_path"] = line("gitlab_rails", "registry_key_path")
    internal_key = rb.get("registry", "internal_key")
    if isinstance(internal_key, str) and internal_key:
        config.internal_key = Secret(internal_key)
        config.sources["internal_key"] = line("registry", "internal_key")
    certificate = rb.get("registry", "internal_certificate")
    if isinstance(certificate, str) and certificate:
        config.internal_certificate = certificate
        config.sources["internal_certificate"] = line("registry", "internal_certificate")
    for key in (
        ("gitlab_rails", "registry_notification_secret"),
        ("registry", "notification_secret"),
    ):
        secret = rb.get(*key)
        if isinstance(secret, str) and secret:
            config.notification_secret = Secret(secret)
            config.sources["notification_secret"] = line(*key)
            break
    default = rb.get("gitlab_rails", "gitlab_default_projects_features_container_registry")
    config.default_projects_registry = True if default is None else bool(default)
    config.sources["default_projects_registry"] = line(
        "gitlab_rails", "gitlab_default_projects_features_container_registry"
    )
    return config
