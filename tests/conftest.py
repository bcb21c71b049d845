"""Shared pytest fixtures: each area keeps its fixtures in a plugin module."""

import pytest

pytest_plugins = ["tests.fixtures_registry", "tests.fixtures_sandbox"]


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory, monkeypatch):
    """Every test gets its own regops state directory (audit logs, journal, locks).

    A test that wants a particular one sets REGOPS_STATE_DIR itself.
    """
    monkeypatch.setenv("REGOPS_STATE_DIR", str(tmp_path_factory.mktemp("state")))
