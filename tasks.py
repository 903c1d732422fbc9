"""fractalify's tasks: each parses its flags, calls one function of `wasmpod`, prints.

    invoke build     compile the fractal core to wasm32-wasi; prints the module's path
    invoke run       run the module in wasmtime on two directories, as its Pod would
    invoke push      store the module as a Krustlet-pullable OCI artifact (local registry by default)
    invoke pull      fetch a module by reference and verify it
    invoke login     check credentials against a registry, then save them in the docker config
    invoke registry.up / registry.down / registry.status    the embedded local registry
    invoke demo      the main job: build, then fractalify examples/images into out/examples
    invoke bench     the benchmark table (module size, compile time, wasm vs native)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from invoke import Collection

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


REGISTRY_HELP = {
    "registry": "registry host[:port] (default: the embedded local registry, started if needed)",
    "repository": "repository name (default: fractalify)",
    "tag": "tag (default: v + the crate version)",
    "plain_http": "talk plain HTTP (default for loopback registries only)",
    "insecure": "skip TLS certificate verification",
    "ca_file": "CA bundle that signed the registry's certificate",
    "port": "port of the embedded local registry (default 5000)",
    "json": "print JSON instead of lines",
}


def _registry_settings(registry, repository, tag, plain_http, insecure, ca_file, port):
    from wasmpod.settings import RegistrySettings

    return RegistrySettings(registry=registry, repository=repository or "fractalify", tag=tag,
                            plain_http=True if plain_http else None, insecure=insecure, ca_file=ca_file, local_port=int(port or 5000))


@task(help=REGISTRY_HELP)
def push(c, registry=None, repository=None, tag=None, plain_http=False, insecure=False, ca_file=None, port=None, json=False):
    """Push the module as an OCI artifact in the layout Krustlet pulls; prints Pushed/Size/Digest."""
    from wasmpod.artifact import compose_artifact, provenance_from_git
    from wasmpod.build import build_module
    from wasmpod.push import connect, push_artifact, terminal_progress
    from wasmpod.reference import ImageReference

    project = _project()
    settings = _registry_settings(registry, repository, tag, plain_http, insecure, ca_file, port)
    module = build_module(project)
    client = connect(project.registry_dir, settings, dict(os.environ))
    target = ImageReference(client.registry, settings.repository, settings.tag_for(project.crate_version))
    artifact = compose_artifact(module.path, provenance_from_git(ROOT, project.crate_version, dict(os.environ)),
                                layer_digest=f"sha256:{module.sha256}")
    pushed = push_artifact(client, target, artifact, terminal_progress(f"uploading {module.path.name}"))
    if json:
        print_json(pushed.as_json())
    else:
        print("\n".join(pushed.lines()))


def _registry_help(*names: str, **more: str) -> dict[str, str]:
    return {**{name: REGISTRY_HELP[name] for name in names}, **more}


@task(auto_shortflags=True, help=_registry_help("plain_http", "insecure", "ca_file", "json",
                          reference="REGISTRY/REPOSITORY[:TAG][@DIGEST]", output="file or directory to write"))
def pull(c, reference, output=None, plain_http=False, insecure=False, ca_file=None, json=False):
    """Fetch a module by reference, verify its digests, and write it; prints Pulled/Size/Digest."""
    from wasmpod.push import connect, pull_module
    from wasmpod.reference import parse_reference

    source = parse_reference(reference)
    settings = _registry_settings(source.registry, source.repository, None, plain_http, insecure, ca_file, None)
    client = connect(_project().registry_dir, settings, dict(os.environ))
    pulled = pull_module(client, source, Path(output) if output else None)
    if json:
        print_json(pulled.as_json())
    else:
        print("\n".join(pulled.lines()))


@task(help=_registry_help("registry", "plain_http", "insecure", "ca_file",
                          username="user name (default: $REGISTRY_USERNAME, else asked)",
                          password_stdin="read the password from standard input (default: $REGISTRY_PASSWORD, else asked)"))
def login(c, registry, username=None, password_stdin=False, plain_http=False, insecure=False, ca_file=None):
    """Check credentials against a registry, then save them where docker keeps them."""
    from wasmpod.login import login_to_registry

    settings = _registry_settings(registry, None, None, plain_http, insecure, ca_file, None)
    print(login_to_registry(settings, username, sys.stdin if password_stdin else None, dict(os.environ)))


@task(name="up", help={"port": REGISTRY_HELP["port"]})
def registry_up(c, port=5000):
    """Start the embedded local registry on 127.0.0.1 (no-op when it is running)."""
    from wasmpod.local_registry import LocalRegistry

    print(LocalRegistry(_project().registry_dir, int(port)).up().describe())


@task(name="down", help={"port": REGISTRY_HELP["port"]})
def registry_down(c, port=5000):
    """Stop the embedded local registry (its data stays in registry/data)."""
    from wasmpod.local_registry import LocalRegistry

    print(LocalRegistry(_project().registry_dir, int(port)).down().describe())


@task(name="status", help={"port": REGISTRY_HELP["port"]})
def registry_status(c, port=5000):
    """Say whether the embedded local registry is running, and where its data is."""
    from wasmpod.local_registry import LocalRegistry

    print(LocalRegistry(_project().registry_dir, int(port)).status().describe())


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


ns = Collection(build, run, push, pull, login, demo, bench)
ns.add_collection(Collection("registry", registry_up, registry_down, registry_status))
