"""Recipes as cron runs them: a bare environment, wrong settings on purpose, stopped servers.

Each recipe runs in a child process with only what cron gives (``env -i``
with PATH, HOME) plus the sandbox's settings. What is asserted is what an
administrator reading the cron mail sees: the exit code, the lines, the time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import oracle

pytestmark = pytest.mark.registry
ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)  # the venv's interpreter, as the README's cron lines name it
RECIPES = ROOT / "recipes"
RUN_TIMEOUT = 120  # seconds: a recipe that takes this long has hung


def cron_env(sandbox, tmp_path: Path, user: str = "admin", **extra: str) -> dict[str, str]:
    """What cron gives a job (PATH, HOME, SHELL) and the sandbox's settings: nothing else."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "SHELL": "/bin/sh", "LOGNAME": "cron"}
    env.update(sandbox.env(user))
    env.update(REGOPS_STATE_DIR=str(tmp_path / "state"), REGOPS_CACHE_DIR=str(tmp_path / "cache"))
    env.update(extra)
    return env


def recipe(name: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    started = time.monotonic()
    done = subprocess.run(
        [str(PYTHON), str(RECIPES / f"{name}.py"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    done.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    return done


# -- coverage: a non-admin token ----------------------------------------------------------


def test_a_non_admin_token_is_refused_for_instance_wide_runs(sandbox, tmp_path):
    env = cron_env(sandbox, tmp_path, user="user")
    for name in ("registry_usage_by_project", "enable_cleanup_policies", "audit_cleanup_policies"):
        done = recipe(name, env=env, cwd=tmp_path)
        assert done.returncode == 2, (name, done.stderr)
        assert done.stdout == ""
        (line,) = done.stderr.splitlines()  # one sentence
        assert "not an administrator" in line and "--scope visible" in line and "dev" in line


def test_scope_visible_states_what_it_covers_everywhere(sandbox, tmp_path):
    env = cron_env(sandbox, tmp_path, user="user")
    target = tmp_path / "usage.csv"
    done = recipe(
        "registry_usage_by_project", "--scope", "visible", "-o", str(target), env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    visible = 2  # dev is a Developer of group apps: apps/web and apps/mobile/* ... see below
    first = target.read_text().splitlines()[0]
    assert first.startswith("# covers the ") and "projects dev can see" in first
    visible = int(first.split()[3])
    assert visible < 6  # the demo instance has 6 projects; dev sees fewer
    assert "projects dev can see, not the whole instance" in done.stderr  # the summary too
    for name in ("enable_cleanup_policies", "audit_cleanup_policies"):
        done = recipe(name, "--scope", "visible", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"covers the {visible} projects dev can see" in done.stderr


# -- systemic faults: fail once, fast, with the cause ---------------------------------------


def test_a_stopped_registry_ends_the_run_fast_with_one_cause(fresh_sandbox, tmp_path):
    target = tmp_path / "usage.csv"
    target.write_text("previous good report\n")
    pid = fresh_sandbox.registry_server.pid
    os.kill(pid, signal.SIGSTOP)  # the process is there, the port accepts, nothing answers
    try:
        done = recipe(
            "registry_usage_by_project",
            "-o",
            str(target),
            env=cron_env(fresh_sandbox, tmp_path),
            cwd=tmp_path,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done.returncode == 1, done.stderr
    assert done.seconds < 45, done.seconds  # default timeouts: well under a minute
    lines = done.stderr.splitlines()
    stopped = [line for line in lines if "stopped:" in line]
    assert len(stopped) == 1 and "did not answer" in stopped[0], done.stderr
    # the cause once, not one line per project (the stand-in's repository listing asks the
    # registry, so the first host to stop answering may be GitLab's: either way, one cause)
    assert not any(line.startswith("regops usage: INCOMPLETE") for line in lines)
    assert target.read_text() == "previous good report\n"


def test_a_wrong_signing_key_fails_once_with_the_cause(sandbox, tmp_path):
    from regops.registry.keys import generate_key, private_key_pem

    wrong = tmp_path / "wrong.key"
    wrong.write_text(private_key_pem(generate_key("ec")).reveal())
    env = cron_env(sandbox, tmp_path, REGOPS_REGISTRY_KEY=str(wrong))
    done = recipe("registry_usage_by_project", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""  # no report from an incomplete scan on stdout either
    lines = done.stderr.splitlines()
    assert sum("invalid_token" in line for line in lines) == 1, done.stderr
    assert len(lines) <= 3, done.stderr  # the cause, the counts, the summary


class _Silent:
    """A TCP server that accepts connections and never answers: a hung GitLab."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.socket.close()
        for conn in self.held:
            conn.close()


def test_a_hung_gitlab_ends_the_run_within_its_timeouts(sandbox, tmp_path):
    silent = _Silent()
    try:
        env = cron_env(
            sandbox, tmp_path, GITLAB_URL=f"http://127.0.0.1:{silent.port}", REGOPS_TIMEOUT="2"
        )
        done = recipe("registry_usage_by_project", env=env, cwd=tmp_path)
    finally:
        silent.close()
    assert done.returncode == 1
    # one read timeout, retried once: about 2 x 2 s, nowhere near 5 attempts x 60 s
    assert done.seconds < 15, done.seconds
    assert "timed out" in done.stderr and done.stderr.count("\n") == 1


def test_the_deadline_bounds_a_run(fresh_sandbox, tmp_path):
    pid = fresh_sandbox.registry_server.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        done = recipe(
            "registry_usage_by_project",
            "--deadline",
            "3",
            env=cron_env(fresh_sandbox, tmp_path),
            cwd=tmp_path,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done.returncode == 124, done.stderr
    assert done.seconds < 10
    assert done.stderr.splitlines()[-1].endswith("stopped at the deadline of 3 s (--deadline)")
    # nothing was left locked: the next run takes the lock and works
    again = recipe("registry_usage_by_project", "-q", env=cron_env(fresh_sandbox, tmp_path),
                   cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("project_id,creator_id,registry_size_bytes,project path\n")
    assert len(oracle.repositories(fresh_sandbox.storage_path)) >= 5


def test_with_only_a_python_gitlab_config_the_registry_is_asked_of_gitlab(sandbox, tmp_path):
    """What a python-gitlab user has: ~/.python-gitlab.cfg with a URL and a token, no
    regops settings. The registry's location comes from GitLab, its tokens from /jwt/auth."""
    home = tmp_path / "pg-home"
    home.mkdir()
    (home / ".python-gitlab.cfg").write_text(
        "[global]\ndefault = sandbox\n\n"
        f"[sandbox]\nurl = {sandbox.gitlab_url}\n"
        f"private_token = {sandbox.admin_token.reveal()}\n"
    )
    (home / ".python-gitlab.cfg").chmod(0o600)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "REGOPS_STATE_DIR": str(tmp_path / "state"),
        "REGOPS_CACHE_DIR": str(tmp_path / "cache"),
    }
    done = recipe("registry_usage_by_project", "-q", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    full = recipe("registry_usage_by_project", "-q", env=cron_env(sandbox, tmp_path), cwd=tmp_path)
    assert done.stdout == full.stdout and done.stdout.count("\n") >= 5  # the same report
    shown = subprocess.run(
        [str(PYTHON), "-m", "regops", "config", "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert shown.returncode == 0, shown.stderr
    assert "inferred from GitLab" in shown.stdout and sandbox.registry_url in shown.stdout
    assert sandbox.admin_token.reveal() not in shown.stdout + shown.stderr
