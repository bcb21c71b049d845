"""``regops doctor``: check the registry configuration against GitLab's, one row per check.

    regops doctor                                   # on the GitLab host: finds both files
    regops doctor --registry-config config.yml --gitlab-config /etc/gitlab/gitlab.rb
    regops doctor --format json                     # [{check, status, detail, fix}, ...]
    regops doctor -q                                # prints nothing when all is ok (cron)
    regops doctor --offline                         # files only, no request sent

The GitLab config is gitlab.yml or gitlab.rb; without one, GitLab's URL,
token and registry come from regops' settings (``regops config``). Exit 0
when every row is ok or skipped, 1 with a warning, 2 with a failure (or bad
usage). Secrets are compared, never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from regops.scripting import EXIT_USAGE

FORMATS = ("table", "json")
COLUMN_WIDTHS = (30, 7, 60, 60)  # check, status, detail, fix: fits a 160-column terminal


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``doctor``."""
    parser = subparsers.add_parser(
        "doctor", help="check the registry configuration against GitLab's, with fixes"
    )
    parser.add_argument(
        "--registry-config",
        help="the registry's config.yml (default: /var/opt/gitlab/registry/config.yml if present)",
    )
    parser.add_argument(
        "--gitlab-config",
        help="gitlab.yml or gitlab.rb (default: the Linux package's gitlab.yml, else gitlab.rb)",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output (table)")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing when all is ok; else problems only",
    )
    parser.add_argument(
        "--offline", action="store_true", help="read the files only: no request is sent"
    )
    parser.add_argument(
        "--no-project-scan",
        action="store_true",
        help="skip the per-project scan for registries without images (one request per project)",
    )
    parser.add_argument("--root", default="/", help=argparse.SUPPRESS)  # tests: where / is
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Gather, check, print; the exit code follows the worst status."""
    from regops.config import collect_settings
    from regops.errors import ConfigError
    from regops.gitlab.client import GitLabClient
    from regops.gitlab.configfile import find_gitlab_config
    from regops.ops.doctor import build_input, exit_code, run_checks
    from regops.registry.configfile import find_registry_config

    try:
        settings = collect_settings()
    except ConfigError as exc:
        print(f"regops doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    registry_path = args.registry_config or _found(find_registry_config(args.root))
    gitlab_path = args.gitlab_config or _found(find_gitlab_config(args.root))
    given = build_input(
        registry_config_path=registry_path,
        gitlab_config_path=gitlab_path,
        settings=settings,
        live=not args.offline,
        scan_projects=not args.no_project_scan,
    )
    gitlab_url = settings.gitlab_url or given.gitlab_url
    gitlab = None
    if gitlab_url and settings.token is not None and not args.offline:
        gitlab = GitLabClient(gitlab_url, settings.token, settings.token_kind, http=given.http)
        given.gitlab = gitlab
    try:
        rows = run_checks(given)
    finally:
        if gitlab is not None:
            gitlab.session.close()
    code = exit_code(rows)
    if args.quiet:
        if code == 0:
            return code
        rows = [row for row in rows if row.status in ("warn", "fail")]
    print(render(rows, args.format))
    return code


def _found(path: Any) -> str | None:
    return str(path) if path is not None else None


def render(rows: list[Any], fmt: str) -> str:
    """The rows as a table (terminal) or a JSON list of {check, status, detail, fix}."""
    if fmt == "json":
        return json.dumps([row.to_dict() for row in rows], indent=2)
    from tabulate import tabulate

    return tabulate(
        [(r.check, r.status, r.detail, r.fix) for r in rows],
        headers=("check", "status", "detail", "fix"),
        tablefmt="simple",
        maxcolwidths=list(COLUMN_WIDTHS),
        disable_numparse=True,
    )
