"""Shared pytest fixtures: each area keeps its fixtures in a plugin module."""

pytest_plugins = ["tests.fixtures_registry", "tests.fixtures_sandbox"]
