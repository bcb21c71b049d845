"""The lean path's urllib3 pool answered by `responses`, for unit tests of the registry client.

``RetryingSession.lean`` sends the registry's hot reads (manifest GET/HEAD, tag
lists) through a urllib3 pool of its own, below requests, where `responses`
does not reach. The ``lean_via_responses`` fixture swaps that pool, and only
that, for :class:`ResponsesPool`: it takes the exact request the pool would
send (method, URL, headers) and sends it through a plain ``requests.Session``,
which `responses` answers. Everything above the pool stays real: the retry
loop, the breaker, pacing, counting, the auth headers and the error mapping.
Exceptions a mocked answer raises (``ConnectionError``, ``Timeout``,
``ChunkedEncodingError``) reach the retry loop as they are: it classifies
requests' exceptions as it classifies urllib3's (``tests/test_lean.py`` checks
the real pool against a loopback server).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import requests

from regops import http


class _Answer:
    """What the lean path reads of a urllib3 response."""

    def __init__(self, response: requests.Response) -> None:
        self.status = response.status_code
        self.headers = response.headers
        self._body = response.content

    def read(self) -> bytes:
        return self._body

    def release_conn(self) -> None:
        pass


class ResponsesPool:
    """Stands in for one origin's ``urllib3.HTTPConnectionPool``; records what it sent."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.sent: list[tuple[str, str, dict[str, str]]] = []
        self._session = requests.Session()
        self._session.trust_env = False

    def urlopen(self, method: str, url: str, headers: Mapping[str, str], **_: Any) -> _Answer:
        target = self.origin + url
        self.sent.append((method, target, dict(headers)))
        response = self._session.request(
            method, target, headers=dict(headers), allow_redirects=False
        )
        return _Answer(response)

    def close(self) -> None:
        self._session.close()


@pytest.fixture
def lean_via_responses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ResponsesPool]]:
    """Every lean pool made while the test runs is a :class:`ResponsesPool` (listed here)."""
    pools: list[ResponsesPool] = []

    def make(session: http.RetryingSession, origin: http.Origin) -> http._Lean:
        scheme, host, port = origin
        default = port == http.DEFAULT_PORTS[scheme]
        pool = ResponsesPool(f"{scheme}://{host}" if default else f"{scheme}://{host}:{port}")
        pools.append(pool)
        return http._Lean(pool, None)  # type: ignore[arg-type]

    monkeypatch.setattr(http.RetryingSession, "_make_lean", make)
    yield pools
