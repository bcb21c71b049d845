#!/usr/bin/env python3
"""Run a project's container cleanup policy: the admin guide's Rails snippet, from cron.

    python recipes/run_cleanup_policy.py --project 42                # print the plan only
    python recipes/run_cleanup_policy.py --project 42 --user 7 --execute

Prints the plan (every tag, deleted or kept, and why). Deletes only with
``--execute``: through the registry's safe tag delete, each tag re-checked
against its planned digest, every delete logged first to the audit log
(restore with ``regops restore AUDIT.jsonl``). ``--user`` refuses unless that
user is Developer (30) or above in the project. ``--policy-override
keep_n=5`` changes the policy for this run only (validated as GitLab would).
A lock refuses overlapping runs. Exit 0 success, 1 something failed, 2 bad
usage; one summary line on stderr (``-q``: only on failure).

Connection settings come from the environment or config files (see
``regops config``): GITLAB_URL, GITLAB_PRIVATE_TOKEN, REGOPS_REGISTRY_URL, ...
"""

from __future__ import annotations

from regops.commands.cleanup import RUN_LOCK, add_run_arguments, run_body, validate_run
from regops.scripting import exit_process, recipe_parser, run_recipe


def main(argv: list[str] | None = None) -> int:
    parser = recipe_parser("run_cleanup_policy", __doc__.splitlines()[0])
    add_run_arguments(parser)
    return run_recipe(RUN_LOCK, parser, run_body, argv, validate=validate_run)


if __name__ == "__main__":
    exit_process(main())
