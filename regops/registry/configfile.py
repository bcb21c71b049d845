"""The registry's own ``config.yml``, read into what the checks ask of it.

Distribution's configuration reference names every key used here
(``auth.token.{realm,service,issuer,rootcertbundle}``, ``storage.delete.enabled``,
``storage.maintenance.readonly.enabled``, ``storage.redirect.disable``,
``http.{addr,host,tls}``, ``notifications.endpoints[]``). The Linux package
renders this file from gitlab.rb at ``/var/opt/gitlab/registry/config.yml``.

>>> config = load_registry_config("/var/opt/gitlab/registry/config.yml")  # doctest: +SKIP
>>> config.token_auth["issuer"]                                          # doctest: +SKIP
'omnibus-gitlab-issuer'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from regops.errors import ConfigError

OMNIBUS_REGISTRY_CONFIG = "/var/opt/gitlab/registry/config.yml"  # rendered by reconfigure
# Storage keys that configure something other than the driver itself.
STORAGE_OPTION_KEYS = frozenset({"delete", "maintenance", "redirect", "cache"})


@dataclass(frozen=True)
class NotificationEndpoint:
    """One ``notifications.endpoints[]`` entry (headers may hold secrets: never print them)."""

    index: int
    name: str
    url: str | None
    headers: dict[str, list[str]]
    disabled: bool
    raw: dict[str, Any] = field(repr=False)

    def header(self, name: str) -> list[str] | None:
        """The values of header ``name`` (case-insensitive), None when absent."""
        for key, values in self.headers.items():
            if key.lower() == name.lower():
                return values
        return None


@dataclass(frozen=True)
class RegistryConfig:
    """A parsed registry config.yml (``data``) with accessors for what the checks use."""

    path: str
    data: dict[str, Any] = field(repr=False)

    def section(self, *keys: str) -> dict[str, Any]:
        """The mapping at ``keys`` (empty when absent or not a mapping)."""
        value: Any = self.data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, dict) else {}

    @property
    def auth(self) -> dict[str, Any]:
        return self.section("auth")

    @property
    def token_auth(self) -> dict[str, Any] | None:
        """``auth.token`` when token auth is configured, else None."""
        token = self.auth.get("token")
        return token if isinstance(token, dict) else None

    @property
    def storage(self) -> dict[str, Any]:
        return self.section("storage")

    @property
    def storage_driver(self) -> str | None:
        """The storage driver's name (``filesystem``, ``s3``, ``gcs`` ...)."""
        drivers = [k for k in self.storage if k not in STORAGE_OPTION_KEYS]
        return drivers[0] if drivers else None

    @property
    def driver_params(self) -> dict[str, Any]:
        driver = self.storage_driver
        params = self.storage.get(driver) if driver else None
        return params if isinstance(params, dict) else {}

    @property
    def delete_enabled(self) -> bool:
        return _flag(self.section("storage", "delete").get("enabled"))

    @property
    def readonly(self) -> bool:
        return _flag(self.section("storage", "maintenance", "readonly").get("enabled"))

    @property
    def redirect_disabled(self) -> bool:
        return _flag(self.section("storage", "redirect").get("disable"))

    @property
    def http(self) -> dict[str, Any]:
        return self.section("http")

    @property
    def tls_certificate(self) -> str | None:
        value = self.section("http", "tls").get("certificate")
        return str(value) if value else None

    @property
    def notification_endpoints(self) -> list[NotificationEndpoint]:
        raw = self.section("notifications").get("endpoints") or []
        endpoints = []
        for index, item in enumerate(raw if isinstance(raw, list) else []):
            if not isinstance(item, dict):
                continue
            raw_headers = item.get("headers")
            headers: dict[Any, Any] = raw_headers if isinstance(raw_headers, dict) else {}
            endpoints.append(
                NotificationEndpoint(
                    index=index,
                    name=str(item.get("name") or f"#{index + 1}"),
                    url=str(item["url"]) if item.get("url") else None,
                    headers={
                        str(k): [str(v) for v in (vs if isinstance(vs, list) else [vs])]
                        for k, vs in headers.items()
                    },
                    disabled=_flag(item.get("disabled")),
                    raw=item,
                )
            )
        return endpoints


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def load_registry_config(path: str | os.PathLike[str]) -> RegistryConfig:
    """Read and parse a registry config.yml; ConfigError (never its content) when unusable."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"registry config {target}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"registry config {target}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"registry config {target}: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"registry config {target}: not valid YAML{where}") from None
    if not isinstance(data, dict) or "version" not in data:
        raise ConfigError(f"registry config {target}: not a registry configuration (no 'version')")
    return RegistryConfig(str(target), data)


def find_registry_config(root: str | os.PathLike[str] = "/") -> Path | None:
    """The Linux package's rendered registry config, when it exists."""
    path = Path(root) / OMNIBUS_REGISTRY_CONFIG.lstrip("/")
    return path if path.is_file() else None
