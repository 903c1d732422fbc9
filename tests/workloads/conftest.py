"""Fixtures for deploy's tests: the real local node, clean environments (registries: tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INVOKE = ROOT / ".venv" / "bin" / "invoke"


@pytest.fixture
def env(tmp_path) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "INVOKE_", "DOCKER_", "FRACTALIFY_"))}
    clean["DOCKER_CONFIG"] = str(tmp_path / "docker")
    return clean


def invoke(*args: str, env: dict, timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(INVOKE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


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
