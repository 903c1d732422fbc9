"""The main job's two small steps around build-push-deploy: seed the input, wait for the output."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .errors import UserError

INPUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def prepare_demo_input(examples: Path, input_dir: Path) -> None:
    """Copies the example images into the demo's input (the examples themselves stay untouched)."""
    input_dir.mkdir(parents=True, exist_ok=True)
    for source in examples.rglob("*"):
        target = input_dir / source.relative_to(examples)
        if source.is_dir():
            target.mkdir(exist_ok=True)
        elif not target.exists():
            shutil.copy2(source, target)


def expected_output(relative: Path) -> Path:
    return relative.with_name(relative.name + ".png") if relative.suffix.lower() == ".webp" else relative


def wait_for_outputs(input_dir: Path, output_dir: Path, timeout: float = 60.0) -> list[Path]:
    """The outputs of every input, once all have appeared."""
    wanted = [output_dir / expected_output(p.relative_to(input_dir)) for p in sorted(input_dir.rglob("*"))
              if p.suffix.lower() in INPUT_SUFFIXES and not p.name.startswith(".")]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(path.exists() for path in wanted):
            return wanted
        time.sleep(0.2)
    missing = [str(p) for p in wanted if not p.exists()]
    raise UserError(f"{len(missing)} image(s) did not come out within {timeout:.0f} s (e.g. {missing[0]}): see `invoke logs`")
