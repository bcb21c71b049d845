"""The registry half of regops: v2 API client, safe deletes, tokens, manifests, storage, keys.

The process runner for the real registry (a test and sandbox tool) is
:mod:`regops.sandbox.registry_server`, not part of this surface.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use, like ``regops``'s own: importing one small module of
# the package (``regops.registry.keys`` for ``regops keys --help``) does not load the
# client, requests, jwt and cryptography with it.
_EXPORTS = {
    "CachingReader": "regops.registry.cache",
    "ContentCache": "regops.registry.cache",
    "default_cache_dir": "regops.registry.cache",
    "RegistryClient": "regops.registry.client",
    "RegistryFeatures": "regops.registry.client",
    "check_pair": "regops.registry.keys",
    "generate_key": "regops.registry.keys",
    "gitlab_rb_lines": "regops.registry.keys",
    "libtrust_kid": "regops.registry.keys",
    "write_key_and_certificate": "regops.registry.keys",
    "DOCKER_LIST": "regops.registry.manifest",
    "DOCKER_MANIFEST": "regops.registry.manifest",
    "Descriptor": "regops.registry.manifest",
    "ImageConfig": "regops.registry.manifest",
    "MANIFEST_ACCEPT": "regops.registry.manifest",
    "Manifest": "regops.registry.manifest",
    "OCI_INDEX": "regops.registry.manifest",
    "OCI_MANIFEST": "regops.registry.manifest",
    "parse_manifest": "regops.registry.manifest",
    "Digest": "regops.registry.reference",
    "validate_repository_name": "regops.registry.reference",
    "validate_tag": "regops.registry.reference",
    "SafeDelete": "regops.registry.safe_delete",
    "TagDeleteResult": "regops.registry.safe_delete",
    "RegistryStorage": "regops.registry.storage",
    "AnonymousAuth": "regops.registry.tokens",
    "BasicAuth": "regops.registry.tokens",
    "Challenge": "regops.registry.tokens",
    "KeyAuth": "regops.registry.tokens",
    "RealmAuth": "regops.registry.tokens",
    "RegistryAuth": "regops.registry.tokens",
    "Scope": "regops.registry.tokens",
    "TokenMinter": "regops.registry.tokens",
    "load_signing_key": "regops.registry.tokens",
    "parse_challenge": "regops.registry.tokens",
}


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


def __getattr__(name: str) -> Any:
    """Import a public name on first use."""
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'regops.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
