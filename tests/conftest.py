"""Shared pytest fixtures: each area keeps its fixtures in a plugin module."""

import pytest

pytest_plugins = ["tests.fixtures_registry", "tests.fixtures_sandbox"]


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
