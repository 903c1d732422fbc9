"""Rendering the manifests (Krustlet's or runwasi's): pure functions from a workload description to
YAML and objects.

Templates are Jinja2 with `StrictUndefined` (a missing value is an error, never an empty string),
and every value reaches the YAML through the `q` filter (JSON quoting, which YAML reads back as
the same scalar), enforced by `finalize`: no value can change a document's structure.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .errors import UserError
from .reference import parse_reference

KINDS = ("pod", "job", "deployment")
TEMPLATE_OF_KIND = {"pod": "pod.yaml.j2", "job": "job.yaml.j2", "deployment": "deployment.yaml.j2"}
PULL_SECRET_TEMPLATE = "pull-secret.yaml.j2"
RUNTIME_CLASS_TEMPLATE = "runtime-class.yaml.j2"
POLICY_TEMPLATE = "kyverno-policy.yaml.j2"
GUEST_INPUT = "/input_dir"
GUEST_OUTPUT = "/output_dir"
# Volume kinds Krustlet can mount; it fails a Pod with any other (notably emptyDir).
KRUSTLET_VOLUME_KINDS = {"hostPath", "configMap", "secret", "persistentVolumeClaim", "downwardAPI", "projected"}
KUBERNETES_VERSION = "1.30"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str


@dataclass(frozen=True)
class Volume:
    """A volume mounted into the module: a node directory (hostPath) or a claim (pvc:NAME)."""

    name: str
    mount_path: str
    host_path: str | None = None
    host_path_type: str = "Directory"
    claim_name: str | None = None


def volume_from(source: str, name: str, mount_path: str, create: bool) -> Volume:
    """`/abs/path` -> hostPath; `pvc:NAME` -> persistentVolumeClaim; anything else is refused."""
    if source.startswith("pvc:"):
        claim = source[4:]
        check_dns_subdomain(claim, f"the claim name in {source!r}")
        return Volume(name, mount_path, claim_name=claim)
    if source.strip().lower() in ("emptydir", "emptydir:", "emptydir:{}"):
        raise UserError(f"{name}: Krustlet cannot mount emptyDir volumes (the Pod would fail to start): "
                        "use a host path (/abs/dir) or a persistentVolumeClaim (pvc:NAME)")
    if not PurePosixPath(source).is_absolute() or "\n" in source or "\0" in source:
        raise UserError(f"{name}: host path {source!r} must be absolute (e.g. /srv/input), or pvc:NAME")
    return Volume(name, mount_path, host_path=source, host_path_type="DirectoryOrCreate" if create else "Directory")


@dataclass(frozen=True)
class Workload:
    """Everything the Pod, Job and Deployment templates need, already validated."""

    kind: str
    name: str
    namespace: str
    image: str
    program: str
    core_flags: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    volumes: tuple[Volume, ...] = ()
    pull_secret: str | None = None
    replicas: int = 2
    parallelism: int = 2
    completions: int = 1
    backoff_limit: int = 2
    # "krustlet" (nodeSelector and tolerations; argv in `args`) or "runwasi" (runtimeClassName;
    # `command` names the module file, `args` the rest), as settings.KRUSTLET / RUNWASI.
    runtime: str = "krustlet"
    runtime_class: str = "wasmtime-v1"

    @property
    def argv(self) -> list[str]:
        """The module's argv: the program name, its flags, then the guest paths the volumes are
        mounted at. runwasi's argv[0] is the module's file name (`command`), the artifact having
        no entrypoint."""
        once = ["--once"] if self.kind == "job" and "--once" not in self.core_flags else []
        first = f"{self.program}.wasm" if self.runtime == "runwasi" else self.program
        return [first, *once, *self.core_flags, GUEST_INPUT, GUEST_OUTPUT]

    @property
    def command(self) -> list[str]:
        """runwasi's `command`: the module's file name (its layer's title). Krustlet ignores it."""
        return self.argv[:1] if self.runtime == "runwasi" else []

    @property
    def args(self) -> list[str]:
        """`args`: Krustlet hands them over verbatim as argv; runwasi appends them to `command`."""
        return self.argv[1:] if self.runtime == "runwasi" else self.argv

    @property
    def restart_policy(self) -> str:
        return {"pod": "Always", "job": "Never", "deployment": "Always"}[self.kind]

    @property
    def pull_policy(self) -> str:
        """Kubernetes' (and Krustlet's) rule: `Always` for `latest` or no tag, else `IfNotPresent`."""
        reference = parse_reference(self.image)
        if reference.digest:
            return "IfNotPresent"
        return "Always" if reference.tag in (None, "latest") else "IfNotPresent"


@dataclass(frozen=True)
class PullSecret:
    name: str
    namespace: str
    registry: str  # exactly as in the image reference: Krustlet looks it up by that key
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        for what, value in (("user name", self.username), ("password", self.password)):
            _check_unicode(value, f"the registry {what}")

    @property
    def dockerconfigjson_base64(self) -> str:
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        config = {"auths": {self.registry: {"username": self.username, "password": self.password, "auth": auth}}}
        return base64.b64encode(json.dumps(config, separators=(",", ":")).encode()).decode()


@dataclass(frozen=True)
class RuntimeClass:
    """node.k8s.io/v1 RuntimeClass: `handler` is the containerd runtime name on the nodes (KWasm's
    installer names it after the shim, `wasmtime-v1`); `node_selector` is merged into each Pod's."""

    name: str
    handler: str
    node_selector: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        check_dns_subdomain(self.name, "the RuntimeClass name")
        check_dns_label(self.handler, "the RuntimeClass handler")  # the API server's rule; its schema has none


@dataclass(frozen=True)
class ImagePolicy:
    """A Kyverno ClusterPolicy admitting Pods of one image repository only when signed by one key."""

    name: str
    repository: str  # "<registry>/<repository>", as the image reference writes it
    public_key_pem: str

    @property
    def image_references(self) -> list[str]:
        """Kyverno's wildcard patterns for every tag and digest of the repository, and nothing
        else (a bare `repository*` would also match `repository-other`)."""
        return [f"{self.repository}:*", f"{self.repository}@*"]


_PUBLIC_KEY_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END PUBLIC KEY-----\r?\n?")


def check_public_key_pem(text: str, where: str) -> str:
    """`text` when it is one PEM public key (cosign.pub: PKIX `PUBLIC KEY`), exactly as given;
    a private key is refused by name, since the policy is readable by all who can read the cluster."""
    import binascii

    if "PRIVATE KEY-----" in text:
        raise UserError(f"{where} is a private key: give the public key (cosign.pub), which the policy publishes")
    match = _PUBLIC_KEY_PEM.fullmatch(text.strip(" \t\r\n") + "\n")
    try:
        valid = match is not None and len(base64.b64decode("".join(match.group(1).split()), validate=True)) > 0
    except binascii.Error:
        valid = False
    if not valid:
        raise UserError(f"{where} is not a PEM public key (-----BEGIN PUBLIC KEY----- ... as cosign generate-key-pair writes cosign.pub)")
    return text


def check_dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise UserError(f"{what} {value!r} is not a DNS-1123 label: at most 63 lower-case letters, digits and '-', "
                        "starting and ending with a letter or digit")
    return value


def check_dns_subdomain(value: str, what: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise UserError(f"{what} {value!r} is not a DNS-1123 name: lower-case letters, digits, '-' and '.'")
    return value


def check_env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise UserError(f"environment variable name {name!r} is not valid: letters, digits and '_', not starting with a digit")
    return name


def _check_unicode(value: str, what: str) -> None:
    """Text from the environment can hold undecodable bytes (as lone surrogates), which no YAML
    or JSON file can carry."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise UserError(f"{what} holds bytes that are not UTF-8 text: set it again as text") from None


class _Quoted(str):
    """A value that went through `q`."""


def _quote(value: object) -> _Quoted:
    import jinja2

    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises the error that names what is missing
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int)):
        raise UserError(f"a template was given {value!r} ({type(value).__name__}); only text and whole numbers fit")
    if isinstance(value, str):
        _check_unicode(value, "a value for the templates")  # not shown: it may be a secret
    return _Quoted(_YAML_UNSAFE.sub(_yaml_escape, json.dumps(value, ensure_ascii=False)))


# What a YAML double-quoted scalar cannot hold as itself: characters outside YAML's printable set,
# and the ones it reads as line breaks (NEL is outside; U+2028, U+2029) or strips (BOM).
_YAML_UNSAFE = re.compile("[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]")


def _yaml_escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _nested(block: str) -> _Quoted:
    """Marks a macro's output (itself made only of quoted values) as safe to place."""
    return _Quoted(block)


def _finalize(value: object) -> object:
    if not isinstance(value, _Quoted):
        raise UserError(f"template bug: {value!r} is placed without `| q`, so it could change the YAML's structure")
    return value


def template_environment(templates: Path):
    import jinja2  # only deploy pays for it

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
        autoescape=False,
    )
    environment.filters["q"] = _quote
    environment.filters["nested"] = _nested
    return environment


def render_documents(templates: Path, workload: Workload, pull_secret: PullSecret | None,
                     runtime_class: RuntimeClass | None = None) -> list[tuple[str, str]]:
    """(file name, YAML text) for each object: the RuntimeClass and the pull Secret first, then
    the workload."""
    environment = template_environment(templates)
    rendered = []
    with template_errors(templates):
        if runtime_class is not None:
            text = environment.get_template(RUNTIME_CLASS_TEMPLATE).render(r=runtime_class)
            rendered.append((f"{runtime_class.name}.runtimeclass.yaml", text))
        if pull_secret is not None:
            text = environment.get_template(PULL_SECRET_TEMPLATE).render(s=pull_secret)
            rendered.append((f"{pull_secret.name}.secret.yaml", text))
        template = environment.get_template(TEMPLATE_OF_KIND[workload.kind])
        rendered.append((f"{workload.name}.{workload.kind}.yaml", template.render(w=workload)))
    return rendered


@contextmanager
def template_errors(templates: Path) -> Iterator[None]:
    """A template that is missing, does not parse or uses an undefined value, as one line."""
    import jinja2

    try:
        yield
    except jinja2.TemplateNotFound as missing:
        raise UserError(f"template {missing.name} is missing from {templates}") from None
    except jinja2.UndefinedError as error:
        raise UserError(f"a template in {templates} uses a value that is not defined: {error.message}") from None
    except jinja2.TemplateSyntaxError as error:
        raise UserError(f"template {error.name} line {error.lineno}: {error.message}") from None


def parse_documents(rendered: list[tuple[str, str]]) -> list[dict]:
    import yaml

    objects = []
    for name, text in rendered:
        try:
            documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as error:
            raise UserError(f"template output {name} is not valid YAML: {error}") from None
        if len(documents) != 1 or not isinstance(documents[0], dict):
            raise UserError(f"template output {name} must be exactly one object, got {len(documents)}")
        objects.append(documents[0])
    return objects


def pod_specs(obj: dict) -> list[dict]:
    """The Pod spec inside a Pod, Job or Deployment object."""
    kind = obj.get("kind")
    if kind == "Pod":
        return [obj.get("spec") or {}]
    if kind in ("Job", "Deployment"):
        return [((obj.get("spec") or {}).get("template") or {}).get("spec") or {}]
    return []


def check_objects(objects: list[dict], kubernetes_version: str = KUBERNETES_VERSION) -> None:
    """What must hold before anything is applied: Krustlet's volume kinds and the Kubernetes schema."""
    for obj in objects:
        where = f"{obj.get('kind')} {((obj.get('metadata') or {}).get('name'))}"
        for spec in pod_specs(obj):
            for volume in spec.get("volumes") or []:
                kinds = set(volume) - {"name"}
                unsupported = kinds - KRUSTLET_VOLUME_KINDS
                if unsupported:
                    raise UserError(f"{where}: volume {volume.get('name')!r} is {', '.join(sorted(unsupported))}, "
                                    "which Krustlet cannot mount (the Pod would fail): use hostPath or a persistentVolumeClaim")
    validate_schema(objects, kubernetes_version)


def validate_schema(objects: list[dict], kubernetes_version: str) -> None:
    import kubernetes_validate

    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "(top)"
            raise UserError(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')} fails the Kubernetes "
                            f"{kubernetes_version} schema at {path}: {error.message}") from None


def render_manifests(templates: Path, workload: Workload, pull_secret: PullSecret | None = None,
                     runtime_class: RuntimeClass | None = None) -> list[tuple[str, str, dict]]:
    """Renders, parses and checks: (file name, YAML text, object) for each manifest."""
    rendered = render_documents(templates, workload, pull_secret, runtime_class)
    objects = parse_documents(rendered)
    check_objects(objects)
    return [(name, text, obj) for (name, text), obj in zip(rendered, objects)]


def render_policy(templates: Path, policy: ImagePolicy) -> tuple[str, str, dict]:
    """(file name, YAML text, object) of the Kyverno ClusterPolicy. Kubernetes' own schema does
    not know the kind; the tests check it against Kyverno's."""
    check_dns_label(policy.name, "the policy name")
    with template_errors(templates):
        text = template_environment(templates).get_template(POLICY_TEMPLATE).render(p=policy)
    name = f"{policy.name}.clusterpolicy.yaml"
    [obj] = parse_documents([(name, text)])
    return name, text, obj
