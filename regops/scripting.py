"""The contract every recipe (``recipes/*.py``) and ``regops`` command shares.

A recipe is a parser and a body. :func:`run_recipe` does the rest the same way
for all of them: parse (bad usage exits 2), check the arguments, take the
recipe's lock, connect, run the body within the deadline, print one summary
line on stderr, and turn errors into the exit codes below. The body prints
its product (a CSV, a list) on stdout; what only informs (a plan table, a
result table) goes through :func:`inform`, which ``-q`` silences, so a quiet
cron job prints nothing at all when everything went well.

=====  ===========================================================================
exit   meaning
=====  ===========================================================================
0      done
1      done in part, or failed (what and why on stderr, one line each)
2      bad usage or configuration (nothing was done)
3      another run holds the lock (nothing was done)
124    the deadline passed (``--deadline``); what was done is reported
130    interrupted (Ctrl-C)
=====  ===========================================================================

>>> def body(args, connection):
...     print("report line")
...     return Outcome(EXIT_OK, "1 project checked")
>>> sys.exit(run_recipe("my_recipe", recipe_parser("my_recipe", "..."), body))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from regops.errors import (
    ConfigError,
    DeadlineExceeded,
    LockHeldError,
    PolicyError,
    RegopsError,
    UsageError,
)

# Locks (platformdirs) and policies (re2) are imported when a run needs them: every
# command module imports this one, so `regops --help` pays for what is imported here.

EXIT_OK = 0  # done
EXIT_FAILED = 1  # done in part, or failed
EXIT_USAGE = 2  # bad usage or configuration: nothing was done
EXIT_LOCKED = 3  # another run holds the lock: nothing was done
EXIT_DEADLINE = 124  # the deadline passed (as timeout(1) reports it)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_FAILED: "done in part, or failed",
    EXIT_USAGE: "bad usage or configuration; nothing was done",
    EXIT_LOCKED: "another run holds the lock; nothing was done",
    EXIT_DEADLINE: "the deadline passed",
    EXIT_INTERRUPTED: "interrupted",
}
DEFAULT_DEADLINE = 3600.0  # seconds a cron run may take before it stops itself

log = logging.getLogger("regops.scripting")


@dataclass(frozen=True)
class Outcome:
    """What a recipe body returns: the exit code and the one-line summary."""

    code: int
    summary: str


def recipe_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the options every recipe has (-q, -v, --deadline)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_common_options(parser)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``-q`` (nothing printed on success), ``-v`` (log requests), ``--deadline``."""
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing on success (the product, a CSV or a list, still goes to stdout)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done to stderr")
    parser.add_argument(
        "--deadline",
        type=positive_float,
        default=DEFAULT_DEADLINE,
        metavar="SECONDS",
        help=f"stop the whole run after this long (default {DEFAULT_DEADLINE:g} s), exit 124",
    )


SCOPES = ("instance", "visible")


def add_scope_option(parser: argparse.ArgumentParser) -> None:
    """``--scope``: what an instance-wide run may cover with a non-admin token."""
    parser.add_argument(
        "--scope",
        choices=SCOPES,
        default="instance",
        help="instance (default): refuse a token that cannot see every project; "
        "visible: cover what the token sees, and say so in every output",
    )


@dataclass(frozen=True)
class Reach:
    """What an instance-wide run covers: everything (an admin's token), or what a user sees."""

    username: str
    admin: bool
    visible_projects: int | None = None

    @property
    def note(self) -> str | None:
        """The sentence every output carries when the run did not cover the instance."""
        if self.admin:
            return None
        count = "" if self.visible_projects is None else f"{self.visible_projects} "
        return (
            f"covers the {count}projects {self.username} can see, not the whole instance "
            "(not an administrator's token)"
        )


EVERYTHING = Reach("", True)  # a run that asked for given projects covers them all


def check_reach(args: argparse.Namespace, connection: Any, what: str) -> Reach:
    """Refuse (UsageError, exit 2) an instance-wide ``what`` with a non-admin token,
    unless ``--scope visible``; then the returned Reach's ``note`` says what it covers."""
    user = connection.current_user()
    name = str(user.get("username") or "?")
    if user.get("is_admin"):
        return Reach(name, True)
    if getattr(args, "scope", "instance") != "visible":
        raise UsageError(
            f"the token belongs to {name}, who is not an administrator: {what} would cover "
            f"only the projects {name} can see; use an administrator's token, or "
            "--scope visible to accept that (every output then says so)"
        )
    return Reach(name, False, connection.gitlab.count_projects())


def inform(args: argparse.Namespace, text: object) -> None:
    """Print what only informs (a plan, a result table) on stdout, unless ``-q``."""
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def key_value(text: str) -> tuple[str, str]:
    """argparse type for ``key=value`` (value may be empty, meaning unset)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def policy_attributes(pairs: Iterable[tuple[str, str]] | None, option: str) -> dict[str, Any]:
    """Validated, normalised policy attributes from ``key=value`` pairs (UsageError if not)."""
    given: dict[str, Any] = {}
    for key, value in pairs or ():
        if key in given:
            raise UsageError(f"{option}: {key} given twice")
        given[key] = value
    if not given:
        return {}
    from regops.policy import validate_policy_attributes

    try:
        return validate_policy_attributes(given, partial=True)
    except PolicyError as exc:
        raise UsageError(f"{option}: {exc}") from None


def positive_float(text: str) -> float:
    """argparse type for a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type for a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def setup_logging(verbose: bool) -> None:
    """Warnings (or info with -v) to stderr, secrets masked by regops' logging filter."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
    )


def connect(args: argparse.Namespace | None = None) -> Any:
    """A connection from the environment and config files (see regops.config)."""
    from regops.connection import connect as make_connection

    return make_connection()


def run_recipe(
    name: str,
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace, Any], Outcome],
    argv: Sequence[str] | None = None,
    *,
    lock: bool | str = True,
    connection: Any = None,
    validate: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Parse ``argv`` (bad usage: 2), then :func:`run_parsed`; returns the exit code."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad usage (2, message printed)
        return int(exc.code or 0)
    return run_parsed(name, args, body, lock=lock, connection=connection, validate=validate)


def run_parsed(
    name: str,
    args: argparse.Namespace,
    body: Callable[[argparse.Namespace, Any], Outcome],
    *,
    lock: bool | str = True,
    connection: Any = None,
    validate: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Validate, lock, connect, run ``body`` within the deadline; print the summary.

    ``name`` starts every line printed; ``lock`` is the lock's name (True: the
    same as ``name``; False: no lock). ``validate`` checks the arguments before
    anything is locked or sent (raise :class:`UsageError` for exit 2).
    ``connection`` skips connecting.
    """
    setup_logging(getattr(args, "verbose", False))
    quiet = getattr(args, "quiet", False)
    try:
        if validate is not None:
            validate(args)
        with _maybe_lock(name, lock), deadline(getattr(args, "deadline", None)):
            conn = connection if connection is not None else connect(args)
            outcome = body(args, conn)
    except (UsageError, ConfigError) as exc:
        return _finish(name, Outcome(EXIT_USAGE, f"bad usage: {exc}"), quiet)
    except LockHeldError as exc:
        return _finish(name, Outcome(EXIT_LOCKED, str(exc)), quiet)
    except DeadlineExceeded as exc:
        return _finish(name, Outcome(EXIT_DEADLINE, str(exc)), quiet)
    except RegopsError as exc:
        return _finish(name, Outcome(EXIT_FAILED, f"failed: {exc}"), quiet)
    except KeyboardInterrupt:
        return _finish(name, Outcome(EXIT_INTERRUPTED, "interrupted"), quiet)
    return _finish(name, outcome, quiet)


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`DeadlineExceeded` in the main thread once ``seconds`` have passed.

    A SIGALRM timer: it interrupts a wait, a sleep or a blocking read, so one
    hung endpoint cannot hold a cron run (and its lock) past the deadline.
    Does nothing without ``seconds``, or outside the main thread.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise DeadlineExceeded(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def exit_process(code: int) -> None:
    """End the process with ``code``, now.

    After a deadline, worker threads may still sit in network reads until
    their timeouts: the process does not wait for them (the run's lock is a
    flock, released by the kernel; audit records are already on disk).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    stuck = [
        t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not
        threading.main_thread()
    ]  # fmt: skip
    if stuck:
        os._exit(code)
    sys.exit(code)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_lock(name: str, lock: bool | str) -> Any:
    if lock is False:
        return _NoLock()
    from regops.locks import RunLock

    return RunLock(lock if isinstance(lock, str) else name)


def _finish(name: str, outcome: Outcome, quiet: bool) -> int:
    """Print the summary line on stderr (on success only without --quiet)."""
    if outcome.code != EXIT_OK or not quiet:
        sys.stdout.flush()
        print(f"{name}: {outcome.summary}", file=sys.stderr)
    return outcome.code
