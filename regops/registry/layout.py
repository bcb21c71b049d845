"""The Distribution registry's storage layout: the names every storage driver keeps.

    docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data
    docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link
    docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
    docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
    docker/registry/v2/repositories/<name>/_uploads/<id>/...

Keys are ``/``-joined, relative to the driver's root directory (or bucket prefix).
"""

from __future__ import annotations

V2_ROOT = "docker/registry/v2"  # the layout's root under the driver's rootdirectory
BLOBS_ROOT = f"{V2_ROOT}/blobs"
REPOSITORIES_ROOT = f"{V2_ROOT}/repositories"
LAYERS_DIR = "_layers"  # a folder holding this is a repository
MANIFESTS_DIR = "_manifests"
UPLOADS_DIR = "_uploads"
REVISIONS = f"{MANIFESTS_DIR}/revisions"
TAGS = f"{MANIFESTS_DIR}/tags"
CURRENT_DIR = "current"  # a tag's folder: current/link names its manifest
LINK_FILE = "link"
DATA_FILE = "data"
MAX_LINK_BYTES = 4096  # a link holds one digest (71 bytes for sha256); more is not a link
