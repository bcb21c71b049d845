"""HTTP transport: the only place that builds a ``requests.Session`` or opens a connection.

Owns timeouts, the connection pools, retries with backoff (idempotent requests
only, honouring ``Retry-After``), a per-host breaker, pacing
(:class:`TokenBucket`), an adaptive concurrency limit (:class:`AdaptiveLimit`),
TLS settings, the user agent, and the rule that no secret reaches an
exception, a log line or a repr.

Two ways out, one retry loop: :meth:`RetryingSession.request` (requests, for
everything) and :meth:`RetryingSession.lean` (a urllib3 connection pool per
origin, :class:`LeanPool`, for the registry's small reads: manifest GET/HEAD,
tag lists), which skips requests' per-request work (URL and cookie handling,
environment and ``.netrc`` lookups, hooks, adapters, prepared requests). An
origin whose requests the environment would change (a proxy, a ``.netrc``
entry) is never sent lean: it keeps requests' behaviour.

>>> session = make_session(HTTPSettings(timeout=(3, 30)))
>>> session.get("https://gitlab.example.com/api/v4/version")  # doctest: +SKIP
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urljoin, urlparse, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies, get_netrc_auth
from requests.utils import parse_header_links as _parse_header_links

if TYPE_CHECKING:
    # Names that exist only in the requests stubs: the shape of merge_environment_settings.
    from requests.sessions import _Settings

from regops import __version__
from regops.errors import HostUnreachable, TransportError, ValidationError
from regops.secrets import redact, redact_url

log = logging.getLogger("regops.http")

USER_AGENT = f"regops/{__version__}"
CONNECT_TIMEOUT = 3.05  # seconds to open a TCP/TLS connection (just over a SYN retry)
# Seconds between bytes. regops reads API pages, manifests and configs (a few KiB),
# which a working server sends in well under a second: 15 s is generous, and short
# enough that a hung server costs little before the breaker below opens.
READ_TIMEOUT = 15.0
TIMEOUT_RETRIES = 1  # a request that timed out is tried once more, not max_retries times
# A host that failed this many requests in a row by being unreachable (connection
# refused, connect or read timeout) is not asked again for BREAKER_COOLDOWN seconds:
# every request to it fails at once with HostUnreachable, so a stopped server ends a
# run in seconds, with one cause, instead of every worker waiting out its own timeouts.
BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN = 60.0
POOL_SIZE = 32  # connections kept per host: enough for the default worker pools
MAX_RETRIES = 4  # attempts after the first, for idempotent requests
BACKOFF_BASE = 0.25  # seconds; doubled at every attempt, with jitter
MAX_RETRY_AFTER = 120.0  # longest server-requested wait we accept before giving up
RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Headers that carry credentials: registry tokens, GitLab personal/project and CI job tokens.
CREDENTIAL_HEADERS = ("Authorization", "PRIVATE-TOKEN", "JOB-TOKEN")
DEFAULT_PORTS = {"http": 80, "https": 443}  # so https://h and https://h:443 are one origin
# What requests sends by default; the lean path sends the same and decodes it.
ACCEPT_ENCODING = "gzip, deflate"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Statuses that say "too much": the adaptive limit halves on them.
THROTTLE_STATUSES = frozenset({429, 503})
# AdaptiveLimit: where it starts, the fewest answers it judges at once, how far the
# mean latency of a window may rise over the best seen before the limit shrinks, how
# much it shrinks then (and on a 429/503), and how fast the best latency is forgotten
# (so a server that got slower for good does not pin the limit at 1).
LIMIT_INITIAL = 4
LIMIT_MIN_WINDOW = 8
LIMIT_LATENCY_TOLERANCE = 1.5
LIMIT_BACKOFF = 0.75
LIMIT_THROTTLED = 0.5
LIMIT_BASE_DRIFT = 0.02
LIMIT_GROWTH = 1.05  # a doubling that gains less throughput than this ends slow start

Origin = tuple[str, str, int]  # (scheme, host, port): where credentials may go
A = TypeVar("A", bound="Answer")


class Answer(Protocol):
    """What callers read of an answer, from requests (``Response``) or the lean path
    (:class:`LeanResponse`). For type checking only: nothing tests against it at run time."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def links(self) -> dict[Any, Any]: ...
    def json(self) -> Any: ...
    def close(self) -> None: ...


class LeanResponse:
    """An answer read whole by the lean path: status, headers (case-insensitive), body."""

    __slots__ = ("content", "headers", "method", "status_code", "url")

    def __init__(
        self, method: str, url: str, status: int, headers: Mapping[str, str], content: bytes
    ) -> None:
        self.method = method
        self.url = url
        self.status_code = status
        self.headers = headers
        self.content = content

    def __repr__(self) -> str:
        return f"<LeanResponse [{self.status_code}]>"

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def links(self) -> dict[Any, Any]:
        """The ``Link`` header by ``rel``, as requests' ``Response.links``."""
        header = self.headers.get("Link")
        if not header:
            return {}
        found: dict[Any, Any] = {}
        for link in _parse_header_links(header):
            key = link.get("rel") or link.get("url")
            if key is not None:
                found[key] = link
        return found

    def json(self) -> Any:
        return json.loads(self.content)

    def close(self) -> None:
        """Nothing to release: the body was read and the connection given back."""


@dataclass(frozen=True)
class HTTPSettings:
    """Transport settings shared by the GitLab and registry clients."""

    timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT)
    verify: bool | str = True  # True, False, or a CA bundle path
    pool_size: int = POOL_SIZE
    max_retries: int = MAX_RETRIES
    backoff_base: float = BACKOFF_BASE
    max_retry_after: float = MAX_RETRY_AFTER
    user_agent: str = USER_AGENT
    # Unreachable failures in a row that open a host's breaker; None: no breaker (a
    # readiness probe polling a server that is still starting expects refusals).
    breaker_threshold: int | None = BREAKER_THRESHOLD
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)


def url_origin(url: str) -> Origin | None:
    """``(scheme, host, port)`` of an http(s) URL, lower-cased, default port filled in.

    None when ``url`` is not an http(s) URL with a host (or has a bad port).

    >>> url_origin("HTTPS://GitLab.example.com/jwt/auth")
    ('https', 'gitlab.example.com', 443)
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except (ValueError, TypeError, AttributeError):
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return (scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme])


def origin_text(origin: Origin) -> str:
    """``scheme://host:port`` of an origin, for messages."""
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address
    return f"{scheme}://{shown}:{port}"


def backoff_seconds(settings: HTTPSettings, attempt: int) -> float:
    """Seconds before retry ``attempt`` (0-based) when the server named none: doubled, jittered."""
    return settings.backoff_base * (2**attempt) * (1 + random.random() / 2)


def retry_after_seconds(response: Answer) -> float | None:
    """Seconds the server asked us to wait (Retry-After or RateLimit-Reset), if any."""
    value = response.headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    reset = response.headers.get("RateLimit-Reset")
    if reset and reset.strip().isdigit():
        number = float(reset)
        # GitLab sends an epoch timestamp; the IETF draft sends seconds.
        return max(0.0, number - time.time()) if number > 1e9 else number
    return None


class TokenBucket:
    """A token bucket: on average at most ``rate`` requests per second, bursts of ``burst``.

    ``take(n)`` waits until ``n`` tokens are there. Shared by threads.

    >>> bucket = TokenBucket(5)
    >>> bucket.take()        # returns at once, then paces callers at 5/s
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate or rate <= 0:
            raise ValidationError("requests_per_second", f"must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst) if burst else max(1.0, self.rate)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/s, burst={self.burst:g})"

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, count: float = 1.0) -> None:
        """Wait until ``count`` tokens are available, then spend them."""
        with self._lock:
            self._refill()
            missing = count - self._tokens
            if missing > 0:
                delay = missing / self.rate
                self._sleep(delay)
                self.waited += delay
                self._refill()
            self._tokens -= count


class LeanFailure(Exception):
    """A lean attempt that got no usable answer, classified where it happened."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class LeanPool:
    """urllib3's connection pool for one origin, for small GET/HEAD reads read whole.

    ``send`` hands the request to urllib3 (kept-alive connections, a dropped one
    replaced, chunked, gzip and deflate decoded) without retries or redirects of
    its own: the retry loop of :class:`RetryingSession` decides those. A request
    the server hung up on without answering (a kept connection it closed just
    then) is sent once more at once: it was not processed. Every failure is a
    :class:`LeanFailure`, classified as requests classifies it.
    """

    def __init__(
        self,
        origin: Origin,
        timeout: tuple[float, float],
        maxsize: int,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.scheme, self.host, self.port = origin
        options: dict[str, Any] = {
            "maxsize": maxsize,
            "timeout": urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            "retries": False,
        }
        if context is not None:
            self._pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                self.host,
                self.port,
                ssl_context=context,
                cert_reqs=context.verify_mode,
                assert_hostname=None if context.check_hostname else False,
                **options,
            )
        else:
            self._pool = urllib3.HTTPConnectionPool(self.host, self.port, **options)

    def __repr__(self) -> str:
        return f"LeanPool({origin_text((self.scheme, self.host, self.port))})"

    @property
    def opened(self) -> int:
        """Connections opened so far (for tests and benchmarks)."""
        return self._pool.num_connections

    def send(self, method: str, url: str, target: str, headers: Mapping[str, str]) -> LeanResponse:
        """One request and its whole answer; ``url`` is what the answer reports."""
        for last in (False, True):
            try:
                answer = self._pool.urlopen(
                    method,
                    target,
                    headers=dict(headers),
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=True,
                    decode_content=True,
                )
            except urllib3.exceptions.ProtocolError as exc:
                if last or not _hung_up(exc):
                    raise LeanFailure(_lean_failure(exc)) from None
                continue  # unanswered: the server never processed it
            except urllib3.exceptions.HTTPError as exc:
                raise LeanFailure(_lean_failure(exc)) from None
            return LeanResponse(method, url, answer.status, answer.headers, answer.data)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the idle connections; those in use are closed when given back."""
        self._pool.close()


def _hung_up(exc: urllib3.exceptions.ProtocolError) -> bool:
    """True when the server closed the connection before any byte of an answer."""
    cause = exc.args[1] if len(exc.args) > 1 else exc.__context__
    return isinstance(
        cause, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
    )


def _lean_failure(exc: urllib3.exceptions.HTTPError) -> _Failure:
    """What a urllib3 error means, as requests would report it."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # before ConnectTimeoutError
        refused = "Connection refused" in str(exc)
        if refused or not isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
            return _Failure(f"ConnectionError: {_reason(exc)}", True, refused, False)
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return _Failure("ConnectTimeout: timed out", True, True, True)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return _Failure("ReadTimeout: timed out", True, True, True)
    if isinstance(exc, urllib3.exceptions.ProtocolError) and "IncompleteRead" in str(exc):
        return _Failure("ChunkedEncodingError: IncompleteRead", True, False, False)
    if isinstance(exc, urllib3.exceptions.DecodeError):
        return _Failure(f"ContentDecodingError: {_reason(exc)}", False, False, False)
    # Resets, refused TLS, unresolvable names, malformed answers: ConnectionError.
    return _Failure(f"ConnectionError: {_reason(exc)}", True, False, False)


class AdaptiveLimit:
    """How many requests may be in flight at once, found while they run; at most ``maximum``.

    Starts at ``initial``. Every window of answers (as many as the limit, at
    least ``LIMIT_MIN_WINDOW``) is judged: a 429 or 503 in it halves the limit
    (the server asks for less); a mean latency above ``LIMIT_LATENCY_TOLERANCE``
    times the best window seen cuts it by a quarter (a queue is building: in the
    client, the network or the server); otherwise it grows, doubling while each
    doubling still raises the throughput (slow start), then one step at a time.

    ``acquire()`` waits for a slot; ``release(latency, status)`` gives it back
    with what the request saw. Shared by threads.

    >>> limit = AdaptiveLimit(64)
    >>> session.request("GET", url, limit=limit)  # doctest: +SKIP
    """

    def __init__(
        self,
        maximum: int,
        initial: int = LIMIT_INITIAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(maximum, int) or maximum < 1:
            raise ValidationError("workers", f"must be a positive integer, got {maximum!r}")
        self.maximum = maximum
        self.limit = max(1, min(initial, maximum))
        self.peak = self.limit  # the highest limit reached
        self.in_flight = 0
        self.throttled = 0  # 429/503 answers seen
        self.changes: list[tuple[int, str]] = []  # (new limit, why), for reports and tests
        self._clock = clock
        self._cond = threading.Condition()
        self._slow_start = True
        self._base: float | None = None  # the best window mean latency, slowly forgotten
        self._rate = 0.0  # the previous window's answers per second
        self._reset_window(clock())

    def __repr__(self) -> str:
        return f"AdaptiveLimit(limit={self.limit}, maximum={self.maximum}, peak={self.peak})"

    def _reset_window(self, now: float) -> None:
        self._window_start = now
        self._count = 0
        self._latency_sum = 0.0
        self._window_throttled = False

    def acquire(self) -> None:
        """Wait until fewer than ``limit`` requests are in flight, then take a slot."""
        with self._cond:
            while self.in_flight >= self.limit:
                self._cond.wait()
            self.in_flight += 1

    def release(self, latency: float, status: int | None = None) -> None:
        """Give the slot back; ``latency`` in seconds, ``status`` None when no answer came."""
        with self._cond:
            self.in_flight -= 1
            self._count += 1
            self._latency_sum += latency
            if status in THROTTLE_STATUSES:
                self._window_throttled = True
                self.throttled += 1
            if self._count >= max(self.limit, LIMIT_MIN_WINDOW):
                self._judge()
            free = self.limit - self.in_flight
            if free > 0:
                self._cond.notify(free)  # no more than can go: a herd would only queue again

    def _judge(self) -> None:
        """End a window: shrink, hold or grow the limit (the caller holds the lock)."""
        now = self._clock()
        mean = self._latency_sum / self._count
        rate = self._count / max(now - self._window_start, 1e-9)
        base = self._base
        self._base = mean if base is None else min(mean, base * (1 + LIMIT_BASE_DRIFT))
        if self._window_throttled:
            self._set(math.floor(self.limit * LIMIT_THROTTLED), "throttled (429/503)")
            self._slow_start = False
        elif base is not None and mean > base * LIMIT_LATENCY_TOLERANCE:
            self._set(math.floor(self.limit * LIMIT_BACKOFF), "latency rising")
            self._slow_start = False
        elif self._slow_start and self._rate and rate < self._rate * LIMIT_GROWTH:
            self._slow_start = False  # the last doubling bought (almost) nothing: hold here
        elif self._slow_start:
            self._set(self.limit * 2, "slow start")
        else:
            self._set(self.limit + max(1, self.limit // 8), "latency holds")
        self._rate = rate
        self._reset_window(now)

    def _set(self, value: int, why: str) -> None:
        value = max(1, min(self.maximum, value))
        if value != self.limit:
            self.limit = value
            self.peak = max(self.peak, value)
            self.changes.append((value, why))


class Breaker:
    """Consecutive unreachable failures per origin (scheme, host, port); opens at a threshold.

    Any answer from a host (even an error status) closes its breaker again.
    """

    def __init__(
        self,
        threshold: int = BREAKER_THRESHOLD,
        cooldown: float = BREAKER_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._opened: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def check(self, origin: str, method: str, url: str) -> None:
        """HostUnreachable when ``origin``'s breaker is open."""
        if not self._opened:  # the usual case, read without the lock (one dict read)
            return
        with self._lock:
            opened = self._opened.get(origin)
            if opened is None:
                return
            since, reason = opened
            if self._clock() - since >= self.cooldown:  # half open: let one request try
                del self._opened[origin]
                self._failures[origin] = self.threshold - 1
                return
        raise HostUnreachable(method, url, origin, self.threshold, reason)

    def failed(self, origin: str, reason: str) -> None:
        with self._lock:
            count = self._failures.get(origin, 0) + 1
            self._failures[origin] = count
            if count >= self.threshold and origin not in self._opened:
                self._opened[origin] = (self._clock(), reason)
                log.warning(
                    "%s did not answer %d requests in a row (%s): not asking it again for %gs",
                    origin,
                    count,
                    reason,
                    self.cooldown,
                )

    def answered(self, origin: str) -> None:
        if not self._failures and not self._opened:  # nothing to forget: no lock per answer
            return
        with self._lock:
            self._failures.pop(origin, None)
            self._opened.pop(origin, None)


def _origin_text(url: str) -> str:
    """``scheme://host:port`` of a URL (what the breaker counts by), or the URL itself."""
    origin = url_origin(url)
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else url


@dataclass(frozen=True)
class _Failure:
    """A failed attempt, classified: why (secret-free), and what it means."""

    reason: str
    retryable: bool  # no answer that a repeat could change: reset, refused, timeout
    unreachable: bool  # says the host is not there (refused, or no answer in time)
    timeout: bool


def _classify(exc: Exception) -> _Failure | None:
    """What a transport exception from requests or urllib3 means; None: not ours."""
    reason = _reason(exc)
    # requests: ConnectionError (SSLError too), Timeout, and ChunkedEncodingError (the
    # connection dropped mid-body: as retryable as a reset).
    if isinstance(exc, requests.Timeout):
        return _Failure(reason, True, True, True)
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        refused = isinstance(exc, requests.ConnectionError) and "Connection refused" in str(exc)
        return _Failure(reason, True, refused, False)
    if isinstance(exc, requests.RequestException):
        return _Failure(reason, False, False, False)
    if isinstance(exc, LeanFailure):
        return exc.failure
    return None


class _Lean:
    """The lean pool for one URL prefix (``scheme://host:port`` as written), the breaker's
    key for its origin, or None and the reason the lean path must not be used there."""

    def __init__(self, prefix: str, key: str, pool: LeanPool | None, why_not: str | None) -> None:
        self.prefix = prefix
        self.key = key
        self.pool = pool
        self.why_not = why_not


class RetryingSession(requests.Session):
    """A Session with default timeouts, retries for idempotent requests, and redaction.

    ``request(..., idempotent=True)`` marks a request of another method (a
    manifest PUT) as safe to repeat; ``request(..., pace=bucket)`` waits for
    a :class:`TokenBucket` token before every attempt (retries included), so
    one client can be paced without pacing the others sharing the session;
    ``limit=`` holds a slot of an :class:`AdaptiveLimit` during every attempt.
    :meth:`lean` sends small reads through a :class:`LeanPool`, with the same
    retries, breaker, pacing, limit and counting.
    """

    def __init__(self, settings: HTTPSettings) -> None:
        super().__init__()
        self.settings = settings
        self.verify = settings.verify
        self.headers["User-Agent"] = settings.user_agent
        self.pool_size = settings.pool_size
        self._mount_adapters(settings.pool_size)
        self.request_count = 0
        self._count_lock = threading.Lock()  # worker threads share one session
        self._environment_cache: dict[tuple[object, ...], _Settings] = {}
        threshold = settings.breaker_threshold
        self.breaker = Breaker(threshold) if threshold is not None else None
        self._lean_pools: dict[Origin, _Lean] = {}
        self._lean_prefixes: dict[str, _Lean] = {}
        self._lean_lock = threading.Lock()
        self._lean_headers = {"User-Agent": settings.user_agent, "Accept-Encoding": ACCEPT_ENCODING}

    def __repr__(self) -> str:
        return f"<RetryingSession ua={self.settings.user_agent!r} timeout={self.settings.timeout}>"

    def _mount_adapters(self, size: int) -> None:
        adapter = HTTPAdapter(pool_connections=size, pool_maxsize=size)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def reserve(self, connections: int) -> None:
        """Keep at least ``connections`` connections per host (a pool sized to the workers:
        a bigger worker pool than connections would open and drop connections per request)."""
        with self._lean_lock:
            if connections <= self.pool_size:
                return
            self.pool_size = connections
            old = list(self._lean_pools.values())
            self._lean_pools.clear()
            self._lean_prefixes.clear()
        for lean in old:
            if lean.pool is not None:
                lean.pool.close()  # connections in use are closed when given back
        for adapter in set(self.adapters.values()):
            adapter.close()
        self._mount_adapters(connections)

    def close(self) -> None:
        super().close()
        with self._lean_lock:
            pools = [lean.pool for lean in self._lean_pools.values() if lean.pool is not None]
            self._lean_pools.clear()
            self._lean_prefixes.clear()
        for pool in pools:
            pool.close()

    # ------------------------------------------------------------------ requests

    def request(
        self,
        method: str | bytes,
        url: str | bytes,
        *args: Any,  # passed on unchanged: requests.Session.request types them
        idempotent: bool | None = None,
        pace: TokenBucket | None = None,
        limit: AdaptiveLimit | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        kwargs.setdefault("timeout", self.settings.timeout)
        # requests accepts bytes for both and decodes them the same way.
        method = (method.decode("ascii") if isinstance(method, bytes) else method).upper()
        url = url.decode("utf-8") if isinstance(url, bytes) else url
        retryable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        send = super().request

        def attempt() -> requests.Response:
            return send(method, url, *args, **kwargs)

        return self._attempts(method, url, _origin_text(url), retryable, pace, limit, attempt)

    def lean(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        pace: TokenBucket | None = None,
        limit: AdaptiveLimit | None = None,
    ) -> Answer:
        """A GET or HEAD of a small body through the origin's :class:`LeanPool`: the same
        retries, breaker, pacing, limit and counting as :meth:`request`, half its CPU.

        ``headers`` are sent as given (plus the user agent and ``Accept-Encoding``).
        Through :meth:`request` instead, with requests' behaviour: an origin the
        environment routes through a proxy or has a ``.netrc`` entry for, and a
        redirect (followed as requests follows it).
        """
        lean = self._lean_for(url)
        pool = lean.pool
        if pool is None:
            return self.request(method, url, headers=dict(headers), pace=pace, limit=limit)
        target = url[len(lean.prefix) :].split("#", 1)[0] or "/"
        sent = {**self._lean_headers, **headers}

        def attempt() -> LeanResponse:
            return pool.send(method, url, target, sent)

        retryable = method in IDEMPOTENT_METHODS
        answer = self._attempts(method, url, lean.key, retryable, pace, limit, attempt)
        location = answer.headers.get("location")
        if answer.status_code not in REDIRECT_STATUSES or not location:
            return answer
        # Rare for a registry read: the next hop goes through requests, which follows any
        # further redirects; credentials stay home as rebuild_auth keeps them.
        target = urljoin(url, location)
        hop = {k: v for k, v in headers.items() if not _moved(url, target) or not _credential(k)}
        method = "GET" if answer.status_code == 303 and method != "HEAD" else method
        return self.request(method, target, headers=hop, pace=pace, limit=limit)

    def _lean_for(self, url: str) -> _Lean:
        """The lean pool for ``url``'s ``scheme://host:port``, found by that prefix of the
        URL (no parsing per request); made on first use, the environment read then, once."""
        start = url.find("://")
        end = url.find("/", start + 3) if start > 0 else -1
        prefix = url if end < 0 else url[:end]
        lean = self._lean_prefixes.get(prefix)
        if lean is not None:
            return lean
        origin = url_origin(prefix + "/") if "@" not in prefix else None  # userinfo: requests
        with self._lean_lock:
            if origin is None:
                lean = _Lean(prefix, prefix, None, "not a plain http(s)://host[:port] URL")
            else:  # one pool per origin, whichever way its URLs spell it
                made = self._lean_pools.get(origin)
                if made is None:
                    made = self._lean_pools[origin] = self._make_lean(origin)
                lean = _Lean(prefix, made.key, made.pool, made.why_not)
            self._lean_prefixes[prefix] = lean
        return lean

    def _make_lean(self, origin: Origin) -> _Lean:
        scheme = origin[0]
        url = f"{origin_text(origin)}/"
        key = f"{origin[0]}://{origin[1]}:{origin[2]}"  # as _origin_text: one breaker per host
        if self.proxies or (self.trust_env and get_environ_proxies(url, no_proxy=None)):
            return _Lean(url, key, None, "a proxy is configured for this origin")
        if self.trust_env and get_netrc_auth(url):
            return _Lean(url, key, None, "~/.netrc has credentials for this origin")
        context = tls_context(self.verify, self.trust_env) if scheme == "https" else None
        pool = LeanPool(origin, self.settings.timeout, self.pool_size, context)
        return _Lean(url, key, pool, None)

    # ------------------------------------------------------------------ the retry loop

    def _attempts(
        self,
        method: str,
        url: str,
        origin: str,
        retryable: bool,
        pace: TokenBucket | None,
        limit: AdaptiveLimit | None,
        attempt: Callable[[], A],
    ) -> A:
        """``attempt()`` until an answer that is not retried, or a TransportError."""
        attempts = 1 + (self.settings.max_retries if retryable else 0)
        timeouts = 0
        breaker = self.breaker
        for number in range(attempts):
            last = number == attempts - 1
            if breaker is not None:
                breaker.check(origin, method, url)
            if pace is not None:
                pace.take()
            with self._count_lock:
                self.request_count += 1
            if limit is not None:
                limit.acquire()
                started = time.monotonic()
            try:
                response = attempt()
            except Exception as exc:
                failure = _classify(exc)
                if limit is not None:
                    limit.release(time.monotonic() - started, None)
                if failure is None:
                    raise
                if not failure.retryable:
                    raise TransportError(method, url, failure.reason) from None
                if breaker is not None and failure.unreachable:
                    breaker.failed(origin, failure.reason)
                if failure.timeout:
                    timeouts += 1
                if last or timeouts > TIMEOUT_RETRIES:
                    raise TransportError(method, url, failure.reason) from None
                self._wait(number, None, method, url, failure.reason)
                continue
            status = response.status_code
            if limit is not None:
                limit.release(time.monotonic() - started, status)
            if breaker is not None:
                breaker.answered(origin)
            if status not in RETRY_STATUSES or last:
                return response
            wait = retry_after_seconds(response)
            if wait is not None and wait > self.settings.max_retry_after:
                return response
            response.close()
            self._wait(number, wait, method, url, f"HTTP {status}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int, wait: float | None, method: str, url: str, why: str) -> None:
        if wait is None:
            wait = backoff_seconds(self.settings, attempt)
        log.info("retrying %s %s in %.2fs after %s", method, redact_url(url), wait, why)
        self.settings.sleep(wait)

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: MutableMapping[str, str] | None,
        stream: bool | None,
        verify: bool | str | None,
        cert: str | tuple[str, str] | None,
    ) -> _Settings:
        """requests' environment lookup (proxies, CA bundle), once per scheme and host.

        requests re-reads the proxy variables and ``no_proxy`` on every request,
        a quarter of its CPU per small request; they do not change during a run.
        """
        if proxies or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlparse(url)
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        cached = self._environment_cache.get(key)
        if cached is None:
            cached = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment_cache[key] = cached
        settings = cached.copy()
        settings["proxies"] = dict(cached["proxies"])  # the caller may change its copy
        return settings

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        """Drop credential headers on a redirect to another host or port, or to plain HTTP.

        requests drops only ``Authorization``, and keeps it across ports; GitLab's
        ``PRIVATE-TOKEN`` and ``JOB-TOKEN`` would follow any redirect.
        """
        super().rebuild_auth(prepared_request, response)
        if _moved(response.request.url or "", prepared_request.url or ""):
            for name in CREDENTIAL_HEADERS:
                prepared_request.headers.pop(name, None)


def tls_context(verify: bool | str | None, trust_env: bool = True) -> ssl.SSLContext:
    """The TLS context for ``verify``, as requests decides it (once per pool, not per request):
    the CA bundle of ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``, else certifi's; a path
    (file or directory) as given; False: no verification."""
    if verify is True or verify is None:
        if trust_env:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        verify = verify or True
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        location = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        folder = os.path.isdir(location)
        context = ssl.create_default_context(
            cafile=None if folder else location, capath=location if folder else None
        )
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as urllib3 2 sets it
    return context


def _moved(old: str, new: str) -> bool:
    """True when a redirect leaves the origin (host or port) or drops from HTTPS to HTTP:
    credentials are not sent on (as :meth:`RetryingSession.rebuild_auth` decides)."""
    before, after = urlparse(old), urlparse(new)
    if (before.hostname, before.port) != (after.hostname, after.port):
        return True
    return before.scheme == "https" and after.scheme != "https"


def _credential(name: str) -> bool:
    return name.lower() in _CREDENTIAL_NAMES


_CREDENTIAL_NAMES = frozenset(name.lower() for name in CREDENTIAL_HEADERS)


def _reason(exc: Exception) -> str:
    """A short, secret-free reason for a transport failure."""
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "reset by peer"):
        if marker in text:
            return f"{type(exc).__name__}: {marker}"
    return f"{type(exc).__name__}: {redact(text)[:200]}"


def make_session(settings: HTTPSettings | None = None) -> RetryingSession:
    """A new session with regops' transport settings."""
    return RetryingSession(settings or HTTPSettings())
