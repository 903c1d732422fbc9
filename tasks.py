"""fractalify's tasks: each parses its flags, calls one function of `wasmpod`, prints.

    invoke build     compile the fractal core to wasm32-wasi; prints the module's path
    invoke run       run the module in wasmtime on two directories, as its Pod would
    invoke demo      the main job: build, then fractalify examples/images into out/examples
    invoke bench     the benchmark table (module size, compile time, wasm vs native)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from wasmpod.cli import print_json, task

ROOT = Path(__file__).resolve().parent
EXAMPLE_IMAGES = ROOT / "examples" / "images"
DEMO_OUTPUT = ROOT / "out" / "examples"


def _project():
    from wasmpod.project import Project

    return Project.at(ROOT, "fractalify")


@task(help={
    "formats": "build only these image formats, e.g. png,jpeg (default: all six)",
    "json": "print path, size and sha256 as JSON instead of the path",
})
def build(c, formats=None, json=False):
    """Compile the fractal core to a wasm32-wasi module (release); a no-op when nothing changed."""
    from wasmpod.build import BuildRequest, build_module, parse_feature_list

    module = build_module(_project(), BuildRequest(features=parse_feature_list(formats)))
    if json:
        print_json(module.as_json())
    else:
        print(module.path)


@task(help={
    "input": "host directory of images to read (mounted at /input_dir)",
    "output": "host directory to write into (mounted at /output_dir); created if missing",
    "once": "process what is there now, then exit",
    "interval": "seconds between scans in watch mode",
    "c": "the Julia constant RE,IM, e.g. -0.7269,0.1889",
    "max_iter": "iteration bound 1..255",
    "channel": "red, green or blue",
    "max_pixels": "refuse larger images before decoding",
})
def run(c, input, output, once=False, interval=None, c_=None, max_iter=None, channel=None, max_pixels=None):
    """Run the built module in wasmtime on two host directories, as Krustlet runs its Pod."""
    from wasmpod.build import build_module
    from wasmpod.localrun import run_on_directories

    project = _project()
    module = build_module(project)
    flags = _core_flags(once, interval, c_, max_iter, channel, max_pixels)
    result = run_on_directories(module.path, project.crate_name, Path(input), Path(output), flags, dict(os.environ))
    _finish(result)


@task
def demo(c):
    """The main job: build the module, then fractalify examples/images into out/examples."""
    from wasmpod.build import build_module
    from wasmpod.localrun import run_on_directories

    project = _project()
    module = build_module(project)
    print(f"module: {module.path} ({module.size} bytes)")
    result = run_on_directories(module.path, project.crate_name, EXAMPLE_IMAGES, DEMO_OUTPUT, ["--once"], dict(os.environ))
    if result.status == 0:
        print(f"fractalified images are in {DEMO_OUTPUT}")
    _finish(result)


@task(help={"runs": "runs per measurement (the table shows medians)"})
def bench(c, runs=5):
    """Print the benchmark table: module size, compile time, wasm vs native per image."""
    from wasmpod.bench import run_benchmarks

    run_benchmarks(_project(), runs=runs)


def _core_flags(once, interval, julia_c, max_iter, channel, max_pixels) -> list[str]:
    """The core's own options, passed through as its flags."""
    flags = ["--once"] if once else []
    for name, value in (("--interval", interval), ("--c", julia_c), ("--max-iter", max_iter),
                        ("--channel", channel), ("--max-pixels", max_pixels)):
        if value is not None:
            flags += [name, str(value)]
    return flags


def _finish(result) -> None:
    from invoke import Exit

    if result.trap:
        raise Exit(f"error: the module trapped: {result.trap}", code=1)
    if result.status != 0:
        raise Exit(code=result.status)
