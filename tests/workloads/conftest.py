"""Fixtures for deploy's tests (registries, the clean environment and workload names: tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def env(clean_env) -> dict:
    """The clean environment, under the short name these tests pass to `invoke(..., env=env)`."""
    return clean_env
