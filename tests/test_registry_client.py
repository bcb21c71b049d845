"""RegistryClient against the REAL Distribution registry, checked with skopeo where it matters.

Repositories get unique names: the registry fixture is shared by the whole run.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from regops.errors import (
    DeleteRolledBack,
    RegistryDenied,
    RegistryError,
    RegistryNotFound,
    RegistryUnauthorized,
    RegistryUnsupported,
    UnsafeDeleteError,
)
from regops.registry.cache import ContentCache
from regops.registry.client import RegistryClient
from regops.registry.keys import generate_key
from regops.registry.manifest import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from regops.registry.reference import Digest
from regops.registry.resolver import TagResolver
from regops.registry.safe_delete import SafeDelete, TagDeleteResult
from regops.registry.tokens import KeyAuth, RegistryAuth, Scope, TokenMinter
from regops.sandbox.registry_server import RegistryServer
from tests.fixtures_registry import TEST_ISSUER, TEST_SERVICE, UNUSED_REALM
from tests.images import (
    build_image,
    build_index,
    push_image,
    push_index,
    random_layer,
    simple_image,
)
from tests.skopeo import skopeo_digest

pytestmark = pytest.mark.registry

SKOPEO_TIMEOUT = 60  # seconds; skopeo answers in well under a second on loopback


@pytest.fixture
def client(registry_server, key_auth) -> RegistryClient:
    return RegistryClient(registry_server.url, key_auth)


@pytest.fixture
def repo() -> str:
    return f"clienttest/r{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- discovery


def test_ping_plain_distribution(client):
    features = client.ping()
    assert features.gitlab_version is None and not features.is_gitlab
    assert features.features == frozenset()
    assert not features.tag_delete and not features.gitlab_api and not features.database_enabled


def test_options_probe_does_not_claim_tag_delete(client, repo):
    # Distribution lists DELETE in OPTIONS on /manifests/<tag> yet refuses tag deletes:
    # the probe must not be fooled.
    push_image(client, repo, simple_image(1), ["v1"])
    assert client.supports_tag_delete(repo) is False


# --------------------------------------------------------------------------- push and read


@pytest.mark.parametrize("oci", [False, True])
def test_image_round_trip(client, repo, oci):
    image = build_image([random_layer(seed=1), random_layer(size=4000, seed=2)], oci=oci)
    digest = push_image(client, repo, image, ["v1", "v2", "latest"])
    assert digest == image.digest
    assert client.tags(repo) == ["latest", "v1", "v2"]
    for tag in ("v1", "v2", "latest", digest):
        assert client.manifest_digest(repo, tag) == digest
    manifest = client.get_manifest(repo, "v1")
    assert manifest.raw == image.manifest and manifest.digest == digest
    assert manifest.media_type == (OCI_MANIFEST if oci else DOCKER_MANIFEST)
    assert manifest.total_size == image.total_size
    assert manifest.config.digest == image.config_digest
    config = client.get_config(repo, manifest.config.digest)
    assert config.created.isoformat() == "2024-01-02T03:04:05+00:00"
    for layer in image.layers:
        assert client.blob_size(repo, layer.digest) == len(layer.data)
        assert client.get_blob(repo, layer.digest) == layer.data
    assert client.blob_size(repo, Digest.of(b"never uploaded")) is None


@pytest.mark.parametrize("oci", [False, True])
def test_multi_arch_index_is_not_replaced_by_a_child(client, repo, oci):
    children = [
        simple_image(10, architecture="amd64", oci=oci),
        simple_image(11, architecture="arm64", oci=oci),
    ]
    index = build_index(children, oci=oci)
    digest = push_index(client, repo, index, ["multi"])
    manifest = client.get_manifest(repo, "multi")
    assert manifest.digest == digest == index.digest
    assert manifest.media_type == (OCI_INDEX if oci else DOCKER_LIST)
    assert manifest.is_index and manifest.total_size is None
    assert [c.digest for c in manifest.children] == [c.digest for c in children]
    for child in children:
        fetched = client.get_manifest(repo, child.digest)
        assert fetched.total_size == child.total_size


def test_upload_blob_skips_a_present_blob(client, repo):
    data = b"some blob " * 100
    client.upload_blob(repo, data)
    before = client.request_count
    assert client.upload_blob(repo, data) == Digest.of(data)
    assert client.request_count - before == 1  # the HEAD only


def test_cross_repository_mount_of_shared_base_layers(client, repo):
    base_layers = [random_layer(seed=30), random_layer(seed=31)]
    base = build_image(base_layers)
    push_image(client, f"{repo}/base", base, ["1"])
    app_layer = random_layer(seed=32)
    app = build_image([*base_layers, app_layer])
    for layer in base_layers:
        assert client.blob_size(f"{repo}/app", layer.digest) is None
        assert client.mount_blob(f"{repo}/app", layer.digest, f"{repo}/base") is True
        assert client.blob_size(f"{repo}/app", layer.digest) == len(layer.data)
    # not in the source repository: no mount, the started upload is cancelled
    assert client.mount_blob(f"{repo}/app", app_layer.digest, f"{repo}/base") is False
    assert client.blob_size(f"{repo}/app", app_layer.digest) is None
    before = client.request_count
    push_image(client, f"{repo}/app", app, ["1"])
    # config upload (HEAD, POST, PUT) + 2 mounted layers skipped (HEAD) + new layer
    # (HEAD, POST, PUT) + the manifest PUT under its tag
    assert client.request_count - before == 3 + 2 + 3 + 1
    assert client.get_manifest(f"{repo}/app", "1").total_size == app.total_size


def test_catalog_pagination_one_per_page(client, repo):
    names = [f"{repo}/p{i}" for i in range(4)]
    for i, name in enumerate(names):
        push_image(client, name, simple_image(40 + i), ["t"])
    before = client.request_count
    paged = list(client.catalog(page_size=1))
    pages = client.request_count - before
    whole = list(client.catalog(page_size=1000))
    assert paged == whole  # same names, same order
    assert len(paged) == len(set(paged))
    assert [n for n in paged if n.startswith(repo + "/")] == names
    assert pages >= len(paged)  # one request per repository (plus maybe an empty last page)


def test_tags_of_unknown_repository(client, repo):
    with pytest.raises(RegistryNotFound) as info:
        client.tags(repo)
    assert "NAME_UNKNOWN" in info.value.codes


def test_manifest_unknown(client, repo):
    push_image(client, repo, simple_image(2), ["v1"])
    with pytest.raises(RegistryNotFound) as info:
        client.get_manifest(repo, "nope")
    assert "MANIFEST_UNKNOWN" in info.value.codes


# --------------------------------------------------------------------------- safe delete


def test_delete_one_of_several_tags_sharing_a_digest(client, repo, registry_server, minter):
    shared = simple_image(50, layers=2)
    other = simple_image(51)
    digest = push_image(client, repo, shared, ["a", "b", "c", "d"])
    other_digest = push_image(client, repo, other, ["e"])

    result = SafeDelete(client).delete_tags(repo, ["b"])

    assert result == TagDeleteResult(("b",), (), "placeholder")
    assert client.tags(repo) == ["a", "c", "d", "e"]
    # an independent client sees every other tag on its image, and b gone
    for tag in ("a", "c", "d"):
        assert skopeo_digest(registry_server.host, repo, tag, minter) == digest
    assert skopeo_digest(registry_server.host, repo, "e", minter) == other_digest
    assert skopeo_digest(registry_server.host, repo, "b", minter) is None
    # the image itself is still there (until garbage collection)
    assert client.get_manifest(repo, digest).raw == shared.manifest


def test_delete_several_tags_and_every_tag_of_an_image(client, repo, registry_server, minter):
    one, two, keep = simple_image(60), simple_image(61), simple_image(62)
    one_digest = push_image(client, repo, one, ["1.0", "1.0.1"])
    push_image(client, repo, two, ["2.0"])
    keep_digest = push_image(client, repo, keep, ["latest", "stable"])

    result = SafeDelete(client).delete_tags(repo, ["1.0", "1.0.1", "2.0", "ghost"])

    assert result.method == "placeholder"
    assert sorted(result.deleted) == ["1.0", "1.0.1", "2.0"]
    assert result.missing == ("ghost",) and result.changed == ()
    assert client.tags(repo) == ["latest", "stable"]
    for tag in ("latest", "stable"):
        assert skopeo_digest(registry_server.host, repo, tag, minter) == keep_digest
    for tag in ("1.0", "1.0.1", "2.0", "ghost"):
        assert skopeo_digest(registry_server.host, repo, tag, minter) is None
    assert client.manifest_digest(repo, one_digest) == one_digest  # untagged, not deleted


def test_delete_missing_tags_changes_nothing(client, repo):
    digest = push_image(client, repo, simple_image(70), ["keep1", "keep2"])
    before = client.request_count
    result = SafeDelete(client).delete_tags(repo, ["missing", "also-missing"])
    assert result == TagDeleteResult((), ("missing", "also-missing"), "none")
    assert client.request_count - before == 1  # only the tags list
    assert client.tags(repo) == ["keep1", "keep2"]
    assert client.manifest_digest(repo, "keep1") == digest


def test_delete_tags_in_unknown_repository(client, repo):
    assert SafeDelete(client).delete_tags(repo, ["x"]) == TagDeleteResult((), ("x",), "none")


def test_delete_manifest_takes_down_every_tag(client, repo):
    # documents the danger delete_tags avoids
    digest = push_image(client, repo, simple_image(80), ["x", "y"])
    push_image(client, repo, simple_image(81), ["z"])
    client.delete_manifest(repo, digest)
    assert client.tags(repo) == ["z"]
    assert client.manifest_digest(repo, "z") == simple_image(81).digest


def test_unsafe_delete_refused_when_another_tag_points_at_the_dummy(client, repo):
    digest = push_image(client, repo, simple_image(90), ["victim", "bystander"])
    real_put = client.put_manifest

    def put_and_copy(name, ref, raw, media_type):
        result = real_put(name, ref, raw, media_type)
        if ref == "victim":  # someone copies the temporary manifest to another tag
            real_put(name, "copied", raw, media_type)
        return result

    client.put_manifest = put_and_copy
    with pytest.raises(UnsafeDeleteError, match="copied") as info:
        SafeDelete(client).delete_tags(repo, ["victim"], check_other_tags=True)
    assert "victim" in str(info.value)
    assert client.tags(repo) == ["bystander", "copied", "victim"]  # nothing deleted
    assert client.manifest_digest(repo, "bystander") == digest


def test_tag_repushed_during_delete_is_left_alone(client, repo):
    image = simple_image(95)
    digest = push_image(client, repo, image, ["racy", "gone"])
    real_put = client.put_manifest

    def put_then_race(name, ref, raw, media_type):
        result = real_put(name, ref, raw, media_type)
        if ref == "racy":  # a CI job pushes the image again right after the move
            real_put(name, "racy", image.manifest, image.media_type)
        return result

    client.put_manifest = put_then_race
    result = SafeDelete(client).delete_tags(repo, ["racy", "gone"])
    assert result.deleted == ("gone",) and result.changed == ("racy",)
    assert client.tags(repo) == ["racy"]
    assert client.manifest_digest(repo, "racy") == digest


def test_tag_deleted_by_someone_else_during_delete_is_reported_missing(client, repo):
    digest = push_image(client, repo, simple_image(96), ["x", "keep"])
    real_put = client.put_manifest

    def put_then_delete(name, ref, raw, media_type):
        result = real_put(name, ref, raw, media_type)
        client.delete_manifest(name, Digest.of(raw))  # another admin removes it meanwhile
        return result

    client.put_manifest = put_then_delete
    assert SafeDelete(client).delete_tags(repo, ["x"]) == TagDeleteResult((), ("x",), "placeholder")
    assert client.tags(repo) == ["keep"]
    assert client.manifest_digest(repo, "keep") == digest


def test_failure_midway_rolls_the_moved_tags_back(client, repo, registry_server, minter):
    first, second = simple_image(97), simple_image(98)
    first_digest = push_image(client, repo, first, ["one"])
    second_digest = push_image(client, repo, second, ["two", "bystander"])
    real_put = client.put_manifest

    def fail_on_two(name, ref, raw, media_type):
        if ref == "two" and Digest.of(raw) != second_digest:  # the move, not the roll back
            raise RegistryError("PUT", f"{client.url}/v2/{name}/manifests/two", 500, "boom")
        return real_put(name, ref, raw, media_type)

    client.put_manifest = fail_on_two
    with pytest.raises(DeleteRolledBack, match="boom"):
        SafeDelete(client).delete_tags(repo, ["one", "two"])
    # "one" was moved onto the placeholder, then put back: every tag on its own image
    assert client.tags(repo) == ["bystander", "one", "two"]
    assert skopeo_digest(registry_server.host, repo, "one", minter) == first_digest
    assert skopeo_digest(registry_server.host, repo, "two", minter) == second_digest
    assert skopeo_digest(registry_server.host, repo, "bystander", minter) == second_digest


# --------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def frozen_registry(signing_material, minter, tmp_path_factory):
    """A registry with images, then restarted read-only (as during garbage collection)."""
    server = RegistryServer(
        tmp_path_factory.mktemp("registry-frozen"),
        signing_material.cert_path,
        UNUSED_REALM,
        issuer=TEST_ISSUER,
        service=TEST_SERVICE,
    )
    server.start()
    writer = RegistryClient(server.url, KeyAuth(minter))
    digest = push_image(writer, "frozen/app", simple_image(100), ["a", "b"])
    server.restart(readonly=True)
    yield server, digest
    server.stop()


def test_read_only_registry_refuses_delete_and_nothing_changes(frozen_registry, minter):
    server, digest = frozen_registry
    client = RegistryClient(server.url, KeyAuth(minter))
    with pytest.raises(RegistryUnsupported) as info:
        SafeDelete(client).delete_tags("frozen/app", ["a"])
    message = str(info.value)
    assert info.value.status == 405
    assert "no tag was changed" in message and "read-only" in message
    assert client.tags("frozen/app") == ["a", "b"]
    assert client.manifest_digest("frozen/app", "a") == digest
    assert skopeo_digest(server.host, "frozen/app", "a", minter) == digest


def test_readonly_registry_fixture_refuses_writes(readonly_registry, minter):
    client = RegistryClient(readonly_registry.url, KeyAuth(minter))
    with pytest.raises(RegistryUnsupported):
        client.upload_blob("ro/app", b"data")
    with pytest.raises(RegistryUnsupported):
        client.delete_manifest("ro/app", Digest.of(b"x"))
    assert SafeDelete(client).delete_tags("ro/app", ["x"]).missing == ("x",)  # nothing to refuse


def test_delete_disabled_refuses_before_moving_tags(signing_material, minter, tmp_path):
    server = RegistryServer(
        tmp_path / "nodelete",
        signing_material.cert_path,
        UNUSED_REALM,
        issuer=TEST_ISSUER,
        service=TEST_SERVICE,
        delete=False,
    )
    with server:
        client = RegistryClient(server.url, KeyAuth(minter))
        digest = push_image(client, "nodelete/app", simple_image(110), ["a", "b"])
        with pytest.raises(RegistryUnsupported) as info:
            SafeDelete(client).delete_tags("nodelete/app", ["a"])
        assert "UNSUPPORTED" in info.value.codes
        assert client.tags("nodelete/app") == ["a", "b"]
        assert client.manifest_digest("nodelete/app", "a") == digest


def _an_hour_ago() -> float:
    return time.time() - 3600


WRONG_MINTERS = {
    "wrong issuer": lambda key: TokenMinter(key, issuer="not-the-issuer", service=TEST_SERVICE),
    "wrong audience": lambda key: TokenMinter(key, issuer=TEST_ISSUER, service="not-the-service"),
    "wrong key": lambda key: TokenMinter(
        generate_key(bits=2048), issuer=TEST_ISSUER, service=TEST_SERVICE
    ),
    # minted an hour ago with the default 5 minutes: expired beyond the registry's leeway
    "expired": lambda key: TokenMinter(
        key, issuer=TEST_ISSUER, service=TEST_SERVICE, clock=_an_hour_ago
    ),
}


@pytest.mark.parametrize("case", sorted(WRONG_MINTERS))
def test_a_bad_token_is_refused_clearly(registry_server, signing_material, case):
    wrong = WRONG_MINTERS[case](signing_material.key)
    client = RegistryClient(registry_server.url, KeyAuth(wrong))
    with pytest.raises(RegistryUnauthorized) as info:
        client.tags("anything/at-all")
    text = str(info.value)
    assert "refused the token" in text and "invalid_token" in text
    assert "Bearer ey" not in text


class PullOnly(RegistryAuth):
    """Tokens with pull access only, whatever the request needs."""

    def __init__(self, minter: TokenMinter) -> None:
        self.minter = minter

    def authorization(self, scopes, session):
        pull = [Scope.repository(s.name, "pull") for s in scopes if s.type == "repository"]
        return "Bearer " + self.minter.mint(pull).reveal()

    def refresh(self, challenge, scopes, session):
        return False


def test_token_without_delete_scope_is_denied(registry_server, minter, client, repo):
    digest = push_image(client, repo, simple_image(120), ["a"])
    reader = RegistryClient(registry_server.url, PullOnly(minter))
    assert reader.tags(repo) == ["a"]
    with pytest.raises(RegistryDenied) as info:
        reader.delete_manifest(repo, digest)
    assert f"repository:{repo}:delete" in str(info.value)
    assert client.tags(repo) == ["a"]


# --------------------------------------------------------------------------- cache


def test_resolver_fetches_each_digest_once_and_a_second_one_reads_the_disk(client, repo, tmp_path):
    image = simple_image(130, layers=2)
    digest = push_image(client, repo, image, ["v1"])
    cache = ContentCache(tmp_path / "cache")
    resolver = TagResolver(client, cache)
    before = client.request_count
    for _ in range(3):
        assert resolver.manifest(repo, digest).raw == image.manifest
        assert json.loads(resolver.config(repo, image.config_digest).raw) == json.loads(
            image.config
        )
    assert client.request_count - before == 2 and cache.misses == 2
    # a second resolver over the same directory needs no request at all
    second = TagResolver(client, ContentCache(tmp_path / "cache"))
    before = client.request_count
    assert second.manifest(repo, digest).raw == image.manifest
    assert json.loads(second.config(repo, image.config_digest).raw) == json.loads(image.config)
    assert client.request_count == before and second.requests == 0


def test_no_token_in_client_repr_or_errors(client, repo):
    sent: list[str] = []  # the Authorization values really sent, not a token minted apart
    real_authorization = client.auth.authorization

    def recording(scopes, session):
        value = real_authorization(scopes, session)
        sent.append(value)
        return value

    client.auth.authorization = recording
    with pytest.raises(RegistryNotFound) as info:
        client.get_manifest(repo, "nothing")
    assert sent and all(value.startswith("Bearer ") for value in sent)
    text = str(info.value) + repr(info.value) + repr(client) + repr(client.auth)
    leaks = sum(value.split(" ", 1)[1] in text for value in sent)  # counted: never shown
    assert leaks == 0, "a sent token shows in an error or repr"
