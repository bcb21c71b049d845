"""``regops demo`` (the README's main job) end to end: its own sandbox, real registry."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_prints_usage_and_a_cleanup_preview_and_leaves_nothing_running(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITLAB_", "REGOPS_"))}
    # The demo's sandbox lives under TMPDIR: its registry is the one whose command line
    # names this test's folder (other tests, and other users, run registries too).
    sandbox_tmp = tmp_path / "tmp"
    sandbox_tmp.mkdir()
    env.update(
        HOME=str(tmp_path), REGOPS_STATE_DIR=str(tmp_path / "state"), TMPDIR=str(sandbox_tmp)
    )
    done = subprocess.run(
        [sys.executable, "-m", "regops", "demo", "--format", "csv"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    header = "project_id,creator_id,registry_size_bytes,project path,repositories,tags,"
    assert header + "unique_bytes,all_platforms_bytes,gitlab_registry_size,incomplete" in out
    usage_rows = [line for line in out.splitlines() if line.endswith(",false")]
    paths = {row.split(",")[3] for row in usage_rows}
    assert {"platform/base-images", "platform/tools", "apps/web", "apps/mobile/android"} <= paths
    assert "apps/mobile/android: GitLab cannot run this policy: name_regex" in out
    assert "apps/web/frontend: 13 tags, 7 to delete, 6 kept" in out
    assert not (tmp_path / "state").exists()  # a preview: no audit log, nothing deleted
    assert any(sandbox_tmp.iterdir()) is False  # its temporary sandbox was removed
    assert _registries_under(sandbox_tmp) == []  # and its registry stopped


def _registries_under(folder) -> list[str]:
    """Command lines of live docker-registry processes whose config is under ``folder``."""
    found = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, check=True)
    return [
        line
        for line in found.stdout.splitlines()
        if "docker-registry" in line and str(folder) in line
    ]
