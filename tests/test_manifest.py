"""Manifest and image-config parsing (no I/O)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from regops.errors import ManifestError
from regops.registry.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageConfig,
    parse_manifest,
    parse_rfc3339,
)
from regops.registry.reference import Digest
from tests.images import build_image, build_index, random_layer, simple_image


def test_accept_lists_all_four_types():
    for kind in (DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX):
        assert kind in MANIFEST_ACCEPT.split(", ")


@pytest.mark.parametrize("oci", [False, True])
def test_image_manifest_round_trip(oci):
    layers = [random_layer(seed=1), random_layer(size=5000, seed=2)]
    image = build_image(layers, oci=oci)
    manifest = parse_manifest(image.manifest)
    assert manifest.media_type == (OCI_MANIFEST if oci else DOCKER_MANIFEST)
    assert manifest.digest == Digest.of(image.manifest)
    assert manifest.raw == image.manifest
    assert not manifest.is_index
    assert manifest.config.digest == image.config_digest
    assert manifest.config.size == len(image.config)
    assert [d.digest for d in manifest.layers] == [layer.digest for layer in layers]
    # total_size: layers only, config excluded (as GitLab)
    assert manifest.total_size == sum(len(layer.data) for layer in layers)
    assert manifest.referenced_digests == (
        image.config_digest,
        *(layer.digest for layer in layers),
    )
    assert manifest.json["schemaVersion"] == 2


def test_total_size_excludes_config():
    image = simple_image(3, layers=2)
    manifest = parse_manifest(image.manifest)
    layer_sum = sum(len(layer.data) for layer in image.layers)
    assert manifest.total_size == layer_sum
    assert manifest.total_size < layer_sum + len(image.config)


@pytest.mark.parametrize("oci", [False, True])
def test_index_has_children_and_no_size(oci):
    children = [
        simple_image(10, architecture="amd64", oci=oci),
        simple_image(11, architecture="arm64", oci=oci),
    ]
    index = build_index(children, oci=oci)
    manifest = parse_manifest(index.manifest)
    assert manifest.is_index
    assert manifest.media_type == (OCI_INDEX if oci else DOCKER_LIST)
    assert manifest.total_size is None
    assert manifest.config is None and manifest.layers == ()
    assert [c.digest for c in manifest.children] == [c.digest for c in children]
    assert [c.platform["architecture"] for c in manifest.children] == ["amd64", "arm64"]
    assert manifest.referenced_digests == tuple(c.digest for c in children)


def test_shared_layer_counted_once_in_referenced_digests():
    layer = random_layer(seed=5)
    image = build_image([layer, layer])
    manifest = parse_manifest(image.manifest)
    assert len(manifest.layers) == 2
    assert manifest.total_size == 2 * len(layer.data)  # as GitLab: per layer entry
    assert manifest.referenced_digests.count(layer.digest) == 1


def test_digest_verified_when_given():
    image = simple_image(4)
    assert parse_manifest(image.manifest, digest=image.digest).digest == image.digest
    other = Digest.of(b"something else")
    with pytest.raises(ManifestError, match="expected " + other):
        parse_manifest(image.manifest, digest=other)


def test_oci_manifest_without_media_type_is_inferred():
    image = simple_image(6, oci=True)
    document = json.loads(image.manifest)
    del document["mediaType"]
    raw = json.dumps(document).encode()
    assert parse_manifest(raw).media_type == OCI_MANIFEST
    assert parse_manifest(raw, media_type=OCI_MANIFEST).media_type == OCI_MANIFEST
    index = {"schemaVersion": 2, "manifests": []}
    assert parse_manifest(json.dumps(index).encode()).media_type == OCI_INDEX


def test_content_type_used_when_body_has_no_media_type():
    image = simple_image(7, oci=True)
    document = json.loads(image.manifest)
    del document["mediaType"]
    raw = json.dumps(document).encode()
    parsed = parse_manifest(raw, media_type=f"{OCI_MANIFEST}; charset=utf-8")
    assert parsed.media_type == OCI_MANIFEST


def test_media_type_mismatch_with_header_is_an_error():
    image = simple_image(8)
    with pytest.raises(ManifestError, match="does not match Content-Type"):
        parse_manifest(image.manifest, media_type=OCI_MANIFEST)


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"schemaVersion": 2, "mediaType": "application/x-foo"}', "unknown manifest media type"),
        (b'{"schemaVersion": 2}', "neither 'config' nor 'manifests'"),
        (
            b'{"schemaVersion": 3, "mediaType": "' + DOCKER_MANIFEST.encode() + b'"}',
            "schemaVersion",
        ),
        (b'{"schemaVersion": 2, "mediaType": 5}', "mediaType: expected a string"),
    ],
)
def test_malformed_manifests(raw, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw)


def _docker(**changes):
    document = json.loads(simple_image(9).manifest)
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"layers": None}, "layers: expected a list, got null"),
        ({"layers": [{"digest": "sha256:abc", "size": 1}]}, r"layers\[0\]"),
        ({"layers": [{"digest": "sha256:" + "a" * 64, "size": -1}]}, r"layers\[0\].size"),
        ({"layers": [{"digest": "sha256:" + "a" * 64, "size": "12"}]}, r"layers\[0\].size"),
        ({"layers": ["x"]}, "expected a descriptor object"),
        ({"config": None}, "config: expected a descriptor object"),
    ],
)
def test_malformed_descriptors(changes, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(_docker(**changes))


def test_unknown_media_type_from_header_only():
    raw = b'{"schemaVersion": 2, "config": {}, "layers": []}'
    with pytest.raises(ManifestError, match="unknown manifest media type 'application/x-thing'"):
        parse_manifest(raw, media_type="application/x-thing")


def test_too_large_manifest_refused():
    with pytest.raises(ManifestError, match="exceeds"):
        parse_manifest(b" " * (4 * 1024 * 1024 + 1))


def test_not_bytes_refused():
    with pytest.raises(ManifestError, match="must be bytes"):
        parse_manifest("{}")  # type: ignore[arg-type]


@pytest.mark.parametrize("signed", [False, True])
def test_schema1_has_no_size(signed):
    document = {
        "schemaVersion": 1,
        "name": "g/app",
        "tag": "old",
        "fsLayers": [{"blobSum": "sha256:" + "b" * 64}],
        "history": [{"v1Compatibility": "{}"}],
    }
    if signed:
        document["signatures"] = [{"header": {}, "signature": "x", "protected": "y"}]
    raw = json.dumps(document).encode()
    # a signed schema-1 digest covers the payload without signatures: not verifiable here
    manifest = parse_manifest(raw, digest=Digest.of(b"payload"))
    assert manifest.media_type == (DOCKER_SCHEMA1_SIGNED if signed else DOCKER_SCHEMA1)
    assert manifest.is_schema1 and not manifest.is_index
    assert manifest.total_size is None
    assert manifest.config is None and manifest.layers == ()
    assert manifest.digest == Digest.of(b"payload")


def test_repr_is_short():
    manifest = parse_manifest(simple_image(12, layers=3).manifest)
    text = repr(manifest)
    assert "layers=3" in text and manifest.digest.short in text
    assert len(text) < 120


# ----------------------------------------------------------------------- config


def test_config_created_parsed():
    config = ImageConfig.parse(b'{"created": "2024-05-01T12:00:00.123456789Z", "os": "linux"}')
    assert config.created == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert config.os == "linux"
    assert config.architecture is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("2024-05-01T09:30:00.5-02:30", datetime(2024, 5, 1, 12, 0, 0, 500000, timezone.utc)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=timezone.utc)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=timezone.utc)),
        ("2024-13-01T00:00:00Z", None),
        ("yesterday", None),
        ("2024-05-01", None),
        (12345, None),
        (None, None),
    ],
)
def test_rfc3339(text, expected):
    assert parse_rfc3339(text) == expected


def test_config_without_or_with_bad_created_is_none():
    assert ImageConfig.parse(b"{}").created is None
    assert ImageConfig.parse(b'{"created": "not a date"}').created is None


def test_config_not_json_is_an_error():
    with pytest.raises(ManifestError, match="image config is not valid JSON"):
        ImageConfig.parse(b"\x00\x01")


def test_built_config_carries_created_and_diff_ids():
    layer = random_layer(seed=20)
    image = build_image([layer], created=datetime(2023, 3, 4, 5, 6, 7, tzinfo=timezone.utc))
    config = ImageConfig.parse(image.config)
    assert config.created == datetime(2023, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    assert config.json["rootfs"]["diff_ids"] == [layer.diff_id]
    assert layer.diff_id != layer.digest  # diff_id is of the uncompressed tar
