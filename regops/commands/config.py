"""``regops config``: show the resolved settings, masked, and where each came from.

Exit 0 when the settings are complete, 1 (with the reason) when they are not.
``--check`` also connects and prints the GitLab version and user, and, when
no registry is configured, the one GitLab tells of (and where that came from).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from regops.errors import ConfigError
from regops.scripting import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:  # settings and tables are loaded when the command runs, not for --help
    from regops.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``config``."""
    parser = subparsers.add_parser("config", help="show resolved settings and their sources")
    parser.add_argument("--section", help="python-gitlab config section to use")
    parser.add_argument("--config-file", help="python-gitlab config file to read")
    parser.add_argument("--gitlab-yml", help="gitlab.yml to read (default: the Linux package's)")
    parser.add_argument(
        "--check", action="store_true", help="also connect: GitLab version, user, admin"
    )
    parser.set_defaults(func=run)


def settings_table(settings: Settings) -> str:
    """The settings as a table: field, value (secrets masked), source."""
    from tabulate import tabulate

    return tabulate(settings.rows(), headers=("setting", "value", "source"), tablefmt="simple")


def run(args: argparse.Namespace) -> int:
    """Print the table; exit 1 with the ConfigError when incomplete."""
    from tabulate import tabulate

    from regops.config import collect_settings

    settings = collect_settings(
        config_section=args.section,
        config_file=args.config_file,
        gitlab_yml_path=args.gitlab_yml,
    )
    print(settings_table(settings))
    try:
        settings.check()
    except ConfigError as exc:
        print(f"regops config: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.check:
        from regops.connection import Connection

        with Connection(settings) as connection:
            info = connection.describe()
            if connection.settings is not settings:  # the registry was asked of GitLab
                print()
                print(settings_table(connection.settings))
        print()
        print(tabulate(sorted(info.items()), headers=("check", "value"), tablefmt="simple"))
    return EXIT_OK
