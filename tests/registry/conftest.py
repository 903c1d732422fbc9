"""Fixtures for the push/pull tests (the registries themselves come from tests/conftest.py)."""

import os

import pytest


@pytest.fixture
def clean_env(tmp_path) -> dict:
    """No credentials or overrides from outside; a docker config directory of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "INVOKE_", "DOCKER_"))}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker")
    return env
