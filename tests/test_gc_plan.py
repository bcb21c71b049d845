"""gc plan against the real collector: same numbers as ``garbage-collect --dry-run [-m]``,
and the bytes it says a real run frees are the bytes that disappear, on the filesystem
and the S3 driver (moto), for storages pushed by regops and skopeo.

The collector (``docker-registry garbage-collect``) and file listings made here with
os.walk / boto3 are the oracles; nothing expected comes from regops.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from regops.ops.gc import plan
from regops.registry.client import RegistryClient
from regops.registry.configfile import RegistryConfig
from regops.registry.tokens import KeyAuth
from regops.sandbox import images
from regops.sandbox.registry_server import RegistryServer
from tests.fixtures_registry import TEST_ISSUER, TEST_SERVICE, UNUSED_REALM
from tests.fixtures_storage import (
    V2,
    delete_file,
    list_files,
    read_file,
    registry_for,
    skopeo_pulls,
)
from tests.test_charts import png_text

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]

SUMMARY = re.compile(r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible", re.M)
BLOB_LINE = re.compile(r"^blob eligible for deletion: (\S+)$", re.M)
MANIFEST_LINE = re.compile(r"^manifest eligible for deletion: (\S+)$", re.M)
REVISION = re.compile(
    rf"^{V2}/repositories/(.+)/_manifests/revisions/sha256/([0-9a-f]{{64}})/link$"
)
TAG_INDEX = re.compile(
    rf"^{V2}/repositories/(.+)/_manifests/tags/[^/]+/index/sha256/([0-9a-f]{{64}})/link$"
)
BLOB_DATA = re.compile(rf"^{V2}/blobs/sha256/[0-9a-f]{{2}}/([0-9a-f]{{64}})/data$")
FLAGS = {False: ("--dry-run",), True: ("--dry-run", "-m")}


def collector_says(store, untagged: bool) -> tuple[tuple[int, ...], set[str], list[str]]:
    done = store.collector(*FLAGS[untagged])
    assert done.returncode == 0, done.stderr[-500:]
    counts = tuple(int(n) for n in SUMMARY.findall(done.stdout)[-1])
    return counts, set(BLOB_LINE.findall(done.stdout)), MANIFEST_LINE.findall(done.stdout)


def plan_of(store, untagged: bool):
    backend = RegistryConfig.load(store.config_path).backend()
    try:
        return plan(backend, untagged=untagged)
    finally:
        backend.close()


def image_blobs(image: images.Image) -> set[str]:
    return {str(image.digest), str(image.config_digest), *(str(x.digest) for x in image.layers)}


@pytest.mark.parametrize("untagged", [False, True], ids=["dry-run", "dry-run-m"])
def test_plan_numbers_equal_the_collectors_dry_run(gc_store, untagged):
    counts, blobs, manifests = collector_says(gc_store, untagged)
    result = plan_of(gc_store, untagged)
    assert result.collector_error is None
    assert result.counts == counts
    assert set(result.eligible_blobs) == blobs
    assert sorted(d for _repo, d in result.eligible_manifests) == sorted(manifests)
    # the scenario really holds the cases (numbers checked by hand against the pushes)
    deleted = image_blobs(images.simple_image(907))
    if not untagged:
        assert blobs == deleted  # only the deleted tag's manifest, config and layer
        assert counts[2] == 0
    else:
        untagged_images = [images.simple_image(n) for n in (904, 905)]
        children = [
            images.simple_image(910, oci=True, architecture="amd64"),
            images.simple_image(911, oci=True, architecture="arm64"),
            images.simple_image(920),
            images.simple_image(921, architecture="arm64"),
            images.simple_image(931, architecture="arm64"),
        ]
        expected = set(deleted)
        for image in untagged_images:
            expected |= image_blobs(image)
        for child in children:  # the list keeps the child manifest; -m sweeps the rest
            expected |= image_blobs(child) - {str(child.digest)}
        assert blobs == expected
        # 2 untagged in apps/single, 2 children each in multi/oci, multi/src,
        # multi/docker, and the untagged arm64 child of multi/pinned
        assert counts[2] == 9


def test_plan_json_carries_the_collectors_three_numbers(gc_store):
    counts, _blobs, _manifests = collector_says(gc_store, True)
    document = json.loads(plan_of(gc_store, True).to_json())
    assert (
        document["blobs_marked"],
        document["blobs_eligible"],
        document["manifests_eligible"],
    ) == counts
    assert document["bytes_eligible"] > 0


def _intact(files: dict[str, int], store, repo: str, tag: str) -> bool:
    """The tag's manifest, and everything it references (children's too), are stored."""
    link = f"{V2}/repositories/{repo}/_manifests/tags/{tag}/current/link"
    if link not in files:
        return False
    digest = read_file(store, link).decode()

    def present(d: str) -> bool:
        hexpart = d.split(":", 1)[1]
        return f"{V2}/blobs/sha256/{hexpart[:2]}/{hexpart}/data" in files

    def revision(d: str) -> bool:
        hexpart = d.split(":", 1)[1]
        return f"{V2}/repositories/{repo}/_manifests/revisions/sha256/{hexpart}/link" in files

    def complete(d: str) -> bool:
        if not (present(d) and revision(d)):
            return False
        hexpart = d.split(":", 1)[1]
        document = json.loads(read_file(store, f"{V2}/blobs/sha256/{hexpart[:2]}/{hexpart}/data"))
        if "manifests" in document:
            return all(complete(m["digest"]) for m in document["manifests"])
        refs = [document["config"]["digest"], *(x["digest"] for x in document["layers"])]
        return all(present(r) for r in refs)

    return complete(digest)


@pytest.mark.parametrize("untagged", [False, True], ids=["gc", "gc-m"])
def test_a_real_run_frees_exactly_what_the_plan_says(
    gc_store, untagged, tmp_path, signing_material, minter
):
    store = gc_store.copy(tmp_path / "copy")
    result = plan_of(store, untagged)
    before = list_files(store)
    done = store.collector(*(["-m"] if untagged else []))
    assert done.returncode == 0, done.stderr[-500:]
    after = list_files(store)
    assert all(before[k] == size for k, size in after.items())  # nothing else changed
    removed = set(before) - set(after)
    assert set(after) - set(before) == set()

    freed = {f"sha256:{m.group(1)}": before[k] for k in removed if (m := BLOB_DATA.match(k))}
    assert freed == result.eligible_blobs  # the same blobs, each of the planned size
    assert sum(freed.values()) == result.bytes_eligible
    revisions = {(m.group(1), f"sha256:{m.group(2)}") for k in removed if (m := REVISION.match(k))}
    assert revisions == set(result.eligible_manifests)
    others = {k for k in removed if not (BLOB_DATA.match(k) or REVISION.match(k))}
    for key in others:  # only tag history entries of the deleted manifests
        found = TAG_INDEX.match(key)
        assert found, key
        assert (found.group(1), f"sha256:{found.group(2)}") in revisions

    # what must not be deleted: every tag the plan does not name as broken stays whole
    broken = {(b.repository, b.tag) for b in result.broken_images}
    expected_broken = (
        {("multi/oci", "v1"), ("multi/src", "v1"), ("multi/docker", "v1"), ("multi/pinned", "v1")}
        if untagged
        else set()
    )
    assert broken == expected_broken
    for repo, tag in gc_store.names["tags"]:
        assert _intact(after, store, repo, tag) == ((repo, tag) not in broken), (repo, tag)

    if untagged:  # a real client agrees: broken tags no longer pull, the others do
        server = RegistryServer(
            tmp_path / "serve",
            signing_material.cert_path,
            UNUSED_REALM,
            issuer=TEST_ISSUER,
            service=TEST_SERVICE,
            storage=_storage_section(store),
        ).start()
        try:
            for repo, tag in gc_store.names["tags"]:
                pulled = skopeo_pulls(
                    server.host, repo, tag, minter, tmp_path / f"{repo}-{tag}".replace("/", "_")
                )
                assert pulled == ((repo, tag) not in broken), (repo, tag)
            by_digest = str(gc_store.names["by_digest"])
            assert not skopeo_pulls(server.host, "apps/single", by_digest, minter, tmp_path / "d")
        finally:
            server.stop()


def _storage_section(store) -> dict:
    if store.driver == "filesystem":
        return {"filesystem": {"rootdirectory": store.root}}
    return store.moto.registry_storage(store.bucket)


@pytest.mark.parametrize("driver", ["filesystem", "s3"])
def test_plan_predicts_when_the_collector_stops_with_an_error(
    driver, tmp_path, signing_material, minter, request
):
    """-m stops in a repository with untagged manifests and no tags folder. On S3 a
    folder exists only while objects are below it, so deleting the last tag is enough."""
    moto = request.getfixturevalue("moto") if driver == "s3" else None
    server, store = registry_for(driver, tmp_path / "registry", signing_material, moto)
    try:
        client = RegistryClient(server.url, KeyAuth(minter))
        images.push_image(client, "apps/moved", images.simple_image(940), ["v1"])
        second = images.push_image(client, "apps/moved", images.simple_image(941), ["v1"])
        client.delete_manifest("apps/moved", second)  # v1 gone; the first image is untagged
        outcomes = []
        for step in ("moved", "by-digest"):
            if step == "by-digest":
                images.push_image(client, "apps/bydigest", images.simple_image(942))
            done = store.collector("--dry-run", "-m")
            result = plan_of(store, True)
            outcomes.append((step, done.returncode != 0, result.collector_error is not None))
            if done.returncode == 0:
                assert result.counts == tuple(int(n) for n in SUMMARY.findall(done.stdout)[-1])
            else:
                assert "failed to retrieve tags" in done.stderr
        client.session.close()
    finally:
        server.stop()
    fails_on_s3 = driver == "s3"
    assert outcomes == [("moved", fails_on_s3, fails_on_s3), ("by-digest", True, True)]


def test_plan_agrees_on_a_damaged_store(gc_store, tmp_path):
    """Revisions whose manifest blob is gone are skipped by the collector (not marked, not
    queued); a missing layer stays marked. The plan follows it."""
    store = gc_store.copy(tmp_path / "copy")
    for image in (images.simple_image(906), images.simple_image(904)):  # tagged, untagged
        hexpart = str(image.digest)[7:]
        delete_file(store, f"{V2}/blobs/sha256/{hexpart[:2]}/{hexpart}/data")
    layer = str(images.random_layer(seed=903).digest)[7:]
    delete_file(store, f"{V2}/blobs/sha256/{layer[:2]}/{layer}/data")
    for untagged in (False, True):
        counts, blobs, manifests = collector_says(store, untagged)
        result = plan_of(store, untagged)
        assert (result.counts, set(result.eligible_blobs)) == (counts, blobs)
        assert sorted(d for _r, d in result.eligible_manifests) == sorted(manifests)


LINK = re.compile(
    rf"^{V2}/repositories/(.+)/(?:_layers|_manifests/revisions)/sha256/([0-9a-f]{{64}})/link$"
)


def test_plot_draws_what_each_repository_loses(gc_store, tmp_path):
    """``gc plan -m --plot``: the bars are the sizes of the collector's eligible blobs,
    attributed to the repositories that link them (links listed here, not by regops)."""
    _counts, blobs, _manifests = collector_says(gc_store, True)
    files = list_files(gc_store)
    sizes = {f"sha256:{m.group(1)}": files[key] for key in files if (m := BLOB_DATA.match(key))}
    linked: dict[str, set[str]] = {}
    for key in files:
        if (m := LINK.match(key)) and f"sha256:{m.group(2)}" in blobs:
            linked.setdefault(f"sha256:{m.group(2)}", set()).add(m.group(1))
    only: dict[str, int] = {}
    shared: dict[str, int] = {}
    for blob in blobs:
        owners = linked.get(blob, {"(linked from no repository)"})
        target = only if len(owners) == 1 else shared
        for owner in owners:
            target[owner] = target.get(owner, 0) + sizes[blob]
    assert shared, "the scenario shares eligible blobs between repositories"

    png = tmp_path / "gc.png"
    done = subprocess.run(
        [sys.executable, "-m", "regops.cli", "gc", "plan", "-m", "--config",
         str(gc_store.config_path), "--no-projects", "--format", "json", "--plot", str(png)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    drawn = json.loads(png_text(png.read_bytes())["regops:plotted"])
    (axes,) = drawn["axes"]
    assert axes["xlabel"] == "bytes (KiB)"
    bars = {
        name: {repo: round(value * 1024) for repo, value in values if value}
        for name, values in axes["bars"].items()
    }
    assert bars["freed, linked only here"] == only
    assert bars["freed, shared with other repositories"] == shared
    total = sum(sizes[b] for b in blobs)
    assert f"frees {total / 1024:.1f} KiB" in drawn["title"]
    assert json.loads(done.stdout)["bytes_eligible"] == total
