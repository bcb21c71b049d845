"""``regops usage``: registry disk usage by project (the admin guide's recipe, fast).

Writes the Rails recipe's CSV (``project_id,creator_id,registry_size_bytes,project path``)
to stdout or, atomically, to ``--output``. ``--extended`` adds repositories,
tags, unique_bytes (what the project really pins on disk) and incomplete, and
a last row with the instance-wide deduplicated total. Exit code 1 when any
project could not be read completely (the reasons are on stderr); then
``--output`` is left as it was: a previous complete report is never replaced
by one with wrong sizes.

Cron: silent unless something fails. On a terminal: a progress bar and one
summary line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regops import scripting
from regops.errors import ConfigError, ValidationError
from regops.ops.defaults import USAGE_FORMATS as FORMATS
from regops.ops.defaults import USAGE_WORKERS as DEFAULT_WORKERS
from regops.scripting import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Outcome, UsageError, positive_int

# The scan, the registry client and the history are imported when a run needs them, so
# that `regops --help` and `regops usage --help` do not load them.
if TYPE_CHECKING:
    from regops.connection import Connection
    from regops.ops.usage import UsageReport
    from regops.registry.cache import ContentCache
    from regops.registry.storage import RegistryStorage

ERRORS_SHOWN_PER_PROJECT = 3  # stderr stays readable in a cron mail; JSON has them all
PROJECTS_NAMED = 10  # incomplete projects named in the "not replaced" line; the rest counted
TAG_SOURCES = ("registry", "storage")


USAGE_LOCK = "registry_usage_by_project"  # the command and the recipe never overlap


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``regops usage``."""
    parser = subparsers.add_parser(
        "usage",
        help="registry disk usage by project (CSV, JSON or a table)",
        description=__doc__.splitlines()[0],
    )
    add_arguments(parser)
    scripting.add_common_options(parser)
    parser.set_defaults(func=run)
    register_history(parser)


def run(args: argparse.Namespace, connection: Connection | None = None) -> int:
    """Run ``regops usage`` under the scripting contract (lock, deadline, exit codes)."""
    return scripting.run_parsed(
        "regops usage",
        args,
        usage_body,
        lock=USAGE_LOCK,
        connection=connection,
        validate=validate_usage,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``regops usage`` and recipes/registry_usage_by_project.py."""
    parser.add_argument("-o", "--output", metavar="FILE", help="write here, atomically (stdout)")
    parser.add_argument(
        "--partial",
        metavar="FILE",
        help="when some project cannot be read, write the incomplete report here "
        "(the output itself is never replaced by an incomplete report)",
    )
    parser.add_argument("--format", choices=FORMATS, default="csv", help="output format (csv)")
    parser.add_argument(
        "--extended",
        action="store_true",
        help="add repositories, tags, unique_bytes, incomplete and a deduplicated total",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--last", type=positive_int, metavar="N", help="the N newest projects")
    which.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="ID_OR_PATH",
        help="this project (repeatable)",
    )
    which.add_argument("--group", metavar="PATH", help="the projects of a group and its subgroups")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        help=f"concurrent requests (default {DEFAULT_WORKERS})",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", type=Path, metavar="DIR", help="manifest cache location")
    cache.add_argument("--no-cache", action="store_true", help="keep no cache on disk")
    parser.add_argument(
        "--tags-from",
        choices=TAG_SOURCES,
        help="resolve tags with one GET each (registry, the default) or from the registry's "
        "storage link files (storage: on the registry host; see --registry-storage)",
    )
    parser.add_argument(
        "--registry-storage",
        metavar="DIR",
        help="registry storage root; implies --tags-from storage "
        "(default root: REGOPS_REGISTRY_STORAGE or gitlab.yml)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    scripting.add_scope_option(parser)
    add_record_arguments(parser)


def validate_usage(args: argparse.Namespace) -> None:
    """Bad options are refused before anything is locked or sent (exit 2)."""
    plot = getattr(args, "plot", None)
    if plot:
        from regops.ops.charts import check_chart_path

        try:
            check_chart_path(plot)
        except ValidationError as exc:
            raise UsageError(f"bad --plot: {exc.reason}") from None


def usage_body(args: argparse.Namespace, connection: Connection) -> Outcome:
    """Select, scan, record, write; the outcome says whether every project was read."""
    from regops.ops.usage import by_project, select_projects
    from regops.registry.resolver import TagResolver

    reach = scripting.EVERYTHING  # given projects or a group: nothing is left out silently
    if not args.project and not args.group:
        reach = scripting.check_reach(args, connection, "a usage report of the instance")
    projects = select_projects(
        connection.gitlab, last=args.last, projects=args.project, group=args.group
    )
    if connection.registry is None:
        raise ConfigError(
            "registry usage needs the registry: set REGOPS_REGISTRY_URL and a way to "
            "authenticate (signing key, or user + token); see `regops config`"
        )
    report = by_project(
        projects,
        gitlab=connection.gitlab,
        resolver=TagResolver(connection.registry, cache_from(args)),
        extended=args.extended or recording(args) or bool(getattr(args, "plot", None)),
        workers=args.workers,
        storage=storage_from(args, connection),
        progress=sys.stderr.isatty() and not args.no_progress and not args.quiet,
    )
    record_and_plot(args, report, connection)
    report.extended = args.extended  # a recorded or plotted run measured more than it prints
    report.coverage = reach.note
    report_incomplete(report)
    if not report.ok:
        print(f"regops usage: {report.summary.line()}", file=sys.stderr)
    output = None if args.output in (None, "-") else Path(args.output)
    if not report.ok:
        if args.partial:
            report.write(Path(args.partial), args.format)
        return Outcome(EXIT_FAILED, kept_message(output, report, args.partial))
    report.write(output, args.format)
    covers = f"; {reach.note}" if reach.note else ""
    if not report.ok:
        return Outcome(EXIT_FAILED, f"{len(report.incomplete)} projects incomplete{covers}")
    return Outcome(EXIT_OK, report.summary.line() + covers)


def kept_message(output: Path | None, report: UsageReport, partial: str | None = None) -> str:
    """Why no report was written: which projects are incomplete, what ``output`` still holds,
    and where the partial report went if one was asked for."""
    names = [p.full_path for p in report.incomplete]
    shown = ", ".join(names[:PROJECTS_NAMED])
    if len(names) > PROJECTS_NAMED:
        shown += f" and {len(names) - PROJECTS_NAMED} more"
    also = f"; the incomplete report is in {partial}" if partial else ""
    if output is None:
        return f"no report printed: incomplete projects {shown}{also}"
    if output.exists():
        return (
            f"{output} not replaced (the previous file is kept): incomplete projects {shown}" + also
        )
    return f"{output} not written: incomplete projects {shown}{also}"


def cache_from(args: argparse.Namespace) -> ContentCache:
    """The content cache the options ask for (memory only with ``--no-cache``)."""
    from regops.registry.cache import ContentCache, default_cache_dir

    if args.no_cache:
        return ContentCache()
    return ContentCache(args.cache_dir or default_cache_dir())


def storage_from(args: argparse.Namespace, connection: Any) -> RegistryStorage | None:
    """A RegistryStorage for ``--tags-from storage``, else None."""
    from regops.registry.storage import RegistryStorage

    tags_from = args.tags_from or ("storage" if args.registry_storage else "registry")
    if tags_from != "storage":
        return None

    root = args.registry_storage or connection.settings.registry_storage_path
    if not root:
        raise ConfigError(
            "--tags-from storage needs the registry storage root: --registry-storage DIR "
            "or REGOPS_REGISTRY_STORAGE"
        )
    storage = RegistryStorage(root)
    if not (storage.v2 / "repositories").is_dir():
        raise ConfigError(
            f"{root} is not a filesystem registry storage root (no docker/registry/v2/"
            "repositories); is the registry on object storage?"
        )
    return storage


def report_incomplete(report: UsageReport) -> None:
    """Each incomplete project's first reasons on stderr (the JSON format has them all);
    when a systemic fault stopped the scan, only that cause, once."""
    if report.stopped_by is not None:
        print(f"regops usage: stopped: {report.stopped_by}", file=sys.stderr)
        return
    for row in report.incomplete:
        shown = row.errors[:ERRORS_SHOWN_PER_PROJECT]
        more = len(row.errors) - len(shown)
        for error in shown:
            print(f"regops usage: INCOMPLETE {row.full_path}: {error}", file=sys.stderr)
        if more:
            print(f"regops usage: INCOMPLETE {row.full_path}: {more} more", file=sys.stderr)


# ---------------------------------------------------------------------- history and charts

HISTORY_FORMATS = ("table", "csv", "json")


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    """``--record`` / ``--no-record``, ``--history PATH`` and ``--plot FILE``."""
    parser.add_argument(
        "--record",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="store this run in the usage history, a SQLite file (regops usage: off by "
        "default; recipes/registry_usage_by_project.py: on)",
    )
    parser.add_argument(
        "--history",
        metavar="PATH",
        help="usage history file (default: REGOPS_HISTORY or <state dir>/usage-history.sqlite3)",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw the top projects (registry_size_bytes beside unique_bytes) "
        "into FILE (.png or .svg)",
    )


def recording(args: argparse.Namespace) -> bool:
    """True when the run is stored: then it measures unique_bytes with index children
    (``--extended``'s scan) whatever it prints, so that snapshots compare."""
    return bool(getattr(args, "record", False))


def record_and_plot(args: argparse.Namespace, report: UsageReport, connection: Any) -> None:
    """Store the report in the history (``--record``) and draw it (``--plot``)."""
    from regops.ops.history import HistoryStore

    if recording(args):
        with HistoryStore(args.history) as store:
            store.record(report, gitlab_url=connection.settings.gitlab_url, extended=True)
    if getattr(args, "plot", None):
        report.plot().save(args.plot)


def register_history(parser: argparse.ArgumentParser) -> None:
    """``regops usage history``: the recorded snapshots, growth, charts."""
    verbs = parser.add_subparsers(dest="usage_command", metavar="history")
    history = verbs.add_parser(
        "history",
        help="recorded usage snapshots (see --record)",
        description="Usage snapshots recorded by `regops usage --record`, oldest first.",
    )
    history.add_argument("--history", dest="history", metavar="PATH", help="history file")
    history.add_argument(
        "--since", metavar="WHEN", help="only snapshots since: a duration back (30d) or a date"
    )
    history.add_argument(
        "--project", dest="history_project", metavar="ID_OR_PATH", help="only this project's rows"
    )
    history.add_argument(
        "--format",
        dest="history_format",
        choices=HISTORY_FORMATS,
        default="table",
        help="table (default), csv (one row per snapshot and project) or json "
        "(a list of snapshots, each with its rows)",
    )
    history.add_argument(
        "--growth", action="store_true", help="per project: first and last row, and the change"
    )
    history.add_argument(
        "--plot",
        dest="history_plot",
        metavar="FILE",
        help="draw the growth of the top projects into FILE (.png or .svg)",
    )
    history.set_defaults(func=run_history)


def run_history(args: argparse.Namespace) -> int:
    """Print the snapshots (or their growth); draw them with ``--plot``."""
    from regops.models import UsageHistory
    from regops.ops.history import parse_since, render

    try:
        parse_since(args.since)
    except ValidationError as exc:
        print(f"regops usage history: bad --since: {exc.reason}", file=sys.stderr)
        return EXIT_USAGE
    history = UsageHistory(args.history)
    project = args.history_project
    if project is not None and project.strip().isdigit():
        project = int(project)
    snapshots = history.snapshots(args.since, project=project)
    if args.growth:
        print(history.growth(args.since))
    else:
        sys.stdout.write(render(snapshots, args.history_format))
    if args.history_plot:
        history.plot(args.since).save(args.history_plot)
    return EXIT_OK
