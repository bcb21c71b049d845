"""Fault injection: a cleanup run, a usage scan and a policy update under every fault.

The CLI runs as a real process (``regops.cli.main`` in a process forked from a
preloaded server, see tests/clirunner.py; the baseline also runs ``python -m
regops``) through fault proxies in front of the GitLab stand-in and the real
registry (tests/faultproxy.py). A fault-free run records the requests R; then
for each request index i and fault kind: fresh state, a run with that one
fault at request i, the same command again without faults (the rerun), then
``regops restore`` with the run's audit files.

Judged only from the registry's storage files (tests/faultkit.py
``tag_links``; skopeo witnesses the storage reader on the baseline states and
on every tag a failing scenario left wrong after its rerun) and, for policies, from the
stand-in's HTTP API with plain ``requests``:

- after the rerun, every repository of the project has exactly the
  tag -> digest pairs the fault-free run left;
- after restore, every tag is back at its pre-run digest.

A faulted run that left no trace (storage as seeded, no file in the state
directory but its lock: most kills while planning) is not rerun: the rerun
would be the fault-free baseline run from the same start, already judged.

In ``make test``: every request x {kill_before, kill_after}, and 503 on every
mutating request of the cleanup; every fault at every step of the usage scan
and at every request of the policy update. The other (request, fault) pairs
of the cleanup run with ``pytest --faults-full`` (marker ``faults_full``).
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from regops.registry.tokens import TokenMinter, load_signing_key
from tests.faultkit import (
    DANGLING,
    Lane,
    RunRecord,
    State,
    differences,
    kind,
    pattern,
    project_repositories,
    repeated_read,
    rule_at,
    tag_links,
)
from tests.faultproxy import FAULTS, KILL_FAULTS, Seen
from tests.skopeo import skopeo_digest, skopeo_list_tags

pytestmark = [pytest.mark.faults, pytest.mark.registry, pytest.mark.skopeo]

PROJECT = "apps/web"
# The README's example overrides; batch size 3 gives batches of 3, 3 and 1 tags.
CLEANUP = [
    "cleanup",
    "run",
    "--project",
    PROJECT,
    "--execute",
    "--policy-override",
    "name_regex=main-.*",
    "--policy-override",
    "keep_n=5",
    "--policy-override",
    "older_than=14d",
    "--batch-size",
    "3",
]
# The demo seed (regops/sandbox/seed.py docstring): apps/web's repositories and tag counts.
REPOSITORIES = {"apps/web": 8, "apps/web/backend": 3, "apps/web/frontend": 13}
# keep_n=5 keeps the five newest main-* builds (main-000..004, 0.5 to 20.5 days old);
# main-005..011 are 25.5 to 55.5 days old, older than 14d: deleted. Nothing else matches.
DELETED = {("apps/web/frontend", f"main-{day:03d}") for day in range(5, 12)}
# Not keep_n=10: that is GitLab's default, which apps/web has, so half an update would not show.
ENABLE = ["cleanup", "enable", "--execute", "--set", "keep_n=5", "--set", "older_than=30d"]
POLICY_FIELDS = ("enabled", "cadence", "keep_n", "older_than", "name_regex", "name_regex_keep")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LANES = 2  # sandboxes running scenarios side by side (the machine has 2 cores)
ATTEMPTS = 3  # runs of a scenario whose fault did not fire (request counts vary a little)
SHOWN = 4  # differences shown per failing scenario


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lanes(sandbox_template, tmp_path_factory):
    """LANES sandboxes from the seeded demo, each behind its own fault proxies."""
    started: list[Lane] = []
    try:
        for n in range(LANES):
            started.append(Lane(sandbox_template, tmp_path_factory.mktemp(f"lane{n}")).start())
        yield started
    finally:
        for lane in started:
            lane.stop()


@dataclass
class Baseline:
    """The fault-free cleanup: requests, state before, state after."""

    log: list[Seen]
    pre: State
    end: State


@pytest.fixture(scope="module")
def baseline(lanes, tmp_path_factory) -> Baseline:
    lane = lanes[0]
    repos = project_repositories(lane.storage, PROJECT)
    assert repos == sorted(REPOSITORIES)
    pre = tag_links(lane.storage, repos)
    assert {r: len(t) for r, t in pre.items()} == REPOSITORIES
    witness(lane, pre)

    # The real CLI once: `python -m regops` in a subprocess...
    work = tmp_path_factory.mktemp("baseline")
    real = lane.run_subprocess(CLEANUP, work / "cli")
    assert real.returncode == 0, real.run.errors()
    lane.reset()
    # ...makes the same requests as the forked runs every scenario uses.
    forked = lane.run(CLEANUP, work / "forked")
    assert forked.returncode == 0, forked.run.errors()
    assert _shape(forked.log) == _shape(real.log)

    end = tag_links(lane.storage, repos)
    expected = {
        r: {t: d for t, d in tags.items() if (r, t) not in DELETED} for r, tags in pre.items()
    }
    assert end == expected
    witness(lane, end)
    restored = restore(lane, work / "forked")
    assert restored.returncode == 0, restored.run.errors()
    assert tag_links(lane.storage, repos) == pre
    lane.reset()
    return Baseline(forked.log, pre, end)


def _shape(log: Iterable[Seen]) -> list[tuple[str, str, str]]:
    """Requests without what differs between runs (ids, throw-away digests), sorted."""
    return sorted(
        (s.proxy, s.method, pattern(s.path))
        for s in log
        if not (s.method == "GET" and "/blobs/" in s.path)  # config reads: 1 or 2 per digest
    )


def witness(lane: Lane, state: State) -> None:
    """skopeo, an independent client, sees the same tags and digests as the storage files."""
    sandbox = lane.sandbox
    minter = _minter(lane)
    for repo, tags in state.items():
        listed = skopeo_list_tags(sandbox.registry_host, repo, "root", sandbox.admin_token.reveal())
        assert listed.returncode == 0, listed.stderr
        assert sorted(re.findall(r'"([^"]+)"', listed.stdout.split('"Tags"', 1)[1])) == sorted(tags)
        for tag, digest in tags.items():
            assert skopeo_digest(sandbox.registry_host, repo, tag, minter) == digest, (repo, tag)


def _minter(lane: Lane) -> TokenMinter:
    sandbox = lane.sandbox
    return TokenMinter(
        load_signing_key(sandbox.key_path), issuer=sandbox.issuer, service=sandbox.service
    )


def restore(lane: Lane, state_dir: Path) -> RunRecord:
    audits = sorted(str(p) for p in (state_dir / "audit").glob("*.jsonl"))
    return lane.run(["restore", *audits, "--project", PROJECT], state_dir)


# ---------------------------------------------------------------------- scenarios


@dataclass
class Outcome:
    """One scenario: its name and what went wrong (nothing: it passed)."""

    name: str
    problems: list[str]
    fired: bool = True
    note: str = ""
    repeat: bool = False  # the faulted request repeats an identical read (see repeated_read)


def run_scenarios(
    lanes: list[Lane], items: list, scenario: Callable[[Lane, object, int], Outcome]
) -> list[Outcome]:
    """Run ``scenario(lane, item, number)`` for every item, spread over the lanes."""
    free: list[Lane] = list(lanes)
    lock = threading.Lock()

    def one(numbered: tuple[int, object]) -> Outcome:
        number, item = numbered
        with lock:
            lane = free.pop()
        try:
            for _ in range(ATTEMPTS):
                outcome = scenario(lane, item, number)
                if outcome.fired:
                    return outcome
            if outcome.repeat:
                return Outcome(outcome.name, [], False, "a repeated read no run made")
            outcome.problems.append(f"the fault never fired in {ATTEMPTS} runs")
            return outcome
        finally:
            with lock:
                free.append(lane)

    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        return list(pool.map(one, enumerate(items)))


def assert_all_pass(outcomes: list[Outcome]) -> None:
    failed = [o for o in outcomes if o.problems]
    untraced = sum(1 for o in outcomes if o.note.endswith("left no trace"))
    unfired = sum(1 for o in outcomes if not o.fired)
    print(
        f"{len(outcomes)} scenarios, {len(failed)} failed, {untraced} left no trace, "
        f"{unfired} repeated reads not made"
    )
    lines = [f"{len(failed)} of {len(outcomes)} scenarios failed:"]
    for o in failed:
        lines.append(f"- {o.name}: {o.note}")
        lines.extend(f"    {p}" for p in o.problems[:SHOWN])
        if len(o.problems) > SHOWN:
            lines.append(f"    ... {len(o.problems) - SHOWN} more")
    assert not failed, "\n".join(lines)


def cleanup_scenario(baseline: Baseline, tmp: Path) -> Callable[[Lane, object, int], Outcome]:
    """A fault at one request of the cleanup, then a rerun, then restore."""

    def scenario(lane: Lane, item: object, number: int) -> Outcome:
        index, fault = item  # type: ignore[misc]
        target = baseline.log[index]
        name = f"{fault} at #{index} {target.method} {target.path[:90]}"
        lane.reset()
        state_dir = Path(tempfile.mkdtemp(prefix=f"s{number}-", dir=tmp))
        first = lane.run(CLEANUP, state_dir, [rule_at(baseline.log, index, fault, lane.stable)])
        fired = any(s.fault == fault for s in first.log)
        repeat = repeated_read(baseline.log, index)
        if lane.untouched(state_dir):
            # Nothing changed and nothing was logged: the rerun would be the baseline's
            # fault-free run from the same start, already judged. (Most kills while planning.)
            return Outcome(name, [], fired, f"exit {first.returncode}, left no trace", repeat)
        rerun = lane.run(CLEANUP, state_dir)
        after = tag_links(lane.storage, baseline.end)
        problems = [f"after the rerun: {d}" for d in differences(after, baseline.end)]
        problems += _skopeo_view(lane, after, baseline.end)
        restored_run = restore(lane, state_dir)
        restored = tag_links(lane.storage, baseline.pre)
        problems += [f"after restore: {d}" for d in differences(restored, baseline.pre)]
        note = f"exit {first.returncode}, rerun exit {rerun.returncode}"
        note += f", restore exit {restored_run.returncode}"
        return Outcome(name, problems, fired, note, repeat)

    return scenario


def _skopeo_view(lane: Lane, actual: State, expected: State) -> list[str]:
    """What skopeo sees of each tag the storage says is wrong."""
    wrong = {
        (repo, tag)
        for repo in expected
        for tag in set(actual[repo]) | set(expected[repo])
        if actual[repo].get(tag) != expected[repo].get(tag)
    }
    minter = _minter(lane)
    lines = []
    for repo, tag in sorted(wrong):
        seen = skopeo_digest(lane.sandbox.registry_host, repo, tag, minter)
        lines.append(f"  skopeo: {repo}:{tag} -> {seen[:19] if seen else 'manifest unknown'}")
    return lines


def cleanup_items(baseline: Baseline, faults: Iterable[str], only_mutating: bool) -> list:
    return [
        (i, fault)
        for fault in faults
        for i, seen in enumerate(baseline.log)
        if not only_mutating or seen.method in MUTATING
    ]


# ---------------------------------------------------------------------- cleanup


@pytest.mark.parametrize("fault", KILL_FAULTS)
def test_cleanup_survives_a_kill_at_every_request(lanes, baseline, fault, tmp_path):
    items = cleanup_items(baseline, [fault], only_mutating=False)
    # the whole run: 7 tags in batches of 3, each batch ends with a DELETE by digest
    assert sum(1 for s in baseline.log if s.method == "DELETE" and "sha256:" in s.path) >= 3
    assert len(items) == len(baseline.log)
    assert_all_pass(run_scenarios(lanes, items, cleanup_scenario(baseline, tmp_path)))


def test_cleanup_survives_503_on_every_mutating_request(lanes, baseline, tmp_path):
    items = cleanup_items(baseline, ["503"], only_mutating=True)
    # today 19: per batch a preflight DELETE, blob POST + PUT, a PUT per tag, a final DELETE
    assert len(items) >= len(DELETED)
    assert_all_pass(run_scenarios(lanes, items, cleanup_scenario(baseline, tmp_path)))


FULL_MATRIX = [f for f in FAULTS if f not in KILL_FAULTS]


@pytest.mark.faults_full
@pytest.mark.parametrize("fault", FULL_MATRIX)
def test_cleanup_full_matrix(lanes, baseline, fault, tmp_path):
    """Every other fault at every request (503 on reads: the mutating ones run by default)."""
    items = cleanup_items(baseline, [fault], only_mutating=False)
    if fault == "503":
        items = [(i, f) for i, f in items if baseline.log[i].method not in MUTATING]
    assert_all_pass(run_scenarios(lanes, items, cleanup_scenario(baseline, tmp_path)))


# ---------------------------------------------------------------------- usage scan

PREVIOUS = "previous report\n"


@pytest.fixture(scope="module")
def usage_baseline(lanes, tmp_path_factory) -> tuple[list[Seen], bytes]:
    lane = lanes[0]
    lane.reset()
    out = tmp_path_factory.mktemp("usage") / "usage.csv"
    record = lane.run(_usage_argv(out), out.parent / "state")
    assert record.returncode == 0, record.run.errors()
    text = out.read_bytes()
    # the demo's projects with images in id order (the Rails loop skips empty ones),
    # then the deduplicated total row
    rows = text.decode().splitlines()
    assert rows[0].startswith("project_id,creator_id,registry_size_bytes,project path")
    assert [r.split(",")[3] for r in rows[1:]] == [
        "platform/base-images",
        "platform/tools",
        "apps/web",
        "apps/mobile/android",
        "(all scanned projects)",
    ]
    return record.log, text


def _usage_argv(out: Path) -> list[str]:
    return ["usage", "--extended", "--no-cache", "--output", str(out)]


def test_usage_scan_is_exact_or_keeps_the_old_file(lanes, usage_baseline, tmp_path):
    log, expected = usage_baseline
    firsts: dict[str, int] = {}
    for i, seen in enumerate(log):
        firsts.setdefault(kind(seen), i)
    assert set(firsts) == {
        "gitlab GET /api/v4/user",  # whether the token is an admin's (the run's coverage)
        "gitlab GET /api/v4/projects",
        "gitlab GET /api/v4/projects/<id>/registry/repositories",
        "registry GET /v2/<repo>/tags/<ref>",
        "registry GET /v2/<repo>/manifests/<ref>",
    }
    items = [(step, index, fault) for step, index in firsts.items() for fault in FAULTS]

    def scenario(lane: Lane, item: object, number: int) -> Outcome:
        step, index, fault = item  # type: ignore[misc]
        lane.reset()
        out = Path(tempfile.mkdtemp(prefix=f"u{number}-", dir=tmp_path)) / "usage.csv"
        out.write_text(PREVIOUS)
        state_dir = out.parent.with_name(out.parent.name + "-state")
        run = lane.run(_usage_argv(out), state_dir, [rule_at(log, index, fault, lane.stable)])
        fired = any(s.fault == fault for s in run.log)
        problems = []
        left = out.read_bytes()
        if run.returncode == 0:
            observed = "identical CSV"
            if left != expected:
                problems.append("exit 0 with a CSV that differs from the fault-free one")
        else:
            kept = left == PREVIOUS.encode()
            observed = f"exit {run.returncode}, old file {'kept' if kept else 'replaced'}"
            if not kept:
                problems.append(f"exit {run.returncode} and the old output file was replaced")
            again = lane.run(_usage_argv(out), state_dir)
            if again.returncode != 0 or out.read_bytes() != expected:
                problems.append(f"the rerun gave exit {again.returncode} or another CSV")
        if [p.name for p in out.parent.iterdir()] != ["usage.csv"]:
            problems.append(f"files left beside the output: {sorted(out.parent.iterdir())}")
        return Outcome(f"{fault} at the first {step}", problems, fired, observed)

    outcomes = run_scenarios(lanes, items, scenario)
    print(Counter(o.note for o in outcomes))  # what a fault does to the scan (pytest -s)
    assert_all_pass(outcomes)


# ---------------------------------------------------------------------- policy update


def policies(lane: Lane) -> dict[str, dict]:
    """Every project's cleanup policy, from the stand-in's API (plain requests)."""
    session = requests.Session()
    session.headers["PRIVATE-TOKEN"] = lane.sandbox.admin_token.reveal()
    found = {}
    response = session.get(f"{lane.sandbox.gitlab_url}/api/v4/projects?per_page=100", timeout=10)
    response.raise_for_status()
    for project in response.json():
        detail = session.get(
            f"{lane.sandbox.gitlab_url}/api/v4/projects/{project['id']}", timeout=10
        )
        detail.raise_for_status()
        policy = detail.json()["container_expiration_policy"]
        found[detail.json()["path_with_namespace"]] = {k: policy[k] for k in POLICY_FIELDS}
    session.close()
    return found


@pytest.fixture(scope="module")
def enable_baseline(lanes, tmp_path_factory) -> tuple[list[Seen], dict[str, dict]]:
    lane = lanes[0]
    lane.reset()
    before = policies(lane)
    assert before[PROJECT] == {
        "enabled": False,
        "cadence": "1d",
        "keep_n": 10,
        "older_than": "90d",
        "name_regex": ".*",
        "name_regex_keep": None,
    }  # GitLab's defaults (the demo seeds no policy for apps/web)
    record = lane.run(ENABLE, tmp_path_factory.mktemp("enable"))
    assert record.returncode == 0, record.run.errors()
    after = policies(lane)
    # apps/web is the one disabled policy of a project with images (the demo's seed)
    assert after == {
        **before,
        PROJECT: {**before[PROJECT], "enabled": True, "keep_n": 5, "older_than": "30d"},
    }
    lane.reset()
    assert policies(lane) == before
    return record.log, after


def test_policy_update_converges_after_a_rerun(lanes, enable_baseline, tmp_path):
    log, expected = enable_baseline
    assert any(s.method == "PUT" for s in log)
    items = [(i, fault) for i in range(len(log)) for fault in FAULTS]

    def scenario(lane: Lane, item: object, number: int) -> Outcome:
        index, fault = item  # type: ignore[misc]
        target = log[index]
        lane.reset()
        state_dir = Path(tempfile.mkdtemp(prefix=f"p{number}-", dir=tmp_path))
        first = lane.run(ENABLE, state_dir, [rule_at(log, index, fault, lane.stable)])
        fired = any(s.fault == fault for s in first.log)
        rerun = lane.run(ENABLE, state_dir)
        now = policies(lane)
        problems = [
            f"{path}: expected {expected[path]} got {now.get(path)}"
            for path in expected
            if now.get(path) != expected[path]
        ]
        note = f"exit {first.returncode}, rerun exit {rerun.returncode}"
        return Outcome(f"{fault} at #{index} {target.method} {target.path}", problems, fired, note)

    assert_all_pass(run_scenarios(lanes, items, scenario))


def test_storage_reader_sees_dangling_tags(tmp_path):
    """tag_links marks a tag whose manifest revision is gone (what a lost DELETE can leave)."""
    repo = tmp_path / "docker/registry/v2/repositories/g/p/_manifests"
    digest = "sha256:" + "ab" * 32
    (repo / "tags/t1/current").mkdir(parents=True)
    (repo / "tags/t1/current/link").write_text(digest)
    (repo / "tags/t2/current").mkdir(parents=True)
    (repo / "tags/t2/current/link").write_text(digest)
    (repo / f"revisions/sha256/{'ab' * 32}").mkdir(parents=True)
    assert tag_links(tmp_path, ["g/p"]) == {
        "g/p": {"t1": digest + DANGLING, "t2": digest + DANGLING}
    }
    (repo / f"revisions/sha256/{'ab' * 32}/link").write_text(digest)
    assert tag_links(tmp_path, ["g/p"]) == {"g/p": {"t1": digest, "t2": digest}}
    assert differences({"g/p": {"t1": digest}}, {"g/p": {"t1": digest, "t2": digest}}) == [
        f"g/p:t2 expected {digest[:19]} got (no tag)"
    ]


def test_rules_target_the_same_request_in_another_run():
    """rule_at counts matches the way the proxy does; only run-specific parts are wildcards."""
    seeded, dummy, other = "a" * 64, "b" * 64, "c" * 64
    upload = (
        "/v2/g/p/blobs/uploads/0a1b2c3d-0000-4000-8000-00000000abcd?_state=xY-z&digest=sha256%3A"
    )
    log = [
        Seen(0, "registry", "GET", f"/v2/g/p/blobs/sha256:{seeded}"),
        Seen(1, "registry", "DELETE", f"/v2/g/p/manifests/sha256:{dummy}"),
        Seen(2, "registry", "PUT", upload + dummy),
        Seen(3, "registry", "GET", f"/v2/g/p/blobs/sha256:{seeded}"),
        Seen(4, "registry", "DELETE", f"/v2/g/p/manifests/sha256:{dummy}"),
    ]
    rule = rule_at(log, 4, "kill_before", stable={seeded})
    assert (rule.method, rule.nth, rule.proxy) == ("DELETE", 2, "registry")
    assert rule.matches("registry", "DELETE", f"/v2/g/p/manifests/sha256:{other}")
    assert not rule.matches("gitlab", "DELETE", f"/v2/g/p/manifests/sha256:{other}")
    put = rule_at(log, 2, "503", stable={seeded})
    later = "/v2/g/p/blobs/uploads/99999999-1111-4222-8333-444444444444?_state=QQ&digest=sha256%3A"
    assert put.matches("registry", "PUT", later + other)
    read = rule_at(log, 0, "503", stable={seeded})
    assert read.matches("registry", "GET", f"/v2/g/p/blobs/sha256:{seeded}")
    assert not read.matches("registry", "GET", f"/v2/g/p/blobs/sha256:{other}")
    assert [repeated_read(log, i) for i in range(5)] == [False, False, False, True, False]
