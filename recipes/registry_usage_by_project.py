#!/usr/bin/env python3
"""Registry disk space usage by project: the admin guide's Rails recipe, from cron.

    python recipes/registry_usage_by_project.py --output /var/lib/reports/registry.csv

Same CSV as the Rails console snippet ("Registry Disk Space Usage by Project"):
``project_id,creator_id,registry_size_bytes,project path``, one row per project
whose tags add up to more than 0 bytes. The file is replaced atomically: a
reader never sees half of it, and an interrupted, failed or incomplete run
leaves the old one. ``--extended`` adds what each project really pins on disk
(shared layers counted once). Exit code 1 (and, on stderr, the incomplete
projects and that the previous file was kept) when any project could not be
read completely. ``-q``: nothing on stderr when every project was read.

Connection settings come from the environment or config files (see
``regops config``): GITLAB_URL, GITLAB_PRIVATE_TOKEN, REGOPS_REGISTRY_URL, ...
"""

from __future__ import annotations

from regops.commands.usage import USAGE_LOCK, add_arguments, usage_body, validate_usage
from regops.scripting import exit_process, recipe_parser, run_recipe


def main(argv: list[str] | None = None) -> int:
    parser = recipe_parser("registry_usage_by_project", __doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(record=True)  # cron keeps the usage history (--no-record: not)
    return run_recipe(USAGE_LOCK, parser, usage_body, argv, validate=validate_usage)


if __name__ == "__main__":
    exit_process(main())
