"""``regops console``: IPython with the models preloaded, or run code non-interactively.

::

    regops console                       # interactive (IPython), banner says where
    regops console --sandbox             # a seeded demo sandbox, stopped on exit
    regops console -c "Project.last(3)"  # prints the last expression's value
    regops console script.py ARGS...     # a cron script with the same namespace

Exit codes: 0 success, 1 the code raised (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from regops.scripting import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "console",
        help="IPython with Project, ContainerRepository, Tag, ExpirationPolicy, User preloaded",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", dest="code", metavar="CODE", help="run CODE and exit")
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="start a seeded demo sandbox (GitLab stand-in + real registry); stopped on exit",
    )
    parser.add_argument(
        "--sandbox-user",
        default="admin",
        choices=("admin", "user"),
        help="with --sandbox: connect as the administrator (default) or the plain user",
    )
    parser.add_argument("file", nargs="?", metavar="FILE.py", help="run this script and exit")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for FILE.py")
    parser.set_defaults(func=run)


@contextlib.contextmanager
def _connection(args: argparse.Namespace) -> Iterator[Any]:
    """The sandbox's connection (sandbox stopped on exit) or the configured one."""
    if args.sandbox:
        from regops.sandbox import run_seeded

        print("regops console: starting the demo sandbox ...", file=sys.stderr)
        with run_seeded("demo") as sandbox:
            yield sandbox.connect(user=args.sandbox_user)
        return
    from regops.connection import connect

    yield connect()


def run(args: argparse.Namespace) -> int:
    from regops import console

    if args.code is not None and args.file:
        print("regops console: give -c CODE or FILE.py, not both", file=sys.stderr)
        return EXIT_USAGE
    with _connection(args) as conn:
        ns = console.namespace(conn)
        if args.code is None and not args.file:
            console.interact(ns, console.banner(conn))
            return EXIT_OK
        return _run_quietly(console, ns, args)


def _run_quietly(console: Any, ns: dict[str, Any], args: argparse.Namespace) -> int:
    """-c / FILE: exceptions become a message on stderr and exit status 1."""
    from regops.errors import RegopsError

    try:
        if args.code is not None:
            console.run_code(args.code, ns)
        else:
            console.run_file(args.file, ns, args.args)
    except SystemExit as exc:  # as Python itself: None is 0, a message is printed and is 1
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        print(exc.code, file=sys.stderr)
        return EXIT_FAILED
    except RegopsError as exc:
        if getattr(args, "verbose", False):
            traceback.print_exc(file=sys.stderr)
        else:
            print(
                f"regops console: {type(exc).__name__}: {exc}  (regops -v console ... "
                "shows the traceback)",
                file=sys.stderr,
            )
        return EXIT_FAILED
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return EXIT_FAILED
    finally:
        sys.stdout.flush()
    return EXIT_OK
