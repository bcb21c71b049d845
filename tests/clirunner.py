"""Run ``regops`` commands as real processes, started in milliseconds (a fork server).

A fault sweep runs the CLI hundreds of times, and most of a ``python -m
regops`` start is importing (about 0.3 s here). :class:`CliRunner` starts one
helper process (``python -m tests.clirunner``) that imports regops once and
forks a child per command; the child sets the environment it is given,
sends stdout/stderr to files, and runs ``regops.cli.main(argv)``, which is
what ``python -m regops`` runs. Each run is its own process with its own pid
(so it can be SIGKILLed), its own lock and its own connections.

>>> with CliRunner() as cli:                                       # doctest: +SKIP
...     run = cli.start(["usage", "--no-cache"], env, tmp_path)
...     run.pid                 # the child's pid, for a kill
...     cli.wait(run)           # its exit status (-9 when SIGKILLed)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 120.0  # seconds a command may take before the runner gives up on it
# Modules a command imports lazily: imported once in the server, before any fork.
PRELOAD = (
    "regops.cli",
    "regops.commands.cleanup",
    "regops.commands.restore",
    "regops.commands.usage",
    "regops.connection",
    "regops.models",
    "regops.ops.apply",
    "regops.ops.restore",
    "regops.ops.usage",
)


@dataclass
class CliRun:
    """One started command: its pid and where its output goes."""

    argv: list[str]
    pid: int
    stdout: Path
    stderr: Path
    returncode: int | None = None

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")


class CliRunner:
    """The client side of the fork server: one command at a time (a context manager)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.clirunner"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._count = 0

    def start(self, argv: Sequence[str], env: Mapping[str, str], out_dir: Path) -> CliRun:
        """Fork ``regops <argv>`` with exactly ``env`` as its environment."""
        self._count += 1
        out_dir.mkdir(parents=True, exist_ok=True)
        stdout = out_dir / f"run-{self._count}.out"
        stderr = out_dir / f"run-{self._count}.err"
        request = {"argv": list(argv), "env": dict(env), "stdout": str(stdout)}
        request["stderr"] = str(stderr)
        self._send(request)
        reply = self._receive()
        return CliRun(list(argv), int(reply["pid"]), stdout, stderr)

    def wait(self, run: CliRun) -> int:
        """Wait for ``run`` to end; its exit status (negative: killed by that signal)."""
        reply = self._receive()
        if reply.get("pid") != run.pid:
            raise RuntimeError(f"fork server answered for pid {reply.get('pid')}, not {run.pid}")
        run.returncode = int(reply["status"])
        return run.returncode

    def run(self, argv: Sequence[str], env: Mapping[str, str], out_dir: Path) -> CliRun:
        """Start and wait."""
        run = self.start(argv, env, out_dir)
        self.wait(run)
        return run

    def _send(self, message: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def _receive(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server exited ({self.process.poll()})")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> CliRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- server side


def _child(request: dict) -> None:
    """In the forked child: become ``regops <argv>`` and exit with its code."""
    code = 1
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        random.seed()  # the fork copied the server's random state
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        from regops.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as exc:  # argparse: --help or bad usage
            code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # report, never return into the server's loop
        print(f"clirunner child: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """The fork server: one JSON request per stdin line; pid, then status, on stdout."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        out.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        out.write(json.dumps({"pid": pid, "status": code}) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
