"""Build real test images (layers, configs, manifests, indexes) and push them.

The registry does not look inside layers, but these are real gzip tars anyway so
other tools (skopeo) can handle them.

>>> image = build_image([random_layer(seed=1)], created="2024-01-02T03:04:05Z")
>>> push_image(client, "group/app", image, tags=["1.0", "latest"])  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone

from regops.registry.client import RegistryClient
from regops.registry.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
)
from regops.registry.reference import Digest

LAYER_SIZE = 2048  # bytes of random file content per layer: small, but not trivially small
FIXED_MTIME = 1_700_000_000  # tar entries get a fixed time so a seed gives identical bytes


@dataclass(frozen=True)
class Layer:
    """A layer blob (gzip tar) and its uncompressed digest (the diff_id)."""

    data: bytes
    diff_id: Digest

    @property
    def digest(self) -> Digest:
        return Digest.of(self.data)


@dataclass(frozen=True)
class Image:
    """A single-platform image: manifest bytes, config bytes, layers."""

    manifest: bytes
    media_type: str
    config: bytes
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)

    @property
    def config_digest(self) -> Digest:
        return Digest.of(self.config)

    @property
    def total_size(self) -> int:
        return sum(len(layer.data) for layer in self.layers)


@dataclass(frozen=True)
class Index:
    """A multi-platform index (OCI) or manifest list (Docker) and its children."""

    manifest: bytes
    media_type: str
    children: tuple[Image, ...] = field(default=())

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)


def random_layer(size: int = LAYER_SIZE, seed: int | None = None) -> Layer:
    """A gzip tar holding one file of random bytes (reproducible with ``seed``)."""
    rng = random.Random(seed)
    content = rng.randbytes(size)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"file-{rng.getrandbits(32):08x}.bin")
        info.size = len(content)
        info.mtime = FIXED_MTIME
        tar.addfile(info, io.BytesIO(content))
    raw_tar = tar_bytes.getvalue()
    return Layer(gzip.compress(raw_tar, mtime=0), Digest.of(raw_tar))


def make_config(
    layers: tuple[Layer, ...] | list[Layer],
    created: datetime | str | None = None,
    architecture: str = "amd64",
    os: str = "linux",
    **extra: object,
) -> bytes:
    """An image config: ``created`` (omitted when None), platform, rootfs diff_ids."""
    config: dict[str, object] = {
        "architecture": architecture,
        "os": os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in layers]},
    }
    if isinstance(created, datetime):
        created = created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if created is not None:
        config["created"] = created
    config.update(extra)
    return json.dumps(config, sort_keys=True).encode()


def build_image(
    layers: list[Layer] | tuple[Layer, ...],
    created: datetime | str | None = "2024-01-02T03:04:05Z",
    *,
    oci: bool = False,
    architecture: str = "amd64",
    os: str = "linux",
    **config_extra: object,
) -> Image:
    """A schema-2 (or OCI) image over ``layers``."""
    layers = tuple(layers)
    config = make_config(layers, created, architecture, os, **config_extra)
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    layer_type = OCI_LAYER if oci else DOCKER_LAYER
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
            "size": len(config),
            "digest": str(Digest.of(config)),
        },
        "layers": [
            {"mediaType": layer_type, "size": len(layer.data), "digest": str(layer.digest)}
            for layer in layers
        ],
    }
    return Image(json.dumps(document, indent=3).encode(), media_type, config, layers)


def build_index(children: list[Image] | tuple[Image, ...], *, oci: bool = False) -> Index:
    """A manifest list (or OCI index) over ``children``, platform read from their configs."""
    entries = []
    for child in children:
        config = json.loads(child.config)
        entries.append(
            {
                "mediaType": child.media_type,
                "size": len(child.manifest),
                "digest": str(child.digest),
                "platform": {"architecture": config["architecture"], "os": config["os"]},
            }
        )
    media_type = OCI_INDEX if oci else DOCKER_LIST
    document = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    return Index(json.dumps(document, indent=3).encode(), media_type, tuple(children))


def push_image(
    client: RegistryClient, repo: str, image: Image, tags: list[str] | tuple[str, ...] = ()
) -> Digest:
    """Upload the blobs and the manifest, by digest and then under each tag."""
    client.upload_blob(repo, image.config)
    for layer in image.layers:
        client.upload_blob(repo, layer.data)
    digest = client.put_manifest(repo, image.digest, image.manifest, image.media_type)
    for tag in tags:
        client.put_manifest(repo, tag, image.manifest, image.media_type)
    return digest


def push_index(
    client: RegistryClient, repo: str, index: Index, tags: list[str] | tuple[str, ...] = ()
) -> Digest:
    """Push every child image (untagged), then the index under each tag."""
    for child in index.children:
        push_image(client, repo, child)
    digest = client.put_manifest(repo, index.digest, index.manifest, index.media_type)
    for tag in tags:
        client.put_manifest(repo, tag, index.manifest, index.media_type)
    return digest


def simple_image(seed: int, *, layers: int = 1, oci: bool = False, **options: object) -> Image:
    """An image of ``layers`` random layers derived from ``seed`` (distinct seeds differ)."""
    built = [random_layer(seed=seed * 1000 + i) for i in range(layers)]
    return build_image(built, oci=oci, **options)  # type: ignore[arg-type]
