"""The registry's own ``config.yml``: its storage, token auth, read-only switch, notifications.

One reader for everything regops asks of the file the registry runs with
(the Linux package renders it from gitlab.rb at ``/var/opt/gitlab/registry/
config.yml``). Distribution's configuration reference names every key used
here (``auth.token.{realm,service,issuer,rootcertbundle}``,
``storage.delete.enabled``, ``storage.maintenance.readonly.enabled``,
``storage.redirect.disable``, ``http.{addr,host,tls}``,
``notifications.endpoints[]``). The storage driver's parameters are read the
way the registry reads them: the ``storage`` section, then
``REGISTRY_STORAGE_<DRIVER>_<PARAM>`` environment overrides. Credentials in
it build the S3 client and are never shown; no error quotes the file.

>>> config = RegistryConfig.load("/var/opt/gitlab/registry/config.yml")  # doctest: +SKIP
>>> config.driver, config.readonly, config.token_auth["issuer"]         # doctest: +SKIP
('s3', False, 'omnibus-gitlab-issuer')
>>> backend = config.backend()                                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from regops.configtext import parse_yaml, read_config_text
from regops.errors import ConfigError
from regops.registry.backends import FilesystemBackend, S3Backend, S3Location, StorageBackend

OMNIBUS_REGISTRY_CONFIG = Path("/var/opt/gitlab/registry/config.yml")  # written by reconfigure
# Keys of the ``storage`` section that configure the registry, not a driver.
STORAGE_OPTIONS = frozenset({"delete", "maintenance", "cache", "redirect"})
DEFAULT_FS_ROOT = "/var/lib/registry"  # the filesystem driver's default rootdirectory
ENV_PREFIX = "REGISTRY_STORAGE_"  # the registry's environment overrides of storage keys
WHAT = "registry config"


@dataclass(frozen=True)
class NotificationEndpoint:
    """One ``notifications.endpoints[]`` entry (headers may hold secrets: never print them)."""

    index: int
    name: str
    url: str | None
    headers: dict[str, list[str]] = field(repr=False)  # Authorization holds a secret
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
    """A parsed registry configuration (the file's bytes kept for an exact restore)."""

    path: Path | None
    data: dict[str, Any] = field(repr=False)
    raw: bytes = field(default=b"", repr=False)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"<RegistryConfig {self.path}>"

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
    ) -> RegistryConfig:
        """Read and parse ``path`` (ConfigError naming the file, never its content)."""
        target = Path(path)
        return cls.parse(read_config_text(target, WHAT), target, environ)

    @classmethod
    def parse(
        cls,
        text: str | bytes,
        path: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> RegistryConfig:
        """``text`` (the file's content) as a registry configuration."""
        where = f"{WHAT} {path}" if path is not None else WHAT
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{where}: not UTF-8 text") from None
        data = parse_yaml(text, where)
        if not isinstance(data, dict) or "version" not in data:
            raise ConfigError(f"{where}: not a registry configuration (no 'version')")
        environ = dict(os.environ if environ is None else environ)
        return cls(path, data, text.encode("utf-8"), environ)

    def section(self, *keys: str) -> dict[str, Any]:
        """The mapping at ``keys`` (empty when absent or not a mapping)."""
        value: Any = self.data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, dict) else {}

    # ------------------------------------------------------------------ auth, http

    @property
    def auth(self) -> dict[str, Any]:
        return self.section("auth")

    @property
    def token_auth(self) -> dict[str, Any] | None:
        """``auth.token`` when token auth is configured, else None."""
        token = self.auth.get("token")
        return token if isinstance(token, dict) else None

    @property
    def http(self) -> dict[str, Any]:
        return self.section("http")

    @property
    def http_addr(self) -> str | None:
        addr = self.http.get("addr")
        return str(addr) if addr else None

    @property
    def tls_certificate(self) -> str | None:
        value = self.section("http", "tls").get("certificate")
        return str(value) if value else None

    # ------------------------------------------------------------------ storage

    @property
    def storage(self) -> dict[str, Any]:
        return self.section("storage")

    @property
    def driver(self) -> str:
        """The storage driver's name (``filesystem``, ``s3``, ...); the registry needs one."""
        names = [k for k in self.storage if k not in STORAGE_OPTIONS]
        if len(names) != 1:
            shown = ", ".join(sorted(map(str, names))) or "none"
            raise ConfigError(f"{self._where}: expected one storage driver, found {shown}")
        return str(names[0])

    def driver_parameters(self) -> dict[str, Any]:
        """The driver's parameters with ``REGISTRY_STORAGE_<DRIVER>_*`` overrides applied."""
        driver = self.driver
        params = self.storage.get(driver) or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{self._where}: storage.{driver} is not a mapping")
        merged = dict(params)
        prefix = f"{ENV_PREFIX}{driver.upper()}_"
        for name, value in self.environ.items():
            if name.startswith(prefix) and "_" not in name[len(prefix) :]:
                merged[name[len(prefix) :].lower()] = value
        return merged

    def backend(self) -> StorageBackend:
        """A read-only backend on this config's storage (filesystem or s3)."""
        driver, params = self.driver, self.driver_parameters()
        if driver == "filesystem":
            return FilesystemBackend(str(params.get("rootdirectory") or DEFAULT_FS_ROOT))
        if driver == "s3":
            return S3Backend(s3_location(params, self._where))
        raise ConfigError(
            f"{self._where}: storage driver {driver!r} is not supported (filesystem and s3 are)"
        )

    @property
    def delete_enabled(self) -> bool:
        return flag(self.section("storage", "delete").get("enabled"))

    @property
    def redirect_disabled(self) -> bool:
        return flag(self.section("storage", "redirect").get("disable"))

    @property
    def readonly(self) -> bool:
        """``storage.maintenance.readonly.enabled``."""
        return flag(self.section("storage", "maintenance", "readonly").get("enabled"))

    def with_readonly(self, enabled: bool) -> bytes:
        """The config's YAML with read-only mode set (comments are not kept)."""
        data = copy.deepcopy(self.data)
        storage = data.get("storage")
        if not isinstance(storage, dict):
            raise ConfigError(f"{self._where}: no storage section to switch read-only in")
        maintenance = storage.get("maintenance")
        if not isinstance(maintenance, dict):
            maintenance = storage["maintenance"] = {}
        readonly = maintenance.get("readonly")
        if not isinstance(readonly, dict):
            readonly = maintenance["readonly"] = {}
        readonly["enabled"] = enabled
        return yaml.safe_dump(data, sort_keys=False).encode()

    # ------------------------------------------------------------------ notifications

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
                    disabled=flag(item.get("disabled")),
                    raw=item,
                )
            )
        return endpoints

    @property
    def _where(self) -> str:
        return f"{WHAT} {self.path}" if self.path is not None else WHAT


def s3_location(params: Mapping[str, Any], where: str = WHAT) -> S3Location:
    """The s3 driver's parameters as an :class:`S3Location` (ConfigError without a bucket)."""
    bucket = params.get("bucket")
    if not bucket:
        raise ConfigError(f"{where}: storage.s3 has no bucket")
    return S3Location(
        bucket=str(bucket),
        rootdirectory=str(params.get("rootdirectory") or ""),
        region=_text(params.get("region")),
        regionendpoint=_text(params.get("regionendpoint")),
        accesskey=_text(params.get("accesskey")),
        secretkey=_text(params.get("secretkey")),
        secure=flag(params.get("secure", True)),
        skipverify=flag(params.get("skipverify", False)),
    )


def flag(value: Any) -> bool:
    """A config boolean: YAML's true, or the registry's environment strings (true/1/yes/on)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def find_registry_config(root: str | os.PathLike[str] = "/") -> Path | None:
    """The Linux package's rendered registry config, when it exists."""
    path = Path(root) / str(OMNIBUS_REGISTRY_CONFIG).lstrip("/")
    return path if path.is_file() else None
