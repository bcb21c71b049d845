"""``regops events serve`` behind the REAL registry's notifications (Distribution 2.8).

The registry is configured with a ``notifications`` endpoint pointing at the
receiver; skopeo pushes images, regops deletes one; expected events come
from the registry's own storage files (tests/oracle.py), never from regops.
Distribution retries an envelope until it gets a 2xx/3xx answer (its
notifications docs: "an http request is made to the endpoint until the
request succeeds"), with ``threshold`` failures before each ``backoff``:
short here so redelivery happens within a test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regops.commands.events import ReceiverApp, ReceiverServer
from regops.ops.events import EventStore
from regops.registry.client import RegistryClient
from regops.registry.tokens import KeyAuth, Scope
from regops.sandbox.registry_server import RegistryServer, free_port
from regops.secrets import Secret
from tests.fixtures_registry import TEST_ISSUER, TEST_SERVICE, UNUSED_REALM
from tests.images import build_image, random_layer
from tests.leaks import assert_hidden
from tests.oracle import V2, tag_links

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]

SECRET = Secret("notify-" + "k3y-for-tests-0123456789")
WAIT = 15.0  # seconds an event may take to arrive (the registry retries every BACKOFF)
BACKOFF = "200ms"  # short, so redeliveries happen within a test
THRESHOLD = 2  # failures before the registry backs off
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
REPO = "events/app"


def endpoint(url: str, authorization: str) -> dict:
    return {
        "notifications": {
            "endpoints": [
                {
                    "name": "regops",
                    "url": url,
                    "headers": {"Authorization": [authorization]},
                    "timeout": "2s",
                    "threshold": THRESHOLD,
                    "backoff": BACKOFF,
                }
            ]
        }
    }


def start_registry(tmp_path: Path, signing_material, url: str, authorization: str):
    return RegistryServer(
        tmp_path / "registry",
        signing_material.cert_path,
        UNUSED_REALM,
        issuer=TEST_ISSUER,
        service=TEST_SERVICE,
        extra_config=endpoint(url, authorization),
    ).start()


def oci_layout(directory: Path, seed: int, tag: str) -> Path:
    """An OCI image layout holding one small image tagged ``tag`` (skopeo's oci: source)."""
    image = build_image([random_layer(seed=seed)], oci=True)
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (image.manifest, image.config, *(layer.data for layer in image.layers)):
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": "sha256:" + hashlib.sha256(image.manifest).hexdigest(),
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    return directory


def skopeo_push(layout: Path, tag: str, host: str, minter) -> None:
    assert shutil.which("skopeo"), "skopeo is required (make test installs it)"
    token = minter.mint([Scope.repository(REPO, "pull", "push")]).reveal()
    done = subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-registry-token",
            token,
            f"oci:{layout}:{tag}",
            f"docker://{host}/{REPO}:{tag}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.replace(token, "***")


def wait_for(predicate, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def repo_layers(storage: Path) -> set[str]:
    """Blob digests linked into REPO (manifests excluded), from the storage files."""
    base = storage / V2 / "repositories" / REPO / "_layers" / "sha256"
    return {f"sha256:{p.name}" for p in base.iterdir()} if base.is_dir() else set()


def manifest_pushes(store: EventStore) -> list[tuple]:
    return sorted(
        (e["repository"], e["tag"], e["digest"])
        for e in store.query(action="push")
        if e["media_type"] in MANIFEST_TYPES
    )


def raw_ids(path: Path) -> list[str]:
    """Every stored id, read with sqlite3 directly (not through EventStore)."""
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT id FROM events")]


def test_pushes_and_a_delete_land_exactly_once(tmp_path, signing_material, minter):
    store = EventStore(tmp_path / "events.sqlite3")
    with ReceiverServer(ReceiverApp(store, SECRET)) as receiver:
        registry = start_registry(tmp_path, signing_material, receiver.url, SECRET.reveal())
        try:
            for seed, tag in ((1, "v1"), (2, "v2")):
                skopeo_push(oci_layout(tmp_path / tag, seed, tag), tag, registry.host, minter)
            links = tag_links(registry.storage_path, REPO)
            expected = sorted((REPO, tag, digest) for tag, digest in links.items())
            wait_for(lambda: manifest_pushes(store) == expected, "both manifest pushes")
            # every blob the registry linked into the repository was reported pushed, once
            blob_pushes = [
                e["digest"]
                for e in store.query(action="push", repository=REPO)
                if e["media_type"] not in MANIFEST_TYPES
            ]
            assert sorted(blob_pushes) == sorted(repo_layers(registry.storage_path))

            client = RegistryClient(registry.url, KeyAuth(minter))
            client.delete_manifest(REPO, links["v1"])
            # Distribution 2.8 reports the manifest delete, then one delete per tag it untagged
            expected_deletes = [(REPO, links["v1"], None), (REPO, None, "v1")]
            deletes = wait_for(
                lambda: len(store.query(action="delete")) >= 2 and store.query(action="delete"),
                "the delete events",
            )
            got = [(e["repository"], e["digest"], e["tag"]) for e in deletes]
            assert sorted(got, key=str) == sorted(expected_deletes, key=str)
            assert tag_links(registry.storage_path, REPO) == {"v2": links["v2"]}
            time.sleep(0.5)  # nothing more arrives late: still one delete, ids unique
            ids = raw_ids(tmp_path / "events.sqlite3")
            assert len(ids) == len(set(ids)) == store.count()
            assert len(store.query(action="delete")) == len(expected_deletes)
        finally:
            registry.stop()
    store.close()


def test_a_wrong_secret_is_refused_and_nothing_is_stored(tmp_path, signing_material, minter):
    statuses: list[int] = []
    store = EventStore(tmp_path / "events.sqlite3")
    app = ReceiverApp(store, SECRET, after_answer=lambda answer: statuses.append(answer.status))
    with ReceiverServer(app) as receiver:
        registry = start_registry(tmp_path, signing_material, receiver.url, "wrong-secret-value")
        try:
            skopeo_push(oci_layout(tmp_path / "v1", 3, "v1"), "v1", registry.host, minter)
            wait_for(lambda: len(statuses) >= THRESHOLD + 1, "the registry's retries")
        finally:
            registry.stop()
    assert set(statuses) == {401}
    assert store.count() == 0
    store.close()


def test_a_crash_before_or_after_the_commit_loses_nothing_and_stores_once(
    tmp_path, signing_material, minter
):
    """Before the commit: the store raises (500, nothing written); after it: the answer
    is lost (500 after the commit). The registry redelivers both; ids keep one copy."""
    store = EventStore(tmp_path / "events.sqlite3")
    failures = {"before": 1, "after": 1}
    duplicates: list[int] = []

    class FlakyStore:
        def add(self, events):
            if failures["before"]:
                failures["before"] -= 1
                raise OSError("disk went away before the commit")
            return store.add(events)

    def after(answer):
        if answer.status == 200:
            duplicates.append(answer.body["duplicates"])
            if failures["after"]:
                failures["after"] -= 1
                raise RuntimeError("crashed after the commit, before answering")

    with ReceiverServer(ReceiverApp(FlakyStore(), SECRET, after_answer=after)) as receiver:
        registry = start_registry(tmp_path, signing_material, receiver.url, SECRET.reveal())
        try:
            skopeo_push(oci_layout(tmp_path / "v1", 4, "v1"), "v1", registry.host, minter)
            links = tag_links(registry.storage_path, REPO)
            wait_for(lambda: manifest_pushes(store) == [(REPO, "v1", links["v1"])], "the push")
            wait_for(lambda: not failures["after"] and sum(duplicates) > 0, "a redelivery")
        finally:
            registry.stop()
    assert failures == {"before": 0, "after": 0}  # both crashes happened, both were redelivered
    ids = raw_ids(tmp_path / "events.sqlite3")
    assert len(ids) == len(set(ids))
    blobs = [
        e["digest"] for e in store.query(action="push") if e["media_type"] not in MANIFEST_TYPES
    ]
    assert sorted(blobs) == sorted(repo_layers(tmp_path / "registry" / "storage"))
    store.close()


def serve(port: int, db: Path, log: Path) -> subprocess.Popen:
    """``regops events serve`` as its own process (the real command)."""
    env = {**os.environ, "REGOPS_NOTIFICATION_SECRET": SECRET.reveal()}
    handle = open(log, "ab")  # noqa: SIM115 (the child owns it)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "regops",
            "events",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--db",
            str(db),
        ],
        stdout=handle,
        stderr=handle,
        env=env,
    )
    wait_for(lambda: b"listening on" in log.read_bytes(), "the receiver to listen")
    return process


def test_a_receiver_down_for_a_while_loses_no_event(tmp_path, signing_material, minter):
    port = free_port()
    db, log = tmp_path / "events.sqlite3", tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}/events"
    first = serve(port, db, log)
    registry = start_registry(tmp_path, signing_material, url, SECRET.reveal())
    try:
        skopeo_push(oci_layout(tmp_path / "v1", 5, "v1"), "v1", registry.host, minter)
        links = tag_links(registry.storage_path, REPO)
        store = EventStore(db)
        wait_for(lambda: manifest_pushes(store) == [(REPO, "v1", links["v1"])], "the first push")
        first.kill()  # SIGKILL: no clean shutdown
        first.wait()
        skopeo_push(oci_layout(tmp_path / "v2", 6, "v2"), "v2", registry.host, minter)
        time.sleep(1.5)  # the registry retries against a closed port meanwhile
        links = tag_links(registry.storage_path, REPO)
        second = serve(port, db, log)
        try:
            expected = sorted((REPO, tag, digest) for tag, digest in links.items())
            wait_for(lambda: manifest_pushes(store) == expected, "the push made while down")
            blobs = [
                e["digest"]
                for e in store.query(action="push")
                if e["media_type"] not in MANIFEST_TYPES
            ]
            assert sorted(blobs) == sorted(repo_layers(registry.storage_path))
            ids = raw_ids(db)
            assert len(ids) == len(set(ids))
        finally:
            second.terminate()
            assert second.wait(timeout=10) == 0
        store.close()
    finally:
        registry.stop()
        if first.poll() is None:
            first.kill()
    assert_hidden(SECRET, log.read_text())
