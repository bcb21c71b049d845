"""Applying a cleanup plan and restoring from its audit log, against the REAL registry.

Results are checked with skopeo (an independent client) where it matters:
every tag that was not planned must still resolve to its old digest.
"""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import pytest

from regops.errors import RegistryError
from regops.http import TokenBucket
from regops.ops.apply import DeleteTarget, apply_plan
from regops.ops.audit import AuditWriter, read_audit_log
from regops.ops.restore import restore_from_audit
from regops.registry.client import RegistryClient
from regops.registry.tokens import KeyAuth
from tests.images import build_index, push_image, push_index, simple_image
from tests.skopeo import skopeo_digest

pytestmark = pytest.mark.registry
_repo_numbers = itertools.count()


@pytest.fixture
def client(registry_server, minter) -> RegistryClient:
    return RegistryClient(registry_server.url, KeyAuth(minter))


@pytest.fixture
def connection(client):
    """What apply and restore take: the registry client."""
    return client


@pytest.fixture
def repo() -> str:
    return f"group/apply-{next(_repo_numbers)}-{time.monotonic_ns() % 10**6}"


def seed(client, repo: str) -> dict[str, str]:
    """Tags: old-1..old-3 (distinct), keep-1, and 'twin' sharing old-1's digest."""
    digests = {}
    for number, tag in enumerate(["old-1", "old-2", "old-3", "keep-1"], start=1):
        digests[tag] = str(push_image(client, repo, simple_image(number), [tag]))
    image_one = simple_image(1)
    push_image(client, repo, image_one, ["twin"])
    digests["twin"] = str(image_one.digest)
    return digests


def targets(repo: str, digests: dict[str, str], tags) -> list[DeleteTarget]:
    return [DeleteTarget(repo, t, digests[t], project_id=7, project_path="group") for t in tags]


def test_apply_deletes_exactly_the_plan_and_nothing_else(
    client, connection, repo, registry_server, minter, tmp_path
):
    digests = seed(client, repo)
    audit = tmp_path / "audit.jsonl"
    result = apply_plan(targets(repo, digests, ["old-1", "old-2"]), connection, audit_path=audit)

    assert result.ok, result
    assert sorted(o.tag for o in result.deleted) == ["old-1", "old-2"]
    assert sorted(client.tags(repo)) == ["keep-1", "old-3", "twin"]
    for tag in ("keep-1", "old-3", "twin"):  # twin shares old-1's digest and must survive
        assert skopeo_digest(registry_server.host, repo, tag, minter) == digests[tag]
    assert skopeo_digest(registry_server.host, repo, "old-1", minter) is None

    log = read_audit_log(audit)
    assert [(r.event, r.tag) for r in log] == [
        ("intent", "old-1"),
        ("intent", "old-2"),
        ("result", "old-1"),
        ("result", "old-2"),
    ]
    assert all(r.run_id == result.run_id for r in log)
    assert log.records[0].raw_manifest == simple_image(1).manifest


def test_a_tag_repushed_since_planning_is_skipped(client, connection, repo, tmp_path):
    digests = seed(client, repo)
    push_image(client, repo, simple_image(9), ["old-3"])  # re-pushed after the plan
    result = apply_plan(
        targets(repo, digests, ["old-3", "old-2"]), connection, audit_path=tmp_path / "a.jsonl"
    )
    assert [o.tag for o in result.skipped] == ["old-3"]
    assert result.skipped[0].current_digest == str(simple_image(9).digest)
    assert client.manifest_digest(repo, "old-3") == simple_image(9).digest
    assert sorted(client.tags(repo)) == ["keep-1", "old-1", "old-3", "twin"]
    assert client.manifest_digest(repo, "old-1") == digests["old-1"]
    kinds = [(r.event, r.tag) for r in read_audit_log(tmp_path / "a.jsonl")]
    assert ("intent", "old-3") not in kinds  # nothing deleted, nothing to restore


def test_rerunning_the_plan_counts_gone_tags_as_already_gone(client, connection, repo, tmp_path):
    digests = seed(client, repo)
    plan = targets(repo, digests, ["old-1", "old-2"])
    apply_plan(plan[:1], connection, audit_path=tmp_path / "a.jsonl")
    again = apply_plan(plan, connection, audit_path=tmp_path / "a.jsonl")
    assert again.ok
    assert [o.tag for o in again.already_gone] == ["old-1"]
    assert [o.tag for o in again.deleted] == ["old-2"]
    assert sorted(client.tags(repo)) == ["keep-1", "old-3", "twin"]
    assert client.manifest_digest(repo, "twin") == digests["twin"]  # old-1's digest survives


def test_restore_brings_tags_back_with_their_old_digests(
    client, connection, repo, registry_server, minter, tmp_path
):
    digests = seed(client, repo)
    audit = tmp_path / "a.jsonl"
    apply_plan(targets(repo, digests, ["old-1", "old-2", "old-3"]), connection, audit_path=audit)
    assert sorted(client.tags(repo)) == ["keep-1", "twin"]

    dry = restore_from_audit(audit, connection, tags=["old-1"], dry_run=True)
    assert [i.status for i in dry.items] == ["would_restore"]
    assert "old-1" not in client.tags(repo)

    result = restore_from_audit(audit, connection)
    assert result.ok, result
    assert sorted(i.tag for i in result.restored) == ["old-1", "old-2", "old-3"]
    for tag in ("old-1", "old-2", "old-3", "keep-1", "twin"):
        assert skopeo_digest(registry_server.host, repo, tag, minter) == digests[tag]
    again = restore_from_audit(audit, connection)
    assert [i.status for i in again.items] == ["already_present"] * 3 and again.ok


def test_restore_filters_by_project_and_tag(client, connection, repo, tmp_path):
    digests = seed(client, repo)
    audit = tmp_path / "a.jsonl"
    apply_plan(targets(repo, digests, ["old-1", "old-2"]), connection, audit_path=audit)
    assert restore_from_audit(audit, connection, projects=["999"]).items == []
    result = restore_from_audit(audit, connection, projects=["group"], tags=["old-2"])
    assert [i.tag for i in result.restored] == ["old-2"]
    assert "old-1" not in client.tags(repo)


def test_restore_refuses_a_reused_tag_unless_forced(client, connection, repo, tmp_path):
    digests = seed(client, repo)
    audit = tmp_path / "a.jsonl"
    apply_plan(targets(repo, digests, ["old-1"]), connection, audit_path=audit)
    newer = push_image(client, repo, simple_image(42), ["old-1"])
    refused = restore_from_audit(audit, connection)
    assert [i.status for i in refused.not_restored] == ["tag_reused"]
    assert str(newer) in refused.items[0].reason
    assert client.manifest_digest(repo, "old-1") == newer
    forced = restore_from_audit(audit, connection, force=True)
    assert forced.ok and client.manifest_digest(repo, "old-1") == digests["old-1"]


def test_restore_reports_a_garbage_collected_blob(
    client, connection, repo, registry_server, tmp_path
):
    digests = seed(client, repo)
    audit = tmp_path / "a.jsonl"
    apply_plan(targets(repo, digests, ["old-2"]), connection, audit_path=audit)
    layer = simple_image(2).layers[0].digest
    # What garbage collection does to an unreferenced layer: the repository link goes away.
    links = list(
        Path(registry_server.data_dir).rglob(f"repositories/{repo}/_layers/sha256/{layer.hex}")
    )
    assert links, "the layer link to remove was not found"
    for link in links:
        shutil.rmtree(link)
    result = restore_from_audit(audit, connection)
    assert [i.status for i in result.not_restored] == ["blob_gone"]
    assert str(layer) in result.items[0].reason
    assert "old-2" not in client.tags(repo)


def test_restore_reports_a_tampered_manifest(client, connection, repo, tmp_path):
    digests = seed(client, repo)
    audit = tmp_path / "a.jsonl"
    apply_plan(targets(repo, digests, ["old-1"]), connection, audit_path=audit)
    log = read_audit_log(audit)
    import dataclasses

    from regops.ops.audit import encode_manifest

    tampered = tmp_path / "b.jsonl"
    changed = 0
    with AuditWriter(tampered) as writer:
        for record in log:
            if record.manifest:
                record = dataclasses.replace(
                    record, manifest=encode_manifest(record.raw_manifest + b" ")
                )
                changed += 1
            writer.write(record)
    assert changed == 1  # the intent record carries the manifest
    result = restore_from_audit(tampered, connection)
    assert [i.status for i in result.not_restored] == ["digest_mismatch"]
    assert "old-1" not in client.tags(repo)


def test_index_restore_needs_its_children(client, connection, repo, tmp_path):
    index = build_index([simple_image(5), simple_image(6)], oci=True)
    push_index(client, repo, index, ["multi", "multi-2"])
    audit = tmp_path / "a.jsonl"
    plan = [DeleteTarget(repo, t, str(index.digest)) for t in ("multi", "multi-2")]
    result = apply_plan(plan, connection, audit_path=audit)
    assert len(result.deleted) == 2
    restored = restore_from_audit(audit, connection, tags=["multi"])
    assert restored.ok and client.manifest_digest(repo, "multi") == index.digest
    # A child manifest removed (as garbage collection would after an untagged delete):
    client.delete_manifest(repo, index.children[1].digest)
    blocked = restore_from_audit(audit, connection, tags=["multi-2"])
    assert [i.status for i in blocked.items] == ["child_manifest_gone"]
    assert client.tags(repo) == ["multi"]


def test_apply_is_rate_limited(client, connection, repo, tmp_path):
    digests = seed(client, repo)
    started = time.monotonic()
    result = apply_plan(
        targets(repo, digests, ["old-1", "old-2", "old-3"]),
        connection,
        audit_path=tmp_path / "a.jsonl",
        max_requests_per_second=20,
        batch_size=1,
    )
    elapsed = time.monotonic() - started
    assert result.ok and len(result.deleted) == 3
    # Every request is paced: the first 20 (+1) are a burst, the rest come at 20/s.
    assert result.requests > 25
    assert elapsed >= (result.requests - 21) / 20 - 0.02, (elapsed, result.requests)


def test_token_bucket_paces_with_a_fake_clock():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(2, burst=1, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        bucket.take()
    assert now[0] == pytest.approx(2.0)  # 5 requests at 2/s with a burst of 1
    bucket.take(3)  # three at once wait for three tokens
    assert now[0] == pytest.approx(3.5)


class _CommitFails:
    """The real client, but every DELETE of a manifest after the preflight answers 500."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client
        self.deletes = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def delete_manifest(self, repo, digest, **kwargs):
        self.deletes += 1
        if self.deletes > 1:  # the first is the preflight, which must work
            raise RegistryError("DELETE", f"{self._client.url}/v2/{repo}/manifests/x", 500, "boom")
        return self._client.delete_manifest(repo, digest, **kwargs)


def test_a_batch_whose_commit_fails_is_rolled_back(client, repo, registry_server, minter, tmp_path):
    digests = seed(client, repo)
    connection = _CommitFails(client)
    audit = tmp_path / "a.jsonl"
    result = apply_plan(targets(repo, digests, ["old-1", "old-2"]), connection, audit_path=audit)

    assert not result.ok
    assert sorted(o.tag for o in result.rolled_back) == ["old-1", "old-2"]
    assert "boom" in result.rolled_back[0].error
    # every tag is on its own image again, checked by an independent client
    assert sorted(client.tags(repo)) == ["keep-1", "old-1", "old-2", "old-3", "twin"]
    for tag in ("old-1", "old-2", "old-3", "keep-1", "twin"):
        assert skopeo_digest(registry_server.host, repo, tag, minter) == digests[tag]
    results = {r.tag: r.result for r in read_audit_log(audit).results()}
    assert results == {"old-1": "rolled_back", "old-2": "rolled_back"}
