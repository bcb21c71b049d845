"""The registry half of regops: v2 API client, safe deletes, tokens, manifests, storage, keys.

The process runner for the real registry (a test and sandbox tool) is
:mod:`regops.sandbox.registry_server`, not part of this surface.
"""

from __future__ import annotations

from regops.registry.cache import CachingReader, ContentCache, default_cache_dir
from regops.registry.client import RegistryClient, RegistryFeatures
from regops.registry.keys import (
    check_pair,
    generate_key,
    gitlab_rb_lines,
    libtrust_kid,
    write_key_and_certificate,
)
from regops.registry.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ImageConfig,
    Manifest,
    parse_manifest,
)
from regops.registry.reference import Digest, validate_repository_name, validate_tag
from regops.registry.safe_delete import SafeDelete, TagDeleteResult
from regops.registry.storage import RegistryStorage
from regops.registry.tokens import (
    AnonymousAuth,
    BasicAuth,
    Challenge,
    KeyAuth,
    RealmAuth,
    RegistryAuth,
    Scope,
    TokenMinter,
    load_signing_key,
    parse_challenge,
)

__all__ = [
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "MANIFEST_ACCEPT",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "AnonymousAuth",
    "BasicAuth",
    "CachingReader",
    "Challenge",
    "ContentCache",
    "Descriptor",
    "Digest",
    "ImageConfig",
    "KeyAuth",
    "Manifest",
    "RealmAuth",
    "RegistryAuth",
    "RegistryClient",
    "RegistryFeatures",
    "RegistryStorage",
    "SafeDelete",
    "Scope",
    "TagDeleteResult",
    "TokenMinter",
    "check_pair",
    "default_cache_dir",
    "generate_key",
    "gitlab_rb_lines",
    "libtrust_kid",
    "load_signing_key",
    "parse_challenge",
    "parse_manifest",
    "validate_repository_name",
    "validate_tag",
    "write_key_and_certificate",
]
