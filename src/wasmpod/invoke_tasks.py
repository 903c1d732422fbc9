"""The toolchain's invoke tasks, shared by fractalify and every PoC made with `invoke new`.

A project's `tasks.py` lists its own tasks and calls `toolchain_collection(root, crate, *tasks)`;
each task here parses its flags, calls one library function, and prints. The project (its root,
crate, local registry and local node) comes from the collection's configuration, `wasmpod.*`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
import sys
import tomllib
from dataclasses import dataclass
from json import dumps
from pathlib import Path

from invoke import Collection, Task
from invoke.parser import Argument

from .cli import install_parse_error_hints, print_json, report_config_file_errors, task
from .errors import UserError


def project_of(c):
    """The project these tasks work on, from the `wasmpod` configuration section."""
    from .project import Project

    section = c.config.wasmpod
    return Project.at(Path(section.root), section.crate,
                      registry_dir=Path(section.registry_dir) if section.registry_dir else None,
                      node_dir=Path(section.node_dir) if section.node_dir else None)


@task(help={
    # Rewritten per project by toolchain_collection (ProjectWords); hidden when the crate has no features.
    "formats": "build only these features of the crate, comma-separated (default: its default features)",
    "json": "print path, size and sha256 as JSON instead of the path",
    "simd": "build with WebAssembly SIMD for wasmtime 0.33+, runwasi, SpinKube (not Krustlet's 0.30)",
})
def build(c, formats=None, json=False, simd=False):
    """Compile the crate to a wasm32-wasi module (release); a no-op when nothing changed."""
    from .build import BuildRequest, build_module, parse_feature_list

    module = build_module(project_of(c), BuildRequest(features=parse_feature_list(formats), simd=simd))
    if json:
        print_json(module.as_json())
    else:
        print(module.path)


@task(iterable=["arg"], help={
    "input": "host directory to read (mounted at /input_dir)",
    "output": "host directory to write into (mounted at /output_dir); created if missing",
    "once": "process what is there now, then exit",
    "interval": "seconds between scans in watch mode",
    "arg": "one more flag for the module, e.g. --arg=--verbose; repeatable",
})
def run(c, input, output, once=False, interval=None, arg=None):
    """Run the built module in wasmtime on two host directories, as Krustlet runs its Pod."""
    flags = (["--once"] if once else []) + (["--interval", str(interval)] if interval else []) + list(arg or [])
    run_module_on(c, Path(input), Path(output), flags)


def run_module_on(c, input_dir: Path, output_dir: Path, flags: list[str]) -> None:
    """Builds (a no-op when unchanged) and runs the module; its exit status becomes ours."""
    from .build import build_module
    from .localrun import run_on_directories

    project = project_of(c)
    module = build_module(project)
    finish(run_on_directories(module.path, project.crate_name, input_dir, output_dir, flags, dict(os.environ),
                              instance_locks=project.cache_dir / "run"))


@task(help={
    "out": "write the SBOM to this file (default: standard output)",
    "simd": "describe the SIMD build",
    "formats": "describe the build with only these formats (cargo features), as `build --formats`",
})
def sbom(c, out=None, simd=False, formats=None):
    """Write the CycloneDX 1.5 SBOM of the module: every crate linked into it, the toolchain, its sha256."""
    from .atomic_files import write_atomically
    from .build import BuildRequest, build_module, parse_feature_list
    from .errors import UserError
    from .sbom import build_sbom

    project = project_of(c)
    request = BuildRequest(features=parse_feature_list(formats), simd=simd)
    document = build_sbom(project, request, build_module(project, request), dict(os.environ))
    if out:
        try:
            print(write_atomically(Path(out), document))
        except OSError as error:
            raise UserError(f"cannot write the SBOM to {out}: {error.strerror}") from None
    else:
        sys.stdout.write(document.decode())


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


def registry_settings_of(c, registry=None, repository=None, tag=None, plain_http=False, insecure=False,
                       ca_file=None, port=None, sign_key=None):
    """The registry settings: invoke's configuration layers, then these flags."""
    from .config import check_invoke_variables, registry_settings

    check_invoke_variables(os.environ)
    return registry_settings(c.config, {"address": registry, "repository": repository, "tag": tag,
                                        "plain_http": plain_http or None, "insecure": insecure,
                                        "ca_file": ca_file, "local_port": port, "sign_key": sign_key})


RUNTIME_HELP = ("krustlet (wasm-to-oci layout, tag v<version>) or runwasi (the CNCF Wasm OCI artifact, "
                "tag suffix -runwasi); default deploy.runtime")


@task(help={**REGISTRY_HELP, "simd": "push the SIMD build (tag suffix -simd)",
            "runtime": RUNTIME_HELP + "; all: both, each under its tag",
            "sign_key": "sign what was pushed, cosign's way: key file or env://NAME (default: registry.sign_key)",
            "sbom": "attach the module's CycloneDX SBOM (an OCI 1.1 referrer; with a key also attested at .att)",
            "module": "push this already built module instead of building (e.g. a CI job's artifact)"})
def push(c, registry=None, repository=None, tag=None, plain_http=False, insecure=False, ca_file=None, port=None, json=False,
         simd=False, runtime=None, sign_key=None, sbom=False, module=None):
    """Push the module as an OCI artifact in the layout its runtime pulls; prints Pushed/Size/Digest."""
    from .build import BuildRequest, build_module, prebuilt_module
    from .config import push_runtimes
    from .push import push_module

    project = project_of(c)
    settings = registry_settings_of(c, registry, repository, tag, plain_http, insecure, ca_file, port, sign_key)
    runtimes = push_runtimes(c.config, runtime)
    built = prebuilt_module(Path(module), simd) if module else build_module(project, BuildRequest(simd=simd))
    pushed = push_module(project, built, settings, dict(os.environ), runtimes, sbom=sbom)
    if json:
        print_json(pushed.as_json())
    else:
        print("\n".join(pushed.lines()))


@task(auto_shortflags=True, help=_registry_help("plain_http", "insecure", "ca_file", "json",
                          reference="REGISTRY/REPOSITORY[:TAG][@DIGEST]", output="file or directory to write",
                          runtime="pull by krustlet's rules (default) or runwasi's"))
def pull(c, reference, output=None, plain_http=False, insecure=False, ca_file=None, json=False, runtime=None):
    """Fetch a module by reference, verify its digests, and write it; prints Pulled/Size/Digest."""
    from .config import check_runtime
    from .push import connect, pull_module
    from .reference import parse_reference

    source = parse_reference(reference)
    settings = registry_settings_of(c, source.registry, source.repository, None, plain_http, insecure, ca_file)
    client = connect(project_of(c).registry_dir, settings, dict(os.environ))
    pulled = pull_module(client, source, Path(output) if output else None, check_runtime(runtime or "krustlet"))
    if json:
        print_json(pulled.as_json())
    else:
        print("\n".join(pulled.lines()))


@task(help=_registry_help("registry", "plain_http", "insecure", "ca_file",
                          username="user name (default: $REGISTRY_USERNAME, else asked)",
                          password_stdin="read the password from standard input (default: $REGISTRY_PASSWORD, else asked)"))
def login(c, registry, username=None, password_stdin=False, plain_http=False, insecure=False, ca_file=None):
    """Check credentials against a registry, then save them where docker keeps them."""
    from .login import login_to_registry

    settings = registry_settings_of(c, registry, None, None, plain_http, insecure, ca_file)
    print(login_to_registry(settings, username, sys.stdin if password_stdin else None, dict(os.environ)))


@task(name="up", help={"port": REGISTRY_HELP["port"]})
def registry_up(c, port=None):
    """Start the embedded local registry on 127.0.0.1 (no-op when it is running)."""
    from .local_registry import LocalRegistry

    print(LocalRegistry(project_of(c).registry_dir, registry_settings_of(c, port=port).local_port).up().describe())


@task(name="down", help={"port": REGISTRY_HELP["port"]})
def registry_down(c, port=None):
    """Stop the embedded local registry (its data stays in registry/data)."""
    from .local_registry import LocalRegistry

    print(LocalRegistry(project_of(c).registry_dir, registry_settings_of(c, port=port).local_port).down().describe())


@task(name="status", help={"port": REGISTRY_HELP["port"]})
def registry_status(c, port=None):
    """Say whether the embedded local registry is running, and where its data is."""
    from .local_registry import LocalRegistry

    print(LocalRegistry(project_of(c).registry_dir, registry_settings_of(c, port=port).local_port).status().describe())


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
    "env": "KEY=VALUE for the module; repeatable",  # rewritten per project with its variables
    "target": "local (the embedded node) or kubectl (the current cluster)",
    "context": "kubectl context (default: the current one)",
    "out": "also write the rendered files into this directory",
    "dry_run": "print the rendered YAML on stdout and change nothing",
    "replicas": "Deployment replicas",
    "parallelism": "Job pods running at once",
    "completions": "Job runs in all (more than 1: an Indexed Job)",
    "simd": "deploy the SIMD build (tag suffix -simd); Krustlet's wasmtime 0.30 cannot run it",
    "runtime": "krustlet or runwasi: the image's layout (runwasi: tag suffix -runwasi) and the Pod's scheduling",
    "runtime_class": "runwasi: the Pod's runtimeClassName (default wasmtime-v1)",
    "create_runtime_class": "runwasi: also render the RuntimeClass (node.k8s.io/v1, handler = its name)",
    "create_policy": "also render a Kyverno ClusterPolicy admitting the image only when signed by --verify-key",
    "verify_key": "refuse a module whose cosign signature does not verify with this public key (default: deploy.verify_key)",
}


def deploy_settings_of(c, **flags):
    from .config import check_invoke_variables, deploy_settings

    check_invoke_variables(os.environ)
    return deploy_settings(c.config, flags, project_of(c))


@task(iterable=["env"], help=DEPLOY_HELP)
def deploy(c, registry=None, repository=None, tag=None, plain_http=False, insecure=False, ca_file=None, port=None,
           pin=False, pull_secret=None, create_pull_secret=False, input_dir=None, output_dir=None, kind=None,
           name=None, namespace=None, env=None, target=None, context=None, out=None, dry_run=False,
           replicas=None, parallelism=None, completions=None, json=False, simd=False, runtime=None, runtime_class=None,
           create_runtime_class=False, create_policy=False, verify_key=None):
    """Render the Pod (or Job, Deployment, pull Secret) and apply it: to the local node or with kubectl."""
    from .deploy import deploy_workload

    project = project_of(c)
    registry_settings = registry_settings_of(c, registry, repository, tag, plain_http, insecure, ca_file, port)
    settings = deploy_settings_of(c, pin=pin, pull_secret=pull_secret, create_pull_secret=create_pull_secret,
                                input_dir=input_dir, output_dir=output_dir, kind=kind, name=name,
                                namespace=namespace, env=env, target=target, context=context, out=out,
                                replicas=replicas, parallelism=parallelism, completions=completions, simd=simd,
                                runtime=runtime, runtime_class=runtime_class, create_runtime_class=create_runtime_class,
                                create_policy=create_policy, verify_key=verify_key)
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
    from .deploy import undeploy as undeploy_workload

    project = project_of(c)
    settings = deploy_settings_of(c, name=name, namespace=namespace, target=target, context=context, kind=kind)
    print(undeploy_workload(project, registry_settings_of(c, registry, repository, tag, port=port), settings, dict(os.environ)))


@task(help={"json": "print JSON: each workload's phase and each instance's state, exit status, restarts, last error"})
def status(c, json=False):
    """Show what runs on the local node: each instance's state, restarts and last exit status."""
    from .deploy import local_node_status, local_node_status_json

    if json:
        print_json(local_node_status_json(project_of(c)))
    else:
        print(local_node_status(project_of(c)))


@task(help={"name": DEPLOY_HELP["name"], "namespace": DEPLOY_HELP["namespace"],
            "follow": "keep printing new lines (across restarts) until Ctrl-C or undeploy (-f is invoke's own --config)",
            "tail": "only the last N lines of each instance's stdout and stderr (then new ones, with --follow)",
            "json": "one JSON object per line: instance, stream, line"})
def logs(c, name=None, namespace=None, follow=False, tail=None, json=False):
    """Print the output of a workload on the local node, each line prefixed by its instance."""
    from .config import as_int
    from .deploy import follow_local_node_logs, local_node_logs

    settings = deploy_settings_of(c, name=name, namespace=namespace)
    lines_wanted = None if tail is None else as_int(tail, "--tail", 0, 10**9)

    def emit(line) -> None:
        print(dumps(line.as_json(), sort_keys=True) if json else line.prefixed(), flush=True)

    if follow:
        follow_local_node_logs(project_of(c), settings, emit, lines_wanted)
    else:
        for line in local_node_logs(project_of(c), settings, lines_wanted):
            emit(line)


@task(help={"input_dir": "host directory the workload reads (default: out/dev/input, seeded from examples/)",
            "output_dir": "host directory it writes (default: out/dev/output)",
            "fresh": "before each redeploy, remove the outputs written since dev started, so existing inputs are done again",
            "interval": "the workload's scan interval in seconds, passed as <PREFIX>_INTERVAL (default 0.2)"})
def dev(c, input_dir=None, output_dir=None, fresh=False, interval=None):
    """Watch the crate, templates and invoke.yaml; on each save rebuild, push, redeploy locally, stream logs."""
    from .dev import dev_options, run_dev_loop

    project = project_of(c)

    def load_settings():
        reload_project_config(c, project.root)
        return registry_settings_of(c), deploy_settings_of(c)

    run_dev_loop(project, load_settings, dev_options(project, input_dir, output_dir, fresh, interval), dict(os.environ))


def reload_project_config(c, root: Path) -> None:
    """Reads the project's invoke.yaml again (invoke reads it once per command); a file that does
    not parse is a UserError, so dev shows it and keeps the running workload."""
    from .cli import CONFIG_FILE_ERRORS
    from .errors import UserError

    try:
        c.config.set_project_location(str(root))
        c.config.load_project()
    except CONFIG_FILE_ERRORS as error:
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise UserError(f"cannot read {root / 'invoke.yaml'}: {reason}") from None


class _ListFlagFillsName(Argument):
    """`new --list`: sets NAME to "" when it is seen, because invoke refuses a command line that
    leaves a positional argument out, and `invoke new --list` needs no NAME."""

    name_argument: Argument

    def set_value(self, value, cast: bool = True) -> None:
        super().set_value(value, cast)
        if self.name_argument.value is None:
            self.name_argument.set_value("", cast=False)


class NewPocTask(Task):
    def get_arguments(self, ignore_unknown_help=None):
        arguments = super().get_arguments(ignore_unknown_help)
        by_name = {argument.name: argument for argument in arguments}
        by_name["list"].__class__ = _ListFlagFillsName
        by_name["list"].name_argument = by_name["name"]
        return arguments


@task(klass=NewPocTask, positional=["name"], help={"name": "the PoC's name: crate, image and Pod (lower-case letters, digits, '-')",
            "dest": "directory to create (default: ./NAME where you run this; never inside the toolchain's tree)",
            "force": "replace an existing directory",
            "template": "what the crate starts as (default: files); see --list",
            "toolchain": "the wasmpod the PoC installs: a wheel, a checkout or a git URL (default: this one)",
            "list": "list the templates and exit"})
def new(c, name=None, dest=None, force=False, template=None, toolchain=None, list=False):
    """Start a new PoC that stands alone: a crate, its tasks, config, README, tests and CI pipeline."""
    from .scaffold import DEFAULT_TEMPLATE, describe_templates, new_poc

    if list:
        print(describe_templates())
        return
    if not name:
        raise UserError("name the PoC: invoke new NAME [--template T] (invoke new --list shows the templates)")
    created = new_poc(name, Path(dest) if dest else None, force, template or DEFAULT_TEMPLATE, toolchain)
    print(f"created {created}; next: cd {created} && ./bootstrap.sh test")


@task
def test(c):
    """Run the project's tests: the crate's cargo test, then pytest over tests/."""
    import subprocess

    from .build import cargo_test

    project = project_of(c)
    if cargo_test(project) != 0:
        raise UserError(f"cargo test of {project.crate_name} failed; its messages are above")
    # pytest runs in a process of its own so its exit status and output are exactly its own.
    finish_status(subprocess.run([sys.executable, "-m", "pytest", "-q", "tests"], cwd=project.root).returncode)


def finish_status(status: int) -> None:
    from invoke import Exit

    if status != 0:
        raise Exit(code=status)


def finish(result) -> None:
    from invoke import Exit

    if result.trap:
        raise Exit(f"error: the module trapped: {result.trap}", code=1)
    if result.status != 0:
        raise Exit(code=result.status)


def toolchain_collection(root: Path, crate: str, *project_tasks: Task) -> Collection:
    """The toolchain's tasks plus the project's own (which replace ours of the same name),
    configured for the project at `root` whose crate is `src/<crate>`."""
    from .config import collection_defaults
    from .supply_chain_tasks import SUPPLY_CHAIN_TASKS

    report_config_file_errors()
    install_parse_error_hints()
    words = ProjectWords.of(root, crate)
    own = {t.name for t in project_tasks}
    shared = [for_project(t, words)
              for t in (build, run, push, pull, login, deploy, undeploy, status, logs, dev, sbom, test, new, *SUPPLY_CHAIN_TASKS)
              if t.name not in own]
    collection = Collection(*shared, *project_tasks)
    collection.add_collection(Collection("registry", registry_up, registry_down, registry_status))
    # Every key has a default here, so invoke.yaml, INVOKE_* variables and -f FILE can set it.
    # (The chain executor is named in the project's invoke.yaml: invoke picks it before this runs.)
    collection.configure({
        **collection_defaults(crate, crate),
        "wasmpod": {"root": str(root), "crate": crate, "registry_dir": None, "node_dir": None},
    })
    return collection


@dataclass(frozen=True)
class ProjectWords:
    """What the shared tasks' help says of the project they serve: its crate, its variables, and
    whether fractalify's build flags apply to it (`--formats` needs crate features; `--simd`
    needs `simd = true` under `[package.metadata.wasmpod]`)."""

    crate: str
    env: tuple[str, ...]
    features: tuple[str, ...]
    simd: bool

    @classmethod
    def of(cls, root: Path, crate: str) -> "ProjectWords":
        try:
            manifest = tomllib.loads((root / "src" / crate / "Cargo.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError):
            manifest = {}  # `invoke --list` still works; the first task that needs the crate says what is wrong
        metadata = ((manifest.get("package") or {}).get("metadata") or {}).get("wasmpod") or {}
        features = tuple(name for name in (manifest.get("features") or {}) if name != "default")
        env = metadata.get("env") if isinstance(metadata.get("env"), list) else []
        return cls(crate, tuple(str(name) for name in env), features, metadata.get("simd") is True)

    @property
    def hidden_flags(self) -> frozenset[str]:
        return frozenset(() if self.features else ("formats",)) | frozenset(() if self.simd else ("simd",))

    def help_for(self, task_name: str, name: str, text: str) -> str:
        if name == "formats" and task_name == "build":
            return f"build only these features of {self.crate}, e.g. {','.join(self.features[:2])} (default: its default features)"
        if name == "env" and self.env:
            return f"KEY=VALUE for {self.crate}'s module ({', '.join(self.env)}); repeatable"
        return text

    def doc_for(self, task_name: str, doc: str) -> str:
        if task_name == "build":
            return f"Compile {self.crate} (src/{self.crate}) to a wasm32-wasi module (release); a no-op when nothing changed."
        return doc


def for_project(shared: Task, words: ProjectWords) -> Task:
    """A copy of a shared task whose --list line, --help texts and flags speak of this project."""
    hidden = {name for name in words.hidden_flags if name in inspect.signature(shared.body).parameters}
    specialized = copy.copy(shared)
    specialized.help = {name: words.help_for(shared.name, name, text) for name, text in shared.help.items()
                        if name not in hidden}
    specialized.__doc__ = words.doc_for(shared.name, shared.__doc__ or "")
    if hidden:
        body = shared.body

        @functools.wraps(body)
        def narrowed(*args, **kwargs):
            return body(*args, **kwargs)

        # invoke reads a task's flags from its body's signature: without them, they do not exist.
        signature = inspect.signature(body)
        narrowed.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for p in signature.parameters.values() if p.name not in hidden])
        specialized.body = narrowed
    return specialized
