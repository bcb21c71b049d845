"""A loopback HTTP/1.1 forwarder: the shared core of bench/proxy.py and tests/faultproxy.py.

One :class:`Forwarder` per upstream (threads, keep-alive on both sides,
TCP_NODELAY). A :class:`ForwarderGroup` knows every upstream -> forwarder
pair and rewrites ``host:port`` in ``Location``, ``Link`` and
``WWW-Authenticate`` (and ``Content-Location``), so a client handed the
forwarders' URLs only ever talks to forwarders: the registry's token realm
(GitLab's ``/jwt/auth``) then points at the GitLab forwarder, upload
``Location``s and pagination ``Link``s at theirs. Bodies pass through
untouched: no JSON body here holds a URL a client follows.

What happens to a request is :meth:`Forwarder.exchange`'s business: by
default forward it and send the answer back whole; subclasses add a delay
(bench/proxy.py) or a fault (tests/faultproxy.py) with the handler's
building blocks (:meth:`ForwardingHandler.forward`, :meth:`~ForwardingHandler.reply`,
:meth:`~ForwardingHandler.encode`, :meth:`~ForwardingHandler.reset`).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
REWRITTEN_HEADERS = frozenset({"location", "link", "www-authenticate", "content-location"})
UPSTREAM_TIMEOUT = 60.0  # seconds: the upstreams are local; a stuck one is a bug to see
LOOPBACK = "127.0.0.1"
STOP_TIMEOUT = 5.0  # seconds to wait for a server thread after shutdown()
SHUTDOWN_POLL = 0.05  # seconds; how fast a serving thread notices shutdown()
# SO_LINGER on, 0 seconds: close() then sends RST instead of FIN (a "connection reset").
LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Answer:
    """An upstream's answer, read whole."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    payload: bytes


class ForwardingHandler(BaseHTTPRequestHandler):
    """Reads one request and hands it to the server's :meth:`Forwarder.exchange`."""

    protocol_version = "HTTP/1.1"  # keep client connections alive, as real clients expect
    # Without TCP_NODELAY, Nagle's algorithm and the client's delayed ACK add ~40 ms
    # to an answer written in more than one piece.
    disable_nagle_algorithm = True
    server: Forwarder

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: users of the forwarder print or record what they need

    def _dispatch(self) -> None:
        self.server.exchange(self, self._read_body())

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    # ------------------------------------------------------------------ building blocks

    def forward(self, body: bytes | None) -> Answer:
        """Send this request upstream and return the answer (headers not yet rewritten)."""
        return self.server.upstream_request(
            self.command, self.path, self._upstream_headers(body), body
        )

    def encode(self, answer: Answer) -> bytes:
        """The answer as bytes on the wire: status line, rewritten headers, body."""
        lines = [f"{self.protocol_version} {answer.status} {answer.reason}"]
        head = self.command == "HEAD"
        for name, value in answer.headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or (lower == "content-length" and not head):
                continue
            if lower in REWRITTEN_HEADERS:
                value = self.server.group.rewrite(value)
            lines.append(f"{name}: {value}")
        if not head:
            lines.append(f"Content-Length: {len(answer.payload)}")
        header_block = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return header_block + (b"" if head else answer.payload)

    def reply(self, answer: Answer) -> None:
        """Send the whole answer in one write."""
        self.wfile.write(self.encode(answer))

    def reset(self) -> None:
        """Close the client connection with a TCP RST, answering nothing."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            self.connection.close()
        except OSError:
            pass  # the client went away first: nothing left to reset

    def hang_up(self) -> None:
        """Close the client connection normally (FIN) after what was written."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # already closed by the client
            self.connection.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ request body

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers: none expected, skip them
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _upstream_headers(self, body: bytes | None) -> dict[str, str]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.pop("Content-Length", None)
        headers["Host"] = self.server.upstream_netloc
        if body is not None:
            headers["Content-Length"] = str(len(body))
        return headers


class Forwarder(ThreadingHTTPServer):
    """Forwards everything it receives to one ``http://host:port`` upstream."""

    daemon_threads = True
    allow_reuse_address = True
    # Connections waiting to be accepted. socketserver's default (5) drops the SYNs of a
    # client opening a dozen connections at once, which then time out connecting: a real
    # server's backlog (Go's, nginx's: the kernel's somaxconn) takes them all.
    request_queue_size = 128
    handler_class: type[ForwardingHandler] = ForwardingHandler

    def __init__(self, upstream: str, group: ForwarderGroup, name: str | None = None) -> None:
        super().__init__((LOOPBACK, 0), self.handler_class)
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http://host:port URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.upstream_netloc = parts.netloc
        self.group = group
        self.name = name or parts.netloc
        self.netloc = f"{LOOPBACK}:{self.server_address[1]}"
        self.url = f"http://{self.netloc}"
        self._local = threading.local()

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet when a client goes away (killed, reset); report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def exchange(self, handler: ForwardingHandler, body: bytes | None) -> None:
        """What to do with one request: forward it and send the answer back."""
        handler.reply(handler.forward(body))

    def upstream_request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> Answer:
        """Send to the upstream on this thread's kept-alive connection (reconnect once)."""
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                connection.close()
                self._local.connection = None
            return Answer(response.status, response.reason, response.getheaders(), payload)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(
                self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT
            )
            self._local.connection = connection
        return connection


class ForwarderGroup:
    """Forwarders that know each other's upstreams, for header rewriting (a context manager)."""

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}  # upstream netloc -> forwarder netloc
        self.servers: list[Forwarder] = []
        self.threads: list[threading.Thread] = []

    def start_forwarder(self, server: Forwarder) -> Forwarder:
        """Serve ``server`` on a thread and rewrite its upstream's URLs from now on."""
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL},
            name="forwarder",
            daemon=True,
        )
        thread.start()
        self.servers.append(server)
        self.threads.append(thread)
        self.mapping[server.upstream_netloc] = server.netloc
        if server.upstream_host == LOOPBACK:  # the same port under its other loopback name
            self.mapping[f"localhost:{server.upstream_port}"] = server.netloc
        return server

    def rewrite(self, value: str) -> str:
        """``value`` with every upstream ``//host:port`` replaced by its forwarder's."""
        for upstream, forwarder in self.mapping.items():
            value = value.replace(f"//{upstream}", f"//{forwarder}")
        return value

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=STOP_TIMEOUT)
        self.servers.clear()
        self.threads.clear()

    def __enter__(self) -> ForwarderGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
