"""The registry's own ``config.yml``: where its storage is, and its read-only switch.

regops reads the file the registry runs with (Omnibus: ``/var/opt/gitlab/
registry/config.yml``) to find the storage driver and its root, bucket,
prefix and endpoint, the way the registry does: the ``storage`` section,
then ``REGISTRY_STORAGE_<DRIVER>_<PARAM>`` environment overrides. Credentials
in it are used to build the S3 client and never shown.

>>> config = RegistryConfigFile.load("/etc/docker/registry/config.yml")  # doctest: +SKIP
>>> config.driver, config.readonly                                      # doctest: +SKIP
('s3', False)
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

from regops.errors import ConfigError
from regops.registry.backends import FilesystemBackend, S3Backend, S3Location, StorageBackend

OMNIBUS_CONFIG = Path("/var/opt/gitlab/registry/config.yml")  # what gitlab-ctl reconfigure writes
# Keys of the ``storage`` section that configure the registry, not a driver.
STORAGE_OPTIONS = frozenset({"delete", "maintenance", "cache", "redirect"})
DEFAULT_FS_ROOT = "/var/lib/registry"  # the filesystem driver's default rootdirectory
ENV_PREFIX = "REGISTRY_STORAGE_"  # the registry's environment overrides of storage keys
MAX_CONFIG_BYTES = 1024 * 1024  # a registry config is a few KiB; more is not one


@dataclass
class RegistryConfigFile:
    """A parsed registry configuration (the file's bytes kept for an exact restore)."""

    path: Path | None
    data: dict[str, Any]
    raw: bytes = b""
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"<RegistryConfigFile {self.path} driver={self.driver} readonly={self.readonly}>"

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
    ) -> RegistryConfigFile:
        """Read and parse ``path`` (ConfigError naming the file, never its content)."""
        target = Path(path)
        try:
            raw = target.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the registry config {target}: {exc.strerror}") from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{target} is larger than a registry config can be")
        return cls.parse(raw, target, environ)

    @classmethod
    def parse(
        cls, raw: bytes, path: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> RegistryConfigFile:
        where = path or "registry config"
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"{where} is not valid YAML{line}") from None
        if not isinstance(data, dict) or not isinstance(data.get("storage"), dict):
            raise ConfigError(f"{where} has no storage section: is it a registry config?")
        return cls(path, data, raw, dict(os.environ if environ is None else environ))

    # ------------------------------------------------------------------ storage

    @property
    def storage(self) -> dict[str, Any]:
        return self.data["storage"]

    @property
    def driver(self) -> str:
        """The storage driver's name (``filesystem``, ``s3``, ...)."""
        names = [k for k in self.storage if k not in STORAGE_OPTIONS]
        if len(names) != 1:
            shown = ", ".join(sorted(map(str, names))) or "none"
            raise ConfigError(f"{self.path}: expected one storage driver, found {shown}")
        return str(names[0])

    def driver_parameters(self) -> dict[str, Any]:
        """The driver's parameters with ``REGISTRY_STORAGE_<DRIVER>_*`` overrides applied."""
        params = self.storage.get(self.driver) or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{self.path}: storage.{self.driver} is not a mapping")
        merged = dict(params)
        prefix = f"{ENV_PREFIX}{self.driver.upper()}_"
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
            return S3Backend(s3_location(params, self.path))
        raise ConfigError(
            f"{self.path}: storage driver {driver!r} is not supported (filesystem and s3 are)"
        )

    # ------------------------------------------------------------------ read-only

    @property
    def readonly(self) -> bool:
        """``storage.maintenance.readonly.enabled``."""
        maintenance = self.storage.get("maintenance") or {}
        readonly = maintenance.get("readonly") if isinstance(maintenance, dict) else None
        return isinstance(readonly, dict) and _truthy(readonly.get("enabled"))

    def with_readonly(self, enabled: bool) -> bytes:
        """The config's YAML with read-only mode set (comments are not kept)."""
        data = copy.deepcopy(self.data)
        maintenance = data["storage"].get("maintenance")
        if not isinstance(maintenance, dict):
            maintenance = data["storage"]["maintenance"] = {}
        readonly = maintenance.get("readonly")
        if not isinstance(readonly, dict):
            readonly = maintenance["readonly"] = {}
        readonly["enabled"] = enabled
        return yaml.safe_dump(data, sort_keys=False).encode()

    @property
    def http_addr(self) -> str | None:
        http = self.data.get("http") or {}
        return str(http.get("addr")) if isinstance(http, dict) and http.get("addr") else None


def s3_location(params: Mapping[str, Any], where: Any = "registry config") -> S3Location:
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
        secure=_truthy(params.get("secure", True)),
        skipverify=_truthy(params.get("skipverify", False)),
    )


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "yes", "1", "on"}
    return bool(value)
