"""The registry runner, the storage view and references, against the real registry."""

from __future__ import annotations

import shutil
import socket
import traceback

import pytest
import yaml

from regops.errors import StorageError, ValidationError
from regops.registry.reference import Digest, validate_repository_name, validate_tag
from regops.registry.storage import RegistryStorage
from regops.registry.tokens import Scope
from regops.sandbox.registry_server import RegistryServer, RegistryStartError
from tests.fixtures_registry import TEST_ISSUER, TEST_SERVICE, push_blob, push_image
from tests.leaks import assert_hidden


def _bearer(minter, repo, *actions):
    return "Bearer " + minter.mint([Scope.repository(repo, *actions)]).reveal()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- server


@pytest.mark.registry
def test_server_config_and_answers(registry_server, http_session):
    config = yaml.safe_load(registry_server.config_path.read_text())
    token = config["auth"]["token"]
    assert token == {
        "realm": registry_server.realm,
        "service": TEST_SERVICE,
        "issuer": TEST_ISSUER,
        "rootcertbundle": str(registry_server.cert_path),
    }
    assert config["storage"]["delete"] == {"enabled": True}
    assert "readonly" not in config["storage"]["maintenance"]
    assert config["storage"]["filesystem"]["rootdirectory"] == str(registry_server.storage_path)
    assert config["http"]["addr"] == registry_server.host
    assert config["log"] == {"level": "warn", "accesslog": {"disabled": True}}
    assert registry_server.url == f"http://{registry_server.host}"
    response = http_session.get(f"{registry_server.url}/v2/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")


@pytest.mark.registry
def test_delete_enabled(registry_server, minter, http_session):
    repo = "server/delete"
    auth = _bearer(minter, repo, "pull", "push", "delete")
    manifest, _, _ = push_image(http_session, registry_server.url, auth, repo, "v1", b"del-layer")
    url = f"{registry_server.url}/v2/{repo}/manifests/{manifest}"
    assert http_session.delete(url, headers={"Authorization": auth}).status_code == 202


@pytest.mark.registry
def test_readonly_registry_refuses_writes(readonly_registry, minter, http_session):
    config = yaml.safe_load(readonly_registry.config_path.read_text())
    assert config["storage"]["maintenance"]["readonly"] == {"enabled": True}
    auth = _bearer(minter, "ro/app", "pull", "push")
    response = http_session.post(
        f"{readonly_registry.url}/v2/ro/app/blobs/uploads/", headers={"Authorization": auth}
    )
    assert response.status_code == 405
    catalog = http_session.get(
        f"{readonly_registry.url}/v2/_catalog",
        headers={"Authorization": "Bearer " + minter.mint([Scope.catalog()]).reveal()},
    )
    assert catalog.status_code == 200  # reads still work


@pytest.mark.registry
def test_stop_terminates_and_restart_keeps_port(signing_material, tmp_path, http_session, minter):
    server = RegistryServer(
        tmp_path / "r", signing_material.cert_path, "http://127.0.0.1:9/a", issuer=TEST_ISSUER
    )
    with server:
        port = server.port
        assert server.running and _port_open(port)
        process = server._process
        server.restart(readonly=True)
        assert process.poll() is not None  # the old process is gone
        assert server.port == port and server.running and server.readonly
        auth = _bearer(minter, "x/y", "pull", "push")
        post = http_session.post(
            f"{server.url}/v2/x/y/blobs/uploads/", headers={"Authorization": auth}
        )
        assert post.status_code == 405
    assert not server.running
    assert not _port_open(port)
    server.stop()  # stopping twice is harmless


@pytest.mark.registry
def test_start_failure_shows_the_registry_log(tmp_path):
    bad_cert = tmp_path / "bad.crt"
    bad_cert.write_text("this is not a certificate\n")
    server = RegistryServer(tmp_path / "r", bad_cert, "http://127.0.0.1:9/a")
    with pytest.raises(RegistryStartError) as info:
        server.start()
    message = str(info.value)
    assert "exited with status" in message
    assert "certificate" in message.lower()  # the registry's own complaint, from its log
    assert not server.running


@pytest.mark.registry
def test_start_failure_port_taken(signing_material, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = RegistryServer(
            tmp_path / "r", signing_material.cert_path, "http://127.0.0.1:9/a", port=port
        )
        with pytest.raises(RegistryStartError, match=r"(?i)address already in use"):
            server.start()


def test_missing_binary_and_certificate(signing_material, tmp_path):
    server = RegistryServer(
        tmp_path / "r", signing_material.cert_path, "http://x/a", binary="no-such-registry-binary"
    )
    with pytest.raises(RegistryStartError, match="not found"):
        server.start()
    with pytest.raises(RegistryStartError, match="does not exist"):
        RegistryServer(tmp_path / "r", tmp_path / "absent.crt", "http://x/a").start()


def test_extra_config_is_merged(signing_material, tmp_path):
    server = RegistryServer(
        tmp_path / "r",
        signing_material.cert_path,
        "http://x/a",
        extra_config={"log": {"level": "error"}, "notifications": {"endpoints": []}},
    )
    config = server.config()
    assert config["log"] == {"level": "error", "accesslog": {"disabled": True}}
    assert config["notifications"] == {"endpoints": []}
    assert config["auth"]["token"]["realm"] == "http://x/a"


# --------------------------------------------------------------------------- storage


@pytest.mark.registry
def test_storage_view_matches_what_was_pushed(registry_server, minter, http_session):
    repo = "storage/app"
    auth = _bearer(minter, repo, "pull", "push")
    layer = b"storage layer bytes"
    manifest, config, layer_digest = push_image(
        http_session, registry_server.url, auth, repo, "v1", layer
    )
    storage = RegistryStorage(registry_server.storage_path)
    assert repo in storage.repositories()
    assert storage.tags(repo) == ["v1"]
    assert storage.tag_digest(repo, "v1") == manifest
    assert storage.tag_digest(repo, "absent") is None
    assert storage.manifest_revisions(repo) == [manifest]
    assert sorted(storage.layer_links(repo)) == sorted([config, layer_digest])
    assert storage.blob_size(layer_digest) == len(layer)
    assert storage.has_blob(manifest)
    path = storage.blob_path(layer_digest)
    assert path.relative_to(storage.root).parts[:6] == (
        "docker",
        "registry",
        "v2",
        "blobs",
        "sha256",
        layer_digest.hex[:2],
    )
    assert {manifest, config, layer_digest} <= set(storage.blobs())
    assert storage.total_blob_bytes() >= len(layer)


@pytest.mark.registry
def test_storage_nested_and_missing(registry_server, minter, http_session, tmp_path):
    repo = "storage/group/sub/app"
    auth = _bearer(minter, repo, "pull", "push")
    push_blob(http_session, registry_server.url, auth, repo, b"nested")
    storage = RegistryStorage(registry_server.storage_path)
    assert repo in storage.repositories()
    assert storage.tags(repo) == []
    empty = RegistryStorage(tmp_path / "nothing")
    assert empty.repositories() == [] and list(empty.blobs()) == []
    assert empty.blob_size(Digest.of(b"x")) is None
    with pytest.raises(ValidationError):
        storage.blob_path("sha256:short")
    with pytest.raises(ValidationError):
        storage.tags("../etc")


@pytest.mark.registry
def test_garbage_collect_dry_run_deletes_nothing(signing_material, tmp_path, minter, http_session):
    server = RegistryServer(
        tmp_path / "r",
        signing_material.cert_path,
        "http://x/a",
        issuer=TEST_ISSUER,
        service=TEST_SERVICE,
    )
    with server:
        auth = _bearer(minter, "gc/app", "pull", "push")
        orphan = push_blob(http_session, server.url, auth, "gc/app", b"orphan blob")
        server.restart(readonly=True)
        result = server.garbage_collect(dry_run=True)
    assert result.returncode == 0, result.stderr
    assert "blobs marked" in result.stdout
    assert orphan in result.stdout  # eligible, but a dry run keeps it
    assert RegistryStorage(server.storage_path).has_blob(orphan)


# --------------------------------------------------------------------------- references


def test_digest():
    digest = Digest.of(b"hello")
    assert digest == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert digest.hex.startswith("2cf24dba") and digest.short == "2cf24dba5fb0"
    assert digest.verify(b"hello") and not digest.verify(b"world")
    assert Digest.parse(f" {digest} ") == digest
    assert Digest(digest) is digest
    with pytest.raises(ValidationError) as info:
        Digest.parse("sha256:ABC", field="config")
    assert info.value.field == "config"
    for bad in ("", "md5:" + "0" * 32, "sha256:" + "A" * 64, "sha256:" + "0" * 63):
        with pytest.raises(ValidationError):
            Digest(bad)


@pytest.mark.parametrize("name", ["app", "group/app", "a-b/c_d/e.f", "g/a__b", "x/y---z"])
def test_valid_repository_names(name):
    assert validate_repository_name(name) == name


@pytest.mark.parametrize("name", ["", "App", "/a", "a/", "a//b", "a/-b", "a_", "../x", "a" * 256])
def test_invalid_repository_names(name):
    with pytest.raises(ValidationError) as info:
        validate_repository_name(name)
    assert info.value.field == "repository"


def test_tags():
    for tag in ("latest", "v1.2.3", "_x", "A-b_c.d", "a" * 128):
        assert validate_tag(tag) == tag
    for tag in ("", ".x", "-x", "a" * 129, "a/b", "é"):
        with pytest.raises(ValidationError):
            validate_tag(tag)


def test_blobs_skip_stray_files_and_folders(tmp_path):
    storage = RegistryStorage(tmp_path)
    base = tmp_path / "docker" / "registry" / "v2" / "blobs" / "sha256"
    real = Digest.of(b"a real blob")
    (base / real.hex[:2] / real.hex).mkdir(parents=True)
    (base / real.hex[:2] / real.hex / "data").write_bytes(b"a real blob")
    (base / "stray-file").write_text("left by an admin")
    (base / real.hex[:2] / "notes.txt").write_text("also stray")
    (base / "zz" / "not-a-digest").mkdir(parents=True)
    (base / "zz" / "not-a-digest" / "data").write_bytes(b"x")
    assert list(storage.blobs()) == [real]
    assert storage.total_blob_bytes() == len(b"a real blob")


# --------------------------------------------------------------------------- unsafe storage

FAKE_KEY = (  # shaped like the registry's signing key; not a key at all
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAfakefakefakeFAKEKEYbodyLINEonexxxxxxxxxxxxxxxxxxxxxx\n"
    "q2VzZWNyZXRrZXlsaW5ldHdvZmFrZWZha2VmYWtlZmFrZWZha2VmYWtlZmFrZWZha2U\n"
    "-----END RSA PRIVATE KEY-----\n"
)
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def _tree(root, repo="g/app"):
    """A storage root with ``repo:v1`` -> DIGEST_A and one manifest revision, built by hand."""
    repo_dir = root / "docker" / "registry" / "v2" / "repositories" / repo
    current = repo_dir / "_manifests" / "tags" / "v1" / "current"
    current.mkdir(parents=True)
    (current / "link").write_text(DIGEST_A)
    revision = repo_dir / "_manifests" / "revisions" / "sha256" / ("a" * 64)
    revision.mkdir(parents=True)
    (revision / "link").write_text(DIGEST_A)
    (repo_dir / "_layers").mkdir()
    return repo_dir


def _assert_no_key(exc):
    shown = "".join(traceback.format_exception(exc)) + repr(exc)  # chained errors too
    assert "-----" not in shown  # not even the start of the PEM
    for line in FAKE_KEY.splitlines():
        assert_hidden(line, shown, what="a line of the key file")


@pytest.mark.parametrize("how", ["file", "symlink inside", "symlink outside"])
def test_a_link_that_is_no_digest_never_shows_its_content(tmp_path, how):
    root = tmp_path / "storage"
    repo_dir = _tree(root)
    link = repo_dir / "_manifests" / "tags" / "v1" / "current" / "link"
    link.unlink()
    key_file = {
        "file": link,
        "symlink inside": root / "registry.key",
        "symlink outside": tmp_path / "gitlab-registry.key",
    }[how]
    key_file.write_text(FAKE_KEY)
    if key_file != link:
        link.symlink_to(key_file)
    storage = RegistryStorage(root)
    with pytest.raises(StorageError) as info:
        storage.tag_digest("g/app", "v1")
    if how == "symlink outside":
        assert str(info.value) == f"{link}: a symlink leads outside the storage root {root}"
    else:
        assert str(info.value) == f"{link}: not a digest link"
    _assert_no_key(info.value)


def test_a_tag_folder_symlinked_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "storage"
    repo_dir = _tree(root)
    outside = tmp_path / "elsewhere" / "current"
    outside.mkdir(parents=True)
    (outside / "link").write_text(DIGEST_B)
    tags_dir = repo_dir / "_manifests" / "tags"
    (tags_dir / "planted").symlink_to(outside.parent)
    storage = RegistryStorage(root)
    assert storage.tag_digest("g/app", "v1") == DIGEST_A  # the real tag still reads
    with pytest.raises(StorageError) as info:
        storage.tag_digest("g/app", "planted")
    assert str(info.value) == (
        f"{tags_dir}/planted/current/link: a symlink leads outside the storage root {root}"
    )
    with pytest.raises(StorageError, match="outside the storage root"):
        storage.tags("g/app")


def test_current_folder_and_repository_symlinked_out_of_the_root_are_refused(tmp_path):
    root = tmp_path / "storage"
    repo_dir = _tree(root)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "link").write_text(DIGEST_B)
    planted = repo_dir / "_manifests" / "tags" / "w1"
    planted.mkdir()
    (planted / "current").symlink_to(outside)
    storage = RegistryStorage(root)
    with pytest.raises(StorageError, match=f"{planted}/current/link: a symlink leads outside"):
        storage.tag_digest("g/app", "w1")
    # A whole repository folder pointing outside: refused before any read in it.
    shutil.copytree(repo_dir, tmp_path / "copied-repo", symlinks=True)
    (repo_dir.parent / "mirror").symlink_to(tmp_path / "copied-repo")
    for read in (
        lambda: storage.tag_digest("g/mirror", "v1"),
        lambda: storage.tags("g/mirror"),
        lambda: storage.manifest_revisions("g/mirror"),
        lambda: storage.layer_links("g/mirror"),
        lambda: storage.uploads("g/mirror"),
    ):
        with pytest.raises(
            StorageError, match=r"repositories/g/mirror/_\w+.*outside the storage root"
        ):
            read()


def test_a_revision_link_symlinked_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "storage"
    repo_dir = _tree(root)
    outside = tmp_path / "link-elsewhere"
    outside.write_text(DIGEST_B)
    revision = repo_dir / "_manifests" / "revisions" / "sha256" / ("b" * 64)
    revision.mkdir()
    (revision / "link").symlink_to(outside)
    with pytest.raises(StorageError, match=f"{revision}/link: a symlink leads outside"):
        RegistryStorage(root).manifest_revisions("g/app")


def test_symlinks_that_stay_inside_the_root_are_read(tmp_path):
    root = tmp_path / "storage"
    repo_dir = _tree(root)
    (repo_dir / "_manifests" / "tags" / "alias").symlink_to(repo_dir / "_manifests" / "tags" / "v1")
    linked_root = tmp_path / "root-link"  # the configured root itself may be a symlink
    linked_root.symlink_to(root)
    for storage in (RegistryStorage(root), RegistryStorage(linked_root)):
        assert storage.tags("g/app") == ["alias", "v1"]
        assert storage.tag_digest("g/app", "alias") == DIGEST_A
        assert storage.manifest_revisions("g/app") == [DIGEST_A]
