"""Registry fixtures: a signing key, the real docker-registry with token auth, minters.

The registry runs the real ``docker-registry`` binary; a missing binary fails
the tests loudly (the test command installs it).
"""

from __future__ import annotations

import pytest

from regops.http import HTTPSettings, make_session
from regops.registry.keys import generate_key, write_key_and_certificate
from regops.registry.tokens import KeyAuth, TokenMinter, load_signing_key
from regops.sandbox.registry_server import RegistryServer

TEST_RSA_BITS = 2048  # the minimum accepted; 4096-bit keys take seconds to generate
TEST_ISSUER = "test-issuer"
TEST_SERVICE = "container_registry"
# The registry never calls its realm; tests that need a realm run their own.
UNUSED_REALM = "http://127.0.0.1:9/jwt/auth"


class SigningMaterial:
    """A key pair on disk: ``key``, ``key_path``, ``cert_path``, ``kid``."""

    def __init__(self, directory) -> None:
        self.key_path, self.cert_path = write_key_and_certificate(
            directory, generate_key("rsa", TEST_RSA_BITS)
        )
        self.key = load_signing_key(self.key_path)
        self.directory = directory

    def __repr__(self) -> str:
        return f"<SigningMaterial {self.directory}>"


@pytest.fixture(scope="session")
def signing_material(tmp_path_factory) -> SigningMaterial:
    """A 2048-bit RSA key and its self-signed certificate in a temporary directory."""
    return SigningMaterial(tmp_path_factory.mktemp("signing"))


@pytest.fixture(scope="session")
def registry_server(signing_material, tmp_path_factory):
    """The real registry: token auth with the fixture key, delete enabled (shared)."""
    server = RegistryServer(
        tmp_path_factory.mktemp("registry"),
        signing_material.cert_path,
        UNUSED_REALM,
        issuer=TEST_ISSUER,
        service=TEST_SERVICE,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def readonly_registry(signing_material, tmp_path_factory):
    """A second real registry in maintenance read-only mode (its own data directory)."""
    server = RegistryServer(
        tmp_path_factory.mktemp("registry-ro"),
        signing_material.cert_path,
        UNUSED_REALM,
        issuer=TEST_ISSUER,
        service=TEST_SERVICE,
        readonly=True,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def minter(signing_material) -> TokenMinter:
    """Mints tokens the fixture registries accept."""
    return TokenMinter(signing_material.key, issuer=TEST_ISSUER, service=TEST_SERVICE)


@pytest.fixture
def key_auth(minter) -> KeyAuth:
    """A fresh KeyAuth (empty token cache) over the fixture minter."""
    return KeyAuth(minter)


@pytest.fixture
def http_session():
    """A regops session without retries, closed after the test."""
    session = make_session(HTTPSettings(timeout=(2.0, 10.0), max_retries=0))
    yield session
    session.close()


def push_blob(session, registry_url: str, authorization: str, repo: str, data: bytes) -> str:
    """Upload ``data`` as a blob with plain HTTP calls (independent of RegistryClient)."""
    from regops.registry.reference import Digest

    digest = Digest.of(data)
    headers = {"Authorization": authorization}
    started = session.post(f"{registry_url}/v2/{repo}/blobs/uploads/", headers=headers)
    assert started.status_code == 202, (started.status_code, started.text)
    location = started.headers["Location"]
    if location.startswith("/"):
        location = registry_url + location
    separator = "&" if "?" in location else "?"
    done = session.put(
        f"{location}{separator}digest={digest}",
        data=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert done.status_code == 201, (done.status_code, done.text)
    return digest


def push_image(
    session, registry_url: str, authorization: str, repo: str, tag: str, layer: bytes
) -> tuple[str, str, str]:
    """Push a one-layer schema-2 image; returns (manifest, config, layer) digests."""
    import json

    from regops.registry.reference import Digest

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-02T03:04:05Z",
            "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(layer))]},
        }
    ).encode()
    config_digest = push_blob(session, registry_url, authorization, repo, config)
    layer_digest = push_blob(session, registry_url, authorization, repo, layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": layer_digest,
                }
            ],
        }
    ).encode()
    put = session.put(
        f"{registry_url}/v2/{repo}/manifests/{tag}",
        data=manifest,
        headers={
            "Authorization": authorization,
            "Content-Type": "application/vnd.docker.distribution.manifest.v2+json",
        },
    )
    assert put.status_code == 201, (put.status_code, put.text)
    return Digest.of(manifest), config_digest, layer_digest
