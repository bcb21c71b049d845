"""``regops storage``: check the registry's storage, and compare two copies of it.

    regops storage check [--config CONFIG | --storage ROOT | --s3-bucket B ...] [--verify-content]
    regops storage compare SRC DST [--verify-content] [--src-endpoint URL] [--dst-endpoint URL]

``check`` lists what is broken (tags without revisions, revisions without
their manifest, images whose blobs are gone, with ``--verify-content`` blobs
whose sha256 is not their name, repositories GitLab and storage disagree
about) and what is stale (dangling layer links, unfinished uploads), each
with what it breaks and what to do; exit 1 when something is broken.

``compare`` is the object-storage migration check: every file except
``_uploads`` on both sides with the same size; SRC and DST are each a folder
(filesystem rootdirectory), ``s3://bucket[/prefix]`` (credentials: AWS_*
variables or boto3's usual files) or a registry config.yml. One listing pass
per side; exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from regops import scripting
from regops.commands.gc import add_source_arguments, backend_from, command_func, optional_connection
from regops.errors import UsageError, ValidationError
from regops.scripting import EXIT_FAILED, EXIT_OK, Outcome

FORMATS = ("table", "json")


def _progress(total: int, enabled: bool) -> Any:
    """A tqdm bar over bytes on a terminal, else None."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, desc="hashing")


def check_body(args: argparse.Namespace, _connection: Any) -> Outcome:
    from regops.durations import parse_duration
    from regops.ops.storage_check import check, gitlab_repository_paths

    try:
        upload_age = parse_duration(args.upload_age, "--upload-age")
    except ValidationError as exc:
        raise UsageError(str(exc)) from None
    backend = backend_from(args)
    try:
        known = None
        if not args.no_gitlab:
            connection = optional_connection()
            if connection is not None:
                known = gitlab_repository_paths(connection.gitlab)
        bar = _progress(0, args.verify_content and not args.no_progress)
        report = check(
            backend,
            verify_content=args.verify_content,
            gitlab_repositories=known,
            upload_age=upload_age,
            progress=bar.update if bar is not None else None,
        )
        if bar is not None:
            bar.close()
    finally:
        backend.close()
    sys.stdout.write(report.render(args.format))
    return Outcome(EXIT_OK if report.ok else EXIT_FAILED, report.summary())


def backend_for(spec: str, endpoint: str | None, region: str | None) -> Any:
    """A folder, ``s3://bucket[/prefix]`` or a registry config.yml, as a backend."""
    from regops.registry.backends import FilesystemBackend, S3Backend, S3Location
    from regops.registry.configfile import RegistryConfig

    if spec.startswith("s3://"):
        bucket, _, prefix = spec[len("s3://") :].partition("/")
        if not bucket:
            raise UsageError(f"{spec}: no bucket name")
        return S3Backend(S3Location(bucket, prefix, region=region, regionendpoint=endpoint))
    path = Path(spec)
    if path.is_dir():
        return FilesystemBackend(path)
    if path.is_file():
        return RegistryConfig.load(path).backend()
    raise UsageError(f"{spec}: not a folder, a registry config.yml or s3://bucket/prefix")


def compare_body(args: argparse.Namespace, _connection: Any) -> Outcome:
    from regops.ops.storage_check import compare

    source = backend_for(args.source, args.src_endpoint or args.endpoint, args.region)
    destination = backend_for(args.destination, args.dst_endpoint or args.endpoint, args.region)
    try:
        bar = _progress(0, args.verify_content and not args.no_progress)
        report = compare(
            source,
            destination,
            verify_content=args.verify_content,
            progress=bar.update if bar is not None else None,
        )
        if bar is not None:
            bar.close()
    finally:
        source.close()
        destination.close()
    sys.stdout.write(report.render(args.format))
    return Outcome(EXIT_OK if report.ok else EXIT_FAILED, report.summary())


def register(subparsers: Any) -> None:
    """``regops storage check|compare``."""
    parser = subparsers.add_parser("storage", help="check the registry's storage, compare copies")
    verbs = parser.add_subparsers(dest="storage_command", metavar="VERB")

    check = verbs.add_parser("check", help="what is broken or stale in the storage")
    add_source_arguments(check)
    check.add_argument(
        "--verify-content", action="store_true", help="hash every blob (reads all bytes)"
    )
    check.add_argument("--no-gitlab", action="store_true", help="skip the GitLab comparison")
    check.add_argument(
        "--upload-age", default="7d", help="unfinished uploads older than this are stale"
    )
    check.add_argument("--format", choices=FORMATS, default="table")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    check.set_defaults(func=command_func(check_body, None, lock=False))

    compare = verbs.add_parser("compare", help="SRC and DST hold the same files (migration)")
    compare.add_argument("source", metavar="SRC", help="folder, s3://bucket/prefix or config.yml")
    compare.add_argument("destination", metavar="DST", help="the same kinds as SRC")
    compare.add_argument("--verify-content", action="store_true", help="hash blobs on both sides")
    compare.add_argument("--endpoint", help="S3 endpoint for both sides (S3-compatible stores)")
    compare.add_argument("--src-endpoint", help="S3 endpoint of SRC")
    compare.add_argument("--dst-endpoint", help="S3 endpoint of DST")
    compare.add_argument("--region", help="S3 region")
    compare.add_argument("--format", choices=FORMATS, default="table")
    compare.add_argument("--no-progress", action="store_true", help="no progress bar")
    compare.set_defaults(func=command_func(compare_body, None, lock=False))

    for verb in (check, compare):
        scripting.add_common_options(verb)
    parser.set_defaults(func=lambda args: parser.print_help() or scripting.EXIT_USAGE)
