"""The cleanup recipes and ``regops restore`` against the sandbox (real registry).

What must NOT be deleted is checked with skopeo, an independent client: every
tag outside the plan must still resolve to its old digest.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regops import cli
from regops.connection import set_default_connection
from regops.locks import RunLock
from regops.models import Project
from regops.ops.audit import read_audit_log
from regops.registry.storage import RegistryStorage
from regops.registry.tokens import TokenMinter, load_signing_key
from tests.leaks import assert_hidden
from tests.skopeo import skopeo_digest

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
WEB = "apps/web"  # demo project: 3 repositories, v1.x releases and daily main builds
OVERRIDES = ["--policy-override", "keep_n=5", "--policy-override", "older_than=7d"]
OVERRIDE_ATTRS = {"keep_n": 5, "older_than": "7d"}
KILL_AFTER_INTENTS = 3
# The plan for WEB under OVERRIDES, worked out from the demo seed by hand: the root
# repository's v1.0..v1.5 are 150 - 25*minor days old (stable shares v1.5, latest is
# kept), so keep_n=5 keeps stable, v1.5..v1.2; frontend's main-NNN are NNN*5 + 0.5
# days old, so main-000..004 are kept; backend has only two candidates (keep_n keeps).
EXPECTED_PLAN = {
    ("apps/web", "v1.0"),
    ("apps/web", "v1.1"),
    *(("apps/web/frontend", f"main-{day:03d}") for day in range(5, 12)),
}


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def env(fresh_sandbox, tmp_path, monkeypatch):
    """The sandbox's environment, a private state dir and an empty HOME; returns it."""
    values = {
        **fresh_sandbox.env(),
        "REGOPS_STATE_DIR": str(tmp_path / "state"),
        "HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir()
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    yield values
    set_default_connection(None)


@pytest.fixture
def conn(fresh_sandbox):
    connection = fresh_sandbox.connect("admin", registry_auth="key")
    yield connection
    connection.close()


def audit_files(env) -> list[Path]:
    return sorted((Path(env["REGOPS_STATE_DIR"]) / "audit").glob("cleanup-*.jsonl"))


def web_tags(conn) -> dict[tuple[str, str], str]:
    """(repository, tag) -> digest for every tag of the web project, from the registry."""
    registry = conn.registry
    project = Project.find(WEB, connection=conn)
    found = {}
    for repository in project.container_repositories:
        for tag in registry.tags(repository.path):
            found[(repository.path, tag)] = str(registry.manifest_digest(repository.path, tag))
    return found


def planned(conn) -> set[tuple[str, str]]:
    project = Project.find(WEB, connection=conn)
    plan = project.container_expiration_policy.plan(project, overrides=OVERRIDE_ATTRS)
    return {(p.repository, t.name) for p in plan for t in p.to_delete}


def sandbox_digest(sandbox, repo: str, tag: str) -> str | None:
    """What skopeo sees for ``repo:tag`` on the sandbox (tokens minted with its key)."""
    minter = TokenMinter(
        load_signing_key(sandbox.key_path), issuer=sandbox.issuer, service=sandbox.service
    )
    return skopeo_digest(sandbox.registry_host, repo, tag, minter)


def assert_only_planned_gone(sandbox, conn, before, plan) -> None:
    """Planned tags are gone; every other tag resolves (skopeo) to its old digest."""
    after = web_tags(conn)
    assert set(after) == set(before) - plan
    for repo, tag in sorted(set(before) - plan):
        assert sandbox_digest(sandbox, repo, tag) == before[(repo, tag)], (repo, tag)
    repo, tag = sorted(plan)[0]
    assert sandbox_digest(sandbox, repo, tag) is None


def test_dry_run_prints_the_plan_and_deletes_nothing(env, conn, capsys):
    before = web_tags(conn)
    code = load_recipe("run_cleanup_policy").main(["--project", WEB, *OVERRIDES])
    out, err = capsys.readouterr()
    assert code == 0
    assert "main-011" in out and "delete" in out and "older than 7d" in out
    assert err.count("\n") == 1 and "dry run, nothing deleted" in err
    assert web_tags(conn) == before
    assert audit_files(env) == []


def test_execute_deletes_exactly_the_plan_and_restore_brings_it_back(
    env, conn, fresh_sandbox, capsys
):
    before, plan = web_tags(conn), planned(conn)
    assert plan == EXPECTED_PLAN
    assert ("apps/web", "stable") not in plan  # shares v1.5's digest; must survive

    code = load_recipe("run_cleanup_policy").main(["--project", WEB, *OVERRIDES, "--execute"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "deleted 9, already gone 0, skipped 0, rolled back 0, failed 0" in err
    assert "main-005" in out and "older than 7d" in out  # the plan, then the results
    assert_only_planned_gone(fresh_sandbox, conn, before, plan)
    [audit] = audit_files(env)
    log = read_audit_log(audit)
    assert log.warnings == [] and log.pending() == []
    assert {(r.repository, r.tag) for r in log.results("deleted")} == plan
    assert_hidden(env["GITLAB_PRIVATE_TOKEN"], audit.read_text())

    code = cli.main(["restore", str(audit), "--project", WEB])
    _out, err = capsys.readouterr()
    assert code == 0, err
    assert "restored 9, already present 0, not restorable 0" in err
    for repo, tag in sorted(plan):
        assert sandbox_digest(fresh_sandbox, repo, tag) == before[(repo, tag)]
    assert web_tags(conn) == before


def test_restore_exits_1_and_says_why_when_a_tag_was_reused(env, conn, fresh_sandbox, capsys):
    before = web_tags(conn)
    load_recipe("run_cleanup_policy").main(["--project", WEB, *OVERRIDES, "--execute"])
    [audit] = audit_files(env)
    registry = conn.registry
    latest = registry.get_manifest("apps/web/frontend", "latest")
    registry.put_manifest("apps/web/frontend", "main-011", latest.raw, latest.media_type)
    capsys.readouterr()
    code = cli.main(["restore", str(audit), "--tag", "main-011", "--tag", "main-010"])
    out, _err = capsys.readouterr()
    assert code == 1
    assert "tag_reused" in out and str(latest.digest) in out
    assert registry.manifest_digest("apps/web/frontend", "main-011") == latest.digest
    main_010 = ("apps/web/frontend", "main-010")
    assert sandbox_digest(fresh_sandbox, *main_010) == before[main_010]


def test_a_killed_run_rerun_ends_like_an_uninterrupted_one(env, conn, fresh_sandbox, tmp_path):
    before, plan = web_tags(conn), planned(conn)
    command = [
        sys.executable,
        str(RECIPES / "run_cleanup_policy.py"),
        "--project",
        WEB,
        *OVERRIDES,
        "--execute",
        "--max-requests-per-second",
        "8",
        "--batch-size",
        "1",
    ]
    child = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    audit_dir = Path(env["REGOPS_STATE_DIR"]) / "audit"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and child.poll() is None:
            files = list(audit_dir.glob("*.jsonl")) if audit_dir.exists() else []
            text = files[0].read_bytes() if files else b""
            if text.count(b'"event":"intent"') >= KILL_AFTER_INTENTS:
                break
            time.sleep(0.02)
        assert child.poll() is None, child.stderr.read().decode()
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    [audit] = audit_files(env)
    log = read_audit_log(audit)  # consistent: at most a torn last line
    assert len(log.warnings) <= 1 and all("torn last line" in w for w in log.warnings)
    intents = {(h.repository, h.tag) for h in log.histories() if h.intent}
    assert len(intents) >= KILL_AFTER_INTENTS and intents <= plan
    assert web_tags(conn) != before  # the first run did delete something
    assert set(web_tags(conn)) >= set(before) - plan  # and nothing outside the plan

    code = load_recipe("run_cleanup_policy").main(["--project", WEB, *OVERRIDES, "--execute"])
    assert code == 0
    assert_only_planned_gone(fresh_sandbox, conn, before, plan)
    final = read_audit_log(audit)
    assert not any(r.result == "failed" for r in final.results())
    # Restore from the log of both runs brings back every planned tag.
    assert cli.main(["restore", str(audit)]) == 0
    assert web_tags(conn) == before


def test_bad_usage_exits_2_before_anything_is_sent(env, conn, capsys):
    recipe = load_recipe("run_cleanup_policy")
    before = web_tags(conn)
    assert recipe.main(["--project", WEB, "--policy-override", "keep_n=7", "--execute"]) == 2
    assert "keep_n" in capsys.readouterr().err
    assert recipe.main(["--project", WEB, "--policy-override", "keepn=5", "--execute"]) == 2
    assert recipe.main(["--project", WEB, "--policy-override", "novalue", "--execute"]) == 2
    assert recipe.main(["--execute"]) == 2  # --project is required
    assert recipe.main(["--project", WEB, "--policy-override", "name_regex=(a", "--execute"]) == 2
    assert web_tags(conn) == before


def test_failures_exit_1(env, capsys):
    recipe = load_recipe("run_cleanup_policy")
    assert recipe.main(["--project", "apps/mobile/android"]) == 1  # invalid stored regex
    assert "invalid policy" in capsys.readouterr().err
    assert recipe.main(["--project", "no/such-project"]) == 1


def test_a_reporter_is_refused_and_a_developer_is_not(env, conn, fresh_sandbox, capsys):
    recipe = load_recipe("run_cleanup_policy")
    before, plan = web_tags(conn), planned(conn)
    viewer, dev = fresh_sandbox.user("viewer"), fresh_sandbox.user("dev")
    code = recipe.main(["--project", WEB, "--user", str(viewer.id), *OVERRIDES, "--execute"])
    err = capsys.readouterr().err
    assert code == 1 and "needs at least Developer (30)" in err
    assert web_tags(conn) == before
    assert recipe.main(["--project", WEB, "--user", str(dev.id), *OVERRIDES]) == 0
    code = recipe.main(["--project", WEB, "--user", str(dev.id), *OVERRIDES, "--execute"])
    assert code == 0
    assert set(web_tags(conn)) == set(before) - plan  # the plan went, nothing else
    [audit] = audit_files(env)
    records = list(read_audit_log(audit))
    assert records and all("for user" in r.actor and "(dev)" in r.actor for r in records)


def test_the_lock_refuses_an_overlapping_run(env, conn, capsys):
    before = web_tags(conn)
    with RunLock("run_cleanup_policy") as held:
        code = load_recipe("run_cleanup_policy").main(["--project", WEB, *OVERRIDES, "--execute"])
        assert held.held
    err = capsys.readouterr().err
    assert code == 3 and f"pid {os.getpid()}" in err  # exit 3: locked, nothing was done
    assert web_tags(conn) == before
    assert load_recipe("run_cleanup_policy").main(["--project", WEB, *OVERRIDES]) == 0


def _storage_tags(sandbox, keys) -> dict[tuple[str, str], str | None]:
    """(repository, tag) -> digest read from the registry's link files (not over HTTP)."""
    storage = RegistryStorage(sandbox.storage_path)
    return {(repo, tag): storage.tag_digest(repo, tag) for repo, tag in keys}


@pytest.mark.parametrize("broken", ["audit folder", "state folder", "disk full"])
def test_unwritable_state_is_one_line_and_deletes_nothing(
    env, conn, fresh_sandbox, tmp_path, capsys, monkeypatch, broken
):
    before = web_tags(conn)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be (ENOTDIR, as root cannot get EROFS)")
    audit = Path(env["REGOPS_STATE_DIR"]) / "audit" / "cleanup.jsonl"
    expected = f"cannot create the folder {blocker}: Not a directory"
    if broken == "audit folder":
        audit = blocker / "audit" / "cleanup.jsonl"
    elif broken == "state folder":
        monkeypatch.setenv("REGOPS_STATE_DIR", str(blocker / "state"))
    else:
        real_write = os.write

        def full_disk(fd, data):
            if os.readlink(f"/proc/self/fd/{fd}") == str(audit):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", full_disk)
        expected = f"cannot write to the audit log {audit}: No space left on device"
    args = ["cleanup", "run", "--project", WEB, *OVERRIDES, "--execute", "--audit-log", str(audit)]
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"run_cleanup_policy: failed: {expected}\n"
    assert _storage_tags(fresh_sandbox, before) == before  # every tag, on disk
    repo, tag = sorted(EXPECTED_PLAN)[0]  # one the run would have deleted, seen by skopeo
    assert sandbox_digest(fresh_sandbox, repo, tag) == before[(repo, tag)]


def test_quiet_prints_nothing_on_success(env, conn, fresh_sandbox, capsys):
    recipe = load_recipe("run_cleanup_policy")
    assert recipe.main(["--project", WEB, "-q"]) == 0
    assert capsys.readouterr() == ("", "")  # a dry run: the plan only informs
    before = _storage_tags(fresh_sandbox, web_tags(conn))
    code = recipe.main(["--project", WEB, *OVERRIDES, "-q", "--execute"])
    assert (code, *capsys.readouterr()) == (0, "", "")  # cron mails nothing
    after = _storage_tags(fresh_sandbox, before)
    deleted = {key for key, digest in after.items() if digest is None}
    assert deleted == EXPECTED_PLAN  # it did delete, quietly
    assert all(after[key] == before[key] for key in before if key not in EXPECTED_PLAN)
    # without -q the same run informs: the plan, the result and the summary line
    assert recipe.main(["--project", WEB]) == 0
    out, err = capsys.readouterr()
    assert "apps/web" in out and err.startswith("run_cleanup_policy: dry run")


def test_enable_lists_then_enables_disabled_policies(env, conn, capsys):
    recipe = load_recipe("enable_cleanup_policies")
    assert recipe.main([]) == 0
    out, _err = capsys.readouterr()
    web = Project.find(WEB, connection=conn)
    assert out.splitlines() == [f"{web.id},Apps / web"]  # GitLab's Project#full_name
    assert not web.container_expiration_policy.enabled  # listing changes nothing

    assert recipe.main(["--set", "keep_n=7", "--execute"]) == 2
    assert recipe.main(["--set", "enabled=false", "--execute"]) == 2
    assert recipe.main(["--execute", "--set", "older_than=30d"]) == 0
    assert "1 projects found, 1 enabled, 0 failed" in capsys.readouterr().err
    policy = Project.find(WEB, connection=conn).container_expiration_policy
    assert policy.enabled and policy.older_than == "30d"
    assert recipe.main([]) == 0
    assert capsys.readouterr().out == ""


def test_audit_lists_invalid_regexes_and_all_but_latest_policies(env, conn, capsys):
    Project.find(WEB, connection=conn).container_expiration_policy.update(
        enabled=True, name_regex="main-.*", keep_n=None, older_than=None
    )
    code = load_recipe("audit_cleanup_policies").main([])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert any(
        line.startswith(f"{Project.find('apps/mobile/android', connection=conn).id},")
        and "invalid name_regex" in line
        for line in lines
    )
    flagged = [line for line in lines if "except latest" in line]
    assert len(flagged) == 1 and ",apps/web/frontend," in flagged[0]
    assert "12 tags" in flagged[0]
