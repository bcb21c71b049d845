"""A deterministic fault-injecting HTTP forwarder for loopback tests.

Put one :class:`FaultProxy` in front of the GitLab stand-in and one in front
of the registry (same :class:`FaultGroup`, so ``Location``, ``Link`` and
``WWW-Authenticate`` are rewritten to the proxies: see tests/forwarding.py).
Every request is recorded in arrival order (:attr:`FaultGroup.log`: proxy
name, method, path, status or fault). A :class:`Rule` says "the n-th request
matching METHOD and a path regex gets FAULT"; a group can also inject faults
at random (``rate``, seeded) for sweeps. The faults (:data:`FAULTS`):

``503``, ``502``, ``429``
    answered by the proxy, not forwarded (429 with ``Retry-After: 1``).
``reset_before``
    the client connection is closed with a TCP RST; nothing is forwarded.
``reset_after``
    forwarded (the upstream acts on it), then RST without an answer.
``truncated``
    forwarded; the answer's headers go out with the full ``Content-Length``
    and only half the body, then the connection is closed (an answer without
    a body, e.g. to HEAD, is cut inside its headers instead).
``stall``
    held ``stall_seconds`` (set it above the client's read timeout), then
    DROPPED: the connection is closed and the request never reaches the
    upstream, so nothing arrives late behind the client's back.
``kill_before``
    the process :attr:`FaultGroup.pid` is SIGKILLed; nothing is forwarded.
``kill_after``
    forwarded, then the process is SIGKILLed before it gets the answer.

After a kill, the proxy waits until the process is dead (a zombie or gone)
before closing the connection, and drops every later request until
:meth:`FaultGroup.arm` is called again, so nothing the dead process had in
flight reaches an upstream after the kill.

>>> with FaultGroup() as group:                                  # doctest: +SKIP
...     gitlab = group.add("http://127.0.0.1:8080", "gitlab")
...     registry = group.add("http://127.0.0.1:5000", "registry")
...     group.arm([Rule("kill_after", "DELETE", r"/v2/.*/manifests/sha256:.*", nth=2)], pid=pid)
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.forwarding import Answer, Forwarder, ForwarderGroup, ForwardingHandler

STATUS_FAULTS = ("503", "502", "429")
KILL_FAULTS = ("kill_before", "kill_after")
FAULTS = (*STATUS_FAULTS, "reset_before", "reset_after", "truncated", "stall", *KILL_FAULTS)
RETRY_AFTER_SECONDS = "1"  # what the injected 429 asks the client to wait
DEFAULT_STALL = 2.0  # seconds a stalled request is held: above the client's read timeout
DEATH_TIMEOUT = 10.0  # seconds a SIGKILLed process may take to die (it always does at once)
DEATH_POLL = 0.002  # seconds between checks that a killed process is dead
REASONS = {"503": "Service Unavailable", "502": "Bad Gateway", "429": "Too Many Requests"}
# Registry-shaped error body (GitLab clients read only the status and Retry-After).
ERROR_CODES = {"503": "UNAVAILABLE", "502": "UNAVAILABLE", "429": "TOOMANYREQUESTS"}
DROPPED = "dropped_after_kill"  # what the log says of a request that came after a kill


@dataclass(frozen=True)
class Rule:
    """The ``nth`` request (1-based) matching ``method`` and ``path`` gets ``fault``.

    ``path`` is a regex matched against the whole request target (path and
    query); ``method`` is an HTTP method or ``*``; ``proxy`` restricts the
    rule to one proxy by name (None: any).
    """

    fault: str
    method: str = "*"
    path: str = ".*"
    nth: int = 1
    proxy: str | None = None

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; use one of {FAULTS}")
        if self.nth < 1:
            raise ValueError(f"nth counts from 1, got {self.nth}")
        re.compile(self.path)

    def matches(self, proxy: str, method: str, path: str) -> bool:
        return (
            (self.proxy is None or self.proxy == proxy)
            and (self.method == "*" or self.method == method)
            and re.fullmatch(self.path, path) is not None
        )


@dataclass
class Seen:
    """One request as the proxy saw it: ``status`` is the upstream's answer, if forwarded."""

    index: int
    proxy: str
    method: str
    path: str
    fault: str | None = None
    status: int | None = None

    def __str__(self) -> str:
        what = self.fault or self.status
        return f"#{self.index} {self.proxy} {self.method} {self.path} -> {what}"


@dataclass
class _Armed:
    """What the group does now: rules with their match counts, random faults, the pid."""

    rules: list[Rule]
    counts: list[int]
    pid: int | None
    rate: float = 0.0
    kinds: tuple[str, ...] = ()
    rng: random.Random = field(default_factory=random.Random)
    killed: bool = False


class FaultProxy(Forwarder):
    """A forwarder that asks its group which fault (if any) each request gets."""

    group: FaultGroup

    def exchange(self, handler: ForwardingHandler, body: bytes | None) -> None:
        seen = self.group.decide(self.name, handler.command, handler.path)
        fault = seen.fault
        if fault is None:
            answer = handler.forward(body)
            seen.status = answer.status
            handler.reply(answer)
        elif fault == DROPPED:
            handler.reset()
        elif fault in STATUS_FAULTS:
            handler.reply(_error_answer(fault))
        elif fault == "reset_before":
            handler.reset()
        elif fault == "stall":
            self.group.stopping.wait(self.group.stall_seconds)
            handler.hang_up()
        elif fault == "kill_before":
            self.group.kill()
            handler.reset()
        else:  # reset_after, truncated, kill_after: the upstream acts on the request first
            answer = handler.forward(body)
            seen.status = answer.status
            if fault == "truncated":
                handler.wfile.write(_truncated(handler, answer))
                handler.hang_up()
                return
            if fault == "kill_after":
                self.group.kill()
            handler.reset()


def _error_answer(fault: str) -> Answer:
    body = {"errors": [{"code": ERROR_CODES[fault], "message": f"injected {fault}"}]}
    headers = [("Content-Type", "application/json")]
    if fault == "429":
        headers.append(("Retry-After", RETRY_AFTER_SECONDS))
    return Answer(int(fault), REASONS[fault], headers, json.dumps(body).encode())


def _truncated(handler: ForwardingHandler, answer: Answer) -> bytes:
    """The answer cut short: half its body, or half its headers when it has no body."""
    wire = handler.encode(answer)
    body = len(wire) - wire.index(b"\r\n\r\n") - 4
    if body > 0:
        return wire[: len(wire) - body + body // 2]
    return wire[: len(wire) // 2]


class FaultGroup(ForwarderGroup):
    """Fault proxies sharing one request log, one rule set and one target pid."""

    def __init__(self, stall_seconds: float = DEFAULT_STALL) -> None:
        super().__init__()
        self.stall_seconds = stall_seconds
        self.log: list[Seen] = []
        self.kills = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._armed = _Armed([], [], None)
        self._pid_ready = threading.Event()

    def add(self, upstream: str, name: str) -> FaultProxy:
        """Start a fault proxy called ``name`` for ``upstream`` (``http://host:port``)."""
        return self.start_forwarder(FaultProxy(upstream, self, name))  # type: ignore[return-value]

    def arm(
        self,
        rules: Sequence[Rule] = (),
        *,
        pid: int | None = None,
        rate: float = 0.0,
        kinds: Iterable[str] = (),
        seed: int | None = None,
    ) -> None:
        """Start afresh: clear the log, set the rules, the pid to kill and random faults.

        With ``rate`` > 0, each request no rule claims gets a fault drawn from
        ``kinds`` with that probability (a ``random.Random(seed)``: the same
        seed and the same requests give the same faults).
        """
        kinds = tuple(kinds)
        unknown = [k for k in kinds if k not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; use some of {FAULTS}")
        if rate and not kinds:
            raise ValueError("a fault rate needs fault kinds to draw from")
        with self._lock:
            self.log = []
            self._armed = _Armed(
                list(rules), [0] * len(rules), pid, rate, kinds, random.Random(seed)
            )
            if pid is None:
                self._pid_ready.clear()
            else:
                self._pid_ready.set()

    def set_pid(self, pid: int) -> None:
        """The process kill faults target (a kill that fires before this waits for it)."""
        with self._lock:
            self._armed.pid = pid
        self._pid_ready.set()

    def decide(self, proxy: str, method: str, path: str) -> Seen:
        """Record the request and choose its fault (None: forward it)."""
        with self._lock:
            armed = self._armed
            seen = Seen(len(self.log), proxy, method, path)
            self.log.append(seen)
            if armed.killed:
                seen.fault = DROPPED
                return seen
            for i, rule in enumerate(armed.rules):
                if rule.matches(proxy, method, path):
                    armed.counts[i] += 1
                    if armed.counts[i] == rule.nth and seen.fault is None:
                        seen.fault = rule.fault
            if seen.fault is None and armed.rate and armed.rng.random() < armed.rate:
                seen.fault = armed.rng.choice(armed.kinds)
            if seen.fault in KILL_FAULTS:
                armed.killed = True
            return seen

    def kill(self) -> None:
        """SIGKILL the armed pid (waiting for :meth:`set_pid` if need be) until it is dead."""
        if not self._pid_ready.wait(DEATH_TIMEOUT):
            raise RuntimeError(f"a kill fault fired but no pid was given in {DEATH_TIMEOUT} s")
        pid = self._armed.pid
        assert pid is not None  # set with the event
        self.kills += 1
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + DEATH_TIMEOUT
        while _alive(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"process {pid} survived SIGKILL for {DEATH_TIMEOUT} s")
            time.sleep(DEATH_POLL)

    def faults(self) -> Counter[str]:
        """How many requests got each fault since :meth:`arm`."""
        return Counter(s.fault for s in self.log if s.fault)

    def stop(self) -> None:
        self.stopping.set()  # release stalled requests
        super().stop()

    def __enter__(self) -> FaultGroup:
        return self


def _alive(pid: int) -> bool:
    """True while ``pid`` runs: False once it is a zombie or gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")
