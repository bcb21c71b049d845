"""The one reader of the registry's config.yml: what it reads, and how it refuses a bad file."""

from __future__ import annotations

import pytest
import yaml

from regops.errors import ConfigError
from regops.registry.backends import FilesystemBackend, S3Backend
from regops.registry.configfile import RegistryConfig

SECRET = "s3cr3t-value-never-shown"

S3_CONFIG = f"""\
version: 0.1
http:
  addr: 127.0.0.1:5000
auth:
  token:
    realm: https://gitlab.example.com/jwt/auth
    issuer: omnibus-gitlab-issuer
storage:
  delete:
    enabled: "true"
  s3:
    bucket: registry
    regionendpoint: http://127.0.0.1:9000
    secretkey: {SECRET}
notifications:
  endpoints:
    - name: gitlab
      url: https://gitlab.example.com/api/v4/container_registry_event/events
      headers:
        Authorization: [{SECRET}]
"""


def write(tmp_path, text, name="config.yml"):
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


def test_reads_every_section_the_checks_and_gc_use(tmp_path):
    config = RegistryConfig.load(write(tmp_path, S3_CONFIG), environ={})
    assert config.driver == "s3"
    assert config.delete_enabled is True and config.readonly is False
    assert config.http_addr == "127.0.0.1:5000"
    assert config.token_auth == {
        "realm": "https://gitlab.example.com/jwt/auth",
        "issuer": "omnibus-gitlab-issuer",
    }
    [endpoint] = config.notification_endpoints
    assert endpoint.header("authorization") == [SECRET]
    assert isinstance(config.backend(), S3Backend)
    assert SECRET not in repr(config) and SECRET not in repr(endpoint)


def test_environment_overrides_driver_parameters_as_the_registry_does(tmp_path):
    environ = {
        "REGISTRY_STORAGE_S3_BUCKET": "from-env",
        "REGISTRY_STORAGE_S3_SOMETHING_NESTED": "ignored",  # nested keys are not flat params
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/elsewhere",  # another driver
    }
    params = RegistryConfig.load(write(tmp_path, S3_CONFIG), environ).driver_parameters()
    assert params["bucket"] == "from-env"
    assert params["regionendpoint"] == "http://127.0.0.1:9000"
    assert "something_nested" not in params and "rootdirectory" not in params


def test_filesystem_default_root(tmp_path):
    config = RegistryConfig.load(write(tmp_path, "version: 0.1\nstorage:\n  filesystem: {}\n"), {})
    backend = config.backend()
    assert isinstance(backend, FilesystemBackend)
    assert str(backend.root) == "/var/lib/registry"


def test_with_readonly_switches_only_that_flag(tmp_path):
    config = RegistryConfig.load(write(tmp_path, S3_CONFIG), environ={})
    switched = yaml.safe_load(config.with_readonly(True))
    assert switched["storage"]["maintenance"] == {"readonly": {"enabled": True}}
    original = yaml.safe_load(S3_CONFIG)
    del switched["storage"]["maintenance"]
    assert switched == original
    assert config.raw == S3_CONFIG.encode()  # kept to the byte for the restore
    assert RegistryConfig.parse(config.with_readonly(True)).readonly is True


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f"storage:\n  filesystem: {{}}\nsecret: {SECRET}\n", "not a registry configuration"),
        (f"version: 0.1\nstorage: [{SECRET}\n", "not valid YAML at line 3"),
        (b"version: 0.1\n\xff\xfe" + SECRET.encode(), "not UTF-8 text"),
        (f"version: 0.1\nstorage:\n  s3: {{secretkey: {SECRET}}}\n  gcs: {{}}\n", "found gcs, s3"),
        ("version: 0.1\nstorage:\n  delete: {enabled: true}\n", "found none"),
        (f"version: 0.1\nstorage:\n  s3:\n    secretkey: {SECRET}\n", "storage.s3 has no bucket"),
        ("version: 0.1\nstorage:\n  azure: {}\n", "'azure' is not supported"),
    ],
)
def test_bad_files_are_named_never_quoted(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        RegistryConfig.load(path, environ={}).backend()
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert SECRET not in str(info.value)


def test_missing_and_oversized_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        RegistryConfig.load(tmp_path / "absent.yml")
    big = write(tmp_path, "version: 0.1\n# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than a registry config can be"):
        RegistryConfig.load(big)


def test_an_s3_client_that_cannot_be_built_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", "")  # botocore refuses an empty CA bundle
    config = RegistryConfig.load(write(tmp_path, S3_CONFIG), environ={})
    with pytest.raises(ConfigError) as info:
        config.backend()
    assert "cannot set up the S3 client for s3://registry" in str(info.value)
    assert "CA bundle" in str(info.value) and SECRET not in str(info.value)
