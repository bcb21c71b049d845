"""``regops restore AUDIT.jsonl``: push deleted tags back from a cleanup audit log.

    regops restore ~/.local/state/regops/audit/cleanup-20240102.jsonl --project 42
    regops restore AUDIT.jsonl --tag v1.0 --tag v1.1 --dry-run
    regops restore AUDIT.jsonl --run 20240102T030405Z-1a2b3c4d

Works until garbage collection removes the images' blobs. Lists every tag
that can no longer be restored, and why; exit 1 when there is any.
"""

from __future__ import annotations

import argparse
from typing import Any

from regops import scripting
from regops.scripting import EXIT_FAILED, EXIT_OK, Outcome, UsageError

RESTORE_LOCK = "restore"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("audit_log", nargs="+", metavar="AUDIT.jsonl", help="audit log file(s)")
    parser.add_argument(
        "--project", action="append", default=[], help="only this project id or path (repeatable)"
    )
    parser.add_argument("--tag", action="append", default=[], help="only this tag (repeatable)")
    parser.add_argument("--run", help="only what this run deleted (its run id)")
    parser.add_argument(
        "--repository", action="append", default=[], help="only this repository path"
    )
    parser.add_argument(
        "--force", action="store_true", help="push over a tag that now points at another image"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check what could be restored; push nothing"
    )


def restore_body(args: argparse.Namespace, connection: Any) -> Outcome:
    """Restore, print the table on stdout and the log's warnings on stderr."""
    import sys

    from regops.ops.restore import restore_from_audit

    if connection.registry is None:
        raise UsageError("restoring tags needs the registry: set REGOPS_REGISTRY_URL")
    result = restore_from_audit(
        args.audit_log,
        connection.registry,
        projects=args.project or None,
        tags=args.tag or None,
        repositories=args.repository or None,
        force=args.force,
        dry_run=args.dry_run,
        run=args.run,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    scripting.inform(args, result)
    return Outcome(EXIT_OK if result.ok else EXIT_FAILED, result.summary())


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("restore", help="restore deleted tags from an audit log")
    add_arguments(parser)
    scripting.add_common_options(parser)

    def func(args: argparse.Namespace) -> int:
        return scripting.run_parsed(RESTORE_LOCK, args, restore_body)

    parser.set_defaults(func=func)
