"""Probes for configuration checks: what a registry, its TLS and its listeners answer.

Each probe makes one request and returns plain values (status, parsed
challenge, certificate), leaving the judgement to :mod:`regops.ops.doctor`.

>>> probe_v2("https://registry.example.com", HTTPSettings()).challenge.realm  # doctest: +SKIP
'https://gitlab.example.com/jwt/auth'
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from regops.errors import TransportError
from regops.http import HTTPSettings, make_session
from regops.registry.tokens import Challenge, parse_challenge

VERSION_HEADER = "Gitlab-Container-Registry-Version"  # only GitLab's fork of the registry sends it
EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
EMPTY_ENVELOPE = json.dumps({"events": []}).encode()  # what a listener must accept harmlessly


@dataclass(frozen=True)
class V2Answer:
    """What ``GET /v2/`` without credentials answered."""

    status: int
    challenge: Challenge
    gitlab_version: str | None


def probe_v2(registry_url: str, http: HTTPSettings) -> V2Answer:
    """``GET /v2/`` with no credentials: an open registry answers 200, a token one 401."""
    session = make_session(HTTPSettings(timeout=http.timeout, verify=http.verify, max_retries=0))
    try:
        response = session.get(registry_url.rstrip("/") + "/v2/", allow_redirects=False)
    finally:
        session.close()
    return V2Answer(
        status=response.status_code,
        challenge=parse_challenge(response.headers.get("Www-Authenticate")),
        gitlab_version=response.headers.get(VERSION_HEADER) or None,
    )


def post_events(
    url: str, headers: Mapping[str, Sequence[str]], http: HTTPSettings, body: bytes = EMPTY_ENVELOPE
) -> int:
    """POST an events envelope (empty by default) as the registry would; the status."""
    session = make_session(HTTPSettings(timeout=http.timeout, verify=http.verify, max_retries=0))
    sent = {key: ", ".join(values) for key, values in headers.items()}
    sent["Content-Type"] = EVENTS_MEDIA_TYPE
    try:
        response = session.post(url, data=body, headers=sent, allow_redirects=False)
    finally:
        session.close()
    return response.status_code


def peer_certificate(url: str, timeout: float) -> x509.Certificate:
    """The certificate an https:// server presents (not verified: read to be judged)."""
    host, port = _host_port(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError("TLS", f"https://{host}:{port}", _reason(exc)) from None
    if not der:
        raise TransportError("TLS", f"https://{host}:{port}", "no certificate presented")
    return x509.load_der_x509_certificate(der)


def verify_certificate(url: str, timeout: float, cafile: str | None = None) -> str | None:
    """None when the server's certificate verifies (chain and name); else the reason."""
    host, port = _host_port(url)
    context = ssl.create_default_context(cafile=cafile)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message or exc.reason or "verification failed")
    except (OSError, ssl.SSLError) as exc:
        return _reason(exc)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 443


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or type(exc).__name__}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
