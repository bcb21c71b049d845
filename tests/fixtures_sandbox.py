"""Sandbox fixtures: the GitLab API stand-in + the real registry, seeded with the demo.

- ``sandbox`` (session): a seeded demo shared by every test that asks for it.
  Tests must NOT change it (no policy updates, tag deletes, pushes, settings,
  throttling): use ``fresh_sandbox`` for that. Reading counters is fine when
  a test resets and reads them itself (``sandbox.state.reset_counters()``), but
  prefer ``fresh_sandbox`` when exact counts matter under xdist.
- ``fresh_sandbox`` (function): its own copy of the seeded demo (a copy of a
  data directory seeded once per session, so it starts in about half a second).
- ``sandbox_connection``: an admin Connection (key mode) to ``sandbox``.
- ``user_connection``: the non-admin ``dev`` user's Connection (realm mode).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from regops.sandbox import Sandbox


def _copy(template: Path, target: Path) -> Path:
    shutil.copytree(template, target, ignore=shutil.ignore_patterns("*.log", "_uploads"))
    return target


@pytest.fixture(scope="session")
def sandbox_template(tmp_path_factory) -> Path:
    """The data directory of a demo sandbox seeded once per session (never served again)."""
    data = tmp_path_factory.mktemp("sandbox-template") / "data"
    with Sandbox(data) as template:
        template.seed("demo")
    return data


@pytest.fixture(scope="session")
def sandbox(sandbox_template, tmp_path_factory):
    """A seeded demo sandbox shared by the session: read-only by convention."""
    data = _copy(sandbox_template, tmp_path_factory.mktemp("sandbox-shared") / "data")
    with Sandbox(data) as shared:
        yield shared


@pytest.fixture
def fresh_sandbox(sandbox_template, tmp_path):
    """A seeded demo sandbox of this test's own, for tests that change things."""
    data = _copy(sandbox_template, tmp_path / "sandbox")
    with Sandbox(data) as fresh:
        yield fresh


@pytest.fixture
def sandbox_connection(sandbox):
    """The admin (root) Connection to the shared sandbox, signing its own registry tokens."""
    connection = sandbox.connect("admin", registry_auth="key")
    yield connection
    connection.close()


@pytest.fixture
def user_connection(sandbox):
    """The non-admin ``dev`` Connection to the shared sandbox (registry tokens from /jwt/auth)."""
    connection = sandbox.connect("user", registry_auth="realm")
    yield connection
    connection.close()
