"""regops.serving: one in-process WSGI server lifecycle (sandbox servers, events receiver)."""

from __future__ import annotations

import socket

import requests

from regops.serving import QuietRequestHandler, ThreadedServer


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def port_is_free(port: int) -> bool:
    """True when nothing listens on it (a closed connection's TIME_WAIT does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_serves_from_a_thread_and_stop_frees_the_port():
    with ThreadedServer(hello, "127.0.0.1", handler=QuietRequestHandler, name="t") as server:
        answer = requests.get(f"http://127.0.0.1:{server.port}/", timeout=5)
        assert (answer.status_code, answer.text) == (200, "hello")
        assert not port_is_free(server.port)
    assert port_is_free(server.port)


def test_stop_before_start_returns_and_frees_the_port():
    server = ThreadedServer(hello, "127.0.0.1")
    port = server.port
    assert not port_is_free(port)
    server.stop()  # would wait forever in shutdown() without a serving thread
    assert port_is_free(port)
