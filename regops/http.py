"""HTTP transport: the only place that builds a ``requests.Session``.

Owns timeouts, the connection pool, retries with backoff (idempotent requests
only, honouring ``Retry-After``), TLS settings, the user agent, and the rule
that no secret reaches an exception, a log line or a repr.

>>> session = make_session(HTTPSettings(timeout=(3, 30)))
>>> session.get("https://gitlab.example.com/api/v4/version")  # doctest: +SKIP
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse, urlsplit

import requests
from requests.adapters import HTTPAdapter

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

Origin = tuple[str, str, int]  # (scheme, host, port): where credentials may go


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


def retry_after_seconds(response: requests.Response) -> float | None:
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
        with self._lock:
            self._failures.pop(origin, None)
            self._opened.pop(origin, None)


def _origin_text(url: str) -> str:
    """``scheme://host:port`` of a URL (what the breaker counts by), or the URL itself."""
    origin = url_origin(url)
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else url


def _unreachable(exc: Exception) -> bool:
    """True for failures that say the host is not there: refused, or no answer in time."""
    if isinstance(exc, requests.Timeout):
        return True
    return isinstance(exc, requests.ConnectionError) and "Connection refused" in str(exc)


class RetryingSession(requests.Session):
    """A Session with default timeouts, retries for idempotent requests, and redaction.

    ``request(..., idempotent=True)`` marks a request of another method (a
    manifest PUT) as safe to repeat; ``request(..., pace=bucket)`` waits for
    a :class:`TokenBucket` token before every attempt (retries included), so
    one client can be paced without pacing the others sharing the session.
    """

    def __init__(self, settings: HTTPSettings) -> None:
        super().__init__()
        self.settings = settings
        self.verify = settings.verify
        self.headers["User-Agent"] = settings.user_agent
        adapter = HTTPAdapter(pool_connections=settings.pool_size, pool_maxsize=settings.pool_size)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self.request_count = 0
        self._count_lock = threading.Lock()  # worker threads share one session
        self._environment_cache: dict[tuple[object, ...], _Settings] = {}
        threshold = settings.breaker_threshold
        self.breaker = Breaker(threshold) if threshold is not None else None

    def __repr__(self) -> str:
        return f"<RetryingSession ua={self.settings.user_agent!r} timeout={self.settings.timeout}>"

    def request(
        self,
        method: str | bytes,
        url: str | bytes,
        *args: Any,  # passed on unchanged: requests.Session.request types them
        idempotent: bool | None = None,
        pace: TokenBucket | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        kwargs.setdefault("timeout", self.settings.timeout)
        # requests accepts bytes for both and decodes them the same way.
        method = (method.decode("ascii") if isinstance(method, bytes) else method).upper()
        url = url.decode("utf-8") if isinstance(url, bytes) else url
        retryable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        attempts = 1 + (self.settings.max_retries if retryable else 0)
        origin = _origin_text(url)
        timeouts = 0
        for attempt in range(attempts):
            last = attempt == attempts - 1
            if self.breaker is not None:
                self.breaker.check(origin, method, url)
            if pace is not None:
                pace.take()
            with self._count_lock:
                self.request_count += 1
            try:
                response = super().request(method, url, *args, **kwargs)
            # ChunkedEncodingError: the connection dropped mid-body; as retryable as a reset.
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                reason = _reason(exc)
                if self.breaker is not None and _unreachable(exc):
                    self.breaker.failed(origin, reason)
                if isinstance(exc, requests.Timeout):
                    timeouts += 1
                if last or timeouts > TIMEOUT_RETRIES:
                    raise TransportError(method, url, reason) from None
                self._wait(attempt, None, method, url, reason)
                continue
            except requests.RequestException as exc:
                raise TransportError(method, url, _reason(exc)) from None
            if self.breaker is not None:
                self.breaker.answered(origin)
            if response.status_code not in RETRY_STATUSES or last:
                return response
            wait = retry_after_seconds(response)
            if wait is not None and wait > self.settings.max_retry_after:
                return response
            response.close()
            self._wait(attempt, wait, method, url, f"HTTP {response.status_code}")
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
        old = urlparse(response.request.url or "")
        new = urlparse(prepared_request.url or "")
        moved = (old.hostname, old.port) != (new.hostname, new.port)
        if moved or (old.scheme == "https" and new.scheme != "https"):
            for name in CREDENTIAL_HEADERS:
                prepared_request.headers.pop(name, None)


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
