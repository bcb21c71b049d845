"""A WSGI application served from a daemon thread of this process.

One lifecycle for every server regops runs in-process: the sandbox's GitLab
stand-in and its GitLab registry-API front, and ``regops events serve``.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

SHUTDOWN_POLL = 0.05  # seconds: how fast stop() gets the serving thread to notice
JOIN_TIMEOUT = 5.0  # seconds stop() waits for the serving thread

_Server = TypeVar("_Server", bound="ThreadedServer")


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler without an access-log line per request."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class ThreadedServer:
    """``app`` on ``host:port`` (0: a free port), a thread per request.

    Bound at construction (``port`` is known then); ``start()`` serves,
    ``stop()`` shuts down, closes the socket and joins the thread.
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int = 0,
        *,
        handler: type[WSGIRequestHandler] | None = None,
        name: str = "regops-server",
    ) -> None:
        # threaded=True: a ThreadedWSGIServer, whose request threads are daemon threads.
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=handler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL},
            name=name,
            daemon=True,
        )

    def __repr__(self) -> str:
        return f"ThreadedServer({self._thread.name}, port={self.port})"

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self: _Server) -> _Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        started = self._thread.ident is not None  # shutdown() waits for a serve_forever()
        if started:
            self._server.shutdown()
        self._server.server_close()
        if started:
            self._thread.join(timeout=JOIN_TIMEOUT)

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
