"""A real S3 API on loopback: ``moto`` in server mode, for the registry's s3 driver.

The registry (its ``s3`` storage driver with ``regionendpoint`` pointing
here), boto3 and ``aws``-style tools all talk to it over HTTP like to S3.
Objects live in the server's memory: they are gone when it stops. Every
request is one line of its access log, so :meth:`MotoServer.request_count`
counts what a client really sent.

>>> with MotoServer(tmp) as s3:                     # doctest: +SKIP
...     s3.create_bucket("registry")
...     s3.registry_storage("registry")             # the driver's config section
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from regops.errors import RegistryStartError, TransportError
from regops.http import HTTPSettings, make_session
from regops.sandbox.registry_server import LOOPBACK, free_port, stop_process

ACCESS_KEY = "regops-sandbox"  # moto accepts any credentials; these only exist here
SECRET_KEY = "regops-sandbox-secret"
REGION = "us-east-1"  # the region moto (and the registry's driver) default to
STARTUP_TIMEOUT = 30.0  # seconds; importing moto takes a few on a busy 2-core machine
POLL_INTERVAL = 0.1
PROBE_PATH = "/moto-api/"  # answers 200 once the server is up
LOG_NAME = "moto.log"
# One access-log line per request: "GET /bucket?list-type=2 HTTP/1.1" (ANSI colours removed).
REQUEST_LINE = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.[01]"')
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class MotoServer:
    """One ``python -m moto.server`` process on loopback (a context manager)."""

    def __init__(self, data_dir: str | os.PathLike[str], *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MotoServer {self.endpoint if self.port else 'no port'} {state}>"

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> MotoServer:
        if self.running:
            return self
        if importlib.util.find_spec("moto") is None:
            raise RegistryStartError(
                "the S3 stand-in needs moto[server]: pip install 'moto[server]' "
                "(make setup installs it with the test extra)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        # no breaker: refusals are expected until moto listens
        session = make_session(
            HTTPSettings(timeout=(0.5, 2.0), max_retries=0, breaker_threshold=None)
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    raise RegistryStartError(
                        f"moto server exited while starting; see {self.log_path}"
                    )
                try:
                    if session.get(self.endpoint + PROBE_PATH).status_code == 200:
                        return
                except TransportError:
                    pass
                time.sleep(POLL_INTERVAL)
        finally:
            session.close()
        raise RegistryStartError(f"moto server did not answer within {STARTUP_TIMEOUT:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ use

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style, the sandbox's keys)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> str:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name

    def registry_storage(self, bucket: str, rootdirectory: str = "/") -> dict[str, Any]:
        """The registry's ``storage`` driver section for ``bucket`` on this server."""
        return {
            "s3": {
                "accesskey": ACCESS_KEY,
                "secretkey": SECRET_KEY,
                "region": REGION,
                "regionendpoint": self.endpoint,
                "bucket": bucket,
                "secure": False,
                "v4auth": True,
                "rootdirectory": rootdirectory,
            }
        }

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request served so far, from the access log."""
        try:
            text = ANSI.sub("", self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return []
        return REQUEST_LINE.findall(text)

    def request_count(self) -> int:
        return len(self.requests())
