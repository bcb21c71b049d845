"""Fault sweep: cleanup runs under random faults and SIGKILLs, then reruns and restore.

Seeds the sandbox's ``bench`` profile (default 4 projects x 2 repositories x
16 tags, half the tags with their own image, the rest sharing one), puts a
fault proxy (tests/faultproxy.py) in front of the GitLab stand-in and the
registry, and for each run:

1. resets the registry's storage to the seed;
2. runs ``regops cleanup run --project <p> --execute`` (overrides
   ``name_regex=.*``, ``keep_n=5``, ``older_than=30d``, small batches) with
   every request getting a random fault at ``--rate`` (seeded), and with
   probability ``--kill-share`` a SIGKILL at a random request of the run;
3. runs the same command again (the same fault rate, no kill) until one run
   exits 0 (at most ``--reruns``), then once more without faults;
4. compares the project's tags, read from the registry's storage files, with
   what a fault-free run of the same project leaves;
5. runs ``regops restore`` with the run's audit files (no faults) and compares
   every tag with its digest before the run.

Prints: runs, requests seen, faults injected per kind, kills, kept tags lost
(deleted or left dangling), tags left on a wrong digest (e.g. on a throw-away
manifest), deletes left undone, restore failures (tags not back at their
original digest) and restore exit codes. Exit 1 when anything was lost,
wrong or not restored.

    python bench/faults.py                          # a few minutes
    python bench/faults.py --runs 10 --rate 0.05 --seed 3
    python bench/faults.py --kinds 503,reset_after --kill-share 1
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

from regops.sandbox import Sandbox
from tests.faultkit import DANGLING, Lane, State, project_repositories, rule_at, tag_links
from tests.faultproxy import DROPPED, FAULTS, KILL_FAULTS

DEFAULT_KINDS = tuple(f for f in FAULTS if f not in KILL_FAULTS)
DEFAULTS = {"projects": 4, "repositories": 2, "tags": 16, "distinct_share": 0.5}
OVERRIDES = ("name_regex=.*", "keep_n=5", "older_than=30d")
DEFAULT_BATCH = 4  # tags per delete batch: several batches per repository


@dataclass
class Tally:
    """What the sweep saw, summed over runs."""

    runs: int = 0
    requests: int = 0
    faults: Counter = field(default_factory=Counter)
    kills: int = 0
    lost: int = 0
    wrong: int = 0
    undone: int = 0
    restore_failures: int = 0
    restore_exits: Counter = field(default_factory=Counter)
    failed_runs: list[int] = field(default_factory=list)

    def add(self, outcome: _Outcome) -> None:
        self.runs += 1
        for record in outcome.records:
            self.requests += len(record.log)
            self.faults.update(s.fault for s in record.log if s.fault and s.fault != DROPPED)
        self.kills += sum(1 for s in outcome.records[0].log if s.fault in KILL_FAULTS)
        self.lost += outcome.counts["lost"]
        self.wrong += outcome.counts["wrong"]
        self.undone += outcome.counts["undone"]
        self.restore_exits[outcome.restore_exit] += 1
        self.restore_failures += outcome.unrestored
        if outcome.counts["lost"] or outcome.counts["wrong"] or outcome.unrestored:
            self.failed_runs.append(outcome.number)

    def report(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        exits = ", ".join(f"{k}: {v}" for k, v in sorted(self.restore_exits.items()))
        lines = [
            f"runs                         {self.runs}",
            f"requests seen                {self.requests}",
            f"faults injected              {sum(self.faults.values())} ({faults})",
            f"kills                        {self.kills}",
            f"kept tags lost               {self.lost}",
            f"tags left on a wrong digest  {self.wrong}",
            f"deletes left undone          {self.undone}",
            f"restore failures (tags)      {self.restore_failures}",
            f"restore exit codes           {exits}",
        ]
        if self.failed_runs:
            failed = ", ".join(str(n) for n in sorted(self.failed_runs))
            lines.append(f"runs with lost, wrong or unrestored tags: {failed}")
        return "\n".join(lines)


def classify(after: State, expected: State, before: State) -> Counter:
    """Count ``lost`` (kept tag gone or dangling), ``wrong`` (tag on a digest it must not
    have) and ``undone`` (a tag to delete still on its original digest)."""
    counts: Counter = Counter()
    for repo in expected:
        for tag in set(after[repo]) | set(expected[repo]):
            have, want = after[repo].get(tag), expected[repo].get(tag)
            if have == want:
                continue
            if want is not None and (have is None or have.endswith(DANGLING)):
                counts["lost"] += 1
            elif have is not None and have == before[repo].get(tag):
                counts["undone"] += 1
            elif have is not None and not have.endswith(DANGLING):
                counts["wrong"] += 1
    return counts


def cleanup_argv(project: str, batch: int) -> list[str]:
    argv = ["cleanup", "run", "--project", project, "--execute", "--batch-size", str(batch)]
    for override in OVERRIDES:
        argv += ["--policy-override", override]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    kinds = tuple(args.kinds.split(",")) if args.kinds else DEFAULT_KINDS
    unknown = [k for k in kinds if k not in FAULTS or k in KILL_FAULTS]
    if unknown:
        parser.error(f"--kinds: {unknown} are not faults of {DEFAULT_KINDS}")
    for name in ("rate", "kill_share"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    sizes = (args.runs, args.lanes, args.projects, args.repositories, args.tags, args.batch_size)
    if min(sizes) < 1:
        parser.error("--runs, --lanes, --projects, --repositories, --tags, --batch-size: >= 1")
    if args.work_dir:
        return sweep(args, kinds, Path(args.work_dir))
    work = Path(tempfile.mkdtemp(prefix="regops-faults-"))
    try:
        return sweep(args, kinds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sweep(args: argparse.Namespace, kinds: tuple[str, ...], work: Path) -> int:
    """Seed (unless ``work`` holds a seed), run the sweep, print the tally; the exit code."""
    template = work / "template"
    started = time.monotonic()
    if not (template / "state.json").exists():
        with Sandbox(template) as sandbox:
            sandbox.seed(
                "bench",
                projects=args.projects,
                repositories=args.repositories,
                tags=args.tags,
                distinct_share=args.distinct_share,
                seed_value=args.seed,
            )
    print(f"seeded in {time.monotonic() - started:.1f} s ({work})", flush=True)
    tally = Tally()
    lanes: list[Lane] = []
    try:
        for _ in range(args.lanes):
            lanes.append(Lane(template, Path(tempfile.mkdtemp(prefix="lane-", dir=work))).start())
        projects = [f"bench/project-{p:04d}" for p in range(args.projects)]
        baselines = {p: _baseline(lanes[0], p, args.batch_size, work) for p in projects}
        free, lock = list(lanes), threading.Lock()

        def one(number: int) -> None:
            with lock:
                lane = free.pop()
            try:
                project = projects[number % len(projects)]
                rng = random.Random(f"{args.seed}-{number}")  # the same run whatever the lane
                outcome = _one_run(
                    lane, number, project, baselines[project], args, kinds, rng, work
                )
                with lock:
                    tally.add(outcome)
                    if tally.runs % 10 == 0:
                        print(f"{tally.runs} runs, {time.monotonic() - started:.0f} s", flush=True)
            finally:
                with lock:
                    free.append(lane)

        with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
            list(pool.map(one, range(args.runs)))
    finally:
        for lane in lanes:
            lane.stop()
    print(f"\n{tally.report()}\n{time.monotonic() - started:.0f} s in all")
    return 1 if tally.failed_runs else 0


@dataclass
class _Baseline:
    log: list
    before: State
    end: State


def _baseline(lane: Lane, project: str, batch: int, work: Path) -> _Baseline:
    """A fault-free run of ``project``: its requests and the state it leaves."""
    lane.reset()
    repos = project_repositories(lane.storage, project)
    before = tag_links(lane.storage, repos)
    record = lane.run(cleanup_argv(project, batch), Path(tempfile.mkdtemp(dir=work)))
    if record.returncode != 0:
        raise SystemExit(f"the fault-free run of {project} failed: {record.run.errors()[-500:]}")
    end = tag_links(lane.storage, repos)
    deleted = sum(len(before[r]) - len(end[r]) for r in repos)
    print(f"{project}: {len(record.log)} requests, deletes {deleted} of its tags", flush=True)
    return _Baseline(record.log, before, end)


@dataclass
class _Outcome:
    """One run of the sweep."""

    number: int
    records: list
    counts: Counter
    restore_exit: int
    unrestored: int


def _one_run(
    lane: Lane,
    number: int,
    project: str,
    base: _Baseline,
    args: argparse.Namespace,
    kinds: tuple[str, ...],
    rng: random.Random,
    work: Path,
) -> _Outcome:
    lane.reset()
    state_dir = Path(tempfile.mkdtemp(prefix=f"run{number}-", dir=work))
    argv = cleanup_argv(project, args.batch_size)
    rules = []
    if rng.random() < args.kill_share:
        index, kill = rng.randrange(len(base.log)), rng.choice(KILL_FAULTS)
        rules.append(rule_at(base.log, index, kill, lane.stable))
    records = [lane.run(argv, state_dir, rules, rate=args.rate, kinds=kinds, seed=rng.random())]
    for _ in range(args.reruns):
        if records[-1].returncode == 0:
            break
        records.append(lane.run(argv, state_dir, rate=args.rate, kinds=kinds, seed=rng.random()))
    records.append(lane.run(argv, state_dir))  # and once more without faults
    counts = classify(tag_links(lane.storage, base.end), base.end, base.before)
    audits = sorted(str(p) for p in (state_dir / "audit").glob("*.jsonl"))
    restored = lane.run(["restore", *audits, "--project", project], state_dir)
    after_restore = tag_links(lane.storage, base.before)
    unrestored = sum(
        1
        for repo, tags in base.before.items()
        for tag, digest in tags.items()
        if after_restore[repo].get(tag) != digest
    )
    return _Outcome(number, records, counts, restored.returncode, unrestored)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.epilog = "\n".join(__doc__.splitlines()[2:])
    parser.add_argument("--runs", type=int, default=30, help="cleanup runs (default 30)")
    parser.add_argument(
        "--lanes", type=int, default=3, help="sandboxes running side by side (default 3)"
    )
    parser.add_argument(
        "--rate", type=float, default=0.1, help="fault probability per request (default 0.1)"
    )
    parser.add_argument(
        "--kinds",
        help=f"comma-separated faults to draw from (default {','.join(DEFAULT_KINDS)})",
    )
    parser.add_argument(
        "--kill-share",
        type=float,
        default=0.5,
        help="share of runs SIGKILLed at a random request (default 0.5)",
    )
    parser.add_argument(
        "--reruns", type=int, default=3, help="faulty reruns before the last clean one (3)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="tags per batch")
    parser.add_argument("--projects", type=int, default=DEFAULTS["projects"])
    parser.add_argument("--repositories", type=int, default=DEFAULTS["repositories"])
    parser.add_argument("--tags", type=int, default=DEFAULTS["tags"], help="tags per repository")
    parser.add_argument(
        "--distinct-share",
        type=float,
        default=DEFAULTS["distinct_share"],
        help="share of tags with their own image",
    )
    parser.add_argument(
        "--work-dir",
        help="keep the seed and runs here, reused when seeded (default: a temporary one)",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
