"""``regops sandbox``: run a local GitLab API stand-in + the real registry until Ctrl-C.

Prints where things are and how to point regops at them (``source <env
file>``); the tokens go only into the env file (mode 0600), never to the
terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from regops.secrets import MASK

# The sandbox (werkzeug, the registry runner, every client) is imported when the
# command runs: registering its options must not load it (`regops --help`).
if TYPE_CHECKING:
    from regops.sandbox import Sandbox

SEED_CHOICES = ("demo", "bench", "none")
BENCH_OPTIONS = ("projects", "repositories", "tags", "distinct_share")  # --bench-<name>


def _sandbox_choice(name: str) -> Callable[[str], str]:
    """An argparse type accepting one of ``regops.sandbox.<name>`` (checked when the
    option is given: the sandbox is imported then, not when the parser is built)."""

    def check(value: str) -> str:
        import regops.sandbox

        allowed = getattr(regops.sandbox, name)
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    check.__name__ = name.lower()
    return check


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="run a local GitLab API stand-in and a real registry (for trying regops)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--seed", choices=SEED_CHOICES, default="demo", help="what to create")
    parser.add_argument("--data", metavar="DIR", help="keep state here (reused when it exists)")
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="where to write the env file (default: the env file in the data directory)",
    )
    parser.add_argument("--user", default="admin", help="whom the env file logs in as")
    parser.add_argument("--gitlab-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--registry-port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--storage",
        type=_sandbox_choice("STORAGE_KINDS"),
        default="filesystem",
        metavar="KIND",
        help="the registry's storage: filesystem (a folder), or s3 (served by moto on "
        "loopback; objects in memory: they do not survive the sandbox)",
    )
    parser.add_argument(
        "--registry-api",
        type=_sandbox_choice("REGISTRY_APIS"),
        default="v2",
        metavar="API",
        help="v2: the plain Distribution registry (GitLab's third-party cleanup); gitlab: "
        "GitLab's registry API /gitlab/v1/ in front of it (metadata database, tag delete)",
    )
    bench = parser.add_argument_group("bench profile (default: the profile's own sizes)")
    bench.add_argument("--bench-projects", type=int)
    bench.add_argument("--bench-repositories", type=int)
    bench.add_argument("--bench-tags", type=int)
    bench.add_argument("--bench-distinct-share", type=float)
    parser.set_defaults(func=run)


def seed_options(args: argparse.Namespace) -> dict[str, Any]:
    """The bench profile's sizes given on the command line (the others: its defaults)."""
    if args.seed != "bench":
        return {}
    given = {name: getattr(args, f"bench_{name}", None) for name in BENCH_OPTIONS}
    return {name: value for name, value in given.items() if value is not None}


def run(
    args: argparse.Namespace, *, stop: threading.Event | None = None, out: TextIO | None = None
) -> int:
    """Start, seed, write the env file, print the summary, wait for a signal, stop."""
    from regops.sandbox import Sandbox

    out = out or sys.stdout
    stop = stop or threading.Event()
    storage = getattr(args, "storage", "filesystem")
    sandbox = Sandbox(
        args.data,
        gitlab_port=args.gitlab_port,
        registry_port=args.registry_port,
        storage=storage,
        registry_api=getattr(args, "registry_api", "v2"),
    )
    with sandbox:
        already = bool(args.data and sandbox.state and sandbox.state.projects)
        if args.seed != "none" and not already:
            started = time.monotonic()
            summary = sandbox.seed(args.seed, **seed_options(args))
            print(
                f"seeded {args.seed}: {len(summary['projects'])} projects, "
                f"{summary['repositories']} repositories, {summary['tags']} tags "
                f"in {time.monotonic() - started:.1f}s",
                file=out,
            )
        env_path = Path(args.env_file) if args.env_file else default_env_path(sandbox)
        sandbox.write_env_file(env_path, user=args.user)
        with _stop_on_signals(stop):  # before the banner: a caller may signal right after it
            print_banner(sandbox, env_path, out, args.user)
            while not stop.wait(0.5):
                pass
        print("stopping the sandbox", file=out)
    return 0


def default_env_path(sandbox: Sandbox) -> Path:
    """The env file inside the data directory (a temporary one goes away on stop)."""
    from regops.sandbox import ENV_FILE_NAME

    assert sandbox.data_dir is not None  # a started sandbox
    return sandbox.data_dir / ENV_FILE_NAME


def print_banner(sandbox: Sandbox, env_path: Path, out: TextIO, user: str = "admin") -> None:
    """Where things are, who can log in and the environment to use; never a token."""
    assert sandbox.state is not None  # a started sandbox
    users = ", ".join(
        f"{u.username}{' (admin)' if u.is_admin else ''}"
        for u in sorted(sandbox.state.users.values(), key=lambda u: u.id)
    )
    lines = [
        f"GitLab API:  {sandbox.gitlab_url}/api/v4",
        f"registry:    {sandbox.registry_url}  (images: {sandbox.registry_host}/<path>; "
        f"API: {sandbox.registry_api})",
        f"users:       {users}  (tokens are in the env file)",
        f"data:        {sandbox.data_dir}",
        "",
        f"Environment for regops (source {env_path} to set it; the token is only there):",
        *(f"  {name}={value}" for name, value in shown_env(sandbox.env(user)).items()),
        "",
        f"source {env_path}",
        "",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), file=out, flush=True)


def shown_env(env: dict[str, str]) -> dict[str, str]:
    """The environment with the token masked, for printing."""
    return {name: MASK if name == "GITLAB_PRIVATE_TOKEN" else value for name, value in env.items()}


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While inside, SIGINT/SIGTERM set ``stop`` instead of interrupting."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
