"""The sandbox's control endpoint: restart its registry as an admin's restart command would.

``regops gc run`` switches read-only mode by editing the registry's
config.yml and running a restart command the admin gives. For the sandbox
that command is::

    curl -fsS -X POST http://127.0.0.1:<gitlab port>/-/sandbox/registry/restart

which restarts the real registry (same port) with config.yml as it is on
disk. The endpoint answers 200 ``{"readonly": bool}`` once the registry
answers again, 500 when it would not start. Loopback only, like the sandbox.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from regops.errors import RegopsError

RESTART_PATH = "/-/sandbox/registry/restart"
log = logging.getLogger("regops.sandbox")


class ControlMiddleware:
    """WSGI: ``POST RESTART_PATH`` restarts the registry; everything else goes to ``app``."""

    def __init__(self, app: Any, restart: Callable[[], bool]) -> None:
        self.app = app
        self.restart = restart
        self._lock = threading.Lock()  # one restart at a time
        self.restarts = 0

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != RESTART_PATH:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(start_response, 405, {"error": "POST to restart the registry"})
        with self._lock:
            try:
                readonly = self.restart()
            except RegopsError as exc:
                log.warning("registry restart failed: %s", exc)
                return _answer(start_response, 500, {"error": "the registry did not start"})
            self.restarts += 1
        return _answer(start_response, 200, {"readonly": readonly})


def _answer(start_response: Callable[..., Any], status: int, body: dict[str, Any]) -> list[bytes]:
    reason = {200: "OK", 405: "Method Not Allowed", 500: "Internal Server Error"}[status]
    data = json.dumps(body).encode()
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]
