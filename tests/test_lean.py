"""The lean path (regops.http.LeanPool under RetryingSession.lean) against real loopback sockets.

A scripted server answers each request with raw bytes the test chose (chunked,
gzip, a cut body, a close, a redirect, nothing at all), and records what it
received, so what goes over the wire is checked, not a mock's view of it.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import socketserver
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from urllib3.exceptions import InsecureRequestWarning

from regops.errors import HostUnreachable, TransportError
from regops.http import HTTPSettings, LeanFailure, LeanPool, make_session
from regops.registry.client import RegistryClient
from regops.registry.keys import generate_key
from regops.registry.tokens import AnonymousAuth, Scope

Reply = Callable[[socket.socket], None]  # writes an answer (or not) on the connection


@dataclass
class Seen:
    """One request the server read: method, target, headers (lower-cased names)."""

    method: str
    target: str
    headers: dict[str, str]


@dataclass
class Script:
    """What the server answers, in order, and what it saw."""

    replies: list[Reply] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def answer(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None,
           *, length: bool = True, close: bool = False) -> Reply:  # fmt: skip
    """A whole answer; ``length=False`` sends no Content-Length (the body ends at close)."""

    def write(conn: socket.socket) -> None:
        lines = [f"HTTP/1.1 {status} X"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if length:
            lines.append(f"Content-Length: {len(body)}")
        if close:
            lines.append("Connection: close")
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    return write


def chunked(parts: list[bytes]) -> Reply:
    def write(conn: socket.socket) -> None:
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + payload)

    return write


def hang_up(conn: socket.socket) -> None:
    """Close without answering (shutdown: the handler's reader still holds the socket)."""
    conn.shutdown(socket.SHUT_RDWR)
    conn.close()


def cut(conn: socket.socket) -> None:
    """Promise 100 bytes, send 5, close: a body cut short."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    hang_up(conn)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        script = self.server.script
        with script.lock:
            script.connections += 1
        reader = self.request.makefile("rb")
        while True:
            line = reader.readline()
            if not line:
                return
            method, target, _ = line.decode().split(" ", 2)
            headers = {}
            while (header := reader.readline()) not in (b"\r\n", b""):
                name, value = header.decode().split(":", 1)
                headers[name.strip().lower()] = value.strip()
            with script.lock:
                script.seen.append(Seen(method, target, headers))
                reply = script.replies.pop(0) if script.replies else answer(500)
            try:
                reply(self.request)
            except OSError:
                return
            if self.request.fileno() < 0:
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: Script, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.context = context

    def get_request(self) -> tuple[socket.socket, object]:
        conn, address = super().get_request()
        if self.context is not None:
            conn = self.context.wrap_socket(conn, server_side=True)
        return conn, address


@contextlib.contextmanager
def serving(context: ssl.SSLContext | None = None) -> Iterator[tuple[str, Script]]:
    script = Script()
    server = _Server(script, context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()


def _session(**settings: object) -> object:
    return make_session(HTTPSettings(sleep=lambda s: None, **settings))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the wire


def test_get_sends_the_headers_given_and_reads_status_headers_and_body():
    with serving() as (url, script):
        script.replies.append(
            answer(
                200,
                b'{"a": 1}',
                {
                    "Docker-Content-Digest": "sha256:x",
                    "Link": "<a>",
                    "link": '</v2/x?n=1>; rel="next"',
                },
            )
        )
        session = make_session()
        got = session.lean(
            "GET", url + "/v2/x/tags/list?n=1", {"Accept": "a/b", "Authorization": "Bearer t"}
        )
    assert got.status_code == 200 and got.content == b'{"a": 1}' and got.json() == {"a": 1}
    assert got.headers.get("docker-content-digest") == "sha256:x"  # any case
    assert got.headers["DOCKER-CONTENT-DIGEST"] == "sha256:x"
    assert got.headers["Link"] == '<a>, </v2/x?n=1>; rel="next"'  # repeated: joined
    assert got.links["next"]["url"] == "/v2/x?n=1"
    (seen,) = script.seen
    assert (seen.method, seen.target) == ("GET", "/v2/x/tags/list?n=1")
    assert seen.headers["accept"] == "a/b" and seen.headers["authorization"] == "Bearer t"
    assert seen.headers["user-agent"].startswith("regops/")
    assert seen.headers["accept-encoding"] == "gzip, deflate"
    assert session.request_count == 1


def test_connections_are_kept_and_reused_head_reads_no_body():
    with serving() as (url, script):
        script.replies += [
            answer(200, b"", {"Content-Length": "512"}, length=False),
            answer(200, b"one"),
            answer(200, b"two"),
        ]  # fmt: skip
        session = make_session()
        head = session.lean("HEAD", url + "/v2/a/manifests/t", {})
        first = session.lean("GET", url + "/v2/a/manifests/t", {})
        second = session.lean("GET", url + "/v2/a/manifests/u", {})
    assert head.content == b"" and head.headers["content-length"] == "512"
    assert (first.content, second.content) == (b"one", b"two")
    assert script.connections == 1  # one connection carried all three


def test_chunked_and_gzip_bodies_are_decoded():
    with serving() as (url, script):
        script.replies += [
            chunked([b'{"tags": ', b'["a"]}']),
            answer(200, gzip.compress(b"zipped"), {"Content-Encoding": "gzip"}),
        ]
        session = make_session()
        assert session.lean("GET", url + "/c", {}).content == b'{"tags": ["a"]}'
        assert session.lean("GET", url + "/g", {}).content == b"zipped"


def test_connection_close_is_not_reused_and_a_stale_connection_is_replaced():
    with serving() as (url, script):
        script.replies += [
            answer(200, b"a", close=True),
            answer(200, b"b"),
            hang_up,
            answer(200, b"c"),
        ]
        session = make_session()
        assert session.lean("GET", url + "/1", {}).content == b"a"
        assert session.lean("GET", url + "/2", {}).content == b"b"  # a new connection
        # The server closes the kept connection instead of answering: the request was
        # not processed, so it goes once more on a new connection, without a retry wait.
        assert session.lean("GET", url + "/3", {}).content == b"c"
    assert [s.target for s in script.seen] == ["/1", "/2", "/3", "/3"]
    assert script.connections == 3
    assert session.request_count == 3  # one request each, as the caller sees it


# --------------------------------------------------------------------------- failures


def test_retries_429_and_503_honouring_retry_after_then_answers():
    waits: list[float] = []
    with serving() as (url, script):
        script.replies += [
            answer(429, headers={"Retry-After": "3"}),
            answer(503),
            answer(200, b"ok"),
        ]
        session = make_session(HTTPSettings(sleep=waits.append, backoff_base=0.5))
        got = session.lean("GET", url + "/m", {})
    assert got.content == b"ok" and len(script.seen) == 3
    assert waits[0] == 3.0 and 1.0 <= waits[1] <= 1.5  # Retry-After, then backoff (2nd)
    assert session.request_count == 3


def test_a_cut_body_is_retried():
    with serving() as (url, script):
        script.replies += [cut, answer(200, b"whole")]
        assert _session().lean("GET", url + "/m", {}).content == b"whole"
    assert len(script.seen) == 2


def test_refused_connections_are_unreachable_and_open_the_breaker():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = _session(max_retries=1)
    url = f"http://127.0.0.1:{port}/v2/"
    pool = LeanPool(("http", "127.0.0.1", port), (1.0, 1.0), 2)
    with pytest.raises(LeanFailure) as failure:
        pool.send("GET", url, "/v2/", {})
    assert failure.value.failure.unreachable and not failure.value.failure.timeout
    with pytest.raises(TransportError, match="Connection refused"):
        session.lean("GET", url, {})  # 2 attempts: 2 failures in a row
    with pytest.raises(HostUnreachable):
        session.lean("GET", url, {})  # the third opens the breaker...
    with pytest.raises(HostUnreachable):
        session.lean("GET", url, {})  # ...and then nothing is sent
    assert session.request_count == 3


def test_a_read_timeout_is_tried_once_more_then_a_transport_error():
    with serving() as (url, script):
        stall = threading.Event()
        script.replies += [lambda conn: stall.wait(5), lambda conn: stall.wait(5)]
        session = _session(timeout=(1.0, 0.2), max_retries=4)
        with pytest.raises(TransportError, match="ReadTimeout"):
            session.lean("GET", url + "/slow", {})
        stall.set()
    assert len(script.seen) == 2  # TIMEOUT_RETRIES: one more, not max_retries
    assert session.request_count == 2


# --------------------------------------------------------------------------- where tokens go


def test_a_redirect_goes_through_requests_and_the_token_stays_home():
    with serving() as (other, other_script), serving() as (url, script):
        other_script.replies.append(answer(200, b"elsewhere"))
        script.replies.append(answer(302, headers={"Location": other + "/blob"}))
        client = RegistryClient(url, _Token())
        got = client._read("GET", url + "/v2/a/blobs/x", (Scope.repository("a"),))
    assert got.content == b"elsewhere"
    assert script.seen[0].headers["authorization"] == "Bearer secret-token"
    assert "authorization" not in other_script.seen[0].headers  # another port: dropped


def test_no_token_for_a_url_on_another_origin():
    with serving() as (other, other_script), serving() as (url, _script):
        other_script.replies.append(answer(200, b"{}"))
        client = RegistryClient(url, _Token())
        client._read("GET", other + "/v2/a/tags/list", (Scope.repository("a"),))
    assert "authorization" not in other_script.seen[0].headers


class _Token(AnonymousAuth):
    def authorization(self, scopes: object, session: object) -> str:
        return "Bearer secret-token"


# --------------------------------------------------------------------------- environment, TLS


def test_a_proxy_or_netrc_in_the_environment_keeps_requests_behaviour(monkeypatch, tmp_path):
    with serving() as (proxy, script):
        script.replies.append(answer(200, b"via proxy"))
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        session = make_session()
        got = session.lean("GET", "http://registry.invalid/v2/", {})
        assert session._lean_for("http://registry.invalid/v2/").pool is None
    assert got.content == b"via proxy"
    assert script.seen[0].target == "http://registry.invalid/v2/"  # sent to the proxy
    monkeypatch.delenv("HTTP_PROXY")
    (tmp_path / ".netrc").write_text("machine netrc.invalid login u password p\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    lean = make_session()._lean_for("http://netrc.invalid/v2/")
    assert lean.pool is None and "netrc" in (lean.why_not or "")


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for 127.0.0.1, and its PEM."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    loopback = ipaddress.ip_address("127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    key = generate_key("ec")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(loopback)]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def test_tls_is_verified_as_configured(tls, monkeypatch):
    context, cert_path = tls
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with serving(context) as (url, script):
        script.replies += [answer(200, b"trusted"), answer(200, b"unverified")]
        with pytest.raises(TransportError, match=r"SSL|CERTIFICATE"):
            _session(max_retries=0).lean("GET", url + "/v2/", {})  # certifi does not know it
        assert (
            make_session(HTTPSettings(verify=str(cert_path))).lean("GET", url + "/v2/", {}).content
            == b"trusted"
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = make_session(HTTPSettings(verify=False)).lean("GET", url + "/v2/", {})
        assert got.content == b"unverified"
        assert any(issubclass(w.category, InsecureRequestWarning) for w in caught)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))  # as requests reads it
    with serving(context) as (url, script):
        script.replies.append(answer(200, b"from the bundle"))
        assert make_session().lean("GET", url + "/v2/", {}).content == b"from the bundle"
