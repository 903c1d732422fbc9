"""The benchmark behind the README's table: figures measured side by side in one run.

A program that prints a table, never a test with a time limit: these machines are shared and
noisy, so every figure is the median of several runs and comparisons are ratios of the same run.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .build import build_module, build_native
from .localrun import GUEST_INPUT, GUEST_OUTPUT, WasiRun, run_wasi
from .project import Project

WROTE_MILLIS = re.compile(r"^wrote .* \((\d+) bytes, (\d+) ms\)$", re.MULTILINE)


@dataclass(frozen=True)
class Timing:
    """One processing run: time for the image as the module logs it, and wall time in all."""

    image_ms: float
    wall_ms: float


def make_photo_like_png(path: Path, width: int, height: int) -> None:
    """Smooth gradients plus noise: compresses like a photograph, unlike a flat test card."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.dstack([
        128 + 100 * np.sin(x / 97) * np.cos(y / 61),
        128 + 100 * np.sin((x + y) / 143),
        128 + 100 * np.cos(x / 211),
    ]) + rng.normal(0, 12, (height, width, 3))
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB").save(path)


def time_module(module: Path, program: str, flags: list[str], input_dir: Path, work: Path) -> Timing:
    output = Path(tempfile.mkdtemp(dir=work))
    log = output.parent / f"{output.name}.log"
    run = WasiRun(module, (program, *flags, "--once", GUEST_INPUT, GUEST_OUTPUT),
                  ((input_dir, GUEST_INPUT), (output, GUEST_OUTPUT)), stdout=log, stderr=log)
    started = time.perf_counter()
    result = run_wasi(run)
    wall = (time.perf_counter() - started) * 1000
    return _timing(result.status, log.read_text(), wall)


def time_native(binary: Path, flags: list[str], input_dir: Path, work: Path) -> Timing:
    output = Path(tempfile.mkdtemp(dir=work))
    started = time.perf_counter()
    done = subprocess.run([str(binary), *flags, "--once", str(input_dir), str(output)], capture_output=True, text=True)
    wall = (time.perf_counter() - started) * 1000
    return _timing(done.returncode, done.stdout + done.stderr, wall)


def _timing(status: int, log: str, wall_ms: float) -> Timing:
    millis = [int(m.group(2)) for m in WROTE_MILLIS.finditer(log)]
    if status != 0 or not millis:
        raise RuntimeError(f"benchmark run failed (status {status}):\n{log}")
    return Timing(image_ms=float(sum(millis)), wall_ms=wall_ms)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples)


def compile_ms(module: Path, runs: int) -> float:
    """Cranelift compile time of the module in wasmtime, without its cache."""
    import wasmtime

    data = module.read_bytes()
    samples = []
    for _ in range(runs):
        engine = wasmtime.Engine(wasmtime.Config())
        started = time.perf_counter()
        wasmtime.Module(engine, data)
        samples.append((time.perf_counter() - started) * 1000)
    return median_ms(samples)


def run_benchmarks(project: Project, runs: int = 5, out=sys.stdout) -> None:
    module = build_module(project)
    native = build_native(project)
    rows: list[tuple[str, str]] = [
        ("module size", f"{module.size:,} bytes"),
        ("module compile time in wasmtime (median)", f"{compile_ms(module.path, runs):.0f} ms"),
    ]
    with tempfile.TemporaryDirectory(prefix="fractalify-bench-") as scratch:
        work = Path(scratch)
        images = work / "hd"
        images.mkdir()
        make_photo_like_png(images / "frame.png", 1920, 1080)
        for label, flags in (("default constant", []), ("--c -0.7269,0.1889", ["--c", "-0.7269,0.1889"])):
            wasm = [time_module(module.path, project.crate_name, flags, images, work) for _ in range(runs)]
            host = [time_native(native, flags, images, work) for _ in range(runs)]
            wasm_ms = median_ms([t.image_ms for t in wasm])
            host_ms = median_ms([t.image_ms for t in host])
            rows.append((f"1920x1080 PNG, {label}: wasmtime / native",
                         f"{wasm_ms:.0f} ms / {host_ms:.0f} ms = {wasm_ms / host_ms:.2f}"))
            rows.append((f"  same, whole run incl. start-up: wasmtime / native",
                         f"{median_ms([t.wall_ms for t in wasm]):.0f} ms / {median_ms([t.wall_ms for t in host]):.0f} ms"))
    width = max(len(name) for name, _ in rows)
    print(f"fractalify benchmark ({runs} runs each, medians; {time.strftime('%Y-%m-%d')})", file=out)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=out)
