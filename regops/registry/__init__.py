"""The registry half of regops: v2 API client, tokens, manifests, storage, keys."""

from __future__ import annotations

from regops.registry.keys import (
    check_pair,
    generate_key,
    gitlab_rb_lines,
    libtrust_kid,
    write_key_and_certificate,
)
from regops.registry.reference import Digest, validate_repository_name, validate_tag
from regops.registry.server import RegistryServer, RegistryStartError
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

# client and manifest exports (filled in by the lead)
# --- end of client and manifest exports

__all__ = [
    "AnonymousAuth",
    "BasicAuth",
    "Challenge",
    "Digest",
    "KeyAuth",
    "RealmAuth",
    "RegistryAuth",
    "RegistryServer",
    "RegistryStartError",
    "RegistryStorage",
    "Scope",
    "TokenMinter",
    "check_pair",
    "generate_key",
    "gitlab_rb_lines",
    "libtrust_kid",
    "load_signing_key",
    "parse_challenge",
    "validate_repository_name",
    "validate_tag",
    "write_key_and_certificate",
]
