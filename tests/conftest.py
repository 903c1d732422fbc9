"""Shared by every test folder: real docker-registry instances on 127.0.0.1 (started and stopped
by each test), and the helper modules on the import path."""

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE / "registry")]

from registries import make_registry  # noqa: E402
from testkit import clean_env as _clean_env  # noqa: E402
from testkit import invoke  # noqa: E402


@pytest.fixture
def clean_env(tmp_path) -> dict:
    """No credentials, overrides or module options from outside; a docker config of the test's own."""
    return _clean_env(docker_config=tmp_path / "docker")


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
def workload_names(clean_env):
    """Names handed out to a test; whatever was deployed under them is undeployed afterwards."""
    names: list[str] = []

    def name(base: str) -> str:
        names.append(f"{base}-{os.getpid()}-{len(names)}")
        return names[-1]

    yield name
    for used in names:
        invoke("undeploy", "--name", used, env=clean_env, timeout=60)
