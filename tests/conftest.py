"""Shared pytest fixtures; component fixtures live in their own plugin modules."""

pytest_plugins = ["tests.fixtures_kafka"]
