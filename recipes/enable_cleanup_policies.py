#!/usr/bin/env python3
"""Enable cleanup policies for all projects: the admin guide's Rails snippet, from cron.

    python recipes/enable_cleanup_policies.py                         # list only
    python recipes/enable_cleanup_policies.py --execute --set older_than=30d --set keep_n=25

Finds the projects that have container repositories and a disabled cleanup
policy and prints ``id,full name`` for each (as the admin guide's snippet
does). With ``--execute`` it enables them, with the ``--set`` attributes
(validated as GitLab would before anything is sent), re-reading each project
to confirm every value took. A lock refuses overlapping runs. Exit 0
success, 1 some project failed (each named on stderr), 2 bad usage.
"""

from __future__ import annotations

from regops.commands.cleanup import ENABLE_LOCK, add_enable_arguments, enable_body, validate_enable
from regops.scripting import exit_process, recipe_parser, run_recipe


def main(argv: list[str] | None = None) -> int:
    parser = recipe_parser("enable_cleanup_policies", __doc__.splitlines()[0])
    add_enable_arguments(parser)
    return run_recipe(ENABLE_LOCK, parser, enable_body, argv, validate=validate_enable)


if __name__ == "__main__":
    exit_process(main())
