"""A loopback HTTP forwarder that adds a fixed delay to every request (a stand-in for latency).

Put one in front of the GitLab stand-in and one in front of the registry, and
hand clients the proxies' URLs. Every request waits ``delay`` seconds, then is
forwarded to its upstream over a kept-alive connection; the answer comes back
whole (bodies are small here: manifests, JSON pages).

URLs the upstreams put in headers name the real ports: the registry's
``WWW-Authenticate`` realm (GitLab's ``/jwt/auth``), upload ``Location``s, and
GitLab's pagination ``Link``s. A :class:`ProxyGroup` knows every
upstream -> proxy pair and rewrites ``host:port`` in ``Location``, ``Link``
and ``WWW-Authenticate``, so a client only ever talks to proxies (the realm of
the registry proxy points at the GitLab proxy). Bodies are passed through
untouched: no JSON body here holds a URL a client follows (a repository's
``location`` is a registry host name, not a link).

Runs in this process (threads) or in a child process (``spawn=True``), which
keeps the proxy's CPU off the measured client's GIL, as real network latency
would. ``GET /__delayproxy__/stats`` answers the proxy's request count.

    python bench/proxy.py --delay 0.002 http://127.0.0.1:5000 http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests

DEFAULT_DELAY = 0.002  # seconds per request: a same-datacentre round trip
STATS_PATH = "/__delayproxy__/stats"
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
SPAWN_READY_TIMEOUT = 10.0  # seconds for a child proxy process to print its ports


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep client connections alive, as real clients expect
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the bench prints its own numbers

    def _forward(self) -> None:
        if self.path == STATS_PATH:
            self._send_stats()
            return
        body = self._read_body()
        self.server.count()
        time.sleep(self.server.delay)
        status, reason, headers, payload = self.server.upstream_request(
            self.command, self.path, self._upstream_headers(body), body
        )
        self.send_response_only(status, reason)
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or (lower == "content-length" and self.command != "HEAD"):
                continue
            if lower in REWRITTEN_HEADERS:
                value = self.server.group.rewrite(value)
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        if self.command != "HEAD" and payload:
            self._headers_buffer.append(b"\r\n" + payload)  # one write: headers and body
            self.flush_headers()
        else:
            self.end_headers()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _forward

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

    def _send_stats(self) -> None:
        payload = json.dumps({"requests": self.server.requests}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str, delay: float, group: ProxyGroup) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http://host:port URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.upstream_netloc = parts.netloc
        self.delay = delay
        self.group = group
        self.requests = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def count(self) -> None:
        with self._lock:
            self.requests += 1

    def upstream_request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
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
            return response.status, response.reason, response.getheaders(), payload
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(
                self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT
            )
            self._local.connection = connection
        return connection


class ProxyGroup:
    """Delaying proxies that know each other's upstreams, for header rewriting.

    >>> with ProxyGroup(delay=0.002) as group:           # doctest: +SKIP
    ...     gitlab = group.add("http://127.0.0.1:8080")
    ...     registry = group.add("http://127.0.0.1:5000")
    ...     # hand out gitlab.url / registry.url
    """

    def __init__(self, delay: float = DEFAULT_DELAY) -> None:
        self.delay = delay
        self.mapping: dict[str, str] = {}  # upstream netloc -> proxy netloc
        self.servers: list[_ProxyServer] = []
        self.threads: list[threading.Thread] = []

    def add(self, upstream: str) -> Proxy:
        """Start a proxy for ``upstream`` (an ``http://host:port`` URL)."""
        server = _ProxyServer(upstream.rstrip("/"), self.delay, self)
        thread = threading.Thread(target=server.serve_forever, name="delayproxy", daemon=True)
        thread.start()
        self.servers.append(server)
        self.threads.append(thread)
        proxy = Proxy(upstream.rstrip("/"), f"127.0.0.1:{server.server_address[1]}", server)
        self.mapping[server.upstream_netloc] = proxy.netloc
        if server.upstream_host == "127.0.0.1":  # the same port under its other loopback name
            self.mapping[f"localhost:{server.upstream_port}"] = proxy.netloc
        return proxy

    def rewrite(self, value: str) -> str:
        for upstream, proxy in self.mapping.items():
            value = value.replace(f"//{upstream}", f"//{proxy}")
        return value

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)
        self.servers.clear()
        self.threads.clear()

    def __enter__(self) -> ProxyGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Proxy:
    """One running proxy: ``url`` to hand out, ``requests`` forwarded so far."""

    def __init__(self, upstream: str, netloc: str, server: _ProxyServer | None = None) -> None:
        self.upstream = upstream
        self.netloc = netloc
        self.url = f"http://{netloc}"
        self._server = server

    def __repr__(self) -> str:
        return f"Proxy({self.url} -> {self.upstream})"

    @property
    def requests(self) -> int:
        if self._server is not None:
            return self._server.requests
        return int(requests.get(self.url + STATS_PATH, timeout=5).json()["requests"])


class SpawnedProxies:
    """The same proxies in a child process (``python bench/proxy.py``), stopped on exit."""

    def __init__(self, upstreams: list[str], delay: float = DEFAULT_DELAY) -> None:
        command = [sys.executable, __file__, "--delay", str(delay), *upstreams]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.proxies: list[Proxy] = []
        deadline = time.monotonic() + SPAWN_READY_TIMEOUT
        for upstream in upstreams:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"proxy process did not start for {upstream}")
            self.proxies.append(Proxy(upstream, line.strip().split()[-1]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> SpawnedProxies:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY, help="seconds per request")
    parser.add_argument("upstreams", nargs="+", help="http://host:port to forward to")
    args = parser.parse_args(argv)
    group = ProxyGroup(args.delay)
    for upstream in args.upstreams:
        proxy = group.add(upstream)
        print(f"{upstream} -> {proxy.netloc}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        group.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
