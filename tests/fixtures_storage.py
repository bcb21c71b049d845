"""Storage fixtures: a real S3 API (moto server), the real registry on both drivers, and
storages built by real pushes for the garbage-collection and storage tests.

- ``moto`` (session): ``python -m moto.server`` on loopback.
- ``gc_store`` (session, parametrized ``filesystem`` / ``s3``): a real registry on
  that driver holding single images, shared layers, a Docker manifest list and an
  OCI index pushed by skopeo (``copy --all``), untagged manifests, a deleted tag
  and a half-finished upload. Tests must not change it: ``gc_store.copy()`` gives
  a copy (another folder, another bucket) with its own config.yml.

Expected values never come from regops here: files are listed with os.walk and
boto3 directly, and the collector itself is the oracle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from regops.http import HTTPSettings, make_session
from regops.registry.client import RegistryClient
from regops.registry.tokens import KeyAuth, Scope, TokenMinter
from regops.sandbox import images
from regops.sandbox.registry_server import RegistryServer, registry_environment
from regops.sandbox.s3 import MotoServer
from regops.secrets import redact
from tests.fixtures_registry import TEST_ISSUER, TEST_SERVICE, UNUSED_REALM

SKOPEO_TIMEOUT = 60
V2 = "docker/registry/v2"
DRIVERS = ("filesystem", "s3")


# --------------------------------------------------------------------------- moto


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """A moto S3 server on loopback for the whole session."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


def new_bucket(moto: MotoServer) -> str:
    return moto.create_bucket(f"regops-{uuid.uuid4().hex[:12]}")


# --------------------------------------------------------------------------- listing (oracle)


def list_files(store: Store) -> dict[str, int]:
    """key (relative to the driver root) -> size, listed without regops."""
    if store.driver == "filesystem":
        root = Path(store.root)
        found = {}
        for folder, _dirs, files in os.walk(root):
            for name in files:
                path = Path(folder, name)
                found[path.relative_to(root).as_posix()] = path.stat().st_size
        return found
    client = store.moto.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        for item in page.get("Contents", ()):
            found[item["Key"]] = item["Size"]
    client.close()
    return found


def read_file(store: Store, key: str) -> bytes:
    if store.driver == "filesystem":
        return Path(store.root, key).read_bytes()
    client = store.moto.client()
    try:
        return client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    finally:
        client.close()


def write_file(store: Store, key: str, data: bytes) -> None:
    if store.driver == "filesystem":
        path = Path(store.root, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    client = store.moto.client()
    client.put_object(Bucket=store.bucket, Key=key, Body=data)
    client.close()


def delete_file(store: Store, key: str) -> None:
    if store.driver == "filesystem":
        Path(store.root, key).unlink()
        return
    client = store.moto.client()
    client.delete_object(Bucket=store.bucket, Key=key)
    client.close()


# --------------------------------------------------------------------------- stores


@dataclass
class Store:
    """A registry storage (a folder or a bucket) and a config.yml for the collector."""

    driver: str
    config_path: Path
    root: str | None = None  # filesystem root
    bucket: str | None = None
    moto: MotoServer | None = None
    server: RegistryServer | None = None
    names: dict[str, Any] = field(default_factory=dict)  # what the builder pushed

    def collector(self, *flags: str) -> subprocess.CompletedProcess[str]:
        """The real ``docker-registry garbage-collect`` on this storage."""
        return subprocess.run(
            ["docker-registry", "garbage-collect", *flags, str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=120,
            env=registry_environment(),
        )

    def copy(self, target: Path) -> Store:
        """A copy of the storage (files or objects) with its own config.yml."""
        target.mkdir(parents=True, exist_ok=True)
        if self.driver == "filesystem":
            root = target / "storage"
            shutil.copytree(self.root, root)
            return make_store("filesystem", target, root=str(root))
        bucket = new_bucket(self.moto)
        client = self.moto.client()
        for key in list_files(self):
            client.copy_object(
                Bucket=bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key}
            )
        client.close()
        return make_store("s3", target, bucket=bucket, moto=self.moto)


def make_store(
    driver: str,
    folder: Path,
    *,
    root: str | None = None,
    bucket: str | None = None,
    moto: MotoServer | None = None,
) -> Store:
    """A Store with a minimal collector config.yml in ``folder``."""
    if driver == "filesystem":
        storage: dict[str, Any] = {"filesystem": {"rootdirectory": root}}
    else:
        storage = moto.registry_storage(bucket)
    config = {"version": 0.1, "log": {"level": "error"}, "storage": storage}
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return Store(driver, path, root=root, bucket=bucket, moto=moto)


# --------------------------------------------------------------------------- pushing


def token(minter: TokenMinter, *repos: str) -> str:
    return minter.mint([Scope.repository(r, "pull", "push") for r in repos]).reveal()


def skopeo_copy(source: str, dest: str, *, src_token: str | None, dest_token: str) -> None:
    """``skopeo copy --all --preserve-digests`` (a real client's multi-arch push)."""
    command = ["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false"]
    if src_token:
        command += ["--src-tls-verify=false", "--src-registry-token", src_token]
    command += ["--dest-registry-token", dest_token, source, dest]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT)
    message, code = redact(done.stderr), done.returncode  # no token in an assertion's repr
    del done, command
    assert code == 0, message


def skopeo_pulls(host: str, repo: str, ref: str, minter: TokenMinter, target: Path) -> bool:
    """True when skopeo can copy ``repo:ref`` (every platform) out of the registry."""
    separator = "@" if ref.startswith("sha256:") else ":"
    command = [
        "skopeo",
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-registry-token",
        minter.mint([Scope.repository(repo, "pull")]).reveal(),
        f"docker://{host}/{repo}{separator}{ref}",
        f"oci:{target}:x",
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT)
    message, code = redact(done.stderr), done.returncode  # no token in an assertion's repr
    del done, command
    if code != 0:
        assert "manifest unknown" in message or "blob unknown" in message, message
    return code == 0


def write_oci_layout(index: images.Index, folder: Path, tag: str) -> Path:
    """An OCI image layout holding ``index`` and its children under ``tag`` (for skopeo)."""
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    contents = [index.manifest]
    for child in index.children:
        contents += [child.manifest, child.config, *(layer.data for layer in child.layers)]
    for data in contents:
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    (folder / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entry = {
        "mediaType": index.media_type,
        "digest": str(index.digest),
        "size": len(index.manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (folder / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return folder


def start_upload(client: RegistryClient, session: Any, repo: str, chunk: bytes) -> None:
    """A half-finished blob upload: POST, one PATCH, never the final PUT."""
    auth = client.auth.authorization([Scope.repository(repo, "pull", "push")], session)
    started = session.post(
        f"{client.url}/v2/{repo}/blobs/uploads/", headers={"Authorization": auth}
    )
    assert started.status_code == 202, started.status_code
    location = started.headers["Location"]
    if location.startswith("/"):
        location = client.url + location
    patched = session.patch(
        location,
        data=chunk,
        headers={"Authorization": auth, "Content-Type": "application/octet-stream"},
    )
    assert patched.status_code == 202, patched.status_code


def build_main_scenario(
    server: RegistryServer, minter: TokenMinter, work: Path, http_session: Any
) -> dict[str, Any]:
    """Push every case the collector must agree on; returns the names and digests."""
    client = RegistryClient(server.url, KeyAuth(minter))
    host = server.host
    base = images.random_layer(seed=900)
    # single image, and two images sharing a base layer in two repositories
    single = images.push_image(client, "apps/single", images.simple_image(901), ["v1"])
    one = images.build_image([base, images.random_layer(seed=902)])
    two = images.build_image([base, images.random_layer(seed=903)])
    images.push_image(client, "apps/one", one, ["v1"])
    images.push_image(client, "apps/two", two, ["v1"], mount_from="apps/one")
    # untagged: pushed by digest; a tag moved to a new image (the old one stays untagged)
    by_digest = images.push_image(client, "apps/single", images.simple_image(904))
    moved_from = images.push_image(client, "apps/single", images.simple_image(905), ["moving"])
    images.push_image(client, "apps/single", images.simple_image(906), ["moving"])
    # deleted tag: its manifest deleted by digest (regops' delete primitive)
    deleted = images.push_image(client, "apps/two", images.simple_image(907), ["old"])
    client.delete_manifest("apps/two", deleted)
    # an OCI index pushed by skopeo from an OCI layout
    oci_children = [
        images.simple_image(910, oci=True, architecture="amd64"),
        images.simple_image(911, oci=True, architecture="arm64"),
    ]
    oci_index = images.build_index(oci_children, oci=True)
    layout = write_oci_layout(oci_index, work / "oci-layout", "v1")
    skopeo_copy(
        f"oci:{layout}:v1",
        f"docker://{host}/multi/oci:v1",
        src_token=None,
        dest_token=token(minter, "multi/oci"),
    )
    # a Docker manifest list pushed by regops, copied by skopeo to another repository
    docker_list = images.build_index(
        [images.simple_image(920), images.simple_image(921, architecture="arm64")]
    )
    images.push_index(client, "multi/src", docker_list, ["v1"])
    skopeo_copy(
        f"docker://{host}/multi/src:v1",
        f"docker://{host}/multi/docker:v1",
        src_token=token(minter, "multi/src"),
        dest_token=token(minter, "multi/docker", "multi/src"),
    )
    # a multi-arch image whose amd64 child is also tagged (-m keeps that child)
    pinned_children = [images.simple_image(930), images.simple_image(931, architecture="arm64")]
    pinned = images.build_index(pinned_children)
    images.push_index(client, "multi/pinned", pinned, ["v1"])
    images.push_image(client, "multi/pinned", pinned_children[0], ["amd64"])
    # half-finished uploads: in a repository, and alone in a new one (no _layers)
    start_upload(client, http_session, "apps/single", b"x" * 700)
    start_upload(client, http_session, "apps/upload-only", b"y" * 300)
    client.session.close()
    return {
        "single": single,
        "by_digest": by_digest,
        "moved_from": moved_from,
        "deleted": deleted,
        "oci_index": oci_index.digest,
        "docker_list": docker_list.digest,
        "tags": [
            ("apps/single", "v1"),
            ("apps/single", "moving"),
            ("apps/one", "v1"),
            ("apps/two", "v1"),
            ("multi/oci", "v1"),
            ("multi/src", "v1"),
            ("multi/docker", "v1"),
            ("multi/pinned", "v1"),
            ("multi/pinned", "amd64"),
        ],
    }


def registry_for(
    driver: str, folder: Path, signing_material: Any, moto: MotoServer | None
) -> tuple[RegistryServer, Store]:
    """A started real registry on ``driver`` and its Store (the registry's own config)."""
    storage = None
    bucket = None
    if driver == "s3":
        bucket = new_bucket(moto)
        storage = moto.registry_storage(bucket)
    server = RegistryServer(
        folder,
        signing_material.cert_path,
        UNUSED_REALM,
        issuer=TEST_ISSUER,
        service=TEST_SERVICE,
        storage=storage,
    ).start()
    store = Store(
        driver,
        server.config_path,
        root=str(server.storage_path) if driver == "filesystem" else None,
        bucket=bucket,
        moto=moto,
        server=server,
    )
    return server, store


@pytest.fixture(scope="session", params=DRIVERS)
def gc_store(request, signing_material, minter, tmp_path_factory):
    """The main scenario on a real registry, per driver (shared: copy() before changing)."""
    driver = request.param
    moto = request.getfixturevalue("moto") if driver == "s3" else None
    folder = tmp_path_factory.mktemp(f"gc-{driver}")
    server, store = registry_for(driver, folder / "registry", signing_material, moto)
    session = make_session(HTTPSettings(timeout=(2.0, 10.0), max_retries=0))
    try:
        store.names = build_main_scenario(server, minter, folder, session)
    finally:
        session.close()
    yield store
    server.stop()
