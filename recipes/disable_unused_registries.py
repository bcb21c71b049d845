#!/usr/bin/env python3
"""Disable the container registry of projects that have it enabled and hold no image.

    python recipes/disable_unused_registries.py             # list them (dry run)
    python recipes/disable_unused_registries.py --execute   # disable them

Prints ``project_id,project path,access level`` for each project whose
registry is ``enabled`` or ``private`` and whose repositories hold no tag
(GitLab's ``has_container_registry_tags?``). With ``--execute`` it sets each
one's ``container_registry_access_level`` to ``disabled`` and reads it back;
a project that gained an image since the scan is left alone (checked again
just before the change). Nothing is deleted: disabling hides the registry,
and it can be enabled again. A lock refuses overlapping runs. Exit 0
success, 1 some project failed (each named on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from regops.errors import RegopsError, ValidationError
from regops.models import Project
from regops.ops.registry_access import find_unused_registries
from regops.scripting import EXIT_FAILED, EXIT_OK, Outcome, recipe_parser, run_recipe

LOCK = "disable_unused_registries"
log = logging.getLogger("regops.recipes")


def build_parser() -> argparse.ArgumentParser:
    parser = recipe_parser(LOCK, (__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--execute", action="store_true", help="disable the registries (default: list only)"
    )
    return parser


def body(args: argparse.Namespace, connection: Any) -> Outcome:
    """List (and with --execute disable) the unused registries; one CSV line each."""
    scan = find_unused_registries(connection.gitlab)
    disabled, kept, failed = 0, 0, 0
    for unused in scan.unused:
        print(f"{unused.id},{unused.path},{unused.access_level}")
        if not args.execute:
            continue
        try:
            project = Project.find(unused.id, connection=connection)
            project.update_container_registry_access_level("disabled")
        except ValidationError as exc:  # it has images now: left alone
            kept += 1
            print(f"project {unused.id} ({unused.path}): kept: {exc.reason}", file=sys.stderr)
        except RegopsError as exc:
            failed += 1
            print(f"project {unused.id} ({unused.path}): failed: {exc}", file=sys.stderr)
        else:
            disabled += 1
    found = (
        f"{len(scan.unused)} of {scan.enabled} projects with the registry enabled have no "
        f"images ({scan.scanned} scanned)"
    )
    if not args.execute:
        return Outcome(EXIT_OK, f"dry run, nothing changed: {found}")
    summary = f"{found}; disabled {disabled}, kept {kept} (images since), failed {failed}"
    return Outcome(EXIT_FAILED if failed else EXIT_OK, summary)


def main(argv: list[str] | None = None) -> int:
    return run_recipe(LOCK, build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
