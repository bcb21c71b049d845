"""The ``regops`` command: one small module per verb under ``regops.commands``.

Each command module exposes ``register(subparsers)`` which adds its parser and
sets ``func`` to a callable taking the parsed args and returning an exit code.
Exit codes: 0 success, 1 something failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from regops import __version__
from regops.errors import RegopsError

COMMAND_MODULES = (
    "keys",
    "config",
    "sandbox",
    "console",
    "demo",
    "usage",
    "cleanup",
    "restore",
    "doctor",
    "events",
    "gc",
    "storage",
)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DESCRIPTION = (
    "GitLab container registry administration without Rails: usage reports, "
    "cleanup you can preview, safe deletes, audit and restore."
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available command."""
    parser = argparse.ArgumentParser(prog="regops", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"regops {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"regops.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"regops.commands.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``regops`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="regops: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or EXIT_OK)
    except RegopsError as exc:
        print(f"regops {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"regops {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The console script: :func:`main`, then end the process with its code (not waiting
    for worker threads a deadline left in network reads)."""
    from regops.scripting import exit_process

    exit_process(main())


if __name__ == "__main__":
    run()
