"""doctor's readers and offline checks: sample gitlab.rb / gitlab.yml, S3 storage, SigV4.

The samples follow the admin guide's own snippets (doc/administration/packages/
container_registry.md: registry_external_url, registry['notifications'],
registry['storage'] with s3 and redirect, registry['internal_key']).
"""

from __future__ import annotations

import datetime

import pytest
import responses
import yaml

from regops.commands.doctor import render
from regops.gitlab.configfile import OMNIBUS_ISSUER, OMNIBUS_KEY_PATH, load_gitlab_config
from regops.gitlab.ruby import read_gitlab_rb
from regops.ops.doctor import build_input, exit_code, run_checks
from regops.registry.keys import certificate_pem, generate_key, make_certificate, private_key_pem
from regops.registry.s3 import EMPTY_SHA256, sign_v4
from regops.secrets import Secret
from tests.leaks import assert_hidden

NOTIFY = "rb-notification-" + "secret-0815"
S3_SECRET = "s3-secret-" + "key-for-access-key"


def ruby_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@pytest.fixture(scope="module")
def key_pair():
    key = generate_key("rsa", 2048)
    return key, private_key_pem(key).reveal(), certificate_pem(make_certificate(key))


def sample_rb(key_pem: str, cert_pem: str, *, threshold: bool = True) -> str:
    retries = "'threshold' => 5," if threshold else "'maxretries' => 5,"
    return f"""\
## GitLab configuration settings (sample)
external_url 'https://gitlab.example.com'
registry_external_url 'https://registry.example.com:5050'
gitlab_rails['registry_notification_secret'] = "{NOTIFY}"
registry['internal_key'] = {ruby_string(key_pem)}
registry['internal_certificate'] = {ruby_string(cert_pem)}
gitlab_rails['gitlab_default_projects_features_container_registry'] = false
registry['notifications'] = [
  {{
    'name' => 'gitlab',
    'url' => 'https://gitlab.example.com/api/v4/container_registry_event/events',
    'timeout' => '500ms',
    {retries}
    'backoff' => '1s',
    'headers' => {{
      "Authorization" => ["{NOTIFY}"]
    }}
  }}
]
nginx['listen_port'] = node['gitlab']['port']   # not a literal: reported by line, not read
"""


def test_ruby_literals_are_read_and_other_lines_only_counted():
    rb = read_gitlab_rb(
        "a['x'] = 'it''s'\n"  # adjacent literals are not in the subset
        "b['y'] = { 'k' => [1, -2.5, nil, true], s: :sym, \"q\": 'v' }\n"
        "c['z']['w'] = \"tab\\tnew\\nline\"\n"
        "external_url('https://h')\n"
        'd = "#{interpolated}"\n'
    )
    assert rb.values == {
        ("b", "y"): {"k": [1, -2.5, None, True], "s": "sym", "q": "v"},
        ("c", "z", "w"): "tab\tnew\nline",
        ("external_url",): "https://h",
    }
    assert rb.skipped == [1, 5]
    assert rb.get("b", "y", "k") == [1, -2.5, None, True]


def test_sample_gitlab_rb_gives_gitlab_side_values(tmp_path, key_pair):
    _key, key_pem, cert_pem = key_pair
    path = tmp_path / "gitlab.rb"
    path.write_text(sample_rb(key_pem, cert_pem))
    config = load_gitlab_config(path)
    assert config.kind == "gitlab.rb"
    assert config.gitlab_url == "https://gitlab.example.com"
    assert config.registry_enabled is True
    assert config.registry_host == "registry.example.com:5050"
    assert config.registry_api_url == "http://localhost:5000"  # the Linux package's default
    assert config.registry_issuer == OMNIBUS_ISSUER == "omnibus-gitlab-issuer"
    assert config.registry_key_path == OMNIBUS_KEY_PATH
    assert config.notification_secret == Secret(NOTIFY)
    assert config.internal_key == Secret(key_pem)
    assert config.default_projects_registry is False
    assert config.sources["notification_secret"] == "gitlab.rb line 4"
    assert config.skipped_lines == [20]
    assert NOTIFY not in repr(config)


def test_doctor_reads_gitlab_rb_offline_key_certificate_and_threshold(tmp_path, key_pair):
    _key, key_pem, cert_pem = key_pair
    path = tmp_path / "gitlab.rb"
    path.write_text(sample_rb(key_pem, cert_pem))
    rows = run_checks(
        build_input(registry_config_path=None, gitlab_config_path=str(path), live=False)
    )
    status = {r.check: r.status for r in rows}
    assert status["gitlab.config"] == "warn"  # line 20 is not a literal
    assert status["auth.rootcertbundle"] == "ok"  # internal_certificate holds the key's public key
    assert status["projects.new-project-default"] == "ok"
    table, text = render(rows, "table"), render(rows, "json")
    key_line = key_pem.splitlines()[3]
    assert_hidden(NOTIFY, table, text)
    assert_hidden(key_line, table, text, what="the private key")

    # a certificate of another key in gitlab.rb is the same failure as in the bundle
    other = certificate_pem(make_certificate(generate_key("rsa", 2048)))
    path.write_text(sample_rb(key_pem, other))
    rows = run_checks(
        build_input(registry_config_path=None, gitlab_config_path=str(path), live=False)
    )
    assert {r.check: r.status for r in rows}["auth.rootcertbundle"] == "fail"


def registry_yml(tmp_path, storage: dict, **extra) -> str:
    data = {
        "version": 0.1,
        "storage": storage,
        "http": {"addr": "localhost:5000"},
        "auth": {
            "token": {
                "realm": "https://gitlab.example.com/jwt/auth",
                "service": "container_registry",
                "issuer": "omnibus-gitlab-issuer",
                "rootcertbundle": str(tmp_path / "missing.crt"),
            }
        },
        **extra,
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_s3_redirect_to_a_local_endpoint_and_no_encryption(tmp_path):
    s3 = {
        "accesskey": "AKIAEXAMPLE",
        "secretkey": S3_SECRET,
        "bucket": "registry",
        "region": "us-east-1",
        "regionendpoint": "http://127.0.0.1:9000",
    }
    config = registry_yml(tmp_path, {"s3": s3, "delete": {"enabled": True}})
    rows = run_checks(build_input(registry_config_path=config, gitlab_config_path=None, live=False))
    status = {r.check: r.status for r in rows}
    assert status["storage.redirect"] == "fail"
    assert status["storage.s3-encryption"] == "warn"
    assert status["storage.s3-endpoint"] == "ok"  # plain HTTP, but to loopback
    assert status["storage.s3-bucket"] == "skipped"  # offline
    assert status["auth.rootcertbundle"] == "fail"  # the bundle file does not exist
    redirect = next(r for r in rows if r.check == "storage.redirect")
    assert "storage.redirect.disable: true" in redirect.fix
    assert_hidden(S3_SECRET, render(rows, "table"), render(rows, "json"))

    s3.update(encrypt=True, keyid="kms-key-1")
    config = registry_yml(tmp_path, {"s3": s3, "redirect": {"disable": True}})
    rows = run_checks(build_input(registry_config_path=config, gitlab_config_path=None, live=False))
    status = {r.check: r.status for r in rows}
    assert (status["storage.redirect"], status["storage.s3-encryption"]) == ("ok", "ok")
    assert status["storage.delete"] == "fail"  # left out this time
    assert exit_code(rows) == 2


@responses.activate
@pytest.mark.parametrize(
    ("status", "headers", "expected", "words"),
    [
        (200, {}, "ok", "answers with the configured credentials"),
        (403, {}, "fail", "credentials are refused"),
        (404, {}, "fail", "no such bucket"),
        (301, {"x-amz-bucket-region": "eu-west-1"}, "fail", "is in region eu-west-1"),
    ],
)
def test_s3_bucket_probe_is_signed_and_judged(tmp_path, status, headers, expected, words):
    s3 = {
        "accesskey": "AKIAEXAMPLE",
        "secretkey": S3_SECRET,
        "bucket": "registry",
        "region": "us-east-1",
        "regionendpoint": "https://s3.example.com",
    }
    responses.add(responses.HEAD, "https://s3.example.com/registry", status=status, headers=headers)
    config = registry_yml(tmp_path, {"s3": s3, "delete": {"enabled": True}})
    given = build_input(registry_config_path=config, gitlab_config_path=None)
    given.now = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)
    rows = [r for r in run_checks(given) if r.check == "storage.s3-bucket"]
    assert [(r.status, words in r.detail) for r in rows] == [(expected, True)]
    sent = responses.calls[0].request.headers["Authorization"]
    assert sent.startswith("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20240501/us-east-1/s3/")
    assert S3_SECRET not in sent


def test_sigv4_reproduces_aws_published_example():
    """AWS's "Signature Version 4 signing process" example (IAM ListUsers, 2015-08-30)."""
    headers = sign_v4(
        "GET",
        "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
        {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        EMPTY_SHA256,
        access_key="AKIDEXAMPLE",
        secret_key=Secret("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        region="us-east-1",
        service="iam",
        now=datetime.datetime(2015, 8, 30, 12, 36, 0),
    )
    assert headers["Authorization"].endswith(
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )
    assert "SignedHeaders=content-type;host;x-amz-date" in headers["Authorization"]


def test_unreadable_files_are_failed_rows_without_content(tmp_path):
    bad = tmp_path / "config.yml"
    bad.write_text("version: 0.1\nstorage: [unclosed\n")
    rb = tmp_path / "nothing.yml"
    rows = run_checks(
        build_input(registry_config_path=str(bad), gitlab_config_path=str(rb), live=False)
    )
    status = {r.check: r.status for r in rows}
    assert status["registry.config"] == "fail" and status["gitlab.config"] == "fail"
    details = {r.check: r.detail for r in rows}
    assert "not valid YAML at line" in details["registry.config"]
    assert "unclosed" not in details["registry.config"]
    assert "no such file" in details["gitlab.config"]
