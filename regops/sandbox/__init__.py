"""A local GitLab for trying regops: a GitLab API stand-in in front of the real registry.

:class:`Sandbox` starts the real Distribution registry (``docker-registry``)
with GitLab-style token auth, and a werkzeug server speaking the slice of
GitLab's REST API and ``/jwt/auth`` that regops uses. Seed it with real
images (:mod:`regops.sandbox.seed`) and point regops (or skopeo) at it.

>>> with Sandbox() as sandbox:           # doctest: +SKIP
...     sandbox.seed("demo")
...     conn = sandbox.connect()
...     conn.gitlab.projects()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler

from regops.config import Settings, resolve_settings
from regops.connection import Connection
from regops.errors import ConfigError, ValidationError
from regops.http import HTTPSettings
from regops.registry.client import RegistryClient
from regops.registry.keys import PrivateKey, check_pair, generate_key, write_key_and_certificate
from regops.registry.resolver import TagResolver
from regops.registry.tokens import (
    DEFAULT_ISSUER,
    DEFAULT_SERVICE,
    KeyAuth,
    TokenMinter,
    load_signing_key,
)
from regops.sandbox.app import GitLabStandIn
from regops.sandbox.control import RESTART_PATH, ControlMiddleware
from regops.sandbox.gitlab_registry import FrontServer, GitLabRegistryFront
from regops.sandbox.registry_server import RegistryServer
from regops.sandbox.s3 import MotoServer
from regops.sandbox.seed import seed
from regops.sandbox.state import SandboxState, UserRecord
from regops.secrets import Secret, redact
from regops.serving import QuietRequestHandler, ThreadedServer

__all__ = ["Sandbox", "run_seeded"]

LOOPBACK = "127.0.0.1"
SANDBOX_KEY_BITS = 2048  # enough for a throw-away local key; 4096 takes seconds to generate
ADMIN_USERNAME = "root"  # GitLab's first administrator
USER_USERNAME = "dev"  # the non-admin user every sandbox has
ENV_FILE_MODE = 0o600  # the env file holds tokens
ENV_FILE_NAME = "sandbox.env"
SERVER_THREAD_NAME = "regops-sandbox-gitlab"
STORAGE_KINDS = ("filesystem", "s3")  # the registry's storage: a folder, or S3 (moto)
S3_BUCKET = "registry"  # the bucket the sandbox's registry stores into
CONFIG_ENV = "REGOPS_REGISTRY_CONFIG"  # where regops gc/storage find the registry's config.yml
# The registry variants a sandbox runs: the plain v2 API (Distribution, GitLab's
# third-party cleanup service) or GitLab's registry with its API (metadata database).
REGISTRY_APIS = ("v2", "gitlab")


class Sandbox:
    """The GitLab stand-in + the real registry, on loopback (a context manager).

    ``data_dir`` keeps state (users, tokens, policies, registry storage, key)
    between runs; without it everything lives in a temporary directory removed
    by :meth:`stop`. ``http_delay`` adds seconds of latency to every API answer
    (for benchmarks that should feel a network). ``registry_api="gitlab"`` puts
    GitLab's registry API (``/gitlab/v1/``, tag delete: the metadata database)
    in front of the real registry (:mod:`regops.sandbox.gitlab_registry`).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        gitlab_port: int = 0,
        registry_port: int = 0,
        quiet: bool = True,
        http_delay: float = 0.0,
        issuer: str = DEFAULT_ISSUER,
        service: str = DEFAULT_SERVICE,
        storage: str = "filesystem",
        registry_api: str = "v2",
    ) -> None:
        if storage not in STORAGE_KINDS:
            raise ValidationError("storage", f"expected one of {', '.join(STORAGE_KINDS)}")
        if registry_api not in REGISTRY_APIS:
            raise ValidationError(
                "registry_api", f"expected one of {', '.join(REGISTRY_APIS)}, got {registry_api!r}"
            )
        self.storage = storage
        self.s3: MotoServer | None = None
        self.registry_api = registry_api
        self._front: FrontServer | None = None
        self._keep = data_dir is not None
        self._data_arg = Path(data_dir) if data_dir is not None else None
        self.gitlab_port = gitlab_port
        self.registry_port = registry_port
        self._requested_ports = (gitlab_port, registry_port)  # 0: a free one on every start
        self.quiet = quiet
        self.http_delay = http_delay
        self.issuer = issuer
        self.service = service
        self.data_dir: Path | None = None
        self.state: SandboxState | None = None
        self.registry_server: RegistryServer | None = None
        self.app: GitLabStandIn | None = None
        self._server: ThreadedServer | None = None
        self._key: PrivateKey | None = None
        self._admin_registry: RegistryClient | None = None
        self.seed_seconds: dict[str, float] = {}

    def __repr__(self) -> str:
        if self._server is None:
            return "<Sandbox stopped>"
        return (
            f"<Sandbox gitlab={self.gitlab_url} registry={self.registry_url} data={self.data_dir}>"
        )

    # ------------------------------------------------------------- lifecycle
    def start(self) -> Sandbox:
        """Start the stand-in, then the registry (its realm points at the stand-in)."""
        if self._server is not None:
            return self
        self.gitlab_port, self.registry_port = self._requested_ports
        self.data_dir = data_dir = self._data_arg or Path(
            tempfile.mkdtemp(prefix="regops-sandbox-")
        )
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(data_dir, 0o700)
            self._key = key = self._load_or_make_key(data_dir)
            self.state = state = SandboxState.load(data_dir) if self._keep else SandboxState()
            self._ensure_users(state)
            app = self._start_gitlab(state, key)
            self._start_registry(app, data_dir, key)
        except BaseException:
            self.stop()
            raise
        return self

    def _load_or_make_key(self, data_dir: Path) -> PrivateKey:
        keys = data_dir / "keys"
        key_path, cert_path = keys / "registry.key", keys / "registry.crt"
        if key_path.exists() and cert_path.exists():
            check_pair(key_path, cert_path)
        else:
            write_key_and_certificate(keys, generate_key(bits=SANDBOX_KEY_BITS), overwrite=True)
        return load_signing_key(key_path)

    def _ensure_users(self, state: SandboxState) -> None:
        if state.user_by_username(ADMIN_USERNAME) is None:
            state.add_user(ADMIN_USERNAME, admin=True, name="Administrator")
        if state.user_by_username(USER_USERNAME) is None:
            state.add_user(USER_USERNAME, name="Dev Eloper")

    def _start_gitlab(self, state: SandboxState, key: PrivateKey) -> GitLabStandIn:
        self.app = app = GitLabStandIn(
            state,
            registry=None,
            registry_host="",
            signing_key=key,
            issuer=self.issuer,
            service=self.service,
            delay=self.http_delay,
        )
        handler = _QuietHandler if self.quiet else _RedactingHandler
        self.control = ControlMiddleware(app, self.restart_registry)
        self._server = ThreadedServer(
            self.control, LOOPBACK, self.gitlab_port, handler=handler, name=SERVER_THREAD_NAME
        ).start()
        self.gitlab_port = self._server.port
        if not self.quiet:
            print(f"GitLab API stand-in on {self.gitlab_url}")
        return app

    def _start_registry(self, app: GitLabStandIn, data_dir: Path, key: PrivateKey) -> None:
        gitlab_api = self.registry_api == "gitlab"
        self.registry_server = server = RegistryServer(
            data_dir / "registry",
            self.cert_path,
            realm=f"{self.gitlab_url}/jwt/auth",
            issuer=self.issuer,
            service=self.service,
            port=None if gitlab_api else self.registry_port or None,
            storage=self._s3_storage() if self.storage == "s3" else None,
        )
        server.start()
        if gitlab_api:
            self._start_front()
        minter = TokenMinter(key, issuer=self.issuer, service=self.service, subject=ADMIN_USERNAME)
        self._admin_registry = RegistryClient(
            self.registry_url, KeyAuth(minter), http=HTTPSettings(timeout=(5.0, 30.0))
        )
        app.registry = self._admin_registry
        app.registry_host = self.registry_host

    def _s3_storage(self) -> dict[str, Any]:
        """Start the S3 stand-in (moto) with an empty bucket; the registry's storage section."""
        assert self.data_dir is not None  # called by start(), once the data dir exists
        self.s3 = MotoServer(self.data_dir / "s3").start()
        self.s3.create_bucket(S3_BUCKET)
        return self.s3.registry_storage(S3_BUCKET)

    def restart_registry(self) -> bool:
        """Restart the registry with its config.yml as on disk (the ``gc run`` restart hook);
        returns whether it now runs read-only."""
        self._running()
        assert self.registry_server is not None  # _running() raises when it is not
        return self.registry_server.restart_from_config().readonly

    @property
    def restart_command(self) -> str:
        """A shell command that restarts this sandbox's registry (for ``regops gc run``)."""
        return f"curl -fsS -X POST {self.gitlab_url}{RESTART_PATH}"

    @property
    def registry_config_path(self) -> Path:
        """The config.yml the registry runs with (``regops gc`` reads and edits it)."""
        self._running()
        assert self.registry_server is not None
        return self.registry_server.config_path

    def _start_front(self) -> None:
        """GitLab's registry API in front of the real registry (clients see only this)."""
        assert self.registry_server is not None and self.state is not None
        front = GitLabRegistryFront(
            self.registry_server.url,
            self.registry_server.storage_path,
            self.state,
            self.cert_path,
            realm=f"{self.gitlab_url}/jwt/auth",
            issuer=self.issuer,
            service=self.service,
        )
        handler = _QuietHandler if self.quiet else _RedactingHandler
        self._front = FrontServer(front, LOOPBACK, self.registry_port, handler).start()
        self.registry_port = self._front.port

    def stop(self) -> None:
        """Stop both servers; remove the temporary directory when no data dir was given."""
        if self._front is not None:
            self._front.stop()
            self._front = None
            if self.state is not None:
                self.state.save()  # the push times the front recorded
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.registry_server is not None:
            self.registry_server.stop()
            self.registry_server = None
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
        if self._admin_registry is not None:
            self._admin_registry.session.close()
            self._admin_registry = None
        if not self._keep and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ properties
    def _running(self) -> RegistryServer:
        """The registry server; ConfigError when the sandbox is not started."""
        if self._server is None or self.registry_server is None:
            raise ConfigError("the sandbox is not running; call start() first")
        return self.registry_server

    def _data_dir(self) -> Path:
        if self.data_dir is None:
            raise ConfigError("the sandbox is not running; call start() first")
        return self.data_dir

    @property
    def gitlab_url(self) -> str:
        if self._server is None:
            raise ConfigError("the sandbox is not running; call start() first")
        return f"http://{LOOPBACK}:{self.gitlab_port}"

    @property
    def registry_url(self) -> str:
        """Where clients reach the registry (GitLab's front in ``registry_api="gitlab"``)."""
        server = self._running()
        if self._front is not None:
            return f"http://{LOOPBACK}:{self._front.port}"
        return server.url

    @property
    def registry_host(self) -> str:
        server = self._running()
        if self._front is not None:
            return f"{LOOPBACK}:{self._front.port}"
        return server.host

    @property
    def key_path(self) -> Path:
        return self._data_dir() / "keys" / "registry.key"

    @property
    def cert_path(self) -> Path:
        return self._data_dir() / "keys" / "registry.crt"

    @property
    def storage_path(self) -> Path:
        """The registry's filesystem rootdirectory (for RegistryStorage and GC)."""
        return self._running().storage_path

    @property
    def cache_path(self) -> Path:
        """The manifest cache the sandbox's environment points regops at."""
        self._running()
        return self._data_dir() / "cache"

    @property
    def registry(self) -> RegistryClient:
        """An admin RegistryClient (locally signed tokens, every scope)."""
        self._running()
        assert self._admin_registry is not None  # made with the registry server
        return self._admin_registry

    def user(self, username: str) -> UserRecord:
        """A sandbox user by name (ValidationError when unknown)."""
        found = self.state.user_by_username(username) if self.state else None
        if found is None:
            raise ValidationError("user", f"no sandbox user {username!r}")
        return found

    @property
    def admin_token(self) -> Secret:
        return self.user(ADMIN_USERNAME).token

    @property
    def user_token(self) -> Secret:
        return self.user(USER_USERNAME).token

    # --------------------------------------------------------- configuration
    def env(self, user: str = "admin", registry_auth: str | None = None) -> dict[str, str]:
        """Environment variables that point regops at this sandbox as ``user``.

        ``user`` is ``"admin"`` (root), ``"user"`` (dev) or a user name. The
        admin gets key mode (signs its own registry tokens); others realm mode.
        """
        account = self._account(user)
        mode = registry_auth or ("key" if account.is_admin else "realm")
        env = {
            "GITLAB_URL": self.gitlab_url,
            "GITLAB_PRIVATE_TOKEN": account.token.reveal(),
            "REGOPS_REGISTRY_URL": self.registry_url,
            "REGOPS_REGISTRY_AUTH": mode,
            "REGOPS_REGISTRY_ISSUER": self.issuer,
            "REGOPS_REGISTRY_SERVICE": self.service,
            "REGOPS_REGISTRY_USER": account.username,
            "REGOPS_REGISTRY_STORAGE": str(self.storage_path),
            CONFIG_ENV: str(self.registry_config_path),
            # The sandbox's own manifest cache: nothing of it reaches the user's cache.
            "REGOPS_CACHE_DIR": str(self.cache_path),
        }
        if mode == "key":
            env["REGOPS_REGISTRY_KEY"] = str(self.key_path)
        if self.storage != "filesystem":  # no storage folder to read link files from
            del env["REGOPS_REGISTRY_STORAGE"]
        return env

    def _account(self, user: str) -> UserRecord:
        name = {"admin": ADMIN_USERNAME, "user": USER_USERNAME}.get(user, user)
        return self.user(name)

    def write_env_file(self, path: str | os.PathLike[str], user: str = "admin") -> Path:
        """Write ``export KEY='value'`` lines (mode 0600: it holds a token); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"export {k}={_shell_quote(v)}\n" for k, v in self.env(user).items()]
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, ENV_FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), ENV_FILE_MODE)
            handle.writelines(lines)
        return target

    def settings(
        self, user: str = "admin", registry_auth: str | None = None, **overrides: Any
    ) -> Settings:
        """regops Settings for ``user``, from explicit values only (no environment)."""
        env = self.env(user, registry_auth)
        explicit: dict[str, Any] = {
            "gitlab_url": env["GITLAB_URL"],
            "token": Secret(env["GITLAB_PRIVATE_TOKEN"]),
            "registry_url": env["REGOPS_REGISTRY_URL"],
            "registry_auth": env["REGOPS_REGISTRY_AUTH"],
            "registry_issuer": self.issuer,
            "registry_service": self.service,
            "registry_username": env["REGOPS_REGISTRY_USER"],
            "registry_storage_path": env.get("REGOPS_REGISTRY_STORAGE"),
            "registry_key_path": env.get("REGOPS_REGISTRY_KEY"),
            # Each connection made here reads through its own memory cache, so what one
            # (a test) fetched never changes what another one asks the registry for.
            "cache_dir": "none",
        }
        explicit.update(overrides)
        empty = self._data_dir() / "no-home"
        empty.mkdir(exist_ok=True)
        return resolve_settings(environ={}, home=empty, system_root=empty, **explicit)

    def connect(
        self, user: str = "admin", registry_auth: str | None = None, **overrides: Any
    ) -> Connection:
        """A :class:`regops.connection.Connection` to this sandbox as ``user``.

        It does not become the default connection; ``regops.connect`` does that.
        """
        return Connection(self.settings(user, registry_auth, **overrides))

    # --------------------------------------------------------------- seeding
    def seed(self, profile: str = "demo", **options: Any) -> dict[str, Any]:
        """Create users, groups, projects and push real images; returns a summary."""
        self._running()
        started = time.monotonic()
        summary = seed(self, profile, **options)
        assert self.app is not None  # started with the registry (_running)
        self.app.register_repositories()  # pushed with the admin key, not through /jwt/auth
        if self.registry_api == "gitlab":
            self._date_pushes_by_build()
        self.seed_seconds[profile] = time.monotonic() - started
        return summary

    def _date_pushes_by_build(self) -> None:
        """Date every seeded tag's push as its image's build time, as if each was pushed
        when built (the seed pushes everything now; GitLab's registry dates by push)."""
        assert self.state is not None
        resolver = TagResolver(self.registry)  # the manifests' own dates, not the API's
        for path in self.registry.catalog():
            for details in resolver.tags(path, self.registry.tags(path)):
                built = details.created_at or _built_at(resolver, details)
                if built is not None:
                    self.state.set_tag_times(path, details.name, created_at=built)


def _built_at(resolver: TagResolver, details: Any) -> Any:
    """An index's newest child build time (GitLab sees none through its Accept)."""
    manifest = details.manifest
    times = []
    for child in manifest.children if manifest is not None else ():
        image = resolver.manifest(details.repository, child.digest)
        if image.config is not None:
            times.append(resolver.config(details.repository, image.config.digest).created)
    return max((t for t in times if t is not None), default=None)


class _RedactingHandler(WSGIRequestHandler):
    """werkzeug's request handler, with tokens (``?private_token=...``) masked in its log."""

    def log(self, type: str, message: str, *args: Any) -> None:
        super().log(type, "%s", redact(message % args if args else message))


class _QuietHandler(_RedactingHandler, QuietRequestHandler):
    """A request handler that does not print an access log line per request."""


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


@contextlib.contextmanager
def run_seeded(
    profile: str = "demo", data_dir: str | os.PathLike[str] | None = None, **options: Any
) -> Iterator[Sandbox]:
    """A started sandbox seeded with ``profile`` ("none" seeds nothing), stopped on exit."""
    with Sandbox(data_dir) as sandbox:
        if profile != "none" and not (data_dir and sandbox.state and sandbox.state.projects):
            sandbox.seed(profile, **options)
        yield sandbox
