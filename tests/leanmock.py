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

import pytest
import requests

from regops import http


class ResponsesPool:
    """Stands in for one origin's :class:`regops.http.LeanPool`; records what it sent."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.sent: list[tuple[str, str, dict[str, str]]] = []
        self._session = requests.Session()
        self._session.trust_env = False

    def send(
        self, method: str, url: str, target: str, headers: Mapping[str, str]
    ) -> http.LeanResponse:
        full = self.origin + target
        self.sent.append((method, full, dict(headers)))
        response = self._session.request(method, full, headers=dict(headers), allow_redirects=False)
        return http.LeanResponse(
            method, url, response.status_code, response.headers, response.content
        )

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
        key = f"{scheme}://{host}:{port}"
        return http._Lean(pool.origin, key, pool, None)  # type: ignore[arg-type]

    monkeypatch.setattr(http.RetryingSession, "_make_lean", make)
    yield pools
