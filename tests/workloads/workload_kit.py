"""Helpers of the deploy and local node tests: a dry run's objects, the one-line error check,
test images, and the processes running."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from testkit import invoke


def dry_run(*args: str, env: dict) -> list[dict]:
    done = invoke("deploy", "--dry-run", *args, env=env)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def images(folder: Path, count: int, start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + count):
        names.append(f"img{i:02}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / names[-1])
    return names


# The large images take more than the module's default byte budget (256 MiB) to decode and write.
LARGE_IMAGE_BUDGET = f"FRACTALIFY_MAX_BYTES={1 << 30}"


def large_images(folder: Path, count: int) -> list[str]:
    """Images the module works on for seconds each (64 Mpx, flat, with FRACTALIFY_C=0,0 every
    pixel takes many iterations): time enough to stop an instance in the middle of one."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"large{i}.png" for i in range(count)]
    for name in names:
        Image.new("RGB", (8000, 8000)).save(folder / name)
    return names


def runners() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def leftovers(output_dir: Path) -> list[Path]:
    """Claims and temporary files in `output_dir` (the module's own names for them)."""
    return sorted(p for pattern in (".*.claim", ".*.tmp") for p in output_dir.rglob(pattern))
