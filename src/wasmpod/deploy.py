"""`deploy` and `undeploy`: render the manifests once, check them, then hand them to a target:
stdout (`--dry-run`), a cluster through kubectl, or the embedded local node."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .atomic_files import make_directory, write_atomically
from .config import DeploySettings
from .credentials import resolve_credentials
from .errors import UserError
from .local_node import DamagedState, LocalNode, LogLine, WorkloadState
from .manifests import (GUEST_INPUT, GUEST_OUTPUT, ImagePolicy, PullSecret, RuntimeClass, Workload, check_public_key_pem,
                        render_manifests, render_policy, volume_from)
from .oci_client import Transport
from .project import Project
from .push import connect
from .reference import ImageReference
from .settings import KRUSTLET, RUNWASI, RegistrySettings

REDACTED = "<redacted: the pull secret is written with --out only>"


@dataclass(frozen=True)
class Rendered:
    """The manifests of one deploy: (file name, YAML, object) each."""

    files: list[tuple[str, str, dict]]
    image: ImageReference

    def yaml(self, redact_secrets: bool = True) -> str:
        texts = []
        for name, text, obj in self.files:
            if redact_secrets and obj.get("kind") == "Secret":
                text = "\n".join(_redact_line(line) for line in text.splitlines()) + "\n"
            texts.append(text)
        return "---\n".join(texts)

    @property
    def objects(self) -> list[dict]:
        return [obj for _, _, obj in self.files]


def _redact_line(line: str) -> str:
    key, sep, _ = line.partition(".dockerconfigjson:")
    return f'{key}.dockerconfigjson: "{REDACTED}"' if sep else line


def image_reference(project: Project, registry: RegistrySettings, address: str, simd: bool,
                    runtime: str = KRUSTLET) -> ImageReference:
    """The image push wrote for this build and runtime layout."""
    return ImageReference(address, registry.repository, registry.tag_for(project.crate_version, simd, runtime))


def local_address(registry: RegistrySettings) -> str:
    return registry.registry or f"127.0.0.1:{registry.local_port}"


def render_deployment(project: Project, registry: RegistrySettings, settings: DeploySettings,
                      environ: dict[str, str], dry_run: bool) -> Rendered:
    """Everything before applying: the image (checked to exist in its registry, unless a dry run;
    pinned to the digest the registry holds with --pin), the pull Secret, the rendered and
    checked manifests."""
    if settings.create_runtime_class and settings.runtime != RUNWASI:
        raise UserError("--create-runtime-class is for --runtime runwasi: Krustlet's Pods select its nodes by label")
    if settings.create_policy:
        check_policy_target(settings, dry_run)
    image = image_reference(project, registry, local_address(registry), settings.simd, settings.runtime)
    if settings.pin or not dry_run:
        if dry_run:
            # A dry run changes nothing: it asks the local registry but does not start it.
            client = connect(None, replace(registry, registry=local_address(registry)), environ)
        else:
            client = connect(project.registry_dir, registry, environ)
        _, digest = client.get_manifest(image.repository, image.reference)
        if settings.verify_key and not dry_run:  # as an admission controller would, before anything is applied
            from .keys import load_verify_key
            from .signing import require_signature

            require_signature(client, image.with_digest(digest), load_verify_key(settings.verify_key, environ), "deploy it")
        if settings.pin:
            image = image.with_digest(digest)
    secret = None
    if settings.create_pull_secret:
        credentials = resolve_credentials(image.registry, environ)
        if credentials is None or not credentials.password:
            raise UserError(f"--create-pull-secret needs a user name and password for {image.registry}: set "
                            "REGISTRY_USERNAME and REGISTRY_PASSWORD, or `invoke login` (an identity token cannot go in a pull secret)")
        secret = PullSecret(settings.pull_secret or f"{settings.name}-pull", settings.namespace, image.registry,
                            credentials.username, credentials.password)
    workload = Workload(
        kind=settings.kind,
        name=settings.name,
        namespace=settings.namespace,
        image=str(image),
        program=project.crate_name,
        env=settings.env,
        volumes=(volume_from(settings.input_dir, "input-dir", GUEST_INPUT, create=False),
                 volume_from(settings.output_dir, "output-dir", GUEST_OUTPUT, create=True)),
        pull_secret=settings.pull_secret,
        replicas=settings.replicas,
        parallelism=settings.parallelism,
        completions=settings.completions,
        runtime=settings.runtime,
        runtime_class=settings.runtime_class,
    )
    runtime_class = None
    if settings.create_runtime_class:
        # KWasm's convention: the class is named after its handler, the shim's containerd runtime name.
        runtime_class = RuntimeClass(settings.runtime_class, settings.runtime_class, settings.runtime_class_node_selector)
    policy = [render_image_policy(image, settings, environ)] if settings.create_policy else []
    return Rendered([*policy, *render_manifests(settings.templates, workload, secret, runtime_class)], image)


def check_policy_target(settings: DeploySettings, dry_run: bool) -> None:
    """Before the registry is asked: the local node has no admission control to give a policy to."""
    if settings.target == "local" and not dry_run:
        raise UserError("--create-policy is for a cluster with Kyverno (--target kubectl, or --dry-run to print it): "
                        "the local node does not run Kyverno")


def render_image_policy(image: ImageReference, settings: DeploySettings,
                        environ: Mapping[str, str]) -> tuple[str, str, dict]:
    """The Kyverno ClusterPolicy of `--create-policy`: the image's repository, signed by the key."""
    from .keys import read_key_text

    assert settings.verify_key is not None  # deploy_settings requires it with create_policy
    raw, described = read_key_text(settings.verify_key, environ)  # a file, or env://NAME as for verifying
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise UserError(f"{described} is not a PEM text file") from None
    policy = ImagePolicy(name=f"{settings.namespace}-{settings.name}-signed",
                         repository=f"{image.registry}/{image.repository}",
                         public_key_pem=check_public_key_pem(text, described))
    return render_policy(settings.templates, policy)


def write_files(rendered: Rendered, out: Path) -> list[Path]:
    """Writes each manifest into `out`; the Secret with mode 0600."""
    make_directory(out, "--out")
    written = []
    for name, text, obj in rendered.files:
        written.append(write_atomically(out / name, text, mode=0o600 if obj.get("kind") == "Secret" else 0o644))
    return written


def kubectl_command(verb: str, files: list[Path], settings: DeploySettings) -> list[str]:
    """The exact kubectl command line for `apply` or `delete` of the rendered files."""
    command = ["kubectl"]
    if settings.context:
        command += ["--context", settings.context]
    command += ["--namespace", settings.namespace, verb]
    for path in files:
        command += ["-f", str(path)]
    if verb == "delete":
        command.append("--ignore-not-found")
    return command


def run_kubectl(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise UserError("kubectl is not installed: apt-get install kubernetes-client, or use --target local") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"{' '.join(command[:4])} did not finish within 120 s: is the cluster reachable?") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UserError(f"kubectl {command[command.index('--namespace') + 2]} failed: {last}")
    return done.stdout.strip()


def apply_kubectl(rendered: Rendered, settings: DeploySettings, scratch: Path) -> str:
    files = write_files(rendered, settings.out or scratch)
    return run_kubectl(kubectl_command("apply", files, settings))


def apply_local(project: Project, rendered: Rendered, registry: RegistrySettings, verify_key=None) -> WorkloadState:
    def transport_for(address: str) -> Transport:
        return Transport.choose(address, registry.plain_http, registry.insecure, registry.ca_file)

    return LocalNode(node_state_dir(project)).apply(rendered.objects, transport_for, verify_key=verify_key)


def node_state_dir(project: Project) -> Path:
    return project.node_dir


def undeploy(project: Project, registry: RegistrySettings, settings: DeploySettings, environ: dict[str, str]) -> str:
    """`invoke undeploy`: the local node stops and forgets the workload; kubectl deletes the objects."""
    import tempfile

    if settings.target == "local":
        gone = LocalNode(node_state_dir(project)).delete(settings.namespace, settings.name)
        return f"{settings.namespace}/{settings.name}: " + ("stopped and removed" if gone else "was not deployed on the local node")
    # The same files deploy applied: render them again (without contacting the registry). The
    # ClusterPolicy stays: it guards the repository, whatever runs from it (kubectl delete clusterpolicy).
    rendered = render_deployment(project, registry, replace(settings, pin=False, create_pull_secret=False,
                                                            create_policy=False), environ, dry_run=True)
    with tempfile.TemporaryDirectory(prefix="wasmpod-undeploy-") as scratch:
        said = run_kubectl(kubectl_command("delete", write_files(rendered, Path(scratch)), settings))
    if settings.create_pull_secret and settings.pull_secret:
        said += "\n" + run_kubectl(kubectl_secret_delete(settings))
    return said.strip()


def kubectl_secret_delete(settings: DeploySettings) -> list[str]:
    command = ["kubectl"] + (["--context", settings.context] if settings.context else [])
    return command + ["--namespace", settings.namespace, "delete", "secret", str(settings.pull_secret), "--ignore-not-found"]


@dataclass(frozen=True)
class DeployReport:
    text: str
    failed: bool = False
    image: str = ""
    state: str = ""
    files: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"image": self.image, "state": self.state, "files": list(self.files), "failed": self.failed}


def deploy_workload(project: Project, registry: RegistrySettings, settings: DeploySettings,
                    environ: dict[str, str], dry_run: bool) -> DeployReport:
    """`invoke deploy`: render and check, then print (dry run), apply with kubectl, or run locally."""
    import tempfile

    rendered = render_deployment(project, registry, settings, environ, dry_run)
    files = tuple(str(p) for p in write_files(rendered, settings.out)) if settings.out else ()
    if dry_run:
        return DeployReport(rendered.yaml(), image=str(rendered.image), files=files)
    if settings.target == "kubectl":
        with tempfile.TemporaryDirectory(prefix="wasmpod-deploy-") as scratch:
            said = apply_kubectl(rendered, settings, Path(scratch))
        return DeployReport(said, image=str(rendered.image), state="applied", files=files)
    from .keys import load_verify_key

    # The node checks the signature of what it pulled too: the tag may have moved since the check above.
    state = apply_local(project, rendered, registry,
                        load_verify_key(settings.verify_key, environ) if settings.verify_key else None)
    failed = state.phase == "Failed"
    lines = [f"deployed {state.kind} {state.namespace}/{state.name} from {rendered.image} on the local node: {state.phase}"]
    if state.kind == "Job" or failed:
        lines.append(state.describe())
    if failed:
        lines.append(f"see `invoke logs --name {state.name}`")
    return DeployReport("\n".join(lines), failed=failed, image=str(rendered.image), state=state.phase, files=files)


def local_node_status(project: Project) -> str:
    states = LocalNode(node_state_dir(project)).list()
    lines = [str(s) if isinstance(s, DamagedState) else s.describe() for s in states]
    return "\n".join(lines) if lines else "nothing is deployed on the local node"


def local_node_status_json(project: Project) -> list[dict[str, object]]:
    """`status --json`: each workload as `WorkloadState.as_json`; a damaged one as its path and error."""
    return [{"damaged": str(s.path), "error": str(s)} if isinstance(s, DamagedState) else s.as_json()
            for s in LocalNode(node_state_dir(project)).list()]


def local_node_logs(project: Project, settings: DeploySettings, tail: int | None = None) -> list[LogLine]:
    return LocalNode(node_state_dir(project)).logs(settings.namespace, settings.name, tail)


def follow_local_node_logs(project: Project, settings: DeploySettings, emit: Callable[[LogLine], None],
                           tail: int | None = None) -> None:
    """`logs --follow`: until Ctrl-C, or until the workload is undeployed."""
    stop = threading.Event()
    try:
        LocalNode(node_state_dir(project)).follow(settings.namespace, settings.name, emit, stop, tail)
    except KeyboardInterrupt:
        stop.set()
