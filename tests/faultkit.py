"""Fault scenarios against a sandbox: shared by tests/test_faults.py and bench/faults.py.

A :class:`Lane` is one sandbox (the real registry + the GitLab stand-in,
started from a copy of a seeded data directory) behind a
:class:`~tests.faultproxy.FaultGroup`, with a :class:`~tests.clirunner.CliRunner`
to run ``regops`` commands through the proxies. Between scenarios the lane
puts the registry's storage directory back as it was seeded, with the
registry running: it runs without a blob descriptor cache (regops.registry.server
configures none), so it keeps nothing in memory that storage does not say.

What a run left is read straight from the registry's storage files
(:func:`tag_links`), never through regops.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from regops.sandbox import Sandbox
from tests.clirunner import CliRun, CliRunner
from tests.faultproxy import FaultGroup, Rule, Seen

V2 = Path("docker", "registry", "v2")
CLIENT_TIMEOUT = 1.0  # seconds: REGOPS_TIMEOUT (read timeout) of every run, so stalls cost little
STALL_MARGIN = 0.3  # seconds a stalled request is held past the client's read timeout
SUBPROCESS_TIMEOUT = 120  # seconds for one `python -m regops` run on loopback
DANGLING = " (dangling)"  # marks a tag whose link names a manifest the repository lost
# Parts of a request target that differ from run to run: throw-away manifest digests,
# upload session ids and their state tokens.
_VARIABLE = (
    (re.compile(r"sha256(:|%3A)[0-9a-f]{64}"), "sha256(:|%3A)[0-9a-f]{64}"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "[0-9a-f-]{36}"),
    (re.compile(r"_state=[^&]*"), "_state=[^&]*"),
)

State = dict[str, dict[str, str]]  # repository -> tag -> digest
Snapshot = dict[str, "tuple[int, int] | None"]  # relative path -> (size, mtime_ns); None: a dir


# ---------------------------------------------------------------------- storage


def project_repositories(storage: Path, project: str) -> list[str]:
    """Repository paths of ``project`` (itself and below) found in the storage tree."""
    base = storage / V2 / "repositories"
    found = []
    for folder, dirs, _ in os.walk(base):
        if "_manifests" in dirs:
            repo = os.path.relpath(folder, base)
            if repo == project or repo.startswith(project + "/"):
                found.append(repo)
        dirs[:] = [d for d in dirs if not d.startswith("_")]
    return sorted(found)


def tag_links(storage: Path, repositories: Iterable[str]) -> State:
    """Tag -> digest for each repository, from ``_manifests/tags/<tag>/current/link``.

    A tag whose manifest revision link is gone (the registry lists it but
    cannot serve it) gets :data:`DANGLING` after its digest.
    """
    state: State = {}
    for repo in repositories:
        manifests = storage / V2 / "repositories" / repo / "_manifests"
        tags: dict[str, str] = {}
        tags_dir = manifests / "tags"
        for tag in sorted(os.listdir(tags_dir)) if tags_dir.is_dir() else ():
            link = tags_dir / tag / "current" / "link"
            if not link.is_file():
                continue
            digest = link.read_text().strip()
            revision = manifests / "revisions" / "sha256" / digest.split(":")[-1] / "link"
            tags[tag] = digest if revision.is_file() else digest + DANGLING
        state[repo] = tags
    return state


def differences(actual: State, expected: State) -> list[str]:
    """Human-readable differences ``repo:tag expected -> actual`` (empty when equal)."""
    lines = []
    for repo in sorted(set(actual) | set(expected)):
        have, want = actual.get(repo, {}), expected.get(repo, {})
        for tag in sorted(set(have) | set(want)):
            if have.get(tag) != want.get(tag):
                lines.append(
                    f"{repo}:{tag} expected {_short(want.get(tag))} got {_short(have.get(tag))}"
                )
    return lines


def _short(digest: str | None) -> str:
    if digest is None:
        return "(no tag)"
    return digest[:19] + (DANGLING if digest.endswith(DANGLING) else "")


def restore_tree(template: Path, target: Path, wanted: Snapshot | None = None) -> None:
    """Make ``target`` the same tree as ``template`` again, touching only what changed.

    A file counts as unchanged while its size and modification time match the
    template's (the copy kept them; a registry write changes the time); the
    rest is deleted or copied back. ``wanted``: the template's :func:`snapshot`,
    when already taken.
    """
    wanted = wanted if wanted is not None else snapshot(template)
    have = snapshot(target)
    for relative in sorted(set(have) - set(wanted), reverse=True):  # children first
        path = target / relative
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for relative, stamp in sorted(wanted.items()):
        if stamp is None:
            (target / relative).mkdir(parents=True, exist_ok=True)
        elif have.get(relative) != stamp:
            shutil.copy2(template / relative, target / relative)


def snapshot(root: Path) -> Snapshot:
    """Relative path -> (size, mtime_ns) for files, None for directories."""
    found: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        base = os.path.relpath(folder, root)
        for name in dirs:
            found[os.path.normpath(os.path.join(base, name))] = None
        for name in files:
            info = os.stat(os.path.join(folder, name))
            found[os.path.normpath(os.path.join(base, name))] = (info.st_size, info.st_mtime_ns)
    return found


# ---------------------------------------------------------------------- requests


def pattern(path: str, stable: Collection[str] = ()) -> str:
    """A regex matching ``path`` and the same request in another run.

    Digests in ``stable`` (hex, e.g. every blob seeded: a config read names
    the same blob in every run) stay as they are; other digests (throw-away
    manifests), upload ids and upload state tokens match any value.
    """
    parts, last = [], 0
    spans = sorted(
        (m.start(), m.end(), replacement)
        for regex, replacement in _VARIABLE
        for m in regex.finditer(path)
        if m.group(0)[-64:] not in stable
    )
    for start, end, replacement in spans:
        if start < last:
            continue
        parts.append(re.escape(path[last:start]))
        parts.append(replacement)
        last = end
    parts.append(re.escape(path[last:]))
    return "".join(parts)


def kind(seen: Seen) -> str:
    """A request's kind: proxy, method and path with names, tags and ids generalised.

    ``registry GET /v2/<repo>/manifests/<ref>``, ``gitlab GET
    /api/v4/projects/<id>/registry/repositories``: what a "step" of a scan is.
    """
    path = seen.path.split("?", 1)[0]
    if seen.proxy == "registry" and path.startswith("/v2/") and path != "/v2/":
        for marker in ("/manifests/", "/blobs/uploads/", "/blobs/", "/tags/"):
            if marker in path:
                tail = path.split(marker, 1)[1]
                tail = "" if marker == "/blobs/uploads/" and not tail else "<ref>"
                path = f"/v2/<repo>{marker}{tail}"
                break
    else:
        path = re.sub(r"/\d+(?=/|$)", "/<id>", path)
        path = re.sub(r"/projects/[^/]+%2F[^/]+", "/projects/<path>", path)
    return f"{seen.proxy} {seen.method} {path}"


def rule_at(log: Sequence[Seen], index: int, fault: str, stable: Collection[str] = ()) -> Rule:
    """The rule that gives request ``index`` of ``log`` the fault, in a run that repeats it.

    ``stable``: digests that name the same thing in every run (see :func:`pattern`).
    """
    target = log[index]
    regex = pattern(target.path, stable)
    nth = sum(
        1
        for seen in log[: index + 1]
        if seen.proxy == target.proxy
        and seen.method == target.method
        and re.fullmatch(regex, seen.path)
    )
    return Rule(fault, target.method, regex, nth, target.proxy)


def repeated_read(log: Sequence[Seen], index: int) -> bool:
    """True when request ``index`` is a read the log already made, word for word.

    Concurrent reads of one blob sometimes go out twice; a run that reads it
    once never makes the repeat, so a fault meant for the repeat cannot fire.
    """
    target = log[index]
    return target.method in ("GET", "HEAD") and any(
        (s.proxy, s.method, s.path) == (target.proxy, target.method, target.path)
        for s in log[:index]
    )


# ---------------------------------------------------------------------- lane


@dataclass
class RunRecord:
    """One command run in a lane: the run, the exit status, the requests it made."""

    run: CliRun
    returncode: int
    log: list[Seen] = field(default_factory=list)


class Lane:
    """A sandbox behind fault proxies, reset to the seeded state between scenarios."""

    def __init__(self, template: Path, work: Path, *, timeout: float = CLIENT_TIMEOUT) -> None:
        self.template = template
        self.work = work
        self.timeout = timeout
        self.data = work / "data"
        shutil.copytree(template, self.data, ignore=shutil.ignore_patterns("*.log", "_uploads"))
        self.sandbox = Sandbox(self.data)
        self.group = FaultGroup(stall_seconds=timeout + STALL_MARGIN)
        self.cli: CliRunner | None = None
        self._runs = 0
        self._storage_template = template / "registry" / "storage"
        self._storage_snapshot = snapshot(self._storage_template)
        blobs = self._storage_template / V2 / "blobs" / "sha256"
        # Seeded blobs (hex digests): the same in every run, unlike throw-away manifests.
        self.stable = frozenset(d.name for d in blobs.glob("*/*") if d.is_dir())

    def start(self) -> Lane:
        self.sandbox.start()
        self.gitlab = self.group.add(self.sandbox.gitlab_url, "gitlab")
        self.registry = self.group.add(self.sandbox.registry_url, "registry")
        self.cli = CliRunner()
        self._policies = self._policy_snapshot()
        return self

    def stop(self) -> None:
        if self.cli is not None:
            self.cli.close()
            self.cli = None
        self.group.stop()
        self.sandbox.stop()

    def __enter__(self) -> Lane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ state

    @property
    def storage(self) -> Path:
        return self.sandbox.storage_path

    def reset(self) -> None:
        """The registry storage and every project's policy back as seeded."""
        restore_tree(self._storage_template, self.storage, self._storage_snapshot)
        with self.sandbox.state.lock:
            for project in self.sandbox.state.projects.values():
                project.policy = dict(self._policies[project.id])

    def untouched(self, state_dir: Path) -> bool:
        """True when a run left no trace: storage as seeded, nothing but locks in ``state_dir``."""
        if snapshot(self.storage) != self._storage_snapshot:
            return False
        files = [p for p in state_dir.rglob("*") if p.is_file()] if state_dir.exists() else []
        return all(p.parent.name == "locks" and p.suffix == ".lock" for p in files)

    def _policy_snapshot(self) -> dict[int, dict]:
        with self.sandbox.state.lock:
            return {p.id: dict(p.policy) for p in self.sandbox.state.projects.values()}

    def env(self, state_dir: Path, user: str = "admin") -> dict[str, str]:
        """The environment of a run: the sandbox's, pointed at the proxies."""
        home = self.work / "home"
        home.mkdir(exist_ok=True)
        return {
            **self.sandbox.env(user),
            "GITLAB_URL": self.gitlab.url,
            "REGOPS_REGISTRY_URL": self.registry.url,
            "REGOPS_STATE_DIR": str(state_dir),
            "REGOPS_TIMEOUT": str(self.timeout),
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / "cache"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }

    # ------------------------------------------------------------------ runs

    def run(
        self,
        argv: Sequence[str],
        state_dir: Path,
        rules: Sequence[Rule] = (),
        *,
        rate: float = 0.0,
        kinds: Iterable[str] = (),
        seed: int | None = None,
        user: str = "admin",
        env: Mapping[str, str] | None = None,
    ) -> RunRecord:
        """Run ``regops <argv>`` through the proxies with these faults armed."""
        assert self.cli is not None, "start() the lane first"
        self._runs += 1
        self.group.arm(rules, rate=rate, kinds=kinds, seed=seed)
        environment = dict(env) if env is not None else self.env(state_dir, user)
        run = self.cli.start(argv, environment, self.work / "out")
        self.group.set_pid(run.pid)
        code = self.cli.wait(run)
        log = list(self.group.log)
        self.group.arm()
        return RunRecord(run, code, log)

    def run_subprocess(self, argv: Sequence[str], state_dir: Path) -> RunRecord:
        """Run ``python -m regops <argv>`` (no fork server) through the proxies, no faults."""
        self.group.arm()
        out = self.work / "out"
        out.mkdir(parents=True, exist_ok=True)
        stdout, stderr = out / "subprocess.out", out / "subprocess.err"
        with open(stdout, "wb") as out_file, open(stderr, "wb") as err_file:
            done = subprocess.run(
                [sys.executable, "-m", "regops", *argv],
                env=self.env(state_dir),
                stdout=out_file,
                stderr=err_file,
                timeout=SUBPROCESS_TIMEOUT,
                check=False,
            )
        log = list(self.group.log)
        return RunRecord(
            CliRun(list(argv), -1, stdout, stderr, done.returncode), done.returncode, log
        )
