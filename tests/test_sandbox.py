"""The sandbox itself: lifecycle, persistence, env, seeds, the ``regops sandbox`` command."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import subprocess
import threading

import pytest

from regops.errors import ValidationError
from regops.registry.manifest import OCI_INDEX
from regops.registry.storage import RegistryStorage
from regops.sandbox import Sandbox, run_seeded
from regops.sandbox.state import SandboxState
from tests.leaks import assert_hidden

pytestmark = pytest.mark.registry


def test_env_points_at_the_sandbox_and_repr_hides_tokens(sandbox):
    env = sandbox.env()
    assert env["GITLAB_URL"] == sandbox.gitlab_url
    assert env["GITLAB_PRIVATE_TOKEN"] == sandbox.admin_token.reveal()
    assert env["REGOPS_REGISTRY_AUTH"] == "key"
    assert env["REGOPS_REGISTRY_KEY"] == str(sandbox.key_path)
    assert env["REGOPS_REGISTRY_STORAGE"] == str(sandbox.storage_path)
    user_env = sandbox.env("user")
    assert user_env["REGOPS_REGISTRY_AUTH"] == "realm"
    assert user_env["REGOPS_REGISTRY_USER"] == "dev"
    assert "REGOPS_REGISTRY_KEY" not in user_env
    assert sandbox.admin_token != sandbox.user_token
    for text in (repr(sandbox), repr(sandbox.state.users), repr(sandbox.connect())):
        assert_hidden(sandbox.admin_token, text)
        assert_hidden(sandbox.user_token, text)


def test_env_file_is_private_and_sourceable(sandbox, tmp_path):
    path = sandbox.write_env_file(tmp_path / "env" / "sandbox.env", user="user")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = subprocess.run(
        ["bash", "-c", f"source {path} && env"], capture_output=True, text=True, check=True
    ).stdout
    assert f"GITLAB_URL={sandbox.gitlab_url}" in shown
    assert f"GITLAB_PRIVATE_TOKEN={sandbox.user_token.reveal()}" in shown


def test_connect_ignores_the_environment(sandbox, monkeypatch):
    monkeypatch.setenv("GITLAB_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GITLAB_PRIVATE_TOKEN", "glpat-from-the-environment")
    connection = sandbox.connect("user")
    assert connection.settings.gitlab_url == sandbox.gitlab_url
    assert connection.current_user()["username"] == "dev"
    assert connection.registry_host == sandbox.registry_host


def test_demo_seed_shapes(sandbox):
    registry = sandbox.registry
    catalog = set(registry.catalog())
    assert {
        "platform/base-images",
        "platform/base-images/debian",
        "platform/tools/ci",
        "platform/tools/lint",
        "apps/web",
        "apps/web/frontend",
        "apps/web/backend",
        "apps/mobile/android",
    } == catalog
    # A multi-arch OCI index with two platforms.
    index = registry.get_manifest("platform/tools/ci", "1.0")
    assert index.media_type == OCI_INDEX and len(index.children) == 2
    # One base layer shared by every image of every project.
    bases = {
        registry.get_manifest(repo, tag).layers[0].digest
        for repo, tag in (
            ("apps/web", "v1.0"),
            ("platform/tools/lint", "2024.03"),
            ("apps/mobile/android", "latest"),
        )
    }
    assert len(bases) == 1
    # latest and stable share v1.5's digest.
    digests = {t: registry.manifest_digest("apps/web", t) for t in ("latest", "stable", "v1.5")}
    assert len(set(digests.values())) == 1
    # The backend repository holds one manifest no tag points at.
    storage = RegistryStorage(sandbox.storage_path)
    revisions = set(storage.manifest_revisions("apps/web/backend"))
    tagged = {
        registry.manifest_digest("apps/web/backend", t) for t in registry.tags("apps/web/backend")
    }
    assert len(revisions - tagged) == 1


def test_demo_configs_carry_created_times(sandbox):
    registry = sandbox.registry
    manifest = registry.get_manifest("apps/mobile/android", "build-1")
    config = registry.get_config("apps/mobile/android", manifest.config.digest)
    assert config.created is not None
    newer = registry.get_manifest("apps/mobile/android", "build-8")
    assert registry.get_config("apps/mobile/android", newer.config.digest).created > config.created


def test_persistence_across_restarts(tmp_path):
    data = tmp_path / "kept"
    with Sandbox(data) as first:
        first.seed("bench", projects=1, repositories=2, tags=3, distinct_share=1.0)
        token = first.admin_token.reveal()
        client = first.connect().gitlab
        repos = {r["path"]: r["id"] for r in client.project_repositories("bench/project-0000")}
        kid_cert = first.cert_path.read_bytes()
    assert (data / "state.json").exists()
    assert stat.S_IMODE((data / "state.json").stat().st_mode) == 0o600
    assert_hidden(token, json.dumps(sorted(os.listdir(data))))
    with Sandbox(data) as second:
        assert second.admin_token.reveal() == token
        assert second.cert_path.read_bytes() == kid_cert
        client = second.connect().gitlab
        again = {r["path"]: r["id"] for r in client.project_repositories("bench/project-0000")}
        assert again == repos
        assert second.registry.tags("bench/project-0000") == ["tag-0000", "tag-0001", "tag-0002"]
        loaded = SandboxState.load(data)
        assert loaded.user_by_username("root").token.reveal() == token


def test_temporary_sandbox_cleans_up():
    sandbox = Sandbox().start()
    data = sandbox.data_dir
    assert data.exists()
    sandbox.stop()
    assert not data.exists()


def test_bench_seed_counts_and_sharing(tmp_path):
    with Sandbox() as sandbox:
        summary = sandbox.seed("bench", projects=2, repositories=2, tags=6, distinct_share=0.5)
        assert summary["repositories"] == 4 and summary["tags"] == 24
        assert summary["manifests"] == 12  # half the tags have their own image
        registry = sandbox.registry
        repo = "bench/project-0001/repo-1"
        tags = registry.tags(repo)
        assert len(tags) == 6
        assert len({registry.manifest_digest(repo, t) for t in tags}) == 3
        gitlab = sandbox.connect().gitlab
        project = gitlab.project("bench/project-0000")
        assert project["container_expiration_policy"]["enabled"] is True


def test_seed_rejects_unknown_profile_and_bad_options(sandbox):
    with pytest.raises(ValidationError):
        sandbox.seed("nope")
    with pytest.raises(ValidationError):
        sandbox.seed("bench", projects=1, distinct_share=0)


def test_run_seeded_none():
    with run_seeded("none") as sandbox:
        assert sandbox.state.projects == {}
        assert sandbox.connect().current_user()["username"] == "root"


def test_sandbox_command_prints_no_token(tmp_path):
    from regops.commands.sandbox import run

    args = argparse.Namespace(
        seed="none",
        data=str(tmp_path / "data"),
        env_file=None,
        user="admin",
        gitlab_port=0,
        registry_port=0,
        bench_projects=1,
        bench_repositories=1,
        bench_tags=1,
        bench_distinct_share=1.0,
    )
    stop = threading.Event()
    out = io.StringIO()
    stop.set()  # return right after printing
    assert run(args, stop=stop, out=out) == 0
    text = out.getvalue()
    env_file = tmp_path / "data" / "sandbox.env"
    assert f"source {env_file}" in text
    assert "root (admin)" in text and "dev" in text
    token = SandboxState.load(tmp_path / "data").user_by_username("root").token.reveal()
    assert_hidden(token, text)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert token in env_file.read_text()


def test_cli_parser_knows_sandbox():
    from regops.cli import build_parser

    args = build_parser().parse_args(["sandbox", "--seed", "bench", "--bench-projects", "3"])
    assert args.seed == "bench" and args.bench_projects == 3


def test_regops_sandbox_process_stops_cleanly_on_sigint(tmp_path):
    import signal
    import sys

    data = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "regops", "sandbox", "--seed", "none", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    text = "".join(lines) + rest
    assert process.returncode == 0, errors
    assert f"source {data / 'sandbox.env'}" in text
    assert "  GITLAB_URL=http://127.0.0.1:" in text and "  GITLAB_PRIVATE_TOKEN=***" in text
    assert "stopping the sandbox" in text
    token = SandboxState.load(data).user_by_username("root").token.reveal()
    assert_hidden(token, text, errors)


def test_every_repository_is_findable_by_id_right_after_seeding(fresh_sandbox):
    gitlab = fresh_sandbox.connect().gitlab  # no repository list read first
    paths = sorted(fresh_sandbox.registry.catalog())
    records = fresh_sandbox.state.repositories
    assert paths and sorted(records) == paths
    for path in paths:
        assert gitlab.repository(records[path].id)["path"] == path


def test_a_push_token_creates_the_repository_record(fresh_sandbox):
    from regops.registry.client import RegistryClient
    from regops.registry.tokens import RealmAuth
    from regops.sandbox.images import push_image, simple_image

    dev = fresh_sandbox.user("dev")
    auth = RealmAuth("dev", dev.token, allowed_origins=[fresh_sandbox.gitlab_url])
    client = RegistryClient(fresh_sandbox.registry_url, auth)
    push_image(client, "apps/web/newly-pushed", simple_image(7), ["v1"])
    record = fresh_sandbox.state.repositories["apps/web/newly-pushed"]
    assert fresh_sandbox.connect().gitlab.repository(record.id)["name"] == "newly-pushed"
