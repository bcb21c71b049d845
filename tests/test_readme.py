"""The README's regops equivalents of the admin guide's Rails snippets, run on the sandbox.

Each ```python block preceded by ``<!-- tested: NAME -->`` in README.md is run
in the console's namespace (as ``regops console -c`` would) against a fresh
demo sandbox, and its effect is checked against values computed independently.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from regops.connection import set_default_connection
from regops.console import namespace, run_code
from regops.errors import GitLabNotFound
from regops.ops.cleanup import plan_cleanup

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"<!-- tested: (\w+) -->\n```python\n(.*?)```", re.S)


def readme_blocks() -> dict[str, str]:
    """NAME -> code of every tested block in the README."""
    return dict(BLOCK.findall(README.read_text(encoding="utf-8")))


def run_block(name: str, connection) -> str:
    """Run the README block ``name`` in a console namespace; what it printed."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            run_code(readme_blocks()[name], namespace(connection), out=out)
    finally:
        set_default_connection(None)
    return out.getvalue()


def registry_tags(sandbox) -> dict[tuple[str, str], str]:
    """(repository, tag) -> digest for every tag in the registry (read independently)."""
    registry = sandbox.registry
    return {
        (repo, tag): str(registry.manifest_digest(repo, tag))
        for repo in registry.catalog()
        for tag in registry.tags(repo)
    }


def test_the_readme_names_the_three_admin_guide_snippets():
    assert set(readme_blocks()) == {"usage", "cleanup", "enable"}  # (and the crontab, below)


def test_usage_block_prints_the_rails_recipe_csv(fresh_sandbox):
    connection = fresh_sandbox.connect()
    printed = run_block("usage", connection)
    # The Rails loop, computed through GitLab's tag-details endpoint, one call per tag
    # (404 for an OCI index: GitLab's Tag has no manifest, so no size, there).
    gitlab = connection.gitlab

    def total_size(project_id: int, repository_id: int, tag: str) -> int:
        try:
            return gitlab.repository_tag(project_id, repository_id, tag)["total_size"] or 0
        except GitLabNotFound:
            return 0

    expected = ["project_id,creator_id,registry_size_bytes,project path"]
    for project in sorted(gitlab.projects_desc(100), key=lambda p: p["id"]):
        total = sum(
            total_size(project["id"], repo["id"], tag["name"])
            for repo in gitlab.project_repositories(project["id"])
            for tag in gitlab.repository_tags(project["id"], repo["id"])
        )
        if total > 0:
            row = (project["id"], project["creator_id"], total, project["path_with_namespace"])
            expected.append(",".join(map(str, row)))
    assert printed.splitlines() == expected
    assert len(expected) > 3


def test_cleanup_block_deletes_exactly_the_plan(fresh_sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("REGOPS_STATE_DIR", str(tmp_path / "state"))
    connection = fresh_sandbox.connect()
    before = registry_tags(fresh_sandbox)
    # What GitLab's algorithm deletes, computed here from the registry's own data.
    project = connection.gitlab.project("apps/web")
    policy = {
        **project["container_expiration_policy"],
        "name_regex": "main-.*",
        "keep_n": 5,
        "older_than": "14d",
    }
    expected = set()
    for repo in connection.gitlab.project_repositories(project["id"]):
        tags = [
            _TagStub(tag["name"], connection, project["id"], repo["id"])
            for tag in connection.gitlab.repository_tags(project["id"], repo["id"])
        ]
        expected |= {(repo["path"], t.name) for t in plan_cleanup(tags, policy).to_delete}
    # Pinned by hand too (the planner is the code under test): the demo's main-NNN are
    # NNN*5 + 0.5 days old; keep_n=5 keeps main-000..004, the rest are over 14 days old.
    assert expected == {("apps/web/frontend", f"main-{n:03d}") for n in range(5, 12)}

    printed = run_block("cleanup", connection)

    after = registry_tags(fresh_sandbox)
    assert set(before) - set(after) == expected
    assert all(after[key] == before[key] for key in after)  # survivors keep their digests
    assert f"deleted {len(expected)}" in printed


def test_enable_block_enables_every_disabled_policy_with_images(fresh_sandbox):
    connection = fresh_sandbox.connect()
    gitlab = connection.gitlab
    with_images = {p["id"] for p in gitlab.projects() if list(gitlab.project_repositories(p["id"]))}
    disabled = {
        p["id"] for p in gitlab.projects() if not p["container_expiration_policy"]["enabled"]
    }
    assert disabled & with_images and disabled - with_images

    printed = run_block("enable", connection)

    now_disabled = {
        p["id"] for p in gitlab.projects() if not p["container_expiration_policy"]["enabled"]
    }
    assert now_disabled == disabled - with_images  # projects without images untouched
    assert printed.splitlines()[-1] == "0"


class _TagStub:
    """A tag with GitLab's created_at, read through the tag-details endpoint."""

    def __init__(self, name, connection, project_id, repository_id):
        from regops.registry.manifest import parse_rfc3339

        detail = connection.gitlab.repository_tag(project_id, repository_id, name)
        self.name = name
        self.created_at = parse_rfc3339(detail["created_at"]) if detail["created_at"] else None


CRONTAB = re.compile(r"<!-- tested: crontab -->\n```crontab\n(.*?)```", re.S)
INSTALL = "/opt/regops"  # where the README's crontab has regops checked out


def crontab_commands() -> list[str]:
    """The commands of the README's crontab block (schedule fields and comments dropped)."""
    (block,) = CRONTAB.findall(README.read_text(encoding="utf-8"))
    commands = []
    for line in block.splitlines():
        if not line.strip() or line.startswith("#") or "=" in line.split()[0]:
            continue
        commands.append(line.split(None, 5)[5])
    return commands


def test_the_crontab_lines_run_as_cron_runs_them(fresh_sandbox, tmp_path):
    """Each line, with regops where this checkout is and outputs in a temporary folder,
    run by /bin/sh with only what cron gives (env -i PATH HOME) and settings from the
    cron user's ~/.python-gitlab.cfg: exit 0, nothing printed, its outputs written."""
    import subprocess

    import requests

    root = README.parent
    assert Path(root / ".venv" / "bin" / "python").exists()  # make test made it
    home = tmp_path / "cron-home"
    home.mkdir()
    config = home / ".python-gitlab.cfg"
    config.write_text(
        f"[global]\ndefault = gl\n\n[gl]\nurl = {fresh_sandbox.gitlab_url}\n"
        f"private_token = {fresh_sandbox.admin_token.reveal()}\n"
    )
    config.chmod(0o600)
    outputs = tmp_path / "var"
    outputs.mkdir()
    # the policy the cleanup line runs: the README's example, set through GitLab's API
    policy = {"name_regex": "main-.*", "keep_n": 5, "older_than": "14d"}
    answer = requests.put(
        f"{fresh_sandbox.gitlab_url}/api/v4/projects/apps%2Fweb",
        headers={"PRIVATE-TOKEN": fresh_sandbox.admin_token.reveal()},
        json={"container_expiration_policy_attributes": policy},
        timeout=30,
    )
    assert answer.status_code == 200
    commands = crontab_commands()
    assert len(commands) == 4
    for command in commands:
        line = command.replace(INSTALL, str(root)).replace("/var/lib/regops", str(outputs))
        done = subprocess.run(
            ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", "/bin/sh", "-c", line],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if "audit_cleanup_policies" in line:  # its findings are its product: mailed
            assert (done.returncode, done.stderr) == (0, ""), line
            assert done.stdout.splitlines() == [
                "4,apps/mobile/android,,invalid name_regex: not valid RE2 syntax: missing ]: [0-9+"
            ]  # the demo's broken policy (INVALID_REGEX in regops.sandbox.seed)
            continue
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), line
    csv_text = (outputs / "registry-usage.csv").read_text()
    assert csv_text.startswith("project_id,creator_id,registry_size_bytes,project path\n")
    assert (outputs / "registry-usage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '"projects"' in (outputs / "registry-usage.json").read_text()
    # the cleanup line deleted (quietly) and left its audit log where the README says
    audit = list((home / ".local/state/regops/audit").glob("cleanup-*.jsonl"))
    assert len(audit) == 1 and '"result":"deleted"' in audit[0].read_text()
    assert (home / ".local/state/regops/usage-history.sqlite3").exists()
