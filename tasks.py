"""fractalify's tasks: the toolchain's (wasmpod) plus the fractal core's own.

    invoke build     compile the fractal core to wasm32-wasi; prints the module's path
    invoke run       run the module in wasmtime on two directories, as its Pod would
    invoke push      store the module as a Krustlet-pullable OCI artifact (local registry by default)
    invoke pull      fetch a module by reference and verify it
    invoke keygen / sign / verify / referrers    cosign-compatible keys and signatures, what is attached
    invoke login     check credentials against a registry, then save them in the docker config
    invoke deploy    render the Pod (Job, Deployment, pull Secret) and apply it: local node or kubectl
    invoke undeploy  stop and delete what deploy started
    invoke status    what runs on the local node;  invoke logs: its output
    invoke registry.up / registry.down / registry.status    the embedded local registry
    invoke demo      the main job: build push deploy on the defaults, then show the fractalified examples
    invoke bench     the benchmark table (module size, compile time, wasm vs native)
    invoke new NAME  start a new Krustlet PoC from templates/poc

Each task parses its flags, calls one function of `wasmpod`, and prints.
"""

from __future__ import annotations

import os
from pathlib import Path

from wasmpod.cli import task
from wasmpod.invoke_tasks import (deploy_settings_of, project_of, registry_settings_of, run_module_on,
                                  toolchain_collection)

ROOT = Path(__file__).resolve().parent
EXAMPLE_IMAGES = ROOT / "examples" / "images"
DEMO_INPUT = ROOT / "out" / "demo" / "input"
DEMO_OUTPUT = ROOT / "out" / "demo" / "output"


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
    flags = ["--once"] if once else []
    for name, value in (("--interval", interval), ("--c", c_), ("--max-iter", max_iter),
                        ("--channel", channel), ("--max-pixels", max_pixels)):
        if value is not None:
            flags += [name, str(value)]
    run_module_on(c, Path(input), Path(output), flags)


@task
def demo(c):
    """The main job: build, push to the local registry, deploy on the local node, show the results."""
    from dataclasses import replace

    from wasmpod.build import build_module
    from wasmpod.deploy import deploy_workload
    from wasmpod.demo import prepare_demo_input, wait_for_outputs
    from wasmpod.push import push_module

    project = project_of(c)
    environ = dict(os.environ)
    registry = registry_settings_of(c)
    module = build_module(project)
    print(f"built {module.path} ({module.size:,} bytes)")
    print("\n".join(push_module(project, module, registry, environ).lines()))
    prepare_demo_input(EXAMPLE_IMAGES, DEMO_INPUT)
    settings = replace(deploy_settings_of(c), input_dir=str(DEMO_INPUT), output_dir=str(DEMO_OUTPUT), target="local")
    print(deploy_workload(project, registry, settings, environ, dry_run=False).text)
    for path in wait_for_outputs(DEMO_INPUT, DEMO_OUTPUT):
        print(f"  {path}")
    print(f"fractalified images are in {DEMO_OUTPUT}; drop more into {DEMO_INPUT} and they come out too, "
          "until `invoke undeploy`")


@task(help={"runs": "runs per measurement, 1 to 100 (default 5; the table shows medians)"})
def bench(c, runs=None):
    """Print the benchmark table: module size, compile time, wasm vs native per image."""
    from wasmpod.bench import run_benchmarks
    from wasmpod.config import as_int

    # Not `runs=5`: invoke would cast the flag itself, and a typo would end in a traceback.
    run_benchmarks(project_of(c), runs=as_int(5 if runs is None else runs, "--runs", 1, 100))


@task(help={"name": "the PoC's name: crate, image and Pod (lower-case letters, digits, '-')",
            "dest": "directory to create (default: ./NAME)", "force": "replace an existing directory"})
def new(c, name, dest=None, force=False):
    """Start a new Krustlet PoC from templates/poc: a crate, its tasks, config, README and tests."""
    from wasmpod.scaffold import new_poc

    created = new_poc(ROOT, name, Path(dest) if dest else None, force)
    print(f"created {created}; next: cd {created} && ./bootstrap.sh test")


ns = toolchain_collection(ROOT, "fractalify", run, demo, bench, new)
