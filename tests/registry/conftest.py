"""Fixtures for the push/pull tests; the real registries they start are made in registries.py."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from registries import make_registry  # noqa: E402


@pytest.fixture
def registry(tmp_path):
    started = make_registry(tmp_path / "registry").start()
    yield started
    started.stop()


@pytest.fixture
def auth_registry(tmp_path):
    started = make_registry(tmp_path / "auth-registry", auth=True).start()
    yield started
    started.stop()


@pytest.fixture
def tls_registry(tmp_path):
    started = make_registry(tmp_path / "tls-registry", tls=True).start()
    yield started
    started.stop()


@pytest.fixture
def clean_env(tmp_path) -> dict:
    """No credentials or overrides from outside; a docker config directory of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "INVOKE_", "DOCKER_"))}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker")
    return env
