"""``storage check`` finds each kind of breakage planted in a real registry's storage (and
nothing on a healthy one), on both drivers; ``storage compare`` finds a missing, an extra
and a truncated file between a filesystem copy and an S3 copy, with one listing request
per S3 side (counted at the moto server).

What is planted, and so expected, is decided here from the pushed images' own bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regops.ops.storage_check import check, compare
from regops.registry.backends import FilesystemBackend, S3Backend, S3Location
from regops.registry.configfile import RegistryConfig
from regops.sandbox import images
from regops.sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY
from tests.fixtures_storage import V2, delete_file, list_files, new_bucket, read_file, write_file

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]


def blob_key(digest: str) -> str:
    hexpart = str(digest).split(":", 1)[1]
    return f"{V2}/blobs/sha256/{hexpart[:2]}/{hexpart}/data"


def revision_key(repo: str, digest: str) -> str:
    return f"{V2}/repositories/{repo}/_manifests/revisions/sha256/{str(digest)[7:]}/link"


def run_check(store, **options):
    backend = RegistryConfig.load(store.config_path).backend()
    try:
        return check(backend, **options)
    finally:
        backend.close()


def test_a_healthy_store_has_no_findings(gc_store):
    report = run_check(gc_store, verify_content=True)
    assert report.findings == []
    assert report.ok
    assert report.blobs_verified == report.blobs > 0


def test_each_planted_breakage_is_found(gc_store, tmp_path):
    store = gc_store.copy(tmp_path / "copy")
    files = list_files(store)
    one = images.build_image([images.random_layer(seed=900), images.random_layer(seed=902)])
    two_layer = images.random_layer(seed=903)
    moving = images.simple_image(906)
    pinned_amd64 = images.simple_image(930)
    # apps/one:v1 loses its revision link; apps/single:moving its manifest blob;
    # apps/two:v1 its own layer; multi/pinned's amd64 config is overwritten
    delete_file(store, revision_key("apps/one", one.digest))
    delete_file(store, blob_key(moving.digest))
    delete_file(store, blob_key(two_layer.digest))
    config_key = blob_key(pinned_amd64.config_digest)
    write_file(store, config_key, b"x" * files[config_key])

    report = run_check(
        store, verify_content=True, upload_age=dt.timedelta(0), gitlab_repositories=[
            "apps/single", "apps/one", "multi/oci", "multi/src", "multi/docker",
            "multi/pinned", "ghost/repository",
        ],
    )  # fmt: skip
    found = {(f.kind, f.repository, f.subject) for f in report.findings}
    stale_uploads = {f for f in found if f[0] == "stale_upload"}
    # the two half-finished uploads, and apps/two's mounts that failed over to an upload
    # cancelled by regops: registry 2.8 leaves their _uploads/<id>/hashstates behind
    assert {(kind, repo) for kind, repo, _ in stale_uploads} == {
        ("stale_upload", "apps/single"),
        ("stale_upload", "apps/upload-only"),
        ("stale_upload", "apps/two"),
    }
    assert found - stale_uploads == {
        ("tag_without_revision", "apps/one", "v1"),
        ("revision_without_blob", "apps/single", str(moving.digest)),
        ("missing_blob", "apps/two", "v1"),
        ("dangling_layer_link", "apps/two", str(two_layer.digest)),
        ("corrupt_blob", "-", str(pinned_amd64.config_digest)),
        ("missing_repository", "ghost/repository", "-"),
        ("unknown_repository", "apps/two", "-"),
    }
    assert not report.ok
    broken = {(f.kind, f.repository) for f in report.broken}
    assert ("dangling_layer_link", "apps/two") not in broken  # stale, not broken
    assert all(f.breaks and f.todo for f in report.findings)
    sizes = {f.subject: f.size for f in stale_uploads_of(report)}
    if store.driver == "filesystem":  # the s3 driver keeps a small PATCH in memory only
        assert sorted(sizes.values())[-1] >= 700  # the 700-byte chunk is counted


def stale_uploads_of(report):
    return [f for f in report.findings if f.kind == "stale_upload"]


def test_storage_check_command_on_the_sandbox(sandbox):
    env = {**os.environ, **sandbox.env("admin")}
    done = subprocess.run(
        [sys.executable, "-m", "regops.cli", "storage", "check", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] is True
    # GitLab (the stand-in) and storage agree on the repositories
    kinds = {f["kind"] for f in document["findings"]}
    assert not kinds & {"missing_repository", "unknown_repository"}


# --------------------------------------------------------------------------- compare


def upload_to_s3(moto, root: Path) -> str:
    """What ``aws s3 sync`` does: every file under the root as an object; the bucket name."""
    bucket = new_bucket(moto)
    client = moto.client()
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            client.put_object(
                Bucket=bucket, Key=path.relative_to(root).as_posix(), Body=path.read_bytes()
            )
    client.close()
    return bucket


def s3_backend(moto, bucket: str) -> S3Backend:
    return S3Backend(
        S3Location(bucket, "/", region=REGION, regionendpoint=moto.endpoint,
                   accesskey=ACCESS_KEY, secretkey=SECRET_KEY, secure=False)
    )  # fmt: skip


@pytest.fixture
def fs_store(gc_store, tmp_path):
    """A copy of the filesystem store (the migration check starts from it)."""
    return gc_store.copy(tmp_path / "fs")


FILESYSTEM_ONLY = pytest.mark.parametrize("gc_store", ["filesystem"], indirect=True)


@FILESYSTEM_ONLY
def test_compare_filesystem_with_its_s3_copy(fs_store, moto):
    bucket = upload_to_s3(moto, Path(fs_store.root))
    source, destination = FilesystemBackend(fs_store.root), s3_backend(moto, bucket)
    counted = moto.request_count()
    report = compare(source, destination)
    assert report.ok, report.differences
    files = [k for k in list_files(fs_store) if k.startswith(V2) and "/_uploads/" not in k]
    assert report.source_files == report.destination_files == len(files)
    # one listing pass (fewer than 1,000 keys: one page), no request per object
    assert moto.request_count() - counted == 1 == destination.requests

    s3 = type(fs_store)("s3", fs_store.config_path, bucket=bucket, moto=moto)
    keys = sorted(k for k in files if k.endswith("/data"))
    missing, truncated = keys[0], keys[1]
    delete_file(s3, missing)
    write_file(s3, truncated, read_file(s3, truncated)[:-1])
    extra = f"{V2}/repositories/apps/one/_layers/sha256/{'e' * 64}/link"
    write_file(s3, extra, b"sha256:" + b"e" * 64)
    report = compare(source, destination)
    found = {(d.kind, d.key) for d in report.differences}
    assert found == {("missing", missing), ("size", truncated), ("extra", extra)}

    # same size, other bytes: only --verify-content sees it
    swapped = keys[2]
    original = read_file(s3, swapped)
    write_file(s3, swapped, bytes(reversed(original)))
    assert ("content", swapped) not in {
        (d.kind, d.key) for d in compare(source, destination).differences
    }
    verified = compare(source, destination, verify_content=True)
    assert ("content", swapped) in {(d.kind, d.key) for d in verified.differences}
    destination.close()


@FILESYSTEM_ONLY
def test_compare_s3_with_s3_through_the_command(fs_store, moto):
    first = upload_to_s3(moto, Path(fs_store.root))
    second = upload_to_s3(moto, Path(fs_store.root))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    command = [sys.executable, "-m", "regops.cli", "storage", "compare", f"s3://{first}",
               f"s3://{second}", "--endpoint", moto.endpoint, "--region", REGION]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    client = moto.client()
    client.delete_object(Bucket=second, Key=sorted(list_files(fs_store))[0])
    client.close()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "1 differences" in done.stderr
