"""``regops gc``: know what garbage collection frees before the downtime, then run it safely.

    regops gc plan [-m] [--config CONFIG | --storage ROOT | --s3-bucket B ...] [--format json]
    regops gc run [-m] --config CONFIG --restart-command CMD [--hold 24h] [--force]
    regops gc run [-m] --omnibus [--hold 24h] [--force]
    regops gc steps [-m] [--config CONFIG]        the Omnibus procedure, printed only
    regops gc recover [--restart-command CMD]     read-write again after a killed run

``plan`` reads the storage (read-only; the registry stays up) and predicts the
collector's last line, ``N blobs marked, M blobs and K manifests eligible for
deletion``, the bytes freed and who loses them (repositories, GitLab projects,
shared blobs); with ``-m`` it names the multi-arch images the 2.8 collector
would break. ``run`` is the admin guide's zero-downtime procedure, guarded
(see regops.ops.gc_run). Exit codes: 0 success, 1 refused/failed/differs from
the plan, 2 bad usage, 130 interrupted (read-write restored).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path
from typing import Any

from regops import scripting
from regops.errors import ConfigError, UsageError, ValidationError
from regops.scripting import EXIT_FAILED, EXIT_OK, Outcome

GC_LOCK = "gc"
CONFIG_ENV = "REGOPS_REGISTRY_CONFIG"  # the registry's config.yml (the sandbox sets it)
FORMATS = ("table", "json", "csv")


# ---------------------------------------------------------------------- sources


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the storage is: the registry's config.yml, a folder, or an S3 bucket."""
    group = parser.add_argument_group("storage (default: $REGOPS_REGISTRY_CONFIG, Omnibus' config)")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--config", metavar="CONFIG", help="the registry's config.yml")
    which.add_argument("--storage", metavar="ROOT", help="a filesystem driver rootdirectory")
    which.add_argument("--s3-bucket", metavar="BUCKET", help="an S3 bucket (credentials: AWS_*)")
    group.add_argument("--s3-prefix", default="", help="the s3 driver's rootdirectory")
    group.add_argument("--s3-endpoint", help="the s3 driver's regionendpoint (S3-compatible)")
    group.add_argument("--s3-region", help="the bucket's region")


def config_path(args: argparse.Namespace, *, required: bool = False) -> Path | None:
    """The registry config the options name (``--config``, the environment, Omnibus')."""
    from regops.registry.configfile import OMNIBUS_REGISTRY_CONFIG

    if getattr(args, "config", None):
        return Path(args.config)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    if getattr(args, "omnibus", False) or OMNIBUS_REGISTRY_CONFIG.is_file():
        return OMNIBUS_REGISTRY_CONFIG
    if required:
        raise UsageError(f"--config CONFIG is needed (or {CONFIG_ENV})")
    return None


def backend_from(args: argparse.Namespace) -> Any:
    """A storage backend from the options (UsageError when none is given)."""
    from regops.registry.backends import FilesystemBackend, S3Backend, S3Location
    from regops.registry.configfile import RegistryConfig

    if args.storage:
        if not Path(args.storage).is_dir():
            raise UsageError(f"--storage {args.storage}: not a folder")
        return FilesystemBackend(args.storage)
    if args.s3_bucket:
        location = S3Location(
            bucket=args.s3_bucket,
            rootdirectory=args.s3_prefix,
            region=args.s3_region,
            regionendpoint=args.s3_endpoint,
        )
        return S3Backend(location)
    path = config_path(args)
    if path is not None:
        return RegistryConfig.load(path).backend()
    raise UsageError(
        "say where the storage is: --config CONFIG (the registry's config.yml), "
        f"--storage ROOT or --s3-bucket BUCKET (or set {CONFIG_ENV})"
    )


def optional_connection() -> Any:
    """A connection when regops is configured for a GitLab, else None (plan works without)."""
    from regops.connection import connect

    try:
        return connect()
    except ConfigError:
        return None


# ---------------------------------------------------------------------- plan


def validate_plan(args: argparse.Namespace) -> None:
    """A bad --plot is refused before the storage is read (exit 2)."""
    from regops.ops.charts import check_chart_path

    if args.plot:
        try:
            check_chart_path(args.plot)
        except ValidationError as exc:
            raise UsageError(f"bad --plot: {exc.reason}") from None


def plan_body(args: argparse.Namespace, _connection: Any) -> Outcome:
    """Print the plan (table, JSON or CSV); exit 1 when the collector would fail."""
    from regops.ops.gc import plan

    backend = backend_from(args)
    try:
        gitlab = None
        if not args.no_projects:
            connection = optional_connection()
            gitlab = connection.gitlab if connection is not None else None
        result = plan(backend, untagged=args.untagged, gitlab=gitlab)
    finally:
        backend.close()
    text = result.render(args.format)
    if args.output and args.output != "-":
        from regops.fsutil import atomic_write

        atomic_write(args.output, text)
    else:
        sys.stdout.write(text)
    if args.plot:
        result.plot().save(args.plot)
    if args.format != "table":
        for line in result.hazard_lines():
            if line:
                print(f"regops gc plan: {line.strip()}", file=sys.stderr)
    code = EXIT_FAILED if result.collector_error else EXIT_OK
    return Outcome(code, result.summary())


# ---------------------------------------------------------------------- run


def validate_run(args: argparse.Namespace) -> None:
    from regops.durations import parse_duration
    from regops.ops.gc_run import check_switch_options

    check_switch_options(args.omnibus, args.restart_command)
    text = args.hold.strip()
    try:
        zero = float(text.rstrip("smhd")) == 0
    except ValueError:
        zero = False
    try:
        args.hold_delta = datetime.timedelta(0) if zero else parse_duration(text, "--hold")
    except ValidationError as exc:
        raise UsageError(str(exc)) from None


def run_body(args: argparse.Namespace, _connection: Any) -> Outcome:
    """The guarded zero-downtime GC; progress lines on stderr, the record's summary."""
    from regops.connection import connect
    from regops.ops import gc_run

    connection = connect()
    if connection.registry is None:
        raise ConfigError(
            "gc run proves read-only mode with an upload the registry must refuse: set "
            "REGOPS_REGISTRY_URL and a way to authenticate (see `regops config`)"
        )
    path = config_path(args, required=True)
    assert path is not None
    marker = gc_run.marker_path()
    restored = gc_run.recover(marker, args.restart_command)
    if restored:
        print(f"regops gc: {restored}", file=sys.stderr)
    switch: Any
    if args.omnibus:
        switch = gc_run.OmnibusSwitch(marker, config_path=path)
    else:
        switch = gc_run.PlainRegistrySwitch(path, args.restart_command, marker)
    options = gc_run.GCRunOptions(
        config_path=path,
        switch=switch,
        registry=connection.registry,
        untagged=args.untagged,
        force=args.force,
        hold=args.hold_delta,
        collector=gc_run.find_collector(args.collector, args.omnibus),
    )
    try:
        record = gc_run.run_gc(options, out=lambda line: print(line, file=sys.stderr, flush=True))
    except gc_run.GCRefused as exc:
        return Outcome(EXIT_FAILED, f"refused: {exc}")
    print(f"run record: {gc_run.gc_dir() / gc_run.RUNS_SUBDIR / (record.run_id + '.json')}")
    print(f"collector log: {record.log}")
    return Outcome(EXIT_OK if record.ok else EXIT_FAILED, record.summary())


def recover_body(args: argparse.Namespace, _connection: Any) -> Outcome:
    from regops.ops import gc_run

    restored = gc_run.recover(gc_run.marker_path(), args.restart_command)
    return Outcome(EXIT_OK, restored or "nothing to recover: no gc run left the registry read-only")


def steps_body(args: argparse.Namespace, _connection: Any) -> Outcome:
    from regops.ops.gc_run import omnibus_steps
    from regops.registry.configfile import RegistryConfig

    path = config_path(args, required=True)
    assert path is not None
    print(omnibus_steps(RegistryConfig.load(path), args.untagged))
    return Outcome(EXIT_OK, "printed the Omnibus procedure; nothing was changed")


# ---------------------------------------------------------------------- command


def register(subparsers: Any) -> None:
    """``regops gc plan|run|steps|recover``."""
    parser = subparsers.add_parser("gc", help="plan and run registry garbage collection")
    verbs = parser.add_subparsers(dest="gc_command", metavar="VERB")

    plan = verbs.add_parser("plan", help="what garbage-collect would free (reads storage only)")
    _untagged(plan)
    add_source_arguments(plan)
    plan.add_argument("--format", choices=FORMATS, default="table", help="output format")
    plan.add_argument("-o", "--output", metavar="FILE", help="write here, atomically")
    plan.add_argument(
        "--no-projects", action="store_true", help="do not ask GitLab which projects lose bytes"
    )
    plan.add_argument(
        "--plot", metavar="FILE", help="also draw what each repository loses (.png or .svg)"
    )
    plan.set_defaults(func=command_func(plan_body, validate_plan, lock=False))

    run = verbs.add_parser("run", help="zero-downtime GC: read-only, collect, read-write")
    _untagged(run)
    run.add_argument("--config", metavar="CONFIG", help="the registry's config.yml")
    run.add_argument("--restart-command", metavar="CMD", help="restarts the registry (plain)")
    run.add_argument(
        "--omnibus", action="store_true", help="switch read-only in gitlab.rb + reconfigure"
    )
    run.add_argument(
        "--hold",
        default="24h",
        help="refuse while cleanup deletes are younger than this (restorable); 0 to skip",
    )
    run.add_argument("--force", action="store_true", help="run -m although it breaks images")
    run.add_argument("--collector", metavar="PATH", help="the registry binary")
    run.set_defaults(func=command_func(run_body, validate_run))

    steps = verbs.add_parser("steps", help="print the Omnibus GC procedure (changes nothing)")
    _untagged(steps)
    steps.add_argument("--config", metavar="CONFIG", help="the registry's config.yml")
    steps.set_defaults(func=command_func(steps_body, None, lock=False))

    recover = verbs.add_parser("recover", help="read-write again after a killed gc run")
    recover.add_argument("--restart-command", metavar="CMD", help="restarts the registry")
    recover.set_defaults(func=command_func(recover_body, None))

    for verb in (plan, run, steps, recover):
        scripting.add_common_options(verb)
    parser.set_defaults(func=lambda args: parser.print_help() or scripting.EXIT_USAGE)


def _untagged(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m",
        "--untagged",
        "--delete-untagged",
        dest="untagged",
        action="store_true",
        help="also delete untagged manifests (garbage-collect -m)",
    )


def command_func(body: Any, validate: Any, *, lock: bool = True) -> Any:
    """A ``func`` running ``body`` like a recipe, without connecting first."""

    def func(args: argparse.Namespace) -> int:
        return scripting.run_parsed(
            GC_LOCK, args, body, lock=lock, validate=validate, connection=NOT_CONNECTED
        )

    return func


NOT_CONNECTED = object()  # bodies connect themselves when they need to
