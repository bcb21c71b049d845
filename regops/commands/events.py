"""``regops events``: receive the registry's notifications, and query them.

    regops events serve --listen 127.0.0.1:5003            # POST /events, secret from gitlab.yml
    regops events serve --secret-file /etc/regops/notify.secret --db /var/lib/regops/events.sqlite3
    regops events list --repository group/app --action push --since 1d
    regops events list --since 2024-05-01T00:00:00Z --format csv > events.csv

The registry's endpoint (config.yml ``notifications.endpoints[]``) points at
``http://HOST:PORT/events`` with ``headers: {Authorization: [<secret>]}``.
The secret is read from ``--secret-file``, else ``$REGOPS_NOTIFICATION_SECRET``,
else GitLab's ``registry.notification_secret`` (gitlab.yml / gitlab.rb):
never from the command line, where ``ps`` would show it. Each event is
stored once (by id) and committed before the answer (see
:mod:`regops.ops.events`). ``serve`` stops on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from regops.scripting import EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from regops.serving import ThreadedServer

DEFAULT_LISTEN = "127.0.0.1:5003"  # loopback: the registry runs on the same host by default
DEFAULT_PATH = "/events"
SECRET_ENV = "REGOPS_NOTIFICATION_SECRET"
FORMATS = ("table", "csv", "json")
SHUTDOWN_POLL = 0.1  # seconds: how fast stop() is noticed
LIST_COLUMNS = ("timestamp", "action", "repository", "tag", "digest", "actor", "id")

log = logging.getLogger("regops.events")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``events serve`` and ``events list``."""
    parser = subparsers.add_parser("events", help="receive and query registry notifications")
    verbs = parser.add_subparsers(dest="events_command", metavar="VERB")
    _add_list_options(parser)
    parser.set_defaults(func=run_list)

    serve = verbs.add_parser("serve", help="receive the registry's notifications into SQLite")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help=f"host:port ({DEFAULT_LISTEN})")
    serve.add_argument("--path", default=DEFAULT_PATH, help=f"URL path ({DEFAULT_PATH})")
    serve.add_argument("--db", help="SQLite database (default: <state dir>/events.sqlite3)")
    serve.add_argument("--secret-file", help="file whose first line is the shared secret")
    serve.add_argument("--gitlab-config", help="gitlab.yml / gitlab.rb holding the secret")
    serve.set_defaults(func=run_serve)

    listing = verbs.add_parser("list", help="stored events, filtered (table, CSV, JSON)")
    _add_list_options(listing)
    listing.set_defaults(func=run_list)


def _add_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="SQLite database (default: <state dir>/events.sqlite3)")
    parser.add_argument("--repository", help="only this repository path")
    parser.add_argument("--action", help="push, pull, mount or delete")
    parser.add_argument("--tag", help="only events on this tag")
    parser.add_argument("--since", help="RFC 3339 time, or a duration back from now (1h, 7d)")
    parser.add_argument("--until", help="RFC 3339 time, or a duration back from now")
    parser.add_argument("--limit", type=int, help="at most this many events")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output (table)")


# -- serve ---------------------------------------------------------------------------------------


class ReceiverApp:
    """The WSGI listener: POST ``path`` -> :func:`regops.ops.events.receive`.

    ``after_answer`` (tests) runs after the events are committed and before the
    answer is sent; raising there makes the server answer 500, as a crash would.
    """

    def __init__(
        self,
        store: Any,
        secret: Any,
        path: str = DEFAULT_PATH,
        after_answer: Callable[[Any], None] | None = None,
    ) -> None:
        self.store = store
        self.secret = secret
        self.path = "/" + path.strip("/")
        self.after_answer = after_answer
        self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        from werkzeug.wrappers import Request, Response

        from regops.ops.events import MAX_BODY_BYTES, receive

        request = Request(environ)
        with self._lock:
            self.requests += 1
        if request.path.rstrip("/") != self.path.rstrip("/"):
            return _json(Response, {"errors": [{"code": "NOT_FOUND"}]}, 404)(
                environ, start_response
            )
        if request.method != "POST":
            response = _json(Response, {"errors": [{"code": "METHOD_NOT_ALLOWED"}]}, 405)
            response.headers["Allow"] = "POST"
            return response(environ, start_response)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _json(Response, {"errors": [{"code": "TOO_LARGE"}]}, 413)(
                environ, start_response
            )
        body = request.get_data(cache=False)
        answer = receive(self.store, self.secret, request.headers.get("Authorization"), body)
        if answer.status == 200:
            log.info("stored %(stored)s events, %(duplicates)s already stored", answer.body)
        else:
            log.warning("refused a request from %s: %s", request.remote_addr, answer.status)
        if self.after_answer is not None:
            self.after_answer(answer)
        return _json(Response, answer.body, answer.status)(environ, start_response)


def _json(response_class: Any, body: Any, status: int) -> Any:
    return response_class(json.dumps(body), status=status, mimetype="application/json")


class ReceiverServer:
    """The listener on a thread: ``start()``/``stop()`` or a context manager; ``url``."""

    def __init__(self, app: ReceiverApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: ThreadedServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.app.path}"

    def start(self) -> ReceiverServer:
        from regops.serving import QuietRequestHandler, ThreadedServer

        self._server = ThreadedServer(
            self.app, self.host, self.port, handler=QuietRequestHandler, name="regops-events"
        ).start()
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> ReceiverServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_secret(args: argparse.Namespace) -> Any:
    """The shared secret (a Secret), from --secret-file, $REGOPS_NOTIFICATION_SECRET or GitLab."""
    from regops.errors import UsageError
    from regops.gitlab.configfile import find_gitlab_config, load_gitlab_config
    from regops.secrets import Secret

    if args.secret_file:
        try:
            with open(args.secret_file, encoding="utf-8") as handle:
                first = handle.readline().strip()
        except OSError as exc:
            raise UsageError(f"--secret-file {args.secret_file}: {exc.strerror}") from None
        if not first:
            raise UsageError(f"--secret-file {args.secret_file}: empty first line")
        return Secret(first)
    if os.environ.get(SECRET_ENV, "").strip():
        return Secret(os.environ[SECRET_ENV].strip())
    path = args.gitlab_config or find_gitlab_config()
    if path is not None:
        config = load_gitlab_config(path)
        if config.notification_secret is not None:
            return config.notification_secret
    raise UsageError(
        "no shared secret: give --secret-file, set REGOPS_NOTIFICATION_SECRET, or run where "
        "gitlab.yml has registry.notification_secret"
    )


def run_serve(args: argparse.Namespace) -> int:
    """Listen until SIGTERM / Ctrl-C."""
    from regops.errors import RegopsError
    from regops.ops.events import EventStore

    try:
        secret = read_secret(args)
        host, _, port_text = args.listen.rpartition(":")
        if not host or not port_text.isdigit():
            raise RegopsError(f"--listen {args.listen!r}: expected host:port")
    except RegopsError as exc:
        print(f"regops events serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = EventStore(args.db)
    server = ReceiverServer(ReceiverApp(store, secret, args.path), host, int(port_text))
    stopped = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopped.set()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.start()
        print(f"regops events: listening on {server.url}, storing in {store.path}", file=sys.stderr)
        sys.stderr.flush()
        while not stopped.wait(SHUTDOWN_POLL):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
        store.close()
    print("regops events: stopped", file=sys.stderr)
    return EXIT_OK


# -- list --------------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    """Print the stored events that match, oldest first."""
    from regops.errors import ValidationError
    from regops.ops.events import COLUMNS, EventStore, since_value

    try:
        since = since_value(args.since)
        until = since_value(args.until)
    except ValidationError as exc:
        print(f"regops events: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with EventStore(args.db) as store:
        events = store.query(
            repository=args.repository,
            action=args.action,
            tag=args.tag,
            since=since,
            until=until,
            limit=args.limit,
        )
    if args.format == "json":
        print(json.dumps(events, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(COLUMNS)
        for event in events:
            writer.writerow(["" if event[c] is None else event[c] for c in COLUMNS])
    else:
        from tabulate import tabulate

        rows = [[event[c] or "" for c in LIST_COLUMNS] for event in events]
        print(tabulate(rows, headers=LIST_COLUMNS, tablefmt="simple", disable_numparse=True))
    print(f"regops events: {len(events)} events", file=sys.stderr)
    return EXIT_OK
