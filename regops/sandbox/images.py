"""Build real (small) container images and push them to a registry.

Layers are gzip'd tar archives holding one file of random bytes (valid
layers any client can pull), configs are image configs with the ``created``
time you choose, manifests are Docker schema 2 or OCI, and an index (OCI)
or manifest list (Docker) groups images of several platforms. Pushing goes
through :class:`regops.registry.client.RegistryClient`.

The API is a superset of the test builder ``tests/images.py``, which can
re-export this module.

>>> image = build_image([random_layer(seed=1)], created=days_ago(30))
>>> push_image(client, "group/app", image, tags=["v1", "latest"])  # doctest: +SKIP
Digest('sha256:...')
"""

from __future__ import annotations

import datetime
import gzip
import io
import json
import random
import tarfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

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

LAYER_SIZE = 2048  # bytes of random file content per layer: small, so seeding takes seconds
FIXED_MTIME = 1_700_000_000  # tar entries get a fixed time so a seed gives identical bytes


def days_ago(days: float, now: datetime.datetime | None = None) -> datetime.datetime:
    """A UTC time ``days`` before now (for a config's ``created``)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(days=days)


def rfc3339(value: datetime.datetime) -> str:
    """``2024-05-01T12:00:00.123456Z``: how Docker writes ``created`` (UTC)."""
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Layer:
    """A layer blob (gzip tar) and its uncompressed digest (the diff_id)."""

    data: bytes
    diff_id: Digest

    @property
    def digest(self) -> Digest:
        return Digest.of(self.data)

    @property
    def size(self) -> int:
        return len(self.data)


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
        """Sum of the layer sizes: GitLab's ``Tag#total_size``."""
        return sum(len(layer.data) for layer in self.layers)

    @property
    def platform(self) -> dict[str, str]:
        config = json.loads(self.config)
        return {"architecture": config["architecture"], "os": config["os"]}


@dataclass(frozen=True)
class Index:
    """A multi-platform index (OCI) or manifest list (Docker) and its children."""

    manifest: bytes
    media_type: str
    children: tuple[Image, ...] = field(default=())

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)

    @property
    def total_size(self) -> None:
        """None, as GitLab reports for an index."""
        return None


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
    layers: Sequence[Layer],
    created: datetime.datetime | str | None = None,
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
    if isinstance(created, datetime.datetime):
        created = rfc3339(created)
    if created is not None:
        config["created"] = created
    config.update(extra)
    return json.dumps(config, sort_keys=True).encode()


def build_image(
    layers: Sequence[Layer],
    created: datetime.datetime | str | None = "2024-01-02T03:04:05Z",
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


def build_index(children: Sequence[Image], *, oci: bool = False) -> Index:
    """A manifest list (or OCI index) over ``children``, platform read from their configs."""
    entries = [
        {
            "mediaType": child.media_type,
            "size": len(child.manifest),
            "digest": str(child.digest),
            "platform": child.platform,
        }
        for child in children
    ]
    media_type = OCI_INDEX if oci else DOCKER_LIST
    document = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    return Index(json.dumps(document, indent=3).encode(), media_type, tuple(children))


def _put_blob(
    client: Any, repo: str, data: bytes, mount_from: str | None, shared: Collection[str] | None
) -> None:
    """Mount the blob from ``mount_from`` when it is worth trying, else upload it."""
    digest = Digest.of(data)
    worth = mount_from and mount_from != repo and (shared is None or digest in shared)
    if worth and client.mount_blob(repo, digest, mount_from):
        return
    client.upload_blob(repo, data)


def push_image(
    client: Any,
    repo: str,
    image: Image,
    tags: Sequence[str] = (),
    *,
    mount_from: str | None = None,
    shared: Collection[str] | None = None,
) -> Digest:
    """Upload the blobs (mounted from ``mount_from`` when given), then the manifest.

    With ``shared`` (digests), only those blobs are mounted: a failed mount
    costs two requests, so blobs known to be new are uploaded straight away.
    The manifest goes up under each tag, or by digest when there is none
    (an untagged image).
    """
    _put_blob(client, repo, image.config, mount_from, shared)
    for layer in image.layers:
        _put_blob(client, repo, layer.data, mount_from, shared)
    return _put_manifest(client, repo, image.digest, image.manifest, image.media_type, tags)


def _put_manifest(
    client: Any, repo: str, digest: Digest, raw: bytes, media_type: str, tags: Sequence[str]
) -> Digest:
    """PUT under every tag (or by digest when untagged); the registry's digest must match."""
    pushed = [client.put_manifest(repo, ref, raw, media_type) for ref in (tags or [digest])]
    if any(value != digest for value in pushed):
        raise ValueError(f"the registry stored {pushed[0]} for a manifest of digest {digest}")
    return digest


def push_index(
    client: Any,
    repo: str,
    index: Index,
    tags: Sequence[str] = (),
    *,
    mount_from: str | None = None,
    shared: Collection[str] | None = None,
) -> Digest:
    """Push every child image (untagged), then the index under each tag."""
    for child in index.children:
        push_image(client, repo, child, mount_from=mount_from, shared=shared)
    return _put_manifest(client, repo, index.digest, index.manifest, index.media_type, tags)


def simple_image(seed: int, *, layers: int = 1, oci: bool = False, **options: Any) -> Image:
    """An image of ``layers`` random layers derived from ``seed`` (distinct seeds differ)."""
    built = [random_layer(seed=seed * 1000 + i) for i in range(layers)]
    return build_image(built, oci=oci, **options)
