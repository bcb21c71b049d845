"""Benchmark: ``regops cleanup forecast`` on the bench profile with every policy enabled.

Seeds the sandbox's ``bench`` profile (default 50 projects x 3 repositories x
40 tags), enables every project's policy (keep_n 10, older_than 30d; half of
them already are), optionally puts the delaying proxy of ``bench/proxy.py``
in front of GitLab and the registry, and times
``ExpirationPolicy.where(enabled=True).forecast()`` with a cold and a warm
content cache, printing the time, the registry requests and what the runs
would delete.

    python bench/forecast.py                          # the full profile
    python bench/forecast.py --projects 5 --tags 10   # a quick look
    python bench/forecast.py --delay 0.002            # 2 ms added per request
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy import SpawnedProxies

from regops.models import ExpirationPolicy
from regops.sandbox import Sandbox
from regops.sandbox.seed import BENCH_DEFAULTS

ENABLED_POLICY = {"enabled": True, "keep_n": 10, "older_than": "30d", "name_regex": ".*"}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with Sandbox(args.data_dir, quiet=True) as sandbox:
        if not sandbox.state.projects:
            started = time.monotonic()
            seeded = sandbox.seed(
                "bench", projects=args.projects, repositories=args.repositories, tags=args.tags
            )
            print(f"seeded {seeded['tags']} tags in {time.monotonic() - started:.1f} s", flush=True)
        for project in list(sandbox.state.projects.values()):
            sandbox.state.set_policy(project, ENABLED_POLICY)
        if args.delay > 0:
            with SpawnedProxies([sandbox.gitlab_url, sandbox.registry_url], args.delay) as proxies:
                gitlab, registry = proxies.proxies
                return _measure(sandbox, args, gitlab_url=gitlab.url, registry_url=registry.url)
        return _measure(sandbox, args)


def _measure(sandbox: Sandbox, args: Any, **urls: str) -> int:
    with tempfile.TemporaryDirectory(prefix="regops-bench-forecast-") as cache:
        for label in ("cold cache", "warm cache"):
            connection = sandbox.connect(cache_dir=cache, **urls)
            started = time.monotonic()
            result = ExpirationPolicy.where(enabled=True, connection=connection).forecast(
                workers=args.workers
            )
            seconds = time.monotonic() - started
            tags = sum(row.tags for row in result)
            print(
                f"{label}: {len(result)} policies, {tags} tags planned in {seconds:.1f} s "
                f"(forecast itself {result.seconds:.1f} s, {result.registry_requests} registry "
                f"requests); {sum(r.deleted_tags for r in result)} tags to delete",
                flush=True,
            )
            connection.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=BENCH_DEFAULTS["projects"])
    parser.add_argument("--repositories", type=int, default=BENCH_DEFAULTS["repositories"])
    parser.add_argument("--tags", type=int, default=BENCH_DEFAULTS["tags"])
    parser.add_argument("--workers", type=int, default=4, help="projects planned at once")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--data-dir", help="reuse a seeded sandbox here")
    return parser


if __name__ == "__main__":
    sys.exit(main())
