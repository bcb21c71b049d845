"""Secrets: a value type that never prints itself, and text redaction.

Every token, password or private key that regops handles is wrapped in
:class:`Secret` at the edge and registered, so :func:`redact` can remove it
from any text (exception messages, log lines) that might still carry it.

>>> token = Secret("glpat-abc123")
>>> token
Secret('***')
>>> redact("Authorization: Bearer glpat-abc123")
'Authorization: Bearer ***'
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters that carry credentials in GitLab and registry URLs.
SECRET_QUERY_KEYS = frozenset(
    {"private_token", "access_token", "job_token", "token", "password", "client_secret"}
)
# Shortest value worth registering: shorter strings would mask ordinary words.
MIN_SECRET_LENGTH = 6

_registered: set[str] = set()
_lock = threading.Lock()
_BEARER_OR_BASIC = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_SECRET_QUERY_VALUE = re.compile(
    r"(?i)([?&](?:" + "|".join(sorted(SECRET_QUERY_KEYS)) + r")=)[^&#\s'\"]+"
)


class Secret:
    """A string that shows ``***`` in repr/str; ``.reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        raw = value.reveal() if isinstance(value, Secret) else str(value)
        self._value = raw
        register(raw)

    def reveal(self) -> str:
        """The real value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def register(value: str) -> None:
    """Remember a secret value so :func:`redact` removes it from any text."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _registered.add(value)


def redact(text: str) -> str:
    """Text with registered secrets, credential query values and auth headers masked."""
    if not text:
        return text
    with _lock:
        values = sorted(_registered, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    text = _BEARER_OR_BASIC.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _SECRET_QUERY_VALUE.sub(lambda m: m.group(1) + MASK, text)


def redact_url(url: str) -> str:
    """The URL without a password in its user info or credentials in its query."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if k.lower() in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*:/"
        )
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


LOGGER_NAME = "regops"  # records of this logger and its children are redacted


def redact_record(record: logging.LogRecord) -> None:
    """Mask secrets in a record's message and traceback, in place."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):  # arguments that do not fit the format
        message = f"{record.msg} {record.args}"
    record.msg = redact(message)
    record.args = ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


def _install_record_factory() -> None:
    """Redact every record of the ``regops`` loggers as it is made.

    A filter on the ``regops`` logger would not do: logger filters do not apply
    to records of child loggers (``regops.http``...) that propagate up.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "regops_redacting", False):
        return

    logging.setLogRecordFactory(_RedactingFactory(previous))


class _RedactingFactory:
    """A log record factory that redacts regops' records made by ``previous``."""

    regops_redacting = True  # installed once: a second import finds it

    def __init__(self, previous: Callable[..., logging.LogRecord]) -> None:
        self.previous = previous

    def __call__(self, *args: object, **kwargs: object) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        name = record.name
        if name == LOGGER_NAME or name.startswith(LOGGER_NAME + "."):
            redact_record(record)
        return record


_install_record_factory()
