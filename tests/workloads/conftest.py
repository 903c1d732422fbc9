"""Fixtures for deploy's tests (registries and the clean environment: tests/conftest.py)."""

from __future__ import annotations

import os

import pytest
from testkit import invoke


@pytest.fixture
def env(clean_env) -> dict:
    """The clean environment, under the short name these tests pass to `invoke(..., env=env)`."""
    return clean_env


@pytest.fixture
def workload_names(env):
    """Names handed out to a test; whatever was deployed under them is undeployed afterwards."""
    names: list[str] = []

    def name(base: str) -> str:
        names.append(f"{base}-{os.getpid()}-{len(names)}")
        return names[-1]

    yield name
    for used in names:
        invoke("undeploy", "--name", used, env=env, timeout=60)
