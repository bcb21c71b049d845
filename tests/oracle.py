"""Expected values computed from the registry's own files, without regops code.

The filesystem driver keeps ``docker/registry/v2/repositories/<repo>/_manifests/
tags/<tag>/current/link`` (the digest a tag points at) and
``docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data`` (every blob, manifests
included). Everything here reads those files with the standard library only,
so a test comparing regops against it cannot pass because regops agrees
with itself.
"""

from __future__ import annotations

import json
from pathlib import Path

V2 = Path("docker", "registry", "v2")
IMAGE_TYPES = {
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
}


def repositories(root: Path | str) -> list[str]:
    """Repository names: folders holding ``_manifests``."""
    base = Path(root) / V2 / "repositories"
    return sorted(str(p.parent.relative_to(base)) for p in base.rglob("_manifests") if p.is_dir())


def tag_links(root: Path | str, repo: str) -> dict[str, str]:
    """Tag -> digest, from the tag link files."""
    tags = Path(root) / V2 / "repositories" / repo / "_manifests" / "tags"
    found = {}
    for folder in sorted(tags.iterdir()) if tags.is_dir() else ():
        link = folder / "current" / "link"
        if link.is_file():
            found[folder.name] = link.read_text().strip()
    return found


def blob(root: Path | str, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":", 1)
    return (Path(root) / V2 / "blobs" / algorithm / hexdigest[:2] / hexdigest / "data").read_bytes()


def document(root: Path | str, digest: str) -> dict:
    """A manifest (or config) blob, parsed as JSON."""
    return json.loads(blob(root, digest))


def gitlab_total_size(manifest: dict) -> int | None:
    """GitLab's Tag#total_size: the layers' sizes summed (config excluded); nil for an
    index, a manifest list, or schema 1."""
    kind = manifest.get("mediaType")
    if manifest.get("schemaVersion") != 2 or "manifests" in manifest:
        return None
    if kind is not None and kind not in IMAGE_TYPES:
        return None
    return sum(layer["size"] for layer in manifest.get("layers", []))


def tag_sizes(root: Path | str, repo: str) -> dict[str, int | None]:
    """``"<repo>:<tag>"`` -> GitLab's total_size, for every tag of ``repo``."""
    return {
        f"{repo}:{tag}": gitlab_total_size(document(root, digest))
        for tag, digest in tag_links(root, repo).items()
    }


DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def revision_linked(root: Path | str, repo: str, digest: str) -> bool:
    """Whether ``repo`` holds manifest ``digest`` (its revision link file exists)."""
    algorithm, hexdigest = digest.split(":", 1)
    link = (
        Path(root) / V2 / "repositories" / repo / "_manifests" / "revisions" / algorithm
        / hexdigest / "link"
    )  # fmt: skip
    return link.is_file()


def gitlab_seen(root: Path | str, repo: str, digest: str) -> tuple[str, dict] | None:
    """``(digest, manifest)`` of what GitLab's ``Accept`` (Docker v2 and OCI image
    manifests only, ContainerRegistry::BaseClient::ACCEPTED_TYPES) gets for a tag at
    ``digest``, as Distribution answers it: an image itself; for a Docker manifest
    list its first linux/amd64 entry, when the repository holds it; None for an
    OCI index, or a list without that child (the registry answers 404)."""
    manifest = document(root, digest)
    kind = manifest.get("mediaType")
    if kind == OCI_INDEX or (kind is None and "manifests" in manifest):
        return None
    if kind != DOCKER_LIST:
        return digest, manifest
    for entry in manifest.get("manifests", []):
        platform = entry.get("platform") or {}
        if (platform.get("architecture"), platform.get("os")) == ("amd64", "linux"):
            child = entry["digest"]
            if not revision_linked(root, repo, child):
                return None
            return child, document(root, child)
    return None


def gitlab_tag(root: Path | str, repo: str, tag: str) -> dict | None:
    """GitLab's ContainerRegistry::Tag fields of ``repo:tag`` from the storage files:
    digest, revision, created (the config's text), total_size. None when GitLab gets
    no manifest (an OCI index)."""
    seen = gitlab_seen(root, repo, tag_links(root, repo)[tag])
    if seen is None:
        return None
    digest, manifest = seen
    config = manifest.get("config")
    created = document(root, config["digest"]).get("created") if config else None
    return {
        "digest": digest,
        "revision": config["digest"].split(":", 1)[1] if config else None,
        "created": created,
        "total_size": gitlab_total_size(manifest),
    }


def gitlab_tag_sizes(root: Path | str, repo: str) -> dict[str, int | None]:
    """``"<repo>:<tag>"`` -> the total_size GitLab reports (a list: its amd64 child's)."""
    sizes: dict[str, int | None] = {}
    for tag in tag_links(root, repo):
        details = gitlab_tag(root, repo, tag)
        sizes[f"{repo}:{tag}"] = details["total_size"] if details else None
    return sizes
