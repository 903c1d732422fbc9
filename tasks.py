"""fractalify's tasks: each parses its flags, calls one function of `wasmpod`, prints.

    invoke build     compile the fractal core to wasm32-wasi; prints the module's path
    invoke run       run the module in wasmtime on two directories, as its Pod would
    invoke push      store the module as a Krustlet-pullable OCI artifact (local registry by default)
    invoke pull      fetch a module by reference and verify it
    invoke login     check credentials against a registry, then save them in the docker config
    invoke deploy    render the Pod (Job, Deployment, pull Secret) and apply it: local node or kubectl
    invoke undeploy  stop and delete what deploy started
    invoke status    what runs on the local node;  invoke logs: its output
    invoke registry.up / registry.down / registry.status    the embedded local registry
    invoke demo      the main job: build push deploy on the defaults, then show the fractalified examples
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
DEMO_INPUT = ROOT / "out" / "demo" / "input"
DEMO_OUTPUT = ROOT / "out" / "demo" / "output"


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
    """The main job: build, push to the local registry, deploy on the local node, show the results."""
    from dataclasses import replace

    from wasmpod.build import build_module
    from wasmpod.deploy import deploy_workload
    from wasmpod.demo import prepare_demo_input, wait_for_outputs
    from wasmpod.push import push_module

    project = _project()
    environ = dict(os.environ)
    registry = _registry_settings(c)
    module = build_module(project)
    print(f"built {module.path} ({module.size:,} bytes)")
    print("\n".join(push_module(project, module, registry, environ).lines()))
    prepare_demo_input(EXAMPLE_IMAGES, DEMO_INPUT)
    settings = replace(_deploy_settings(c), input_dir=str(DEMO_INPUT), output_dir=str(DEMO_OUTPUT), target="local")
    print(deploy_workload(project, registry, settings, environ, dry_run=False).text)
    for path in wait_for_outputs(DEMO_INPUT, DEMO_OUTPUT):
        print(f"  {path}")
    print(f"fractalified images are in {DEMO_OUTPUT}; drop more into {DEMO_INPUT} and they come out too, "
          "until `invoke undeploy`")


@task(help={"runs": "runs per measurement (the table shows medians)"})
def bench(c, runs=5):
    """Print the benchmark table: module size, compile time, wasm vs native per image."""
    from wasmpod.bench import run_benchmarks

    run_benchmarks(_project(), runs=runs)


REGISTRY_HELP = {
    "registry": "registry host[:port] (default: registry.address, else the embedded local registry)",
    "repository": "repository name (default: registry.repository)",
    "tag": "tag (default: registry.tag, else v + the crate version)",
    "plain_http": "talk plain HTTP (default for loopback registries only)",
    "insecure": "skip TLS certificate verification",
    "ca_file": "CA bundle that signed the registry's certificate",
    "port": "port of the embedded local registry (default: registry.local_port, 5000)",
    "json": "print JSON instead of lines",
}


def _registry_help(*names: str, **more: str) -> dict[str, str]:
    return {**{name: REGISTRY_HELP[name] for name in names}, **more}


def _registry_settings(c, registry=None, repository=None, tag=None, plain_http=False, insecure=False,
                       ca_file=None, port=None):
    """The registry settings: invoke's configuration layers, then these flags."""
    from wasmpod.config import registry_settings

    return registry_settings(c.config, {"address": registry, "repository": repository, "tag": tag,
                                        "plain_http": plain_http or None, "insecure": insecure,
                                        "ca_file": ca_file, "local_port": port})


@task(help=REGISTRY_HELP)
def push(c, registry=None, repository=None, tag=None, plain_http=False, insecure=False, ca_file=None, port=None, json=False):
    """Push the module as an OCI artifact in the layout Krustlet pulls; prints Pushed/Size/Digest."""
    from wasmpod.build import build_module
    from wasmpod.push import push_module

    project = _project()
    settings = _registry_settings(c, registry, repository, tag, plain_http, insecure, ca_file, port)
    pushed = push_module(project, build_module(project), settings, dict(os.environ))
    if json:
        print_json(pushed.as_json())
    else:
        print("\n".join(pushed.lines()))


@task(auto_shortflags=True, help=_registry_help("plain_http", "insecure", "ca_file", "json",
                          reference="REGISTRY/REPOSITORY[:TAG][@DIGEST]", output="file or directory to write"))
def pull(c, reference, output=None, plain_http=False, insecure=False, ca_file=None, json=False):
    """Fetch a module by reference, verify its digests, and write it; prints Pulled/Size/Digest."""
    from wasmpod.push import connect, pull_module
    from wasmpod.reference import parse_reference

    source = parse_reference(reference)
    settings = _registry_settings(c, source.registry, source.repository, None, plain_http, insecure, ca_file)
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

    settings = _registry_settings(c, registry, None, None, plain_http, insecure, ca_file)
    print(login_to_registry(settings, username, sys.stdin if password_stdin else None, dict(os.environ)))


@task(name="up", help={"port": REGISTRY_HELP["port"]})
def registry_up(c, port=None):
    """Start the embedded local registry on 127.0.0.1 (no-op when it is running)."""
    from wasmpod.local_registry import LocalRegistry

    print(LocalRegistry(_project().registry_dir, _registry_settings(c, port=port).local_port).up().describe())


@task(name="down", help={"port": REGISTRY_HELP["port"]})
def registry_down(c, port=None):
    """Stop the embedded local registry (its data stays in registry/data)."""
    from wasmpod.local_registry import LocalRegistry

    print(LocalRegistry(_project().registry_dir, _registry_settings(c, port=port).local_port).down().describe())


@task(name="status", help={"port": REGISTRY_HELP["port"]})
def registry_status(c, port=None):
    """Say whether the embedded local registry is running, and where its data is."""
    from wasmpod.local_registry import LocalRegistry

    print(LocalRegistry(_project().registry_dir, _registry_settings(c, port=port).local_port).status().describe())


DEPLOY_HELP = {
    **REGISTRY_HELP,
    "pin": "refer to the image by the digest the registry holds",
    "pull_secret": "name of the image pull Secret the Pod uses",
    "create_pull_secret": "render that Secret from push's credentials (mode 0600, never printed)",
    "input_dir": "host path (or pvc:NAME) mounted at /input_dir (default /input_dir)",
    "output_dir": "host path (or pvc:NAME) mounted at /output_dir (default /output_dir)",
    "kind": "pod, job or deployment",
    "name": "the workload's name (DNS-1123)",
    "namespace": "the namespace",
    "env": "KEY=VALUE for the core (e.g. FRACTALIFY_C=-0.8,0.156); repeatable",
    "target": "local (the embedded node) or kubectl (the current cluster)",
    "context": "kubectl context (default: the current one)",
    "out": "also write the rendered files into this directory",
    "dry_run": "print the rendered YAML on stdout and change nothing",
    "replicas": "Deployment replicas",
    "parallelism": "Job pods running at once",
    "completions": "Job runs in all (more than 1: an Indexed Job)",
}


def _deploy_settings(c, **flags):
    from wasmpod.config import deploy_settings

    return deploy_settings(c.config, flags, ROOT)


@task(iterable=["env"], help=DEPLOY_HELP)
def deploy(c, registry=None, repository=None, tag=None, plain_http=False, insecure=False, ca_file=None, port=None,
           pin=False, pull_secret=None, create_pull_secret=False, input_dir=None, output_dir=None, kind=None,
           name=None, namespace=None, env=None, target=None, context=None, out=None, dry_run=False,
           replicas=None, parallelism=None, completions=None, json=False):
    """Render the Pod (or Job, Deployment, pull Secret) and apply it: to the local node or with kubectl."""
    from wasmpod.deploy import deploy_workload

    project = _project()
    registry_settings = _registry_settings(c, registry, repository, tag, plain_http, insecure, ca_file, port)
    settings = _deploy_settings(c, pin=pin, pull_secret=pull_secret, create_pull_secret=create_pull_secret,
                                input_dir=input_dir, output_dir=output_dir, kind=kind, name=name,
                                namespace=namespace, env=env, target=target, context=context, out=out,
                                replicas=replicas, parallelism=parallelism, completions=completions)
    report = deploy_workload(project, registry_settings, settings, dict(os.environ), dry_run=dry_run)
    if json and not dry_run:
        print_json(report.as_json())
    else:
        print(report.text, end="" if dry_run else "\n")
    if report.failed:
        from invoke import Exit

        raise Exit(code=1)


@task(help=_registry_help("registry", "repository", "tag", "port", name=DEPLOY_HELP["name"],
                          namespace=DEPLOY_HELP["namespace"], target=DEPLOY_HELP["target"],
                          context=DEPLOY_HELP["context"], kind=DEPLOY_HELP["kind"]))
def undeploy(c, registry=None, repository=None, tag=None, port=None, name=None, namespace=None, target=None,
             context=None, kind=None):
    """Stop and delete what deploy started (same --target)."""
    from wasmpod.deploy import undeploy as undeploy_workload

    project = _project()
    settings = _deploy_settings(c, name=name, namespace=namespace, target=target, context=context, kind=kind)
    print(undeploy_workload(project, _registry_settings(c, registry, repository, tag, port=port), settings, dict(os.environ)))


@task
def status(c):
    """Show what runs on the local node."""
    from wasmpod.deploy import local_node_status

    print(local_node_status(_project()))


@task(help={"name": DEPLOY_HELP["name"], "namespace": DEPLOY_HELP["namespace"]})
def logs(c, name=None, namespace=None):
    """Print the output of a workload on the local node, each line prefixed by its instance."""
    from wasmpod.deploy import local_node_logs

    settings = _deploy_settings(c, name=name, namespace=namespace)
    print(local_node_logs(_project(), settings))


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


def _configure(collection: Collection) -> Collection:
    from wasmpod.config import collection_defaults

    # Every key has a default here, so invoke.yaml, INVOKE_* variables and -f FILE can set it;
    # the chain executor hands a flag given once to every task of the chain that takes it.
    collection.configure({**collection_defaults("fractalify", "fractalify"),
                          "tasks": {"executor_class": "wasmpod.chain.ChainExecutor"}})
    return collection


ns = _configure(Collection(build, run, push, pull, login, deploy, undeploy, status, logs, demo, bench))
ns.add_collection(Collection("registry", registry_up, registry_down, registry_status))
