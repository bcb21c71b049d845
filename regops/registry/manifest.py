"""Manifests and image configs: parsing, media types, sizes, digests.

Pure data, no I/O: the registry client hands raw bytes here and gets typed
values back.

>>> m = parse_manifest(raw)  # doctest: +SKIP
>>> m.media_type, m.total_size, len(m.layers)  # doctest: +SKIP
('application/vnd.docker.distribution.manifest.v2+json', 31457280, 3)

Schema 1 manifests (``application/vnd.docker.distribution.manifest.v1+json`` and
the signed ``+prettyjws`` variant) parse into a :class:`Manifest` with no config,
no layers and ``total_size`` None, as GitLab reports them; their digest is not
verified because a signed schema 1 digest covers the payload without the
signatures.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from regops.errors import ManifestError, ValidationError
from regops.registry.reference import Digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

# All four, always: without the OCI types the registry answers 404 for an OCI
# manifest, and without the list types it silently serves the amd64 child.
MANIFEST_TYPES = (DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX)
MANIFEST_ACCEPT = ", ".join(MANIFEST_TYPES)
IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
KNOWN_TYPES = IMAGE_TYPES | INDEX_TYPES | SCHEMA1_TYPES
# Content-Type values that say nothing about the manifest kind.
GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})
# A manifest larger than this is refused (the registry's own limit is 4 MiB).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest, size (and platform in an index)."""

    media_type: str
    digest: Digest
    size: int
    platform: dict[str, Any] | None = None

    @classmethod
    def parse(cls, value: Any, where: str) -> Descriptor:
        """A descriptor from its JSON object; ManifestError naming ``where`` if malformed."""
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected a descriptor object, got {_kind(value)}")
        try:
            digest = Digest.parse(value.get("digest"), field=f"{where}.digest")
        except (ValidationError, TypeError) as exc:
            raise ManifestError(f"{where}: {exc}") from None
        size = value.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}.size: expected a non-negative integer, got {size!r}")
        media_type = value.get("mediaType", "")
        if not isinstance(media_type, str):
            raise ManifestError(f"{where}.mediaType: expected a string, got {_kind(media_type)}")
        platform = value.get("platform")
        if platform is not None and not isinstance(platform, dict):
            raise ManifestError(f"{where}.platform: expected an object, got {_kind(platform)}")
        return cls(media_type, digest, size, platform)

    def to_json(self) -> dict[str, Any]:
        """The descriptor as it appears in a manifest."""
        data: dict[str, Any] = {
            "mediaType": self.media_type,
            "size": self.size,
            "digest": str(self.digest),
        }
        if self.platform is not None:
            data["platform"] = self.platform
        return data


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest (image, index/list, or schema 1) with its raw bytes and digest."""

    media_type: str
    digest: Digest
    raw: bytes
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()

    def __repr__(self) -> str:
        return (
            f"Manifest({self.media_type.rsplit('/', 1)[-1]!r}, {self.digest.short}, "
            f"layers={len(self.layers)}, children={len(self.children)})"
        )

    @property
    def is_index(self) -> bool:
        """True for a Docker manifest list or an OCI index."""
        return self.media_type in INDEX_TYPES

    @property
    def is_schema1(self) -> bool:
        return self.media_type in SCHEMA1_TYPES

    @property
    def total_size(self) -> int | None:
        """Sum of layer sizes (config excluded), as GitLab; None for an index or schema 1."""
        if self.is_index or self.is_schema1:
            return None
        return sum(layer.size for layer in self.layers)

    @property
    def referenced_digests(self) -> tuple[Digest, ...]:
        """Config, layers and children, in that order, without repeats."""
        seen: dict[Digest, None] = {}
        if self.config is not None:
            seen[self.config.digest] = None
        for descriptor in (*self.layers, *self.children):
            seen.setdefault(descriptor.digest, None)
        return tuple(seen)

    def blob_sizes(self) -> dict[Digest, int]:
        """The blobs this manifest names, with the bytes each takes in storage: itself,
        its config, its layers, and an index's child manifests (not their content)."""
        blobs = {self.digest: len(self.raw)}
        if self.config is not None:
            blobs[self.config.digest] = self.config.size
        for descriptor in (*self.layers, *self.children):
            blobs[descriptor.digest] = descriptor.size
        return blobs

    @cached_property
    def json(self) -> dict[str, Any]:
        """The manifest's JSON document."""
        return json.loads(self.raw)


def parse_manifest(
    raw: bytes, media_type: str | None = None, digest: str | None = None
) -> Manifest:
    """Parse manifest bytes; verify ``digest`` (when given) against their sha256.

    ``media_type`` is the Content-Type the registry sent; the document's own
    ``mediaType`` wins when present and they must agree. ManifestError when the
    bytes are not a manifest regops knows.
    """
    if not isinstance(raw, (bytes, bytearray)):
        raise ManifestError(f"manifest must be bytes, got {_kind(raw)}")
    raw = bytes(raw)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest of {len(raw)} bytes exceeds {MAX_MANIFEST_BYTES}")
    document = _load_object(raw, "manifest")
    kind = _media_type(document, _bare(media_type))
    actual = _check_digest(raw, digest, verify=kind not in SCHEMA1_TYPES)
    if kind in SCHEMA1_TYPES:
        return Manifest(kind, actual, raw)
    _check_schema_version(document)
    if kind in INDEX_TYPES:
        children = _descriptors(document, "manifests")
        return Manifest(kind, actual, raw, children=children)
    config = Descriptor.parse(document.get("config"), "config")
    return Manifest(kind, actual, raw, config=config, layers=_descriptors(document, "layers"))


def _bare(media_type: str | None) -> str:
    """A Content-Type without parameters, lower-cased."""
    return (media_type or "").split(";", 1)[0].strip().lower()


def _load_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestError(f"{what} must be a JSON object, got {_kind(document)}")
    return document


def _media_type(document: dict[str, Any], header: str) -> str:
    """The manifest's media type: its own field, else the header, else its shape."""
    own = document.get("mediaType")
    if own is not None and not isinstance(own, str):
        raise ManifestError(f"mediaType: expected a string, got {_kind(own)}")
    if document.get("schemaVersion") == 1 and not own:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in document else DOCKER_SCHEMA1
    header = "" if header in GENERIC_TYPES else header
    if own and header and own != header:
        raise ManifestError(f"mediaType {own!r} does not match Content-Type {header!r}")
    kind = own or header or _infer_oci_type(document)
    if kind not in KNOWN_TYPES:
        raise ManifestError(
            f"unknown manifest media type {kind!r}; expected one of {', '.join(MANIFEST_TYPES)}"
        )
    return kind


def _infer_oci_type(document: dict[str, Any]) -> str:
    """OCI documents may omit mediaType: tell an index from an image by its fields."""
    if "manifests" in document:
        return OCI_INDEX
    if "config" in document:
        return OCI_MANIFEST
    raise ManifestError("manifest has no mediaType and neither 'config' nor 'manifests'")


def _check_schema_version(document: dict[str, Any]) -> None:
    version = document.get("schemaVersion")
    if version != 2:
        raise ManifestError(f"schemaVersion: expected 2, got {version!r}")


def _check_digest(raw: bytes, expected: str | None, *, verify: bool) -> Digest:
    actual = Digest.of(raw)
    if expected is None:
        return actual
    try:
        wanted = Digest.parse(expected)
    except ValidationError as exc:
        raise ManifestError(str(exc)) from None
    if verify and wanted != actual:
        raise ManifestError(f"manifest content has digest {actual}, expected {wanted}")
    return wanted


def _descriptors(document: dict[str, Any], key: str) -> tuple[Descriptor, ...]:
    items = document.get(key)
    if not isinstance(items, list):
        raise ManifestError(f"{key}: expected a list, got {_kind(items)}")
    return tuple(Descriptor.parse(item, f"{key}[{i}]") for i, item in enumerate(items))


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --------------------------------------------------------------------------- image config

# RFC 3339 as Go writes it: up to 9 fraction digits, Z or an offset.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_rfc3339(text: object) -> datetime | None:
    """An aware datetime from an RFC 3339 string (nanoseconds truncated); None if unreadable.

    >>> parse_rfc3339("2024-05-01T12:00:00.123456789Z").isoformat()
    '2024-05-01T12:00:00.123456+00:00'
    """
    if not isinstance(text, str):
        return None
    match = _RFC3339.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, oh, om = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if not zulu:
        offset = timedelta(hours=int(oh), minutes=int(om)) * (-1 if sign == "-" else 1)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micro,
            tzinfo=timezone(offset),
        ).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class ImageConfig:
    """An image config blob: its build time (``created``) and raw bytes."""

    created: datetime | None
    raw: bytes

    def __repr__(self) -> str:
        created = self.created.isoformat() if self.created else None
        return f"ImageConfig(created={created!r}, {len(self.raw)} bytes)"

    @classmethod
    def parse(cls, raw: bytes) -> ImageConfig:
        """Parse a config blob; an unreadable ``created`` becomes None, as GitLab does."""
        document = _load_object(bytes(raw), "image config")
        return cls(parse_rfc3339(document.get("created")), bytes(raw))

    @cached_property
    def json(self) -> dict[str, Any]:
        return json.loads(self.raw)

    @property
    def architecture(self) -> str | None:
        return self.json.get("architecture")

    @property
    def os(self) -> str | None:
        return self.json.get("os")
