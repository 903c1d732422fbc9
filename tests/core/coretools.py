"""Helpers for the fractal core's tests: run the real module in real wasmtime, make and read images."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from testkit import INVOKE, ROOT, clean_env, invoke  # noqa: F401  (re-exported for the core tests)
from wasmpod.localrun import GUEST_INPUT, GUEST_OUTPUT, WasiRun, run_wasi



@dataclass
class Run:
    status: int
    stdout: str
    stderr: str

    def wrote(self) -> list[str]:
        """Relative paths from the `wrote <path> (...)` log lines."""
        return [line[len("wrote "):].rsplit(" (", 1)[0] for line in self.stdout.splitlines() if line.startswith("wrote ")]


def run_module(module: Path, input_dir: Path, output_dir: Path, *flags: str, env: dict | None = None,
               argv: tuple[str, ...] | None = None) -> Run:
    output_dir.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-logs-", dir=output_dir.parent))
    out, err = logs / "stdout", logs / "stderr"
    argv = argv or ("fractalify", "--once", *flags, GUEST_INPUT, GUEST_OUTPUT)
    result = run_wasi(WasiRun(module, argv, ((input_dir, GUEST_INPUT), (output_dir, GUEST_OUTPUT)),
                              env=tuple((env or {}).items()), stdout=out, stderr=err))
    return Run(result.status, out.read_text(), err.read_text())


def noise(height: int, width: int, channels: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def save(array: np.ndarray, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = {3: "RGB", 4: "RGBA"}[array.shape[2]]
    Image.fromarray(array, mode).save(path, **options)
    return path


def load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB"))




def watch(input_dir: Path, output_dir: Path, *flags: str, interval: str = "0.3") -> subprocess.Popen:
    """`invoke run` in watch mode on two directories, its output captured."""
    return subprocess.Popen([str(INVOKE), "run", "--input", str(input_dir), "--output", str(output_dir),
                             "--interval", interval, *flags], cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop_watching(process: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C, as a user stops it; its stdout and stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
