"""`regops console`: interactive in tmux, and -c / FILE runs, against the sandbox."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from regops.console import namespace, run_code
from tests import oracle
from tests.leaks import assert_hidden

REGOPS = str(Path(sys.executable).with_name("regops"))
TMUX_WAIT = 60.0  # seconds for IPython to start and a query to print under a loaded CI box
POLL = 0.2


def console_env(sandbox, tmp_path: Path, user: str = "admin") -> dict[str, str]:
    """Only the sandbox's variables: no settings leak in from the machine running the tests."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "IPYTHONDIR": str(home / ".ipython"),
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "COLUMNS": "200",
    }
    return {**base, **sandbox.env(user)}


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [REGOPS, "console", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


# -- non-interactive -----------------------------------------------------------------


def test_c_prints_last_expression_and_exits_0(sandbox, tmp_path):
    done = run(["-c", "Project.last(3)"], console_env(sandbox, tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["id", "full_path"]
    assert [line.split()[1] for line in lines[2:]] == [
        "apps/mobile/android",
        "apps/mobile/ios",
        "root/scratch",
    ]


def test_a_second_console_session_reads_configs_from_the_disk_cache(sandbox, tmp_path):
    """Manifests are asked for by tag every time (a tag can move); image configs, named
    by digest, come from the on-disk cache in the next session: fewer registry requests."""
    env = {**console_env(sandbox, tmp_path), "REGOPS_CACHE_DIR": str(tmp_path / "cache")}
    code = (
        "repo = Project.find_by(full_path='apps/web').container_repositories[0]\n"
        "tags = repo.tags\n"
        "print(repo.path, len(tags), conn.registry.request_count)"
    )
    first = run(["-c", code], env, tmp_path)
    second = run(["-c", code], env, tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    path, tags, cold = first.stdout.split()
    assert second.stdout.split()[:2] == [path, tags]
    warm = int(second.stdout.split()[2])
    # Independent count, from the registry's files: the tags, and their distinct configs.
    links = oracle.tag_links(sandbox.storage_path, path)
    configs = {
        manifest["config"]["digest"]
        for manifest in (oracle.document(sandbox.storage_path, d) for d in links.values())
        if "config" in manifest
    }
    assert int(tags) == len(links) and configs
    # GitLab's compliance check (GET /gitlab/v1/: which service, which tag fields), the
    # tag list, one GET a tag, the configs; the next session reads the configs from disk.
    assert int(cold) == 2 + len(links) + len(configs)
    assert warm == 2 + len(links)


def test_banner_names_the_real_cause(sandbox, tmp_path):
    from regops.config import Settings
    from regops.connection import Connection
    from regops.console import banner
    from regops.secrets import Secret

    wrong = Connection(Settings(gitlab_url=sandbox.gitlab_url, token=Secret("glpat-wrong-0000")))
    text = banner(wrong)
    assert "is reachable but refused the token (401)" in text and "Preloaded:" in text
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once the socket is closed
    gone = Connection(Settings(gitlab_url=f"http://127.0.0.1:{port}", token=Secret("x")))
    text = banner(gone)
    assert "is not reachable" in text and "refused the token" not in text
    assert "Preloaded:" in text
    dev = banner(sandbox.connect("user"))
    assert "as dev (not an administrator" in dev and "Preloaded:" in dev


def test_c_statements_print_only_what_is_printed(sandbox, tmp_path):
    code = "n = Project.count()\nprint('projects:', n)\nx = 1"
    done = run(["-c", code], console_env(sandbox, tmp_path), tmp_path)
    assert (done.returncode, done.stdout) == (0, "projects: 6\n")


def test_c_error_exits_1_with_message_and_no_token(sandbox, tmp_path):
    env = console_env(sandbox, tmp_path)
    done = run(["-c", "Project.find(4242)"], env, tmp_path)
    assert done.returncode == 1
    assert "Project 4242 not found" in done.stderr and "DoesNotExist" in done.stderr
    assert_hidden(env["GITLAB_PRIVATE_TOKEN"], done.stderr, done.stdout)
    broken = run(["-c", "1/0"], env, tmp_path)
    assert broken.returncode == 1 and "ZeroDivisionError" in broken.stderr


def test_file_runs_with_namespace_and_args(sandbox, tmp_path):
    script = tmp_path / "report.py"
    script.write_text(
        "import sys\n"
        "default = regops.connection.default_connection()\n"
        "p = Project.find_by(full_path=sys.argv[1])\n"
        "print(p.id, len(p.container_repositories), conn is default)\n"
    )
    done = run([str(script), "apps/web"], console_env(sandbox, tmp_path), tmp_path)
    assert (done.returncode, done.stdout) == (0, "3 3 True\n"), done.stderr
    failing = tmp_path / "fail.py"
    failing.write_text("raise SystemExit(3)\n")
    assert run([str(failing)], console_env(sandbox, tmp_path), tmp_path).returncode == 3


def test_run_code_in_process(sandbox_connection, capsys):
    ns = namespace(sandbox_connection)
    assert set(ns) >= {
        "regops",
        "connect",
        "Project",
        "ContainerRepository",
        "Tag",
        "ExpirationPolicy",
        "User",
        "plan_cleanup",
        "conn",
    }
    run_code("p = Project.first()\np.full_path", ns)
    assert capsys.readouterr().out == "'platform/base-images'\n"
    run_code("None", ns)
    assert capsys.readouterr().out == ""


# -- interactive, in tmux ------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket file, under the test's tmp_path) with one session."""

    def __init__(self, directory: Path) -> None:
        self.socket = str(directory / f"tmux-{uuid.uuid4().hex[:8]}.sock")
        self.session = "console"

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", self.session, "-S", "-200")

    def wait_for(self, text: str, timeout: float = TMUX_WAIT) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(POLL)
        raise AssertionError(f"{text!r} not on screen after {timeout}s:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=30)


def test_interactive_console_in_tmux(sandbox, tmp_path):
    assert shutil.which("tmux"), "tmux is required (make test installs it)"
    env_file = sandbox.write_env_file(tmp_path / "sandbox.env")
    env = console_env(sandbox, tmp_path)
    home = env["HOME"]
    command = (
        f"env -i PATH={env['PATH']} HOME={home} IPYTHONDIR={home}/.ipython LANG=C.UTF-8 "
        f"TERM=xterm-256color bash --norc -c '. {env_file} && exec {REGOPS} console'"
    )
    tmux = Tmux(tmp_path)
    try:
        tmux("new-session", "-d", "-x", "200", "-y", "50", "-s", tmux.session, command)
        banner = tmux.wait_for("Try: Project.last(3)")
        assert sandbox.gitlab_url in banner
        assert "as root (admin)" in banner
        assert "(access: key; v2 API only: GitLab's ThirdParty::CleanupTagsService" in banner
        assert_hidden(sandbox.admin_token, banner)
        tmux("send-keys", "-t", tmux.session, "Project.last(3)", "Enter")
        screen = tmux.wait_for("root/scratch")
        table = screen[screen.index("Project.last(3)") :]
        assert "full_path" in table and "apps/mobile/ios" in table and "----" in table
        tmux("send-keys", "-t", tmux.session, "ExpirationPolicy.find_by(project_id=3)", "Enter")
        tmux.wait_for("<ExpirationPolicy project_id=3 enabled=False")
        # an error regops raises on purpose: one line and a hint, not a traceback
        tmux("send-keys", "-t", tmux.session, "Project.find(4242)", "Enter")
        screen = tmux.wait_for("(%tb shows the full traceback)")
        shown = screen[screen.index("Project.find(4242)") :]
        assert "DoesNotExist: Project 4242 not found" in shown and "Traceback" not in shown
        tmux("send-keys", "-t", tmux.session, "%tb", "Enter")
        tmux.wait_for("Traceback")  # the full story is still there when asked for
        tmux("send-keys", "-t", tmux.session, "exit", "Enter")
        deadline = time.monotonic() + TMUX_WAIT
        while time.monotonic() < deadline:
            listed = subprocess.run(
                ["tmux", "-S", tmux.socket, "has-session", "-t", tmux.session],
                capture_output=True,
                timeout=30,
            )
            if listed.returncode != 0:
                break  # the console exited and the session with it
            time.sleep(POLL)
        else:
            raise AssertionError("the console did not exit on `exit`")
    finally:
        tmux.close()


@pytest.mark.slow
def test_sandbox_flag_seeds_a_demo_and_stops_it(tmp_path):
    home, scratch = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    scratch.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(scratch),  # the sandbox's data (and its registry's config) live here
        "LANG": "C.UTF-8",
    }
    code = "print(Project.count(), conn.registry.url.startswith('http://127.0.0.1'))"
    done = run(["--sandbox", "-c", code], env, tmp_path)
    assert (done.returncode, done.stdout) == (0, "6 True\n"), done.stderr
    assert "starting the demo sandbox" in done.stderr
    leftovers = subprocess.run(["pgrep", "-f", str(scratch)], capture_output=True, text=True)
    assert leftovers.stdout == ""  # no registry left running from this run
    assert list(scratch.iterdir()) == []  # and its temporary data removed


def test_sys_exit_with_a_message_prints_it_and_exits_1(capsys):
    """As Python does: ``sys.exit("why")`` shows "why" on stderr; status 1."""
    import argparse

    import regops.console
    from regops.commands.console import _run_quietly

    args = argparse.Namespace(code="import sys; sys.exit('nothing to do here')", file=None)
    assert _run_quietly(regops.console, {}, args) == 1
    assert "nothing to do here" in capsys.readouterr().err
    args = argparse.Namespace(code="raise SystemExit(None)", file=None)
    assert _run_quietly(regops.console, {}, args) == 0
