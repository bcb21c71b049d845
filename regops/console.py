"""The regops console: IPython with the models and a connection preloaded.

Like ``gitlab-rails console`` for the container registry. The namespace holds
``regops``, ``connect``, ``Project``, ``ContainerRepository``, ``Tag``,
``ExpirationPolicy``, ``User``, ``plan_cleanup``, ``usage_by_project`` and
``conn`` (the default connection). Non-interactive runs (``-c CODE``, ``FILE.py``) get the same
namespace; ``-c`` prints the value of a final expression (as IPython does),
so ``regops console -c "Project.last(3)"`` shows a table.

>>> ns = namespace(conn)                       # doctest: +SKIP
>>> run_code("Project.last(3)", ns)            # doctest: +SKIP
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import regops
from regops.connection import Connection, connect, set_default_connection
from regops.errors import RegopsError
from regops.models import (
    ContainerRepository,
    ExpirationPolicy,
    Project,
    Tag,
    User,
    usage_by_project,
)
from regops.ops.cleanup import SERVICE_GITLAB, SERVICE_THIRD_PARTY, plan_cleanup

if TYPE_CHECKING:
    from collections.abc import Sequence

PRELOADED = (
    "regops",
    "connect",
    "Project",
    "ContainerRepository",
    "Tag",
    "ExpirationPolicy",
    "User",
    "plan_cleanup",
    "usage_by_project",
    "conn",
)
EXAMPLE = "Project.last(3)"


def namespace(conn: Connection) -> dict[str, Any]:
    """The console's globals; ``conn`` becomes the default connection."""
    set_default_connection(conn)
    ns: dict[str, Any] = {
        "__name__": "__console__",
        "regops": regops,
        "Project": Project,
        "ContainerRepository": ContainerRepository,
        "Tag": Tag,
        "ExpirationPolicy": ExpirationPolicy,
        "User": User,
        "plan_cleanup": plan_cleanup,
        "usage_by_project": usage_by_project,
        "conn": conn,
    }
    ns["connect"] = _connect_into(ns)
    return ns


def _connect_into(ns: dict[str, Any]) -> Callable[..., Connection]:
    """``regops.connect`` that also rebinds the console's ``conn``."""

    def console_connect(*args: Any, **kwargs: Any) -> Connection:
        conn = connect(*args, **kwargs)
        ns["conn"] = conn
        return conn

    console_connect.__doc__ = connect.__doc__
    console_connect.__name__ = "connect"
    return console_connect


def banner(conn: Connection) -> str:
    """Who and where: GitLab URL and version, user, admin or not, registry access mode."""
    head = f"regops {regops.__version__} console"
    try:
        info = conn.describe()
    except RegopsError as exc:
        return f"{head}\nGitLab not reachable: {exc}\n"
    admin = "admin" if info["is_admin"] else "not admin"
    if info.get("registry_url"):
        registry = (
            f"registry {info['registry_url']} (access: {info['registry_auth']}; "
            f"{registry_variant(conn)})"
        )
    else:
        registry = "registry: not configured (tag details through GitLab, one request per tag)"
    return (
        f"{head}: GitLab {info['gitlab_url']} ({info['gitlab_version']}) "
        f"as {info['user']} ({admin})\n"
        f"{registry}\n"
        f"Preloaded: {', '.join(PRELOADED)}. Try: {EXAMPLE}\n"
    )


# How the banner names each registry variant: which GitLab cleanup service runs there.
VARIANTS = {
    SERVICE_GITLAB: "GitLab API /gitlab/v1/ (metadata database): GitLab's "
    "Gitlab::CleanupTagsService, tags dated by push time",
    SERVICE_THIRD_PARTY: "v2 API only: GitLab's ThirdParty::CleanupTagsService, "
    "tags dated by build time",
}


def registry_variant(conn: Connection) -> str:
    """Which registry variant the connection talks to (one probe of ``/gitlab/v1/``)."""
    try:
        return VARIANTS[conn.cleanup_service]
    except RegopsError as exc:
        return f"variant unknown: {exc}"


def run_code(code: str, ns: dict[str, Any], *, out: Any = None) -> None:
    """Run ``code``; if it ends with an expression whose value is not None, print its repr."""
    out = out or sys.stdout
    tree = ast.parse(code, "<console -c>", "exec")
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body.pop()
    exec(compile(tree, "<console -c>", "exec"), ns)
    if last is not None:
        expression = ast.Expression(last.value)
        value = eval(compile(expression, "<console -c>", "eval"), ns)
        if value is not None:
            print(repr(value), file=out)


def run_file(path: str | Path, ns: dict[str, Any], args: Sequence[str] = ()) -> None:
    """Run a script with the console's namespace (``sys.argv`` = [path, *args])."""
    source = Path(path).read_text(encoding="utf-8")
    ns = {**ns, "__name__": "__main__", "__file__": str(path)}
    saved = sys.argv
    sys.argv = [str(path), *args]
    try:
        exec(compile(source, str(path), "exec"), ns)
    finally:
        sys.argv = saved


def interact(ns: dict[str, Any], text: str) -> None:
    """Start IPython with ``ns`` and the banner ``text``."""
    from IPython import start_ipython
    from traitlets.config import Config

    config = Config()
    config.TerminalInteractiveShell.banner1 = text
    config.TerminalInteractiveShell.confirm_exit = False
    config.InteractiveShellApp.display_banner = True
    start_ipython(argv=[], user_ns=ns, config=config)
