"""regops.http: retries, timeouts, user agent, redirects and secrets (with `responses`)."""

from __future__ import annotations

import pytest
import requests
import responses

from regops import __version__
from regops.errors import HostUnreachable, TransportError
from regops.http import (
    BREAKER_THRESHOLD,
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    TIMEOUT_RETRIES,
    Breaker,
    HTTPSettings,
    make_session,
    retry_after_seconds,
)
from regops.secrets import Secret
from tests.leaks import assert_hidden

URL = "https://registry.example.com/v2/"


class Sleeps(list):
    """A fake ``sleep`` that records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def session(sleeps):
    session = make_session(HTTPSettings(max_retries=3, backoff_base=0.01, sleep=sleeps))
    yield session
    session.close()


@responses.activate
def test_retries_429_honouring_retry_after(session, sleeps):
    responses.get(URL, status=429, headers={"Retry-After": "7"})
    responses.get(URL, status=200, body="ok")
    response = session.get(URL)
    assert response.status_code == 200 and response.text == "ok"
    assert sleeps == [7.0]
    assert len(responses.calls) == 2
    assert session.request_count == 2


@responses.activate
def test_retries_503_with_backoff_then_gives_the_last_answer(session, sleeps):
    for _ in range(4):
        responses.get(URL, status=503)
    response = session.get(URL)
    assert response.status_code == 503  # returned, not raised: the client types it
    assert len(responses.calls) == 4  # first + max_retries
    assert len(sleeps) == 3
    assert sleeps[0] < sleeps[1] < sleeps[2]  # backoff doubles (jitter is at most +50%)


@responses.activate
def test_retry_after_longer_than_allowed_is_not_waited_for(sleeps):
    session = make_session(HTTPSettings(max_retry_after=10, sleep=sleeps))
    responses.get(URL, status=429, headers={"Retry-After": "3600"})
    response = session.get(URL)
    assert response.status_code == 429
    assert sleeps == [] and len(responses.calls) == 1


@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH", "PUT"])
@responses.activate
def test_non_idempotent_methods_are_not_retried(session, sleeps, method):
    responses.add(method, URL, status=503)
    responses.add(method, URL, status=200)
    response = session.request(method, URL)
    assert response.status_code == 503
    assert len(responses.calls) == 1 and sleeps == []


@responses.activate
def test_put_marked_idempotent_is_retried(session, sleeps):
    responses.put(URL, status=502)
    responses.put(URL, status=201)
    response = session.request("PUT", URL, data=b"{}", idempotent=True)
    assert response.status_code == 201
    assert len(responses.calls) == 2 and len(sleeps) == 1


@responses.activate
def test_get_marked_not_idempotent_is_not_retried(session):
    responses.get(URL, status=503)
    assert session.request("GET", URL, idempotent=False).status_code == 503
    assert len(responses.calls) == 1


@responses.activate
def test_connection_errors_retried_until_the_breaker_opens(session, sleeps):
    for _ in range(4):
        responses.get(URL, body=requests.ConnectionError("[Errno 111] Connection refused"))
    with pytest.raises(HostUnreachable, match="Connection refused") as info:
        session.get(URL)
    assert info.value.method == "GET"
    # three refusals in a row open the host's breaker: the fourth attempt is not sent
    assert len(responses.calls) == BREAKER_THRESHOLD == 3 and len(sleeps) == 3
    other = "https://other.example.com/api"
    responses.get(other, status=200)
    assert session.get(other).status_code == 200  # another host is still asked
    with pytest.raises(HostUnreachable):
        session.get(URL + "/again")  # the same host: refused at once, no request
    assert len(responses.calls) == 4


@responses.activate
def test_resets_do_not_open_the_breaker(session, sleeps):
    for _ in range(BREAKER_THRESHOLD):
        responses.get(URL, body=requests.ConnectionError("reset by peer"))
    responses.get(URL, status=200)
    # as many resets in a row as would open the breaker for refusals: still retried
    assert session.get(URL).status_code == 200
    assert len(responses.calls) == BREAKER_THRESHOLD + 1


@responses.activate
def test_a_timed_out_request_is_tried_once_more(session, sleeps):
    for _ in range(3):
        responses.get(URL, body=requests.ReadTimeout("Read timed out."))
    with pytest.raises(TransportError, match="timed out"):
        session.get(URL)
    assert len(responses.calls) == 1 + TIMEOUT_RETRIES == 2  # a timeout is expensive


def test_breaker_closes_after_its_cooldown():
    now = [0.0]
    breaker = Breaker(threshold=2, cooldown=10, clock=lambda: now[0])
    breaker.failed("https://h:443", "refused")
    breaker.check("https://h:443", "GET", "https://h/x")  # one failure: still asked
    breaker.failed("https://h:443", "refused")
    with pytest.raises(HostUnreachable, match="did not answer 2 requests in a row"):
        breaker.check("https://h:443", "GET", "https://h/x")
    now[0] = 10.0
    breaker.check("https://h:443", "GET", "https://h/x")  # half open: one try
    breaker.failed("https://h:443", "refused")
    with pytest.raises(HostUnreachable):
        breaker.check("https://h:443", "GET", "https://h/x")  # failed again: open again


@responses.activate
def test_connection_error_then_success(session):
    responses.get(URL, body=requests.ConnectionError("reset by peer"))
    responses.get(URL, status=200)
    assert session.get(URL).status_code == 200


@responses.activate
def test_post_connection_error_is_not_retried(session, sleeps):
    responses.post(URL, body=requests.ConnectionError("Connection refused"))
    with pytest.raises(TransportError):
        session.post(URL)
    assert len(responses.calls) == 1 and sleeps == []


@responses.activate
def test_timeout_is_a_transport_error(session):
    for _ in range(2):
        responses.get(URL, body=requests.ReadTimeout("Read timed out. (read timeout=60)"))
    with pytest.raises(TransportError, match="timed out"):
        session.get(URL)


@responses.activate
def test_default_timeout_and_user_agent(session):
    responses.get(URL, status=200)
    session.get(URL)
    call = responses.calls[0]
    assert call.request.headers["User-Agent"] == f"regops/{__version__}"
    assert call.request.req_kwargs["timeout"] == (CONNECT_TIMEOUT, READ_TIMEOUT)


@responses.activate
def test_explicit_timeout_wins(session):
    responses.get(URL, status=200)
    session.get(URL, timeout=(1, 2))
    assert responses.calls[0].request.req_kwargs["timeout"] == (1, 2)


def test_custom_user_agent():
    session = make_session(HTTPSettings(user_agent="ops-team/1"))
    assert session.headers["User-Agent"] == "ops-team/1"


@responses.activate
def test_secrets_never_in_transport_errors(session):
    token = Secret("glpat-very-secret-value-42")
    url = f"https://gitlab.example.com/api/v4/projects?private_token={token.reveal()}"
    message = f"HTTPSConnectionPool: Max retries exceeded with url {url} (Bearer {token.reveal()})"
    for _ in range(4):
        responses.get(url, body=requests.ConnectionError(message))
    with pytest.raises(TransportError) as info:
        session.get(url, headers={"Authorization": f"Bearer {token.reveal()}"})
    text = str(info.value) + repr(info.value) + info.value.url
    assert_hidden(token, text)
    assert "private_token=***" in info.value.url


@responses.activate
def test_other_request_errors_are_transport_errors_without_retry(session):
    responses.get(URL, body=requests.exceptions.InvalidHeader("bad header"))
    with pytest.raises(TransportError, match="InvalidHeader"):
        session.get(URL)
    assert len(responses.calls) == 1


def test_session_repr_has_no_secrets():
    session = make_session()
    session.headers["Authorization"] = "Bearer abcdefghijkl"
    assert "abcdefghijkl" not in repr(session)


# --------------------------------------------------------------------------- redirects

BLOB = "https://registry.example.com/v2/g/app/blobs/sha256:" + "a" * 64


@responses.activate
def test_authorization_not_forwarded_to_another_host(session):
    storage = "https://storage.example.net/bucket/data?X-Amz-Signature=abc"
    responses.get(BLOB, status=307, headers={"Location": storage})
    responses.get(storage, status=200, body=b"blob")
    response = session.get(BLOB, headers={"Authorization": "Bearer registry-token-value"})
    assert response.content == b"blob"
    assert responses.calls[0].request.headers["Authorization"] == "Bearer registry-token-value"
    assert "Authorization" not in responses.calls[1].request.headers


@responses.activate
def test_authorization_not_forwarded_to_another_port(session):
    other = "https://registry.example.com:8443/data"
    responses.get(BLOB, status=302, headers={"Location": other})
    responses.get(other, status=200, body=b"blob")
    session.get(BLOB, headers={"Authorization": "Bearer registry-token-value"})
    assert "Authorization" not in responses.calls[1].request.headers


@responses.activate
def test_authorization_kept_on_same_host_redirect(session):
    same = "https://registry.example.com/v2/g/app/blobs/elsewhere"
    responses.get(BLOB, status=307, headers={"Location": same})
    responses.get(same, status=200, body=b"blob")
    session.get(BLOB, headers={"Authorization": "Bearer registry-token-value"})
    assert responses.calls[1].request.headers["Authorization"] == "Bearer registry-token-value"


# --------------------------------------------------------------------------- Retry-After


def _response(headers):
    response = requests.Response()
    response.headers.update(headers)
    return response


def test_retry_after_forms():
    assert retry_after_seconds(_response({"Retry-After": "12"})) == 12.0
    assert retry_after_seconds(_response({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert retry_after_seconds(_response({"Retry-After": "soon"})) is None
    assert retry_after_seconds(_response({"RateLimit-Reset": "30"})) == 30.0
    assert retry_after_seconds(_response({})) is None


# --------------------------------------------------------------------------- fixed bugs


@responses.activate
def test_truncated_body_of_a_get_is_retried(session, sleeps):
    # A connection dropped mid-body surfaces as ChunkedEncodingError, not ConnectionError.
    responses.get(URL, body=requests.exceptions.ChunkedEncodingError("IncompleteRead"))
    responses.get(URL, status=200, body="whole")
    assert session.get(URL).text == "whole"
    assert len(sleeps) == 1


def test_environment_proxies_are_honoured_and_looked_up_once_per_host(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "registry.internal")
    session = make_session()
    calls = []
    real = requests.utils.get_environ_proxies
    monkeypatch.setattr(
        requests.sessions, "get_environ_proxies", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    for _ in range(3):
        proxied = session.merge_environment_settings(
            "http://gitlab.example/api", {}, None, True, None
        )
        direct = session.merge_environment_settings(
            "http://registry.internal/v2/", {}, None, True, None
        )
    assert proxied["proxies"].get("http") == "http://proxy.example:3128"
    assert "http" not in direct["proxies"]
    assert len(calls) == 2  # one lookup per host, not per request


@responses.activate
@pytest.mark.parametrize("header", ["PRIVATE-TOKEN", "JOB-TOKEN"])
def test_gitlab_token_headers_not_forwarded_to_another_host(session, header):
    elsewhere = "https://login.example.net/landing"
    responses.get(URL, status=302, headers={"Location": elsewhere})
    responses.get(elsewhere, status=200)
    session.get(URL, headers={header: "glpat-must-not-travel-1"})
    assert responses.calls[0].request.headers[header] == "glpat-must-not-travel-1"
    assert header not in responses.calls[1].request.headers


@responses.activate
def test_credentials_not_forwarded_from_https_to_http(session):
    downgrade = "http://registry.example.com/v2/"
    responses.get(URL, status=301, headers={"Location": downgrade})
    responses.get(downgrade, status=200)
    session.get(URL, headers={"PRIVATE-TOKEN": "glpat-must-not-travel-2"})
    assert "PRIVATE-TOKEN" not in responses.calls[1].request.headers


def test_child_logger_records_are_redacted(caplog):
    """Logger filters do not reach child loggers; every regops.* record must be redacted."""
    import logging

    secret = Secret("glpat-logged-by-a-child-logger")
    with caplog.at_level(logging.INFO):
        logging.getLogger("regops.http").info("sent %s", secret.reveal())
        try:
            raise ValueError(f"refused {secret.reveal()}")
        except ValueError:
            logging.getLogger("regops.registry.client").exception("failed")
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert_hidden(secret, text)
    assert "sent ***" in text and "refused ***" in text


@responses.activate
def test_a_readiness_probe_can_go_without_the_breaker(sleeps):
    # a server that is still starting refuses connections: a probe polls through that
    session = make_session(HTTPSettings(max_retries=5, sleep=sleeps, breaker_threshold=None))
    for _ in range(5):
        responses.get(URL, body=requests.ConnectionError("[Errno 111] Connection refused"))
    responses.get(URL, status=200)
    assert session.get(URL).status_code == 200
    assert len(responses.calls) == 6
