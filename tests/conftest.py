"""Shared pytest fixtures: each area keeps its fixtures in a plugin module."""

import pytest

pytest_plugins = ["tests.fixtures_registry", "tests.fixtures_sandbox", "tests.fixtures_storage"]


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory, monkeypatch):
    """Every test gets its own regops state and cache directories (audit logs, journal,
    locks, manifests): nothing of the user's is read or written.

    A test that wants particular ones sets REGOPS_STATE_DIR / REGOPS_CACHE_DIR itself.
    """
    monkeypatch.setenv("REGOPS_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.setenv("REGOPS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--faults-full",
        action="store_true",
        help="also run the full fault matrix (tests marked faults_full; many minutes)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--faults-full"):
        return
    skip = pytest.mark.skip(reason="the full fault matrix runs with --faults-full")
    for item in items:
        if "faults_full" in item.keywords:
            item.add_marker(skip)
