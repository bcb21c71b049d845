"""Benchmark: registry usage by project, naive Rails-style loop vs regops (cold and warm cache).

Seeds the sandbox's ``bench`` profile (default 50 projects x 3 repositories x
40 tags, about a third of the tags with their own image, the rest sharing
one), puts a delaying proxy (default 2 ms per request) in front of BOTH the
GitLab stand-in and the registry, and runs in this process:

(a) naive: the Rails loop as a Python user writes it over the GitLab API,
    sequential: projects -> repositories -> tags list -> one tag-details call
    per tag, summing total_size;
(b) regops, cold cache; (c) regops, warm cache; each in both tag modes:
    ``http`` (one GET manifest per tag) and ``storage`` (tag links read from
    the registry's storage directory, as an admin on the registry host can).

Prints request counts (GitLab and registry separately), wall times, ratios
against (a), the minimum registry requests (tag lists + distinct manifests +
distinct configs), and checks that every run reports the same
registry_size_bytes for every project (exit code 1 if not).

    python bench/usage.py                       # the full profile (a few minutes)
    python bench/usage.py --projects 5 --tags 10   # a quick look
    python bench/usage.py --data-dir D --only storage  # (b) and (c) of one mode only

The proxies run in a child process by default, so their CPU is not charged
to the measured client (real network latency costs the client no CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy import DEFAULT_DELAY, ProxyGroup, SpawnedProxies

from regops.ops import usage
from regops.registry.cache import ContentCache
from regops.registry.manifest import parse_manifest
from regops.registry.resolver import TagResolver
from regops.registry.storage import RegistryStorage
from regops.sandbox import Sandbox

TARGET_COLD = 10.0  # (b) at least this many times faster than (a)
TARGET_WARM = 50.0  # (c) at least this many times faster than (a)
TARGET_REQUESTS = 1.10  # (b)'s registry requests within 10% of the minimum
NAIVE = "naive"
MODES = (NAIVE, "http", "storage")  # what --only can select
NAIVE_NAME = "(a) naive, GitLab API, sequential"


@dataclass
class Run:
    """One measured run."""

    name: str
    report: usage.UsageReport

    @property
    def seconds(self) -> float:
        return self.report.summary.seconds

    def sizes(self) -> dict[int, int]:
        return dict(usage.iter_sizes(self.report))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines in the results
    with Sandbox(args.data_dir, quiet=True) as sandbox:
        if sandbox.state.projects:
            print(f"reusing the sandbox in {args.data_dir} (seeded before)", flush=True)
        else:
            _seed(sandbox, args)
        upstreams = [sandbox.gitlab_url, sandbox.registry_url]
        proxies = (
            _InProcess(upstreams, args.delay) if args.proxy_in_process else
            SpawnedProxies(upstreams, args.delay)
        )  # fmt: skip
        with proxies:
            gitlab_proxy, registry_proxy = proxies.proxies
            runs = _measure(sandbox, gitlab_proxy.url, registry_proxy.url, args)
        minimum = minimum_requests(RegistryStorage(sandbox.storage_path), runs[0].report)
        reads = dict(sandbox.state.registry_reads)
    return _print_results(runs, minimum, reads, args)


def _seed(sandbox: Sandbox, args: Any) -> None:
    started = time.monotonic()
    seeded = sandbox.seed(
        "bench",
        projects=args.projects,
        repositories=args.repositories,
        tags=args.tags,
        distinct_share=args.distinct_share,
    )
    print(
        f"seeded {seeded['repositories']} repositories, {seeded['tags']} tags, "
        f"{seeded['manifests']} distinct manifests in {time.monotonic() - started:.1f} s",
        flush=True,
    )


def _measure(sandbox: Sandbox, gitlab_url: str, registry_url: str, args: Any) -> list[Run]:
    def connection() -> Any:  # a fresh connection per run: no state carried over
        return sandbox.connect(gitlab_url=gitlab_url, registry_url=registry_url)

    storage = RegistryStorage(sandbox.storage_path)
    with tempfile.TemporaryDirectory(prefix="regops-bench-cache-") as caches:
        conn = connection()
        projects = usage.select_projects(conn.gitlab)
        runs = []
        if NAIVE in args.only:
            runs.append(Run(NAIVE_NAME, _naive(conn, projects)))
            print(f"{runs[0].name}: {runs[0].seconds:.2f} s", flush=True)
        for mode, store in (("http", None), ("storage", storage)):
            if mode not in args.only:
                continue
            cache_dir = Path(caches) / mode
            for label, name in (("b", "cold"), ("c", "warm")):
                conn = connection()
                report = usage.by_project(
                    projects,
                    gitlab=conn.gitlab,
                    resolver=TagResolver(conn.registry, ContentCache(cache_dir)),
                    workers=args.workers,
                    storage=store,
                )
                run = Run(f"({label}) regops, {name} cache, tags via {mode}", report)
                print(f"{run.name}: {run.seconds:.2f} s", flush=True)
                runs.append(run)
    return runs


def _naive(conn: Any, projects: list[usage.ProjectRef]) -> usage.UsageReport:
    return usage.naive_by_project(conn.gitlab, projects)


def minimum_requests(storage: RegistryStorage, report: usage.UsageReport) -> dict[str, int]:
    """Tag lists + distinct manifests + distinct configs the scanned tags need (from disk)."""
    manifests: set[str] = set()
    configs: set[str] = set()
    for row in report.projects:
        for key in row.tag_sizes:
            repo, tag = key.rsplit(":", 1)
            digest = storage.tag_digest(repo, tag)
            if digest is None or digest in manifests:
                continue
            manifests.add(digest)
            manifest = parse_manifest(storage.blob_path(digest).read_bytes(), digest=digest)
            if manifest.config is not None:
                configs.add(manifest.config.digest)
    return {
        "tag_lists": report.summary.repositories,
        "distinct_manifests": len(manifests),
        "distinct_configs": len(configs),
    }


def _print_results(
    runs: list[Run], minimum: dict[str, int], reads: dict[str, int], args: Any
) -> int:
    from tabulate import tabulate

    naive = runs[0] if runs[0].name == NAIVE_NAME else None
    rows = []
    for run in runs:
        s = run.report.summary
        rows.append(
            (
                run.name,
                f"{run.seconds:.2f}",
                s.gitlab_requests,
                s.registry_requests,
                s.cache_hits,
                f"{naive.seconds / run.seconds:.1f}x" if naive and run.seconds else "-",
            )
        )
    headers = ("run", "seconds", "GitLab req", "registry req", "cache hits", "vs (a)")
    print()
    print(f"delay {args.delay * 1000:.1f} ms per request (both proxies), {args.workers} workers")
    print(tabulate(rows, headers, tablefmt="github"))
    if naive is not None:
        print(
            f"\n(a) made the stand-in read the registry {json.dumps(reads)} (server side, "
            f"not through the proxy); with an instant GitLab (a) could not beat "
            f"{naive.report.summary.gitlab_requests} x {args.delay * 1000:.1f} ms = "
            f"{naive.report.summary.gitlab_requests * args.delay:.2f} s"
        )
    least = sum(minimum.values())
    print(
        f"minimum registry requests = tag lists {minimum['tag_lists']} + distinct manifests "
        f"{minimum['distinct_manifests']} + distinct configs {minimum['distinct_configs']} "
        f"= {least}"
    )
    same = _same_sizes(runs)
    print(f"registry_size_bytes identical across all runs, per project: {same}")
    print()
    for mode in ("http", "storage"):
        if naive is None or mode not in args.only:
            continue
        cold = next(r for r in runs if r.name.startswith("(b)") and mode in r.name)
        warm = next(r for r in runs if r.name.startswith("(c)") and mode in r.name)
        ratio_cold = naive.seconds / cold.seconds
        ratio_warm = naive.seconds / warm.seconds
        requests = cold.report.summary.registry_requests
        print(
            f"tags via {mode}: (b) {ratio_cold:.1f}x [{_verdict(ratio_cold >= TARGET_COLD)} "
            f">= {TARGET_COLD:g}x], (c) {ratio_warm:.1f}x "
            f"[{_verdict(ratio_warm >= TARGET_WARM)} >= {TARGET_WARM:g}x], (b) registry "
            f"requests {requests} = {requests / least:.2f} x minimum "
            f"[{_verdict(requests <= least * TARGET_REQUESTS)} <= {TARGET_REQUESTS:.2f}]"
        )
    return 0 if same else 1


def _same_sizes(runs: list[Run]) -> bool:
    expected = runs[0].sizes()
    return all(run.sizes() == expected for run in runs) and all(run.report.ok for run in runs)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


class _InProcess:
    """The proxies as threads of this process (``--proxy-in-process``)."""

    def __init__(self, upstreams: list[str], delay: float) -> None:
        self.group = ProxyGroup(delay)
        self.proxies = [self.group.add(u) for u in upstreams]

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.group.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--repositories", type=int, default=3)
    parser.add_argument("--tags", type=int, default=40)
    parser.add_argument("--distinct-share", type=float, default=0.33)
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY, help="seconds per request")
    parser.add_argument("--workers", type=int, default=usage.DEFAULT_WORKERS)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the seeded sandbox here and reuse it on the next run (seeding takes minutes)",
    )
    parser.add_argument(
        "--proxy-in-process", action="store_true", help="run the proxies as threads here"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="run only these: naive is (a); http and storage are (b) then (c) of that mode "
        "(without naive there are no ratios nor verdicts)",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
