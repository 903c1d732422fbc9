"""Fixtures for the fractal core's tests; the helpers they use live in coretools.py."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from coretools import ROOT, run_module  # noqa: E402
from wasmpod.build import build_module  # noqa: E402
from wasmpod.project import Project  # noqa: E402


@pytest.fixture(scope="session")
def module() -> Path:
    """The real module, built once per session (a no-op when it is current)."""
    return build_module(Project.at(ROOT, "fractalify")).path


@pytest.fixture
def run(module):
    def go(input_dir: Path, output_dir: Path, *flags: str, **kwargs):
        return run_module(module, input_dir, output_dir, *flags, **kwargs)

    return go
