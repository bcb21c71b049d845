"""Run the real Distribution registry (``docker-registry``) on loopback.

Used by the sandbox and the tests: token auth like GitLab's (realm, service,
issuer, certificate bundle), filesystem storage in a directory (or any driver
given as ``storage``, e.g. ``{"s3": {...}}``), delete on, optionally
read-only (maintenance mode, as during garbage collection).
:meth:`RegistryServer.restart_from_config` restarts it with the config file as
someone else (``regops gc run``) edited it.

>>> with RegistryServer(tmp / "reg", cert_path, "http://127.0.0.1:9/jwt/auth") as server:
...     server.url  # doctest: +SKIP
'http://127.0.0.1:43125'
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from regops.errors import RegistryStartError, TransportError
from regops.http import HTTPSettings, make_session
from regops.registry.tokens import DEFAULT_ISSUER, DEFAULT_SERVICE

DEFAULT_BINARY = "docker-registry"  # Debian's name for the Distribution registry 2.8
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 20.0  # seconds; it usually answers within 0.2 s
POLL_INTERVAL = 0.05  # seconds between /v2/ probes while starting
PROBE_TIMEOUT = (0.5, 1.0)  # connect, read: a probe that hangs is retried until the deadline
STOP_TIMEOUT = 10.0  # seconds to wait after SIGTERM before SIGKILL
START_ATTEMPTS = 3  # a free port can be taken by someone else before the registry binds it
STDERR_TAIL = 2000  # characters of the registry's log shown when it fails to start
# http.secret signs upload state; any fixed value works for a single instance.
HTTP_SECRET = "regops-local-registry-upload-state-secret"
CONFIG_NAME = "config.yml"
STORAGE_NAME = "storage"
LOG_NAME = "registry.log"
# The registry's S3 driver panics at start when this is set ("unsupported transport").
DROPPED_ENV = ("AWS_CA_BUNDLE",)


def registry_environment() -> dict[str, str]:
    """The environment for a registry process (variables that break it removed)."""
    return {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a child server, SIGKILL it after STOP_TIMEOUT, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, recursively for mappings."""
    result = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class RegistryServer:
    """One ``docker-registry serve`` process with a generated config."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        cert_path: str | os.PathLike[str],
        realm: str,
        *,
        issuer: str = DEFAULT_ISSUER,
        service: str = DEFAULT_SERVICE,
        port: int | None = None,
        readonly: bool = False,
        delete: bool = True,
        binary: str = DEFAULT_BINARY,
        extra_config: Mapping[str, Any] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        storage: Mapping[str, Any] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.cert_path = Path(cert_path)
        self.realm = realm
        self.issuer = issuer
        self.service = service
        self.port = port
        self.readonly = readonly
        self.delete = delete
        self.binary = binary
        self.extra_config = dict(extra_config or {})
        self.startup_timeout = startup_timeout
        self.storage = dict(storage) if storage else None  # a driver's section, or filesystem
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._log_offset = 0

    # ------------------------------------------------------------------ paths

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    @property
    def storage_path(self) -> Path:
        """The filesystem driver's rootdirectory (see RegistryStorage)."""
        return self.data_dir / STORAGE_NAME

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as it appears in image references."""
        if self.port is None:
            raise RegistryStartError("the registry has no port yet; call start() first")
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The registry process's id while it runs (tests stop it with SIGSTOP)."""
        return self._process.pid if self.running and self._process is not None else None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = self.url if self.port else "no port"
        return f"<RegistryServer {where} {state} readonly={self.readonly} data={self.data_dir}>"

    # ------------------------------------------------------------------ config

    def config(self) -> dict[str, Any]:
        """The registry configuration this server runs with."""
        driver = self.storage or {"filesystem": {"rootdirectory": str(self.storage_path)}}
        storage: dict[str, Any] = {
            **copy.deepcopy(driver),
            "delete": {"enabled": self.delete},
            # Upload purging walks storage in the background; no use on a short-lived instance.
            "maintenance": {"uploadpurging": {"enabled": False}},
        }
        if self.readonly:
            storage["maintenance"]["readonly"] = {"enabled": True}
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": storage,
            "http": {"addr": f"{LOOPBACK}:{self.port or 0}", "secret": HTTP_SECRET},
            "auth": {
                "token": {
                    "realm": self.realm,
                    "service": self.service,
                    "issuer": self.issuer,
                    "rootcertbundle": str(self.cert_path),
                }
            },
        }
        return _merge(config, self.extra_config)

    def write_config(self) -> Path:
        """Write config.yml (and create the storage directory); returns its path."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage_path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    # ------------------------------------------------------------------ lifecycle

    def _binary_path(self) -> str:
        path = shutil.which(self.binary)
        if not path:
            raise RegistryStartError(
                f"registry binary {self.binary!r} not found on PATH "
                "(install it: apt-get install docker-registry)"
            )
        return path

    def start(self) -> RegistryServer:
        """Start the registry and wait until ``/v2/`` answers; returns self."""
        if self.running:
            return self
        if not self.cert_path.is_file():
            raise RegistryStartError(f"certificate bundle {self.cert_path} does not exist")
        binary = self._binary_path()
        fixed_port = self.port is not None
        for attempt in range(START_ATTEMPTS):
            if not fixed_port:
                self.port = free_port()
            self.write_config()
            self._spawn(binary)
            try:
                self._wait_ready()
                return self
            except RegistryStartError as exc:
                self._terminate()
                in_use = "address already in use" in str(exc).lower()
                if fixed_port or not in_use or attempt == START_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, binary: str) -> None:
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in _terminate)
        self._log_offset = self._log_file.tell()
        self._process = subprocess.Popen(
            [binary, "serve", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            env=registry_environment(),
        )

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return text[-STDERR_TAIL:].strip()

    def _wait_ready(self) -> None:
        # no breaker: refusals are expected until the registry listens
        session = make_session(
            HTTPSettings(timeout=PROBE_TIMEOUT, max_retries=0, breaker_threshold=None)
        )
        deadline = time.monotonic() + self.startup_timeout
        try:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    code = self._process.returncode if self._process else None
                    raise RegistryStartError(
                        f"docker-registry exited with status {code} while starting on "
                        f"{self.host}; its log ({self.log_path}):\n{self._log_tail()}"
                    )
                try:
                    response = session.get(f"{self.url}/v2/")
                except TransportError:
                    time.sleep(POLL_INTERVAL)
                    continue
                if response.status_code in (200, 401):
                    return
                raise RegistryStartError(
                    f"docker-registry on {self.host} answered /v2/ with "
                    f"{response.status_code}; its log:\n{self._log_tail()}"
                )
        finally:
            session.close()
        raise RegistryStartError(
            f"docker-registry did not answer on {self.host} within {self.startup_timeout:.0f} s; "
            f"its log:\n{self._log_tail()}"
        )

    def _terminate(self) -> None:
        process, self._process = self._process, None
        stop_process(process)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """Stop the registry (SIGTERM, then SIGKILL) and wait for it to exit."""
        self._terminate()

    def restart(self, *, readonly: bool | None = None) -> RegistryServer:
        """Stop and start again on the same port, optionally switching read-only mode."""
        self.stop()
        if readonly is not None:
            self.readonly = readonly
        return self.start()

    def restart_from_config(self) -> RegistryServer:
        """Stop, then start with config.yml as it is on disk now (edited by someone else).

        Same port; ``readonly`` follows the file. This is the sandbox's "restart
        command" for ``regops gc run``.
        """
        with open(self.config_path, "rb") as handle:
            on_disk = yaml.safe_load(handle) or {}
        maintenance = (on_disk.get("storage") or {}).get("maintenance") or {}
        self.readonly = bool((maintenance.get("readonly") or {}).get("enabled"))
        self.stop()
        self._spawn(self._binary_path())
        try:
            self._wait_ready()
        except RegistryStartError:
            self._terminate()
            raise
        return self

    def garbage_collect(
        self, *, dry_run: bool = False, delete_untagged: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker-registry garbage-collect`` on this storage (stop or go read-only first)."""
        self.write_config()
        command = [self._binary_path(), "garbage-collect"]
        if dry_run:
            command.append("--dry-run")
        if delete_untagged:
            command.append("--delete-untagged")
        command.append(str(self.config_path))
        return subprocess.run(
            command, capture_output=True, text=True, check=False, env=registry_environment()
        )

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
