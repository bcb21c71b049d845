"""Interrupted delete batches are settled by recovery, against the REAL registry.

A child process runs ``apply_plan`` and dies (``os._exit``, which skips every
cleanup, as SIGKILL does) at a chosen step of a batch. The parent then runs
recovery and a second apply, and judges the registry with skopeo and the
storage's own link files: every tag not planned keeps its digest, every
planned tag ends deleted, and restore brings each back to its original digest.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from regops.errors import StateError, UnfinishedDeleteError
from regops.ops.apply import DeleteTarget, apply_plan
from regops.ops.audit import read_audit_log
from regops.ops.cleanup import KEEP_PLACEHOLDER, plan_cleanup
from regops.ops.journal import Journal
from regops.ops.recovery import FINISHED_UNRECORDED, recover_pending, recover_placeholders
from regops.ops.restore import restore_from_audit
from regops.registry.client import RegistryClient
from regops.registry.safe_delete import Placeholder
from regops.registry.tokens import KeyAuth
from tests import oracle
from tests.fixtures_registry import TEST_ISSUER, TEST_SERVICE
from tests.images import push_image, simple_image
from tests.skopeo import skopeo_digest

pytestmark = pytest.mark.registry
_numbers = itertools.count()
KILLED = 137  # what the child exits with at its crash point
PLANNED = ["old-1", "old-2", "old-3"]
KEPT = ["keep-1", "twin"]  # twin shares old-1's image


@pytest.fixture
def client(registry_server, minter) -> RegistryClient:
    return RegistryClient(registry_server.url, KeyAuth(minter))


@pytest.fixture
def repo() -> str:
    return f"group/recover-{next(_numbers)}-{time.monotonic_ns() % 10**6}"


def seed(client: RegistryClient, repo: str) -> dict[str, str]:
    digests = {}
    for number, tag in enumerate(["old-1", "old-2", "old-3", "keep-1"], start=1):
        digests[tag] = str(push_image(client, repo, simple_image(200 + number), [tag]))
    digests["twin"] = str(push_image(client, repo, simple_image(201), ["twin"]))
    return digests


def storage_tags(registry_server, repo: str) -> dict[str, str]:
    """Tag -> digest read from the registry's own link files (not through regops)."""
    return oracle.tag_links(registry_server.storage_path, repo)


CHILD = textwrap.dedent(
    """
    import os, sys, json
    from types import SimpleNamespace
    from regops.ops.apply import DeleteTarget, apply_plan
    from regops.ops.journal import Journal
    from regops.registry.client import RegistryClient
    from regops.registry.tokens import KeyAuth, TokenMinter, load_signing_key

    args = json.loads(sys.argv[1])
    minter = TokenMinter(load_signing_key(args["key"]), args["issuer"], args["service"])
    client = RegistryClient(args["url"], KeyAuth(minter))
    method, crash_at = args["method"], args["crash_at"]

    class Dying:
        calls = 0
        def __getattr__(self, name):
            real = getattr(client, name)
            if name != method:
                return real
            def call(*a, **k):
                Dying.calls += 1
                if Dying.calls == crash_at and args["when"] == "before":
                    os._exit(137)
                result = real(*a, **k)
                if Dying.calls == crash_at and args["when"] == "after":
                    os._exit(137)
                return result
            return call

    targets = [DeleteTarget(args["repo"], t, d) for t, d in args["targets"]]
    apply_plan(targets, Dying(), audit_path=args["audit"],
               journal=Journal(args["journal"]), batch_size=args["batch_size"])
    """
)


def run_dying_apply(registry_server, signing_material, repo, digests, tmp_path, **crash):
    args = {
        "key": str(signing_material.key_path),
        "issuer": TEST_ISSUER,
        "service": TEST_SERVICE,
        "url": registry_server.url,
        "repo": repo,
        "targets": [(t, digests[t]) for t in PLANNED],
        "audit": str(tmp_path / "audit.jsonl"),
        "journal": str(tmp_path / "pending"),
        "batch_size": 10,
        **crash,
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, timeout=60
    )
    return done.returncode


# (method, which call, before/after it): every step of a placeholder batch.
CRASH_POINTS = [
    ("delete_manifest", 1, "before"),  # intents written, nothing changed
    ("upload_blob", 1, "after"),  # placeholder uploaded, no tag moved
    ("put_manifest", 1, "after"),  # one tag on the placeholder
    ("put_manifest", 3, "after"),  # every tag on the placeholder
    ("tag_digests", 1, "after"),  # checked, not committed
    ("delete_manifest", 2, "before"),  # right before the commit
    ("delete_manifest", 2, "after"),  # committed, results not written
]


@pytest.mark.parametrize(("method", "crash_at", "when"), CRASH_POINTS)
def test_a_run_killed_at_any_step_is_settled_and_the_rerun_ends_as_one_run(
    client, repo, registry_server, signing_material, minter, tmp_path, method, crash_at, when
):
    digests = seed(client, repo)
    before = storage_tags(registry_server, repo)
    code = run_dying_apply(
        registry_server,
        signing_material,
        repo,
        digests,
        tmp_path,
        method=method,
        crash_at=crash_at,
        when=when,
    )
    assert code == KILLED
    journal = Journal(tmp_path / "pending")
    assert len(list((tmp_path / "pending").glob("*.json"))) == 1  # the dead run's batch

    report = recover_pending(client, journal=journal)
    assert report.ok, report
    assert list((tmp_path / "pending").glob("*.json")) == []
    # Settled: no tag on a placeholder; kept tags untouched; planned ones either
    # back on their own image (rolled back) or gone (committed before the kill).
    now = storage_tags(registry_server, repo)
    for tag in KEPT:
        assert now[tag] == before[tag]
    committed = (method, crash_at, when) == ("delete_manifest", 2, "after")
    for tag in PLANNED:
        assert now.get(tag) == (None if committed else before[tag]), (tag, now)

    # The rerun deletes the plan; the registry ends as one uninterrupted run leaves it.
    audit = tmp_path / "audit.jsonl"
    rerun = [DeleteTarget(repo, t, digests[t]) for t in PLANNED]
    result = apply_plan(rerun, client, audit_path=audit, journal=journal)
    assert result.ok, result
    assert storage_tags(registry_server, repo) == {t: before[t] for t in KEPT}
    for tag in KEPT:
        assert skopeo_digest(registry_server.host, repo, tag, minter) == digests[tag]
    for tag in PLANNED:
        assert skopeo_digest(registry_server.host, repo, tag, minter) is None

    # Restore brings every planned tag back to its original digest.
    restored = restore_from_audit(audit, client)
    assert restored.ok, restored
    assert storage_tags(registry_server, repo) == before


def test_recovery_leaves_a_live_runs_batch_alone(client, repo, tmp_path):
    journal = Journal(tmp_path / "pending")
    from regops.ops.journal import BatchEntry

    entry = BatchEntry("run", "run-1", repo, "placeholder", ("a",), "x.jsonl", client.url)
    with journal.begin(entry):
        report = recover_pending(client, journal=journal)
        assert report.batches == []  # locked by this (live) process
        assert len(list((tmp_path / "pending").glob("*.json"))) == 1


def test_an_unwritable_journal_stops_before_any_change(client, repo, registry_server, tmp_path):
    digests = seed(client, repo)
    before = storage_tags(registry_server, repo)
    blocked = tmp_path / "pending"
    blocked.write_text("not a folder")  # the journal folder path is a file: ENOTDIR/EEXIST
    targets = [DeleteTarget(repo, t, digests[t]) for t in PLANNED]
    with pytest.raises(StateError) as info:
        apply_plan(
            targets,
            client,
            audit_path=tmp_path / "a.jsonl",
            journal=Journal(blocked),
        )
    assert str(blocked) in str(info.value) and "\n" not in str(info.value)
    assert storage_tags(registry_server, repo) == before


def _strand(client: RegistryClient, repo: str, tags: list[str]) -> Placeholder:
    """Put tags on a placeholder the way an old, interrupted regops run left them."""
    placeholder = Placeholder.create()
    client.upload_blob(repo, placeholder.config)
    for tag in tags:
        client.put_manifest(repo, tag, placeholder.manifest, "application/vnd.docker."
                            "distribution.manifest.v2+json")  # fmt: skip
    return placeholder


def test_plan_sets_tags_on_a_placeholder_aside_and_apply_refuses_it():
    class T(SimpleNamespace):
        pass

    from datetime import datetime, timedelta, timezone

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    tags = [
        T(name=f"t{i}", created_at=now - timedelta(days=i), placeholder=False) for i in range(4)
    ]
    tags.append(T(name="stranded", created_at=None, placeholder=True, digest="sha256:" + "a" * 64))
    plan = plan_cleanup(tags, {"name_regex_delete": ".*", "keep_n": 2}, now=now)
    # without the placeholder the newest two (t0, t1) are kept and t2, t3 deleted;
    # counted as "now" the stranded tag would push t1 out of keep_n
    assert plan.names_to_delete == ["t2", "t3"]
    assert plan.kept == {"stranded": KEEP_PLACEHOLDER, "t0": "keep_n", "t1": "keep_n"}
    assert plan.placeholders == {"stranded": "sha256:" + "a" * 64}
    assert any("placeholder" in w for w in plan.warnings)
    with pytest.raises(UnfinishedDeleteError, match="stranded"):
        apply_plan(plan, object())


def test_recover_placeholders_rolls_back_from_the_audit_log_or_finishes(
    client, repo, registry_server, tmp_path, minter
):
    digests = seed(client, repo)
    before = storage_tags(registry_server, repo)
    audit = tmp_path / "audit.jsonl"
    # A batch whose intents are logged, then stranded (as an old regops could leave it).
    journal = Journal(tmp_path / "pending")
    rerun = [DeleteTarget(repo, t, digests[t]) for t in ["old-1", "old-2"]]

    class FailingCommit:
        def __init__(self):
            self.deletes = 0

        def __getattr__(self, name):
            return getattr(client, name)

        def delete_manifest(self, *a, **k):
            self.deletes += 1
            if self.deletes > 1:
                raise KeyboardInterrupt  # dies at the commit, its settle failing too

            return client.delete_manifest(*a, **k)

        def put_manifest(self, repo_, tag, raw, media_type):
            if self.deletes > 1:
                raise KeyboardInterrupt  # and the roll back cannot run
            return client.put_manifest(repo_, tag, raw, media_type)

    with pytest.raises(KeyboardInterrupt):
        apply_plan(rerun, FailingCommit(), audit_path=audit,
                   journal=journal)  # fmt: skip
    stranded = storage_tags(registry_server, repo)
    placeholder = stranded["old-1"]
    assert stranded["old-2"] == placeholder != before["old-1"]
    # The journal is lost (another host); a tag nobody logged is on the same placeholder.
    for path in (tmp_path / "pending").iterdir():
        path.unlink()
    client.put_manifest(repo, "unlogged", client.get_manifest(repo, placeholder).raw,
                        "application/vnd.docker.distribution.manifest.v2+json")  # fmt: skip

    report = recover_placeholders(
        client,
        repo,
        {"old-1": placeholder, "old-2": placeholder, "unlogged": placeholder},
        audit_paths=[audit],
    )
    assert report.ok, report
    results = report.batches[0].results
    assert results == {"old-1": "rolled_back", "old-2": "rolled_back", "unlogged":
                       FINISHED_UNRECORDED}  # fmt: skip
    after = storage_tags(registry_server, repo)
    assert after == before  # logged tags back on their images; "unlogged" went with it
    assert skopeo_digest(registry_server.host, repo, "unlogged", minter) is None


def test_restore_skips_placeholder_intents_and_overwrites_a_stranded_tag(
    client, repo, registry_server, tmp_path
):
    """An old regops could log a placeholder as a tag's manifest on a rerun; restore must
    bring back the image from the first intent, over the placeholder."""
    from regops.ops.audit import AuditRecord, AuditWriter, encode_manifest

    digests = seed(client, repo)
    original = client.get_manifest(repo, "old-1")
    placeholder = _strand(client, repo, ["old-1"])
    audit = tmp_path / "old.jsonl"
    with AuditWriter(audit) as writer:
        for run, raw, digest in (
            ("run-1", original.raw, digests["old-1"]),
            ("run-2", placeholder.manifest, str(placeholder.digest)),
        ):
            writer.write(
                AuditRecord(
                    event="intent",
                    run_id=run,
                    repository=repo,
                    tag="old-1",
                    digest=digest,
                    media_type=original.media_type,
                    manifest=encode_manifest(raw),
                )
            )
    result = restore_from_audit(audit, client)
    assert [(i.tag, i.status) for i in result.items] == [("old-1", "restored")]
    assert storage_tags(registry_server, repo)["old-1"] == digests["old-1"]
    with pytest.raises(Exception, match="run-9"):
        restore_from_audit(audit, client, run="run-9")
    again = restore_from_audit(audit, client, run="run-1")
    assert [i.status for i in again.items] == ["already_present"]
    assert read_audit_log(audit).records[0].run_id == "run-1"
