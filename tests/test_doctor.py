"""``regops doctor`` against REAL registries started with configs the tests write.

Each test plants one misconfiguration in the registry's config.yml (or in
GitLab's gitlab.yml), starts the real Distribution registry with it where it
starts at all, and checks that exactly the matching rows leave ``ok``, with
their fix; a correct setup gives only ok/skipped rows and exit 0. Expected
statuses are literals; no secret may appear in the table or the JSON.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from regops import cli
from regops.commands.doctor import render
from regops.commands.events import ReceiverApp, ReceiverServer
from regops.ops.doctor import build_input, exit_code, run_checks
from regops.ops.events import EventStore
from regops.registry.keys import certificate_pem, generate_key, make_certificate
from regops.sandbox.registry_server import RegistryServer
from regops.secrets import Secret
from tests.fixtures_registry import TEST_ISSUER, TEST_SERVICE
from tests.leaks import assert_hidden

pytestmark = pytest.mark.registry

GITLAB_URL = "http://127.0.0.1:9"  # GitLab's URL as gitlab.yml says; nothing is asked of it
REALM = GITLAB_URL + "/jwt/auth"
NOTIFY_SECRET = Secret("doctor-" + "notification-secret-4711")


def write_gitlab_yml(path: Path, registry_url: str, key_path: Path, **registry: object) -> Path:
    """A gitlab.yml as the Linux package renders it (the parts doctor reads)."""
    host, port = registry_url.removeprefix("http://").split(":")
    data = {
        "production": {
            "gitlab": {"host": "127.0.0.1", "port": 9, "https": False},
            "registry": {
                "enabled": True,
                "host": host,
                "port": int(port),
                "api_url": registry_url,
                "key": str(key_path),
                "issuer": TEST_ISSUER,
                "notification_secret": NOTIFY_SECRET.reveal(),
                **registry,
            },
        }
    }
    path.write_text(yaml.safe_dump(data))
    return path


class Setup:
    """A real registry + receiver + gitlab.yml; ``plant`` changes the registry's config."""

    def __init__(self, tmp_path: Path, signing_material) -> None:
        self.tmp = tmp_path
        self.material = signing_material
        self.store = EventStore(tmp_path / "events.sqlite3")
        self.receiver = ReceiverServer(ReceiverApp(self.store, NOTIFY_SECRET)).start()

    def endpoint(self, **changes: object) -> dict:
        endpoint = {
            "name": "regops",
            "url": self.receiver.url,
            "headers": {"Authorization": [NOTIFY_SECRET.reveal()]},
            "timeout": "1s",
            "maxretries": 3,
            "backoff": "200ms",
        }
        endpoint.update(changes)
        return endpoint

    def run(self, *, cert_path: Path | None = None, drop_auth: bool = False, **extra: object):
        """Start the registry with ``extra`` config merged in; doctor's rows (registry stopped)."""
        config = {"notifications": {"endpoints": [self.endpoint()]}, **extra}
        server = RegistryServer(
            self.tmp / "registry",
            cert_path or self.material.cert_path,
            REALM,
            issuer=extra.pop("issuer", TEST_ISSUER),  # type: ignore[arg-type]
            service=TEST_SERVICE,
            extra_config=config,
        )
        if drop_auth:
            original = server.config

            def without_auth() -> dict:
                data = original()
                data.pop("auth")
                return data

            server.config = without_auth  # type: ignore[method-assign]
        server.start()
        try:
            gitlab_yml = write_gitlab_yml(
                self.tmp / "gitlab.yml", server.url, self.material.key_path
            )
            given = build_input(
                registry_config_path=str(server.config_path),
                gitlab_config_path=str(gitlab_yml),
            )
            rows = run_checks(given)
        finally:
            server.stop()
        self.check_no_secret(rows)
        return rows

    def check_no_secret(self, rows) -> None:
        key_pem = self.material.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        key_body = key_pem.splitlines()[5]  # a line of the key itself
        for text in (render(rows, "table"), render(rows, "json")):
            assert_hidden(NOTIFY_SECRET, text, what="the notification secret")
            assert_hidden(key_body, text, what="the signing key")

    def close(self) -> None:
        self.receiver.stop()
        self.store.close()


@pytest.fixture
def setup(tmp_path, signing_material):
    made = Setup(tmp_path, signing_material)
    yield made
    made.close()


def not_ok(rows) -> dict[str, str]:
    return {row.check: row.status for row in rows if row.status not in ("ok", "skipped")}


def row(rows, check: str):
    (found,) = [r for r in rows if r.check == check]
    return found


# Rows that must be ok (not merely skipped) in a correct setup: what the planted cases break.
MUST_BE_OK = (
    "registry.config",
    "gitlab.config",
    "gitlab.registry-enabled",
    "auth.token",
    "auth.realm",
    "auth.service",
    "auth.issuer",
    "auth.rootcertbundle",
    "tls.token-certificate",
    "gitlab.api-url",
    "live.v2",
    "live.token",
    "live.registry-host",
    "storage.delete",
    "storage.readonly",
    "notifications.regops.secret",
    "notifications.regops.retries",
    "notifications.regops.reachable",
)


def test_a_correct_setup_is_all_ok(setup):
    rows = setup.run()
    assert not_ok(rows) == {}
    assert {r.check: r.status for r in rows if r.check in MUST_BE_OK} == dict.fromkeys(
        MUST_BE_OK, "ok"
    )
    assert exit_code(rows) == 0


def test_token_auth_off_is_reported_by_auth_token_and_live_v2(setup):
    rows = setup.run(drop_auth=True)
    assert not_ok(rows) == {"auth.token": "fail", "live.v2": "fail"}
    assert "anyone" in row(rows, "auth.token").detail
    assert f"realm: {REALM}" in row(rows, "auth.token").fix
    assert "answers 200 without credentials" in row(rows, "live.v2").detail
    assert exit_code(rows) == 2


def test_a_mismatched_issuer_is_reported_with_both_fix_lines(setup):
    rows = setup.run(issuer="someone-else")
    assert not_ok(rows) == {"auth.issuer": "fail", "live.token": "fail"}
    issuer = row(rows, "auth.issuer")
    assert "expects issuer someone-else, GitLab signs as test-issuer" in issuer.detail
    assert f"gitlab_rails['registry_issuer'] = \"{TEST_ISSUER}\"" in issuer.fix
    assert f"config.yml: auth.token.issuer: {TEST_ISSUER}" in issuer.fix
    assert "refused a token signed with GitLab's key" in row(rows, "live.token").detail


def test_a_certificate_of_another_key_is_reported(setup, tmp_path):
    other = tmp_path / "other.crt"
    other.write_text(certificate_pem(make_certificate(generate_key("rsa", 2048))))
    rows = setup.run(cert_path=other)
    assert not_ok(rows) == {"auth.rootcertbundle": "fail", "live.token": "fail"}
    bundle = row(rows, "auth.rootcertbundle")
    assert "no certificate in" in bundle.detail and "every token GitLab signs is refused" in (
        bundle.detail
    )
    assert "regops keys generate" in bundle.fix


def test_an_expiring_token_certificate_warns(setup, tmp_path):
    soon = tmp_path / "soon.crt"
    soon.write_text(certificate_pem(make_certificate(setup.material.key, days=10)))
    rows = setup.run(cert_path=soon)
    assert not_ok(rows) == {"tls.token-certificate": "warn"}  # tokens still verify: live ok
    expiry = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10)).date()
    detail = row(rows, "tls.token-certificate").detail
    assert f"expires on {expiry}" in detail or "in 9 days" in detail
    assert exit_code(rows) == 1


def test_a_wrong_notification_header_and_threshold_are_reported(setup):
    endpoint = setup.endpoint(headers={"Authorization": ["not-the-secret"]}, threshold=5)
    del endpoint["maxretries"]
    rows = setup.run(notifications={"endpoints": [endpoint]})
    assert not_ok(rows) == {
        "notifications.regops.secret": "fail",
        "notifications.regops.retries": "warn",
        "notifications.regops.reachable": "fail",
    }
    assert (
        "differs from GitLab's notification secret"
        in row(rows, "notifications.regops.secret").detail
    )
    retries = row(rows, "notifications.regops.retries")
    assert "replace threshold: 5 with maxretries: 5" in retries.fix
    assert (
        "refuses the configured Authorization header (401)"
        in row(rows, "notifications.regops.reachable").detail
    )


def test_delete_disabled_is_reported_by_storage_delete(setup):
    rows = setup.run(storage={"delete": {"enabled": False}})
    assert not_ok(rows) == {"storage.delete": "fail"}
    assert "registry['storage_delete_enabled'] = true" in row(rows, "storage.delete").fix


def test_read_only_mode_warns(setup):
    rows = setup.run(storage={"maintenance": {"readonly": {"enabled": True}}})
    assert not_ok(rows) == {"storage.readonly": "warn"}


def test_the_command_prints_json_rows_and_exits_by_the_worst_status(
    setup, tmp_path, monkeypatch, capsys
):
    for name in (
        "GITLAB_URL",
        "GITLAB_PRIVATE_TOKEN",
        "REGOPS_REGISTRY_URL",
        "REGOPS_REGISTRY_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    server = RegistryServer(
        tmp_path / "registry",
        setup.material.cert_path,
        REALM,
        issuer=TEST_ISSUER,
        extra_config={"storage": {"delete": {"enabled": False}}},
    ).start()
    try:
        gitlab_yml = write_gitlab_yml(tmp_path / "gitlab.yml", server.url, setup.material.key_path)
        argv = [
            "doctor",
            "--registry-config",
            str(server.config_path),
            "--gitlab-config",
            str(gitlab_yml),
        ]
        code = cli.main([*argv, "--format", "json"])
        out = capsys.readouterr().out
        quiet = cli.main([*argv, "-q"])
        quiet_out = capsys.readouterr().out
    finally:
        server.stop()
    rows = json.loads(out)
    assert code == 2
    assert all(set(r) == {"check", "status", "detail", "fix"} for r in rows)
    assert {r["check"]: r["status"] for r in rows}["storage.delete"] == "fail"
    assert quiet == 2 and "storage.delete" in quiet_out and "auth.issuer" not in quiet_out
    assert_hidden(NOTIFY_SECRET, out, quiet_out)
