"""The regops console: IPython with the models and a connection preloaded.

Like ``gitlab-rails console`` for the container registry. The namespace holds
``regops``, ``connect``, ``Project``, ``ContainerRepository``, ``Tag``,
``ExpirationPolicy``, ``User``, ``plan_cleanup``, ``usage_by_project``,
``UsageHistory`` and ``conn`` (the default connection). Non-interactive runs
(``-c CODE``, ``FILE.py``) get the same namespace; ``-c`` prints the value of a
final expression (as IPython does), so ``regops console -c "Project.last(3)"``
shows a table.

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
from regops.errors import GitLabUnauthorized, RegopsError, TransportError
from regops.models import (
    ApplicationSettings,
    ContainerRepository,
    Event,
    ExpirationPolicy,
    Project,
    Tag,
    UsageHistory,
    User,
    usage_by_project,
)
from regops.ops.cleanup import SERVICE_GITLAB, SERVICE_THIRD_PARTY, plan_cleanup
from regops.secrets import redact_url

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
    "ApplicationSettings",
    "Event",
    "UsageHistory",
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
        "ApplicationSettings": ApplicationSettings,
        "Event": Event,
        "UsageHistory": UsageHistory,
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
    """Who and where: GitLab URL and version, user, admin or not, registry access mode.

    When GitLab cannot be asked, the banner names the real cause: not reachable,
    or reachable but refusing the token.
    """
    head = f"regops {regops.__version__} console"
    preloaded = f"Preloaded: {', '.join(PRELOADED)}. Try: {EXAMPLE}\n"
    where = redact_url(conn.settings.gitlab_url or "") or "(no GitLab URL configured)"
    try:
        info = conn.describe()
    except GitLabUnauthorized:
        return (
            f"{head}: GitLab {where} is reachable but refused the token (401): it is "
            "wrong, expired or revoked; check GITLAB_PRIVATE_TOKEN / `regops config`\n" + preloaded
        )
    except TransportError as exc:
        return f"{head}: GitLab {where} is not reachable: {exc}\n" + preloaded
    except RegopsError as exc:
        return f"{head}: GitLab {where}: {exc}\n" + preloaded
    admin = (
        "admin"
        if info["is_admin"]
        else "not an administrator: instance-wide reports need --scope visible"
    )
    if info.get("registry_url"):
        registry = (
            f"registry {info['registry_url']} (access: {info['registry_auth']}; "
            f"{registry_variant(conn)})"
        )
        source = str(info.get("registry_source") or "")
        if source.startswith("inferred"):
            registry += f", {source}"
    else:
        registry = "registry: not configured (tag details through GitLab, one request per tag)"
    return (
        f"{head}: GitLab {info['gitlab_url']} ({info['gitlab_version']}) "
        f"as {info['user']} ({admin})\n"
        f"{registry}\n" + preloaded
    )


def one_line(exc: BaseException) -> str:
    """How an error regops raised on purpose is shown in the console: one line and a hint."""
    return f"{type(exc).__name__}: {exc}  (%tb shows the full traceback)"


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
    """Start IPython with ``ns`` and the banner ``text``; regops's own errors print as
    one line (``%tb`` still shows the traceback)."""
    from IPython.terminal.ipapp import TerminalIPythonApp
    from traitlets.config import Config

    config = Config()
    config.TerminalInteractiveShell.banner1 = text
    config.TerminalInteractiveShell.confirm_exit = False
    config.InteractiveShellApp.display_banner = True
    app = TerminalIPythonApp.instance(config=config, user_ns=ns)
    app.initialize(argv=[])
    assert app.shell is not None
    app.shell.set_custom_exc((RegopsError,), _show_one_line)
    app.start()


def _show_one_line(
    shell: Any, etype: type[BaseException], value: BaseException, tb: Any, tb_offset: Any = None
) -> None:
    """IPython's handler for RegopsError: one line; the traceback kept for ``%tb``."""
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    print(one_line(value), file=sys.stderr)
