"""The fault proxy itself: each fault does what tests/faultproxy.py says, and only once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.faultproxy import FaultGroup, Rule

BODY = b'{"hello": "world", "padding": "' + b"x" * 200 + b'"}'
CLIENT_TIMEOUT = 0.5  # seconds; the group holds stalled requests longer


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _UpstreamServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.seen.append((self.command, self.path, body))
        self.send_response(201 if self.command == "PUT" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/next")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(BODY)

    do_GET = do_HEAD = do_PUT = do_DELETE = _answer


class _UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Upstream)
        self.seen: list[tuple[str, str, bytes]] = []
        self.lock = threading.Lock()


@pytest.fixture
def upstream():
    server = _UpstreamServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream):
    with FaultGroup(stall_seconds=CLIENT_TIMEOUT + 0.5) as group:
        group.proxy = group.add(f"http://127.0.0.1:{upstream.server_port}", "up")
        yield group


def _session() -> requests.Session:
    return requests.Session()  # requests retries nothing by default


def test_forwards_rewrites_and_records_in_order(proxy, upstream):
    session = _session()
    url = proxy.proxy.url
    first = session.get(f"{url}/a?x=1", timeout=5)
    second = session.put(f"{url}/b", data=b"payload", timeout=5)
    assert first.status_code == 200 and first.content == BODY
    assert second.status_code == 201
    assert first.headers["Location"] == f"{url}/next"  # the upstream's port never shows
    assert upstream.seen == [("GET", "/a?x=1", b""), ("PUT", "/b", b"payload")]
    assert [(s.proxy, s.method, s.path, s.status, s.fault) for s in proxy.log] == [
        ("up", "GET", "/a?x=1", 200, None),
        ("up", "PUT", "/b", 201, None),
    ]


def test_nth_matching_request_only(proxy, upstream):
    proxy.arm([Rule("503", "GET", r"/t/\d+", nth=2)])
    session = _session()
    codes = [
        session.get(f"{proxy.proxy.url}{p}", timeout=5).status_code
        for p in ("/t/1", "/u", "/t/2", "/t/3")
    ]
    assert codes == [200, 200, 503, 200]  # /u does not match; the third /t is past nth
    assert [p for _, p, _ in upstream.seen] == ["/t/1", "/u", "/t/3"]
    assert proxy.faults() == {"503": 1}


@pytest.mark.parametrize("fault,status", [("503", 503), ("502", 502), ("429", 429)])
def test_status_faults_answer_without_forwarding(proxy, upstream, fault, status):
    proxy.arm([Rule(fault, "GET", "/x")])
    response = _session().get(f"{proxy.proxy.url}/x", timeout=5)
    assert response.status_code == status
    assert response.headers.get("Retry-After") == ("1" if fault == "429" else None)
    assert json.loads(response.content)["errors"][0]["message"] == f"injected {fault}"
    assert upstream.seen == []


@pytest.mark.parametrize("fault,forwarded", [("reset_before", False), ("reset_after", True)])
def test_resets(proxy, upstream, fault, forwarded):
    proxy.arm([Rule(fault, "DELETE", "/x")])
    with pytest.raises(requests.ConnectionError, match="reset by peer"):
        _session().delete(f"{proxy.proxy.url}/x", timeout=5)
    assert len(upstream.seen) == int(forwarded)


def test_truncated_answers_are_cut_short(proxy, upstream):
    proxy.arm([Rule("truncated", "GET", "/x"), Rule("truncated", "HEAD", "/x")])
    session = _session()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # half the body, then EOF
        session.get(f"{proxy.proxy.url}/x", timeout=5)
    # No body to cut: the header block stops half way (http.client takes what came, so
    # the answer lacks its last headers).
    head = session.head(f"{proxy.proxy.url}/x", timeout=5)
    assert "Location" in _session().head(f"{proxy.proxy.url}/x", timeout=5).headers
    assert "Location" not in head.headers and "Content-Length" not in head.headers
    assert [m for m, _, _ in upstream.seen] == ["GET", "HEAD", "HEAD"]  # forwarded first


def test_stall_outlasts_the_client_and_drops_the_request(proxy, upstream):
    proxy.arm([Rule("stall", "PUT", "/x")])
    with pytest.raises(requests.Timeout):
        _session().put(f"{proxy.proxy.url}/x", data=b"late", timeout=(5, CLIENT_TIMEOUT))
    proxy.stopping.wait(proxy.stall_seconds)  # past the hold: it is dropped, not forwarded
    assert upstream.seen == []


@pytest.mark.parametrize("fault,forwarded", [("kill_before", 0), ("kill_after", 1)])
def test_kills_the_client_process(proxy, upstream, fault, forwarded):
    proxy.arm([Rule(fault, "PUT", "/x")])
    script = (
        "import sys, urllib.request\n"
        "urllib.request.urlopen(urllib.request.Request(sys.argv[1], b'x', method='PUT'))\n"
        "print('survived')\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, f"{proxy.proxy.url}/x"], stdout=subprocess.PIPE
    )
    proxy.set_pid(child.pid)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -9 and out == b""
    assert len(upstream.seen) == forwarded
    assert proxy.kills == 1
    # Anything reaching the proxy after the kill is dropped until the next arm().
    with pytest.raises(requests.ConnectionError):
        _session().get(f"{proxy.proxy.url}/late", timeout=5)
    assert len(upstream.seen) == forwarded
    proxy.arm()
    assert _session().get(f"{proxy.proxy.url}/late", timeout=5).status_code == 200


def test_random_faults_repeat_with_the_seed(proxy, upstream):
    def draw(seed: int) -> list[str | None]:
        proxy.arm(rate=0.5, kinds=["503", "502"], seed=seed)
        session = _session()
        for n in range(20):
            session.get(f"{proxy.proxy.url}/r/{n}", timeout=5)
        return [s.fault for s in proxy.log]

    first = draw(7)
    assert first == draw(7)
    assert 0 < sum(f is not None for f in first) < 20
    assert first != draw(8)


def test_rules_are_checked(proxy):
    with pytest.raises(ValueError, match="unknown fault"):
        Rule("explode")
    with pytest.raises(ValueError, match="nth counts from 1"):
        Rule("503", nth=0)
    with pytest.raises(ValueError, match="needs fault kinds"):
        proxy.arm(rate=0.1)
