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
The forwarding and the header rewriting live in ``tests/forwarding.py``,
shared with the fault-injecting proxy (``tests/faultproxy.py``).

    python bench/proxy.py --delay 0.002 http://127.0.0.1:5000 http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from tests.forwarding import Answer, Forwarder, ForwarderGroup, ForwardingHandler

DEFAULT_DELAY = 0.002  # seconds per request: a same-datacentre round trip
STATS_PATH = "/__delayproxy__/stats"
SPAWN_READY_TIMEOUT = 10.0  # seconds for a child proxy process to print its ports


class _DelayServer(Forwarder):
    """A forwarder that waits ``group.delay`` before forwarding, and counts requests."""

    def __init__(self, upstream: str, group: ProxyGroup) -> None:
        super().__init__(upstream, group)
        self.delay = group.delay
        self.requests = 0
        self._lock = threading.Lock()

    def exchange(self, handler: ForwardingHandler, body: bytes | None) -> None:
        if handler.path == STATS_PATH:
            payload = json.dumps({"requests": self.requests}).encode()
            headers = [("Content-Type", "application/json")]
            handler.reply(Answer(200, "OK", headers, payload))
            return
        with self._lock:
            self.requests += 1
        time.sleep(self.delay)
        super().exchange(handler, body)


class ProxyGroup(ForwarderGroup):
    """Delaying proxies that know each other's upstreams, for header rewriting.

    >>> with ProxyGroup(delay=0.002) as group:           # doctest: +SKIP
    ...     gitlab = group.add("http://127.0.0.1:8080")
    ...     registry = group.add("http://127.0.0.1:5000")
    ...     # hand out gitlab.url / registry.url
    """

    def __init__(self, delay: float = DEFAULT_DELAY) -> None:
        super().__init__()
        self.delay = delay

    def add(self, upstream: str) -> Proxy:
        """Start a proxy for ``upstream`` (an ``http://host:port`` URL)."""
        server = self.start_forwarder(_DelayServer(upstream, self))
        return Proxy(server.upstream, server.netloc, server)

    def __enter__(self) -> ProxyGroup:
        return self


class Proxy:
    """One running proxy: ``url`` to hand out, ``requests`` forwarded so far."""

    def __init__(self, upstream: str, netloc: str, server: _DelayServer | None = None) -> None:
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
