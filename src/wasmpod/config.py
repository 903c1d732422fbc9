"""Settings from invoke's configuration layers and the flags, made and validated once.

Lowest first: these defaults (`Collection.configure`), the project's `invoke.yaml`, `INVOKE_*`
variables (e.g. `INVOKE_DEPLOY_KIND=job`), `-f FILE`, then flags. Unknown keys and bad values are
errors that name the key.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError
from .localrun import env_prefix
from .manifests import KINDS, EnvVar, check_dns_label, check_dns_subdomain, check_env_name
from .project import Project
from .settings import RegistrySettings

REGISTRY_DEFAULTS: dict[str, Any] = {
    "address": None,  # None: the embedded local registry
    "repository": "fractalify",
    "tag": None,  # None: "v" + the crate version
    "plain_http": None,  # None: plain HTTP for loopback only
    "insecure": False,
    "ca_file": None,
    "local_port": 5000,
    "sign_key": None,  # push signs with this key (cosign format; a file or env://NAME)
}

DEPLOY_DEFAULTS: dict[str, Any] = {
    "kind": "pod",
    "name": "fractalify",
    "namespace": "default",
    "target": "local",
    "context": None,  # kubectl context; None: the current one
    "input_dir": "/input_dir",
    "output_dir": "/output_dir",
    "pull_secret": None,
    "create_pull_secret": False,
    "pin": False,
    "env": {},
    "replicas": 2,
    "parallelism": 2,
    "completions": 1,
    "out": None,
    "templates": "templates/k8s",
    "simd": False,  # deploy the SIMD build (tag suffix -simd): not for Krustlet's wasmtime 0.30
    "create_policy": False,  # also render a Kyverno ClusterPolicy admitting the image only signed by verify_key
    "verify_key": None,  # refuse a module not signed with this public key (file or env://NAME); the policy trusts it
}

TARGETS = ("local", "kubectl")


def collection_defaults(repository: str, name: str) -> dict[str, dict[str, Any]]:
    """What `Collection.configure` gets: every key exists, so `INVOKE_*` variables can set it, but
    holds None (the defaults above apply when a key is None). Invoke casts a variable to the type of
    the value it replaces, and would read INVOKE_DEPLOY_PIN=false as true and crash on
    INVOKE_DEPLOY_REPLICAS=many; from None it passes the text on for us to check and name."""
    return {
        "registry": {**{key: None for key in REGISTRY_DEFAULTS}, "repository": repository},
        # No env here: invoke cannot merge a file's list onto a mapping (nor a mapping onto None),
        # so only a file sets it, and deploy_settings checks what it holds.
        "deploy": {**{key: None for key in DEPLOY_DEFAULTS if key != "env"}, "name": name},
    }


def check_invoke_variables(environ: Mapping[str, str]) -> None:
    """Invoke ignores an `INVOKE_*` variable that matches no key; a typo there is an error here."""
    for variable in sorted(environ):
        for section, defaults in (("REGISTRY", REGISTRY_DEFAULTS), ("DEPLOY", DEPLOY_DEFAULTS)):
            prefix = f"INVOKE_{section}_"
            if variable.startswith(prefix) and variable[len(prefix):].lower() not in defaults:
                raise UserError(f"{variable} names no configuration key (known {section.lower()} keys: "
                                f"{', '.join(sorted(defaults))})")


def _section(config: Any, name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    raw = config.get(name) if hasattr(config, "get") else None
    section = dict(raw or {})
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise UserError(f"unknown configuration key {name}.{unknown[0]} (known {name} keys: {', '.join(sorted(defaults))})")
    return {**defaults, **{key: value for key, value in section.items() if value is not None}}


def _merge(section: dict[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """Flags beat configuration; a flag left at None (or a switch left off) does not count."""
    merged = dict(section)
    for key, value in flags.items():
        if value is None or value is False or value == () or value == []:
            continue
        merged[key] = value
    return merged


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
        return value.lower() in ("1", "true", "yes")
    raise UserError(f"{key} must be true or false, not {value!r}")


def _as_optional_bool(value: Any, key: str) -> bool | None:
    return None if value is None or value == "" else _as_bool(value, key)


def as_int(value: Any, key: str, low: int, high: int) -> int:
    try:
        number = int(value)
        if isinstance(value, bool) or str(number) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a whole number, not {value!r}") from None
    if not low <= number <= high:
        raise UserError(f"{key} must be from {low} to {high}, not {number}")
    return number


def _as_optional_str(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise UserError(f"{key} must be text, not {value!r}")
    return str(value)


def registry_settings(config: Any, flags: Mapping[str, Any]) -> RegistrySettings:
    values = _merge(_section(config, "registry", REGISTRY_DEFAULTS), flags)
    return RegistrySettings(
        registry=_as_optional_str(values["address"], "registry.address"),
        repository=_as_optional_str(values["repository"], "registry.repository") or "fractalify",
        tag=_as_optional_str(values["tag"], "registry.tag"),
        plain_http=_as_optional_bool(values["plain_http"], "registry.plain_http"),
        insecure=_as_bool(values["insecure"], "registry.insecure"),
        ca_file=_as_optional_str(values["ca_file"], "registry.ca_file"),
        local_port=as_int(values["local_port"], "registry.local_port", 1, 65535),
        sign_key=_as_optional_str(values["sign_key"], "registry.sign_key"),
    )


@dataclass(frozen=True)
class DeploySettings:
    kind: str
    name: str
    namespace: str
    target: str
    context: str | None
    input_dir: str
    output_dir: str
    pull_secret: str | None
    create_pull_secret: bool
    pin: bool
    env: tuple[EnvVar, ...]
    replicas: int
    parallelism: int
    completions: int
    out: Path | None
    templates: Path
    simd: bool = False
    create_policy: bool = False
    verify_key: str | None = None  # public key (file or env://NAME) the module must be signed with


def _env_value(value: Any, key: str) -> str:
    """A variable's value must be text as written: YAML reads unquoted true, 010 or 1:30 as other
    things (a boolean, 8, 90), which would reach the Pod changed."""
    if isinstance(value, str):
        return value
    raise UserError(f"{key} must be quoted text in the YAML (YAML read it as {type(value).__name__} {value!r})")


def parse_env_pairs(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`--env KEY=VALUE` (repeatable) -> {KEY: VALUE}; the value may itself hold '='."""
    parsed = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--env takes KEY=VALUE, not {pair!r}")
        parsed[check_env_name(name)] = value
    return parsed


def declared_env(crate_dir: Path) -> tuple[str, ...] | None:
    """The variables the crate says its module reads (`[package.metadata.wasmpod] env`), or None
    when it does not say."""
    manifest = crate_dir / "Cargo.toml"
    try:
        package = tomllib.loads(manifest.read_text())["package"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as error:
        raise UserError(f"cannot read the crate manifest {manifest}: {error}") from None
    listed = ((package.get("metadata") or {}).get("wasmpod") or {}).get("env")
    if listed is None:
        return None
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        raise UserError(f"{manifest}: package.metadata.wasmpod.env must be a list of variable names")
    return tuple(listed)


def check_known_env(names: list[str], project: Project) -> None:
    """A name with the workload's own prefix that its module does not read is a typo the module
    would ignore without a word (FRACTALIFY_MAXITER): refused, with the nearest known name."""
    known = declared_env(project.crate_dir)
    if known is None:
        return
    prefix = env_prefix(project.crate_name)
    for name in names:
        if name.startswith(prefix) and name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {near[0]}?" if near else f"it reads {', '.join(known)}"
            raise UserError(f"{project.crate_name} does not read {name}: {hint}")


def deploy_settings(config: Any, flags: Mapping[str, Any], project: Project) -> DeploySettings:
    root = project.root
    section = _section(config, "deploy", DEPLOY_DEFAULTS)
    env_config = section.get("env") or {}
    if not isinstance(env_config, Mapping):
        raise UserError(f"deploy.env must be a mapping of NAME: value, not {env_config!r}")
    flag_env = parse_env_pairs(flags.get("env") or ())
    values = _merge(section, {k: v for k, v in flags.items() if k != "env"})
    env = {check_env_name(str(k)): _env_value(v, f"deploy.env.{k}") for k, v in dict(env_config).items()}
    env.update(flag_env)
    check_known_env(list(env), project)

    kind = str(values["kind"]).lower()
    if kind not in KINDS:
        raise UserError(f"deploy.kind must be one of {', '.join(KINDS)}, not {values['kind']!r}")
    target = str(values["target"]).lower()
    if target not in TARGETS:
        raise UserError(f"deploy.target must be one of {', '.join(TARGETS)}, not {values['target']!r}")
    pull_secret = _as_optional_str(values["pull_secret"], "deploy.pull_secret")
    create = _as_bool(values["create_pull_secret"], "deploy.create_pull_secret")
    name = check_dns_label(str(values["name"]), "deploy.name")
    if create and not pull_secret:
        pull_secret = f"{name}-pull"
    out = _as_optional_str(values["out"], "deploy.out")
    templates = Path(str(values["templates"]))
    return DeploySettings(
        kind=kind,
        name=name,
        namespace=check_dns_label(str(values["namespace"]), "deploy.namespace"),
        target=target,
        context=_as_optional_str(values["context"], "deploy.context"),
        input_dir=str(values["input_dir"]),
        output_dir=str(values["output_dir"]),
        pull_secret=check_dns_subdomain(pull_secret, "deploy.pull_secret") if pull_secret else None,
        create_pull_secret=create,
        pin=_as_bool(values["pin"], "deploy.pin"),
        env=tuple(EnvVar(k, v) for k, v in env.items()),
        replicas=as_int(values["replicas"], "deploy.replicas", 1, 1000),
        parallelism=as_int(values["parallelism"], "deploy.parallelism", 1, 1000),
        completions=as_int(values["completions"], "deploy.completions", 1, 100000),
        out=Path(out) if out else None,
        templates=templates if templates.is_absolute() else root / templates,
        simd=_as_bool(values["simd"], "deploy.simd"),
        **_policy_settings(values),
    )


def _policy_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """`create_policy` and `verify_key`: a policy needs the key it trusts."""
    create = _as_bool(values["create_policy"], "deploy.create_policy")
    key = _as_optional_str(values["verify_key"], "deploy.verify_key")
    if create and not key:
        raise UserError("--create-policy needs the signers' public key: --verify-key FILE (deploy.verify_key), e.g. cosign.pub")
    return {"create_policy": create, "verify_key": key}
