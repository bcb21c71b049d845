#!/usr/bin/env python3
"""Audit cleanup policies: invalid regexes, and enabled policies that keep only ``latest``.

    python recipes/audit_cleanup_policies.py > findings.csv

Prints one CSV line per finding, ``project_id,project path,repository,problem``:
a policy whose ``name_regex`` or ``name_regex_keep`` is not valid RE2 (GitLab's
run fails with "invalid regex"), and an enabled policy whose next run would
delete every tag of a repository except ``latest``. Nothing is changed. No
output on stdout means nothing found. A lock refuses overlapping runs. Exit 0
success, 1 some project could not be read, 2 bad usage.
"""

from __future__ import annotations

from regops.commands.cleanup import AUDIT_LOCK, add_audit_arguments, audit_body
from regops.scripting import exit_process, recipe_parser, run_recipe


def main(argv: list[str] | None = None) -> int:
    parser = recipe_parser("audit_cleanup_policies", __doc__.splitlines()[0])
    add_audit_arguments(parser)
    return run_recipe(AUDIT_LOCK, parser, audit_body, argv)


if __name__ == "__main__":
    exit_process(main())
