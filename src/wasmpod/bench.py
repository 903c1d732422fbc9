"""The benchmark behind the README's table: figures measured side by side in one run.

A program that prints a table, never a test with a time limit: these machines are shared and
noisy, so every figure is the median of several runs, and comparisons are ratios of one run.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .build import BuildRequest, build_module, build_native
from .project import Project

WROTE_MILLIS = re.compile(r"^wrote .* \((\d+) bytes, (\d+) ms\)$", re.MULTILINE)
SEED_MODULE_BYTES = 3_145_689  # the seed PoC's module, for scale
CONSTANTS = (("default constant", []), ("--c -0.7269,0.1889", ["--c", "-0.7269,0.1889"]))
# One iteration a pixel: what is left is reading, decoding, encoding and writing.
CODEC_ONLY = ("--max-iter 1 (codecs and files only)", ["--max-iter", "1"])
WASM_BUILDS = ("default (Krustlet)", "--simd")

# Runs one module in wasmtime in a process of its own, so its peak memory can be read.
WASM_RUNNER = """
import sys
from pathlib import Path
from wasmpod.localrun import WasiRun, run_wasi
module, input_dir, output_dir, *flags = sys.argv[1:]
run = WasiRun(Path(module), ("fractalify", *flags, "--once", "/input_dir", "/output_dir"),
              ((Path(input_dir), "/input_dir"), (Path(output_dir), "/output_dir")))
sys.exit(run_wasi(run).status)
"""


# Starts one Pod's module as the local node's runwasi path does (root preopen, compiled cache) on
# an empty input, so the run is the start: load (compile or deserialize), instantiate, one scan.
RUNWASI_START = """
import sys
from pathlib import Path
from wasmpod.artifact import file_digest
from wasmpod.localrun import WasiRun, run_wasi
module, root, input_dir, output_dir, cache = sys.argv[1:]
run = WasiRun(Path(module), ("fractalify.wasm", "--once", "/input_dir", "/output_dir"),
              ((Path(root), "/"), (Path(input_dir), "/input_dir"), (Path(output_dir), "/output_dir")),
              compiled_cache=Path(cache), layer_digest=file_digest(Path(module)))
sys.exit(run_wasi(run).status)
"""


@dataclass(frozen=True)
class Timing:
    """One processing run: the time the module logs for its images, the wall time, peak RSS."""

    image_ms: float
    wall_ms: float
    images: int
    peak_rss_kib: int


def make_photo_like_png(path: Path, width: int, height: int, seed: int = 1) -> None:
    """Smooth gradients plus noise: compresses like a photograph, unlike a flat test card."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.dstack([
        128 + 100 * np.sin(x / 97 + seed) * np.cos(y / 61),
        128 + 100 * np.sin((x + y) / 143),
        128 + 100 * np.cos(x / 211),
    ]) + rng.normal(0, 12, (height, width, 3))
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB").save(path)


GNU_TIME = Path("/usr/bin/time")  # Debian's `time`: reports the peak RSS of exactly the command


def _measure(command: list[str]) -> Timing:
    """Runs one process to its end. Its peak RSS comes from GNU time when installed (a forked
    Python child would otherwise report its parent's RSS as its own)."""
    with tempfile.TemporaryDirectory() as scratch:
        rss_file = Path(scratch) / "rss"
        wrapped = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *command] if GNU_TIME.exists() else command
        started = time.perf_counter()
        done = subprocess.run(wrapped, capture_output=True, text=True)
        wall = (time.perf_counter() - started) * 1000
        peak = int(rss_file.read_text().split()[-1]) if rss_file.exists() else 0
    millis = [int(m.group(2)) for m in WROTE_MILLIS.finditer(done.stdout)]
    if done.returncode != 0 or not millis:
        raise RuntimeError(f"benchmark run failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-1000:]}")
    return Timing(float(sum(millis)), wall, len(millis), peak)


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB" if kib else "n/a (install Debian's time)"


def time_wasm(module: Path, flags: list[str], input_dir: Path, work: Path) -> Timing:
    output = Path(tempfile.mkdtemp(dir=work))
    return _measure([sys.executable, "-c", WASM_RUNNER, str(module), str(input_dir), str(output), *flags])


def time_native(binary: Path, flags: list[str], input_dir: Path, work: Path) -> Timing:
    output = Path(tempfile.mkdtemp(dir=work))
    return _measure([str(binary), *flags, "--once", str(input_dir), str(output)])


def interleaved(runners: dict[str, Callable[[list[str], Path], Timing]], flags: list[str], input_dir: Path,
                runs: int) -> dict[str, list[Timing]]:
    """`runs` timings of each runner on `input_dir`, taken in turn (a, b, c, a, b, c, ...)."""
    timings: dict[str, list[Timing]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            timings[name].append(run(flags, input_dir))
    return timings


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
    return statistics.median(samples)


def runwasi_start_ms(module: Path, work: Path, runs: int) -> tuple[float, float]:
    """Wall time of a runwasi Pod's start on the local node, cold (nothing compiled: the cache
    entry removed first) and cached (the entry there), taken in turn; medians."""
    from .artifact import file_digest
    from .localrun import compiled_module_file

    where = Path(tempfile.mkdtemp(dir=work))
    for part in ("root/input_dir", "root/output_dir", "in", "out", "cache"):
        (where / part).mkdir(parents=True)
    command = [sys.executable, "-c", RUNWASI_START, str(module), str(where / "root"), str(where / "in"),
               str(where / "out"), str(where / "cache")]
    compiled = compiled_module_file(where / "cache", file_digest(module))
    cold, cached = [], []
    for _ in range(runs):
        for samples, keep in ((cold, False), (cached, True)):
            if not keep:
                compiled.unlink(missing_ok=True)
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(cold), statistics.median(cached)


def command_ms(command: list[str], cwd: Path, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, capture_output=True, check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dev_save_to_output(project: Project, runs: int) -> list[float]:
    """Seconds from saving a one-line change to a new PoC's Rust source until `invoke dev --fresh`
    has the new output on the local node, `runs` times: `invoke new` into a temporary directory,
    dev started there (on a registry port of its own, stopped afterwards), the first output
    awaited, then each change timed to the first output with the new text."""
    import signal

    from .local_registry import LocalRegistry

    invoke = str(Path(sys.executable).with_name("invoke"))
    port = _free_port()
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="wasmpod-bench-dev-") as scratch:
        poc = Path(scratch) / "benchpoc"
        subprocess.run([invoke, "new", "benchpoc", "--dest", str(poc)], cwd=project.root, check=True,
                       capture_output=True)
        (poc / ".venv").symlink_to(Path(sys.executable).parent.parent)
        env = {**os.environ, "INVOKE_REGISTRY_LOCAL_PORT": str(port), "INVOKE_DEPLOY_NAME": f"bench-dev-{os.getpid()}"}
        output = poc / "out" / "dev" / "output" / "hello.txt.txt"
        source = poc / "src" / "benchpoc" / "src" / "lib.rs"
        dev = subprocess.Popen([invoke, "dev", "--fresh"], cwd=poc, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            word = "bytes"
            if not _wait_for_text(output, f"{word}: ", 300):
                raise RuntimeError("invoke dev did not write the PoC's first output within 300 s")
            for run in range(runs):
                new_word = f"size{run}"
                text = source.read_text()
                source.write_text(text.replace(f'format!("{word}: ', f'format!("{new_word}: ', 1))
                started = time.perf_counter()
                if not _wait_for_text(output, f"{new_word}: ", 120):
                    raise RuntimeError("invoke dev did not write the changed output within 120 s")
                samples.append(time.perf_counter() - started)
                word = new_word
        finally:
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                dev.kill()
            LocalRegistry(Project.at(poc).registry_dir, port).down()  # the PoC's own, as dev started it
    return samples


def _wait_for_text(path: Path, start: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if path.read_text().startswith(start):
                return True
        except OSError:
            pass  # --fresh removed it; the new instance writes it again
        time.sleep(0.02)
    return False


def run_benchmarks(project: Project, runs: int = 5, out=sys.stdout) -> None:
    log = open(os.devnull, "w")
    builds = {
        "default (Krustlet)": build_module(project, log=log),
        "--simd": build_module(project, BuildRequest(simd=True), log=log),
        "--formats png,jpeg": build_module(project, BuildRequest(features=("jpeg", "png")), log=log),
        "--simd --formats png,jpeg": build_module(project, BuildRequest(features=("jpeg", "png"), simd=True), log=log),
    }
    plain_native = build_native(project, features=("plain-kernel",), log=log)
    rows: list[tuple[str, str]] = []
    for name, built in builds.items():
        rows.append((f"module size, {name}", f"{built.size:,} bytes = {built.size / SEED_MODULE_BYTES:.1%} of the seed's"))
    for name in WASM_BUILDS:
        rows.append((f"compile time in wasmtime, {name}", f"{compile_ms(builds[name].path, runs):.0f} ms"))

    with tempfile.TemporaryDirectory(prefix="fractalify-bench-") as scratch:
        work = Path(scratch)
        for name in WASM_BUILDS:
            cold, cached = runwasi_start_ms(builds[name].path, work, runs)
            rows.append((f"runwasi Pod start on the local node, {name}: cold (compile) / cached",
                         f"{cold:.0f} ms / {cached:.0f} ms = {cached / cold:.2f}"))
        hd = work / "hd"
        hd.mkdir()
        make_photo_like_png(hd / "frame.png", 1920, 1080)
        # Round-robin, so a neighbour's load on this shared machine falls on all three alike.
        runners = {"native": lambda flags, where: time_native(plain_native, flags, where, work)}
        for name in WASM_BUILDS:
            runners[name] = lambda flags, where, path=builds[name].path: time_wasm(path, flags, where, work)
        for label, flags in CONSTANTS + (CODEC_ONLY,):
            timings = interleaved(runners, flags, hd, runs)
            native = statistics.median(t.image_ms for t in timings["native"])
            for name in WASM_BUILDS:
                wasm = statistics.median(t.image_ms for t in timings[name])
                rows.append((f"1920x1080 PNG, {label}, {name}: wasmtime / native",
                             f"{wasm:.0f} ms / {native:.0f} ms = {wasm / native:.2f}"))
        batch = work / "batch"
        batch.mkdir()
        for i in range(100):
            make_photo_like_png(batch / f"{i:03}.png", 640, 480, seed=i)
        timings = interleaved(runners, [], batch, max(1, runs // 2))
        for name in (*WASM_BUILDS, "native"):
            wall = statistics.median(t.wall_ms for t in timings[name])
            peak = max(t.peak_rss_kib for t in timings[name])
            runtime = " (with Python and wasmtime)" if name != "native" else ""
            rows.append((f"batch of 100 PNGs 640x480 --once, {name}",
                         f"{100 / (wall / 1000):.1f} images/s, peak RSS {_mib(peak)}{runtime}"))

    invoke = [str(Path(sys.executable).with_name("invoke"))]
    rows.append(("no-op `invoke build`", f"{command_ms(invoke + ['build'], project.root, runs):.0f} ms"))
    rows.append(("`invoke push` of an unchanged module", f"{command_ms(invoke + ['push'], project.root, runs):.0f} ms"))
    rows.append(("`invoke deploy --dry-run`", f"{command_ms(invoke + ['deploy', '--dry-run'], project.root, runs):.0f} ms"))
    rows.append(("`invoke --list`", f"{command_ms(invoke + ['--list'], project.root, runs):.0f} ms"))
    saves = dev_save_to_output(project, runs)
    rows.append(("`invoke dev`: one-line change in a new PoC, save to first new output",
                 f"{statistics.median(saves):.2f} s (min {min(saves):.2f}, max {max(saves):.2f})"))

    width = max(len(name) for name, _ in rows)
    print(f"fractalify benchmark, {time.strftime('%Y-%m-%d')}, {runs} runs each (medians); native: the same crate "
          "built for this machine with the plain one-pixel kernel", file=out)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=out)
