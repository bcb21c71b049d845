"""``regops cleanup forecast`` / ``ExpirationPolicy.where(enabled=True).forecast()`` on the
sandbox (the real registry). Expected deletes and bytes are worked out here from the
registry's own files (tests/oracle.py) and GitLab's JSON, not from regops' planner.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from regops import cli
from regops.models import ExpirationPolicy
from regops.ops.forecast import next_worker_run
from tests import oracle

pytestmark = pytest.mark.registry

WEB_POLICY = {"enabled": True, "keep_n": 5, "older_than": "14d", "name_regex": ".*",
              "name_regex_keep": None, "cadence": "1d"}  # fmt: skip
# Deletes every tag but latest (nothing kept by count, age or name).
BASE_POLICY = {"keep_n": None, "older_than": None, "name_regex": ".*", "name_regex_keep": None}


def created_at(root, digest: str) -> datetime:
    manifest = oracle.document(root, digest)
    config = oracle.document(root, manifest["config"]["digest"])
    return datetime.fromisoformat(config["created"].replace("Z", "+00:00"))


def blobs(root, digest: str) -> dict[str, int]:
    """Every blob a tag pins: its manifest, config and layers (no index in these repos)."""
    manifest = oracle.document(root, digest)
    found = {digest: len(oracle.blob(root, digest))}
    found[manifest["config"]["digest"]] = manifest["config"]["size"]
    found.update({layer["digest"]: layer["size"] for layer in manifest["layers"]})
    return found


def expected_repository(root, repo: str, keep_n: int | None, older_than: timedelta | None,
                        now: datetime) -> tuple[set[str], int, int]:  # fmt: skip
    """(deleted tags, their total_size sum, bytes only they pin) by GitLab's steps, by hand."""
    links = oracle.tag_links(root, repo)
    candidates = [t for t in links if t != "latest"]
    newest = sorted(candidates, key=lambda t: created_at(root, links[t]), reverse=True)
    rest = newest[keep_n:] if keep_n is not None else newest
    if older_than is not None:
        rest = [t for t in rest if created_at(root, links[t]) < now - older_than]
    deleted = set(rest)
    size = sum(oracle.gitlab_total_size(oracle.document(root, links[t])) for t in deleted)
    gone: dict[str, int] = {}
    kept: set[str] = set()
    for name, digest in links.items():
        (gone.update if name in deleted else kept.update)(blobs(root, digest))
    return deleted, size, sum(s for d, s in gone.items() if d not in kept)


@pytest.fixture
def changed(fresh_sandbox):
    """apps/web enabled; platform/base-images deleting all but latest."""
    connection = fresh_sandbox.connect("admin", registry_auth="key")
    gitlab = connection.gitlab
    gitlab.update_project("apps/web", container_expiration_policy_attributes=WEB_POLICY)
    gitlab.update_project(
        "platform/base-images", container_expiration_policy_attributes=BASE_POLICY
    )
    yield fresh_sandbox, connection
    connection.close()


def test_forecast_every_enabled_policy(changed):
    sandbox, connection = changed
    root = sandbox.storage_path
    now = datetime.now(timezone.utc)
    result = ExpirationPolicy.where(enabled=True, connection=connection).forecast(
        now=now, horizon=timedelta(days=2)
    )
    rows = {row.project_path: row for row in result}
    assert sorted(rows) == [
        "apps/mobile/android", "apps/web", "platform/base-images", "platform/tools",
    ]  # fmt: skip

    # apps/web: worked out by hand per repository from the storage files.
    web = rows["apps/web"]
    expected = [expected_repository(root, repo, 5, timedelta(days=14), now)
                for repo in ("apps/web", "apps/web/frontend", "apps/web/backend")]  # fmt: skip
    assert web.deleted_tags == sum(len(e[0]) for e in expected) > 0
    assert web.deleted_bytes == sum(e[1] for e in expected)
    assert web.freed_bytes == sum(e[2] for e in expected)
    assert {(p.repository, t.name) for p in web.plans for t in p.to_delete} == {
        (repo, tag)
        for repo, e in zip(("apps/web", "apps/web/frontend", "apps/web/backend"), expected,
                           strict=True)
        for tag in e[0]
    }  # fmt: skip
    assert web.status == "ok" and web.all_but_latest == []

    # platform/base-images: everything but latest goes, in both repositories.
    base = rows["platform/base-images"]
    repos = ("platform/base-images", "platform/base-images/debian")
    assert base.all_but_latest == list(repos)
    assert base.deleted_tags == sum(len(oracle.tag_links(root, r)) - 1 for r in repos)

    # The invalid regex: GitLab skips the run; nothing is read or counted.
    android = rows["apps/mobile/android"]
    assert android.status == "invalid regex" and android.deleted_tags == 0
    assert "not valid RE2 syntax" in android.problems[0]

    # When: GitLab's next_run_at, then the worker's next hh:50.
    policy = connection.gitlab.project("apps/web")["container_expiration_policy"]
    next_run = datetime.fromisoformat(policy["next_run_at"].replace("Z", "+00:00"))
    assert web.next_run_at == next_run
    start = max(now, next_run)
    tick = start.replace(minute=50, second=0, microsecond=0)
    assert web.runs_at == (tick if tick >= start else tick + timedelta(hours=1))
    assert web.due  # cadence 1d, saved just now: within two days
    assert result.max_list_size == 200 and "settings" in result.max_list_source


def test_over_the_tag_limit_from_gitlabs_settings(changed):
    sandbox, connection = changed
    limit = "container_registry_cleanup_tags_service_max_list_size"
    connection.gitlab.update_application_settings(**{limit: 3})
    result = ExpirationPolicy.where(enabled=True, connection=connection).forecast()
    web = next(row for row in result if row.project_path == "apps/web")
    assert (result.max_list_size, result.max_list_source) == (3, "from GitLab's settings")
    assert web.status == "over the tag limit"
    frontend = next(p for p in web.plans if p.repository == "apps/web/frontend")
    candidates = len(oracle.tag_links(sandbox.storage_path, "apps/web/frontend")) - 1
    assert candidates > 3 + 5 and frontend.deleted_size <= 3 and not frontend.finished
    assert any("apps/web/frontend: 12 candidates, over the limit of 3" in p for p in web.problems)


def test_next_worker_run():
    at = datetime(2026, 1, 1, 10, 20, tzinfo=timezone.utc)
    assert next_worker_run(at, at - timedelta(hours=3)) == at.replace(minute=50)
    assert next_worker_run(at, at + timedelta(minutes=31)) == at.replace(hour=11, minute=50)
    assert next_worker_run(at.replace(minute=50), at) == at.replace(minute=50)
    assert next_worker_run(None, at) is None


def test_cli_forecast_json_plot_and_bad_input(changed, monkeypatch, tmp_path, capsys):
    sandbox, _connection = changed
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    plot = tmp_path / "forecast.png"
    code = cli.main(["cleanup", "forecast", "--format", "json", "--within", "2d", "--plot",
                     str(plot), "--no-progress"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    web = next(p for p in document["policies"] if p["project_path"] == "apps/web")
    now = datetime.now(timezone.utc)
    expected = [expected_repository(sandbox.storage_path, repo, 5, timedelta(days=14), now)
                for repo in ("apps/web", "apps/web/frontend", "apps/web/backend")]  # fmt: skip
    assert web["deleted_tags"] == sum(len(e[0]) for e in expected)
    assert web["freed_bytes"] == sum(e[2] for e in expected)
    assert web["due"] is True
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert captured.err.count("\n") == 1 and "enabled policies" in captured.err
    assert sandbox.admin_token.reveal() not in captured.out + captured.err

    assert cli.main(["cleanup", "forecast", "--within", "tonight"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--within" in err and "tonight" in err
    assert cli.main(["cleanup", "forecast", "--plot", "out.gif"]) == 2
    assert "--plot" in capsys.readouterr().err
