"""``regops demo``: the README's main job, against a fresh seeded sandbox.

Starts the sandbox (a GitLab API stand-in in front of the real registry),
seeds the ``demo`` profile, prints the registry usage by project (the admin
guide's first recipe, extended with what is really pinned on disk), then what
each enabled cleanup policy would delete. Nothing is deleted.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from regops.errors import PolicyError
from regops.scripting import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from regops.models import ExpirationPolicy

# What --policy-override / overrides= shows on the demo data.
ONE_OFF_PROJECT = "apps/web"
ONE_OFF_POLICY = {"name_regex": "main-.*", "keep_n": 5, "older_than": "14d"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="usage report and cleanup preview against a seeded sandbox"
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from regops.models import ExpirationPolicy, Project, usage_by_project
    from regops.ops import usage
    from regops.sandbox import run_seeded

    started = time.monotonic()
    with run_seeded("demo") as sandbox:
        print(f"sandbox: GitLab API {sandbox.gitlab_url}/api/v4, registry {sandbox.registry_url}")
        print(f"started and seeded in {time.monotonic() - started:.1f}s\n")
        with sandbox.connect() as connection:
            projects = usage.select_projects(connection.gitlab)
            report = usage_by_project(projects, connection=connection, extended=True)
            print("== Registry usage by project (bytes)\n")
            print(report.render(args.format))
            print("== What the enabled cleanup policies would delete (nothing is deleted)\n")
            for policy in ExpirationPolicy.where(enabled=True, connection=connection):
                print(f"{policy.project.full_path}: {preview(policy)}")
            project = Project.find(ONE_OFF_PROJECT, connection=connection)
            plan = project.container_expiration_policy.plan(project, overrides=ONE_OFF_POLICY)
            print(f"\n== A one-off plan for {ONE_OFF_PROJECT}: {ONE_OFF_POLICY}\n")
            print(repr(plan))
    return EXIT_OK if report.ok else EXIT_FAILED


def preview(policy: ExpirationPolicy) -> str:
    """One line: what the policy's run would do, or why GitLab could not run it."""
    try:
        return policy.plan().summary()
    except PolicyError as exc:
        return f"GitLab cannot run this policy: {exc}"
