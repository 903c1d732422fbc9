"""The default module loads and runs on the engine Krustlet embedded: wasmtime 0.30 with its
default configuration (SIMD off), installed from PyPI into a virtual environment of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from coretools import ROOT, load, noise, run_module, save
from reference import expected_pixels
from wasmpod.build import BuildRequest, build_module
from wasmpod.project import Project

ENGINE_VENV = ROOT / ".cache" / "wasmtime-0.30"

RUNNER = textwrap.dedent("""
    import sys, wasmtime
    module_path, input_dir, output_dir = sys.argv[1:4]
    engine = wasmtime.Engine()  # the default Config, as Krustlet's wasi-provider used it
    module = wasmtime.Module.from_file(engine, module_path)
    store = wasmtime.Store(engine)
    config = wasmtime.WasiConfig()
    config.argv = ["fractalify", "--once", "/input_dir", "/output_dir"]
    config.preopen_dir(input_dir, "/input_dir")
    config.preopen_dir(output_dir, "/output_dir")
    config.inherit_stdout()
    config.inherit_stderr()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store.set_wasi(config)
    instance = linker.instantiate(store, module)
    instance.exports(store)["_start"](store)
""")


@pytest.fixture(scope="session")
def engine_030() -> Path:
    python = ENGINE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ENGINE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "wasmtime==0.30.0"], check=True, timeout=600)
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('wasmtime'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "0.30.0"
    return python


def test_default_module_runs_on_wasmtime_030(engine_030, module, tmp_path):
    pixels = noise(33, 47, 3)
    save(pixels, tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    done = subprocess.run([str(engine_030), "-c", RUNNER, str(module), str(tmp_path / "in"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote a.png" in done.stdout
    assert np.array_equal(load(tmp_path / "out" / "a.png"), expected_pixels(pixels))


@pytest.fixture(scope="session")
def simd_module() -> Path:
    built = build_module(Project.at(ROOT, "fractalify"), BuildRequest(simd=True))
    assert built.simd
    return built.path


def test_simd_module_is_refused_by_wasmtime_030(engine_030, simd_module, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    done = subprocess.run([str(engine_030), "-c", RUNNER, str(simd_module), str(tmp_path / "in"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "SIMD" in done.stderr


def test_simd_and_scalar_builds_write_identical_bytes(module, simd_module, tmp_path):
    examples = ROOT / "examples" / "images"
    for size, seed in ((1, 1), (37, 2), (160, 3)):
        save(noise(size, size + 3, 4, seed=seed), tmp_path / "corpus" / f"n{size}.png")
    save(noise(90, 160, 3, seed=5), tmp_path / "corpus" / "n.bmp")
    for flags in ((), ("--c", "-0.7269,0.1889"), ("--max-iter", "7", "--channel", "red")):
        for source in (examples, tmp_path / "corpus"):
            scalar = run_module(module, source, tmp_path / f"scalar{hash((flags, str(source)))}", *flags)
            simd = run_module(simd_module, source, tmp_path / f"simd{hash((flags, str(source)))}", *flags)
            assert scalar.status == simd.status == 0, scalar.stderr + simd.stderr
            assert sorted(scalar.wrote()) == sorted(simd.wrote()) and scalar.wrote()
            for name in scalar.wrote():
                a = (tmp_path / f"scalar{hash((flags, str(source)))}" / name).read_bytes()
                b = (tmp_path / f"simd{hash((flags, str(source)))}" / name).read_bytes()
                assert a == b, name
