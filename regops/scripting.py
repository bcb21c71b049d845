"""Plumbing shared by the recipes (``recipes/*.py``) and their ``regops`` commands.

A recipe is a parser and a body. :func:`run_recipe` does the rest the same way
for all of them: parse (bad usage exits 2), take the recipe's lock (two
overlapping runs are refused), connect, run the body, print one summary line
on stderr, and turn errors into exit codes: 0 success, 1 something failed,
2 bad usage, 130 interrupted. The body prints its report on stdout and nothing
else, so a cron job mails only what matters.

>>> def body(args, connection):
...     print("report line")
...     return Outcome(EXIT_OK, "1 project checked")
>>> sys.exit(run_recipe("my_recipe", build_parser(), body))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from regops.errors import PolicyError, RegopsError, UsageError
from regops.locks import LockHeldError, RunLock

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

log = logging.getLogger("regops.scripting")


@dataclass(frozen=True)
class Outcome:
    """What a recipe body returns: the exit code and the one-line summary."""

    code: int
    summary: str


def recipe_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser with the options every recipe has (-q, -v)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_common_options(parser)
    return parser


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (no summary line on success) and ``--verbose`` (log requests)."""
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print the summary line only on failure"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done to stderr")


def key_value(text: str) -> tuple[str, str]:
    """argparse type for ``key=value`` (value may be empty, meaning unset)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def policy_attributes(pairs: Iterable[tuple[str, str]] | None, option: str) -> dict[str, Any]:
    """Validated, normalised policy attributes from ``key=value`` pairs (UsageError if not)."""
    from regops.policy import validate_policy_attributes

    given: dict[str, Any] = {}
    for key, value in pairs or ():
        if key in given:
            raise UsageError(f"{option}: {key} given twice")
        given[key] = value
    if not given:
        return {}
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
    lock: bool = True,
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
    lock: bool = True,
    connection: Any = None,
    validate: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Validate, lock, connect, run ``body``; print the summary; return the exit code.

    ``validate`` checks the arguments before anything is locked or sent
    (raise :class:`UsageError` for exit 2). ``connection`` skips connecting.
    """
    setup_logging(getattr(args, "verbose", False))
    quiet = getattr(args, "quiet", False)
    try:
        if validate is not None:
            validate(args)
        with _maybe_lock(name, lock):
            conn = connection if connection is not None else connect(args)
            outcome = body(args, conn)
    except UsageError as exc:
        return _finish(name, Outcome(EXIT_USAGE, f"bad usage: {exc}"), quiet)
    except LockHeldError as exc:
        return _finish(name, Outcome(EXIT_FAILED, str(exc)), quiet)
    except RegopsError as exc:
        return _finish(name, Outcome(EXIT_FAILED, f"failed: {exc}"), quiet)
    except KeyboardInterrupt:
        return _finish(name, Outcome(EXIT_INTERRUPTED, "interrupted"), quiet)
    return _finish(name, outcome, quiet)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _maybe_lock(name: str, lock: bool) -> Any:
    return RunLock(name) if lock else _NoLock()


def _finish(name: str, outcome: Outcome, quiet: bool) -> int:
    """Print the summary line on stderr (on success only without --quiet)."""
    if outcome.code != EXIT_OK or not quiet:
        sys.stdout.flush()
        print(f"{name}: {outcome.summary}", file=sys.stderr)
    return outcome.code
