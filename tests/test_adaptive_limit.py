"""regops.http.AdaptiveLimit: how many requests go at once, on a simulated server (no sleeps).

Each window of answers is fed with a fake clock: a server that answers in a
fixed latency (throughput grows with the limit), one whose capacity is
reached (throughput flat, latency rising) and one that throttles (429/503).
"""

from __future__ import annotations

import math
import threading

import pytest
import requests
import responses

from regops.errors import TransportError, ValidationError
from regops.http import AdaptiveLimit, HTTPSettings, make_session


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def window(limit: AdaptiveLimit, clock: Clock, latency: float, status: int = 200) -> int:
    """One judged window from a server answering in ``latency`` seconds whatever the load:
    as many answers as the limit judges at once (at least 8), ``limit.limit`` in flight,
    so the window lasts ceil(answers / limit) round trips; the first answer has ``status``.
    Returns the limit after it."""
    count = max(limit.limit, 8)
    for i in range(count):
        limit.acquire()
        if i == count - 1:  # the window is judged at its last answer
            clock.now += latency * math.ceil(count / limit.limit)
        limit.release(latency, status if i == 0 else 200)
    return limit.limit


def at_capacity(limit: AdaptiveLimit, clock: Clock) -> int:
    """One window from a server at capacity: N answers take N x 2.5 ms whatever the limit
    (it queues them), each with the same 2 ms latency as it reports it."""
    count = max(limit.limit, 8)
    for i in range(count):
        limit.acquire()
        if i == count - 1:
            clock.now += count * 0.0025
        limit.release(0.002)
    return limit.limit


def test_grows_by_doubling_while_latency_holds_up_to_the_cap():
    clock = Clock()
    limit = AdaptiveLimit(50, initial=4, clock=clock)
    seen = [window(limit, clock, 0.020) for _ in range(6)]
    assert seen == [8, 16, 32, 50, 50, 50]  # never above the cap (--workers)
    assert limit.peak == 50
    assert [why for _, why in limit.changes] == ["slow start"] * 4


def test_halves_on_429_or_503_and_never_goes_below_one():
    clock = Clock()
    limit = AdaptiveLimit(64, initial=32, clock=clock)
    window(limit, clock, 0.020)  # the first window sets the latency it judges by
    assert window(limit, clock, 0.020, status=429) == 32  # 64 after the first, then half
    assert window(limit, clock, 0.020, status=503) == 16
    for _ in range(8):
        window(limit, clock, 0.020, status=429)
    assert limit.limit == 1
    assert limit.throttled == 10
    assert ("throttled (429/503)") in {why for _, why in limit.changes}


def test_backs_off_by_a_quarter_when_latency_rises():
    clock = Clock()
    limit = AdaptiveLimit(64, initial=16, clock=clock)
    window(limit, clock, 0.020)
    assert limit.limit == 32
    assert window(limit, clock, 0.031) == 24  # 1.55x the best latency: a queue builds
    assert window(limit, clock, 0.029) == 27  # back under 1.5x: grows again, by an eighth
    assert limit.changes[-2:] == [(24, "latency rising"), (27, "latency holds")]


def test_slow_start_ends_when_a_doubling_buys_no_throughput():
    clock = Clock()
    limit = AdaptiveLimit(128, initial=8, clock=clock)
    assert at_capacity(limit, clock) == 16  # the first window: doubled
    assert at_capacity(limit, clock) == 16  # the same answers per second: slow start ends
    # After slow start, a step of an eighth per window while latency holds.
    assert [at_capacity(limit, clock) for _ in range(2)] == [18, 20]


def test_acquire_waits_for_a_free_slot():
    limit = AdaptiveLimit(1, initial=1)
    limit.acquire()
    entered = threading.Event()

    def second() -> None:
        limit.acquire()
        entered.set()
        limit.release(0.0)

    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    assert not entered.wait(0.2)  # the one slot is taken: the second request waits
    limit.release(0.0)
    assert entered.wait(5)
    thread.join(5)
    assert limit.in_flight == 0


@pytest.mark.parametrize("maximum", [0, -1, 1.5])
def test_a_bad_cap_is_refused(maximum):
    with pytest.raises(ValidationError, match="workers"):
        AdaptiveLimit(maximum)  # type: ignore[arg-type]


@responses.activate
def test_the_session_gives_the_slot_back_whatever_happens():
    url = "https://registry.example.com/v2/"
    responses.get(url, status=429)
    responses.get(url, status=200)
    responses.get(url + "x", body=requests.ConnectionError("reset by peer"))
    session = make_session(HTTPSettings(max_retries=0, sleep=lambda s: None))
    limit = AdaptiveLimit(4, initial=2)
    assert session.request("GET", url, limit=limit).status_code == 429
    assert session.request("GET", url, limit=limit).status_code == 200
    with pytest.raises(TransportError):
        session.request("GET", url + "x", limit=limit)
    assert limit.in_flight == 0 and limit.throttled == 1
