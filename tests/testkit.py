"""Helpers shared by every test folder: the project's paths, a clean environment, running
`invoke` as a user would, and waiting for something to happen."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INVOKE = ROOT / ".venv" / "bin" / "invoke"

# Variables that would change what the toolchain or the module does: none leak in from outside.
OUTSIDE_SETTINGS = ("FRACTALIFY_", "INVOKE_", "REGISTRY_", "DOCKER_")


def clean_env(docker_config: Path | None = None) -> dict[str, str]:
    """This process's environment without credentials, overrides or module options; with
    `docker_config`, a docker config directory of the test's own (so no real login is read)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUTSIDE_SETTINGS)}
    if docker_config is not None:
        env["DOCKER_CONFIG"] = str(docker_config)
    return env


def invoke(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 600,
           input: str | None = None) -> subprocess.CompletedProcess:
    """`.venv/bin/invoke ARGS` in `cwd`, its output captured as text. The time-out only guards
    against a hang; it is not a timing assertion."""
    return subprocess.run([str(INVOKE), *args], cwd=cwd, env=clean_env() if env is None else env, input=input,
                          capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, seconds: float = 60.0) -> bool:
    """Polls `predicate` until it holds or `seconds` pass (a bound, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@contextmanager
def small_tmpfs(directory: Path, size: str = "4m") -> Iterator[Path]:
    """A small file system of the test's own at `directory`, to fill up or remount read-only.
    Mounting needs root, as bootstrap's installs do; CI runs as root."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"this test mounts a small tmpfs and needs root: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def fill_file_system(directory: Path) -> Path:
    """Fills the file system holding `directory` to the last byte; returns the filler to remove."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler
