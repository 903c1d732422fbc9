"""`invoke new`: a new Krustlet PoC rendered from `templates/poc`, written whole or not at all.

Rendering is pure (`render_poc` returns the files); `write_tree` only places them: into a hidden
temporary directory beside the destination, then one rename, so a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import yaml

from .errors import UserError

# A cargo package name that is also a DNS-1123 label (it names the image, the Pod and its container).
_POC_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_PLACEHOLDER = "__name__"
RESERVED_NAMES = {"test", "self", "super", "crate", "std", "core", "alloc", "proc-macro", "poc"}


def check_poc_name(name: str) -> str:
    if not _POC_NAME.match(name or ""):
        raise UserError(f"{name!r} cannot name a PoC: use 1 to 63 lower-case letters, digits and '-', starting with "
                        "a letter and not ending with '-' (it is the crate name, the image and the Pod's name)")
    if name in RESERVED_NAMES:
        raise UserError(f"{name!r} is reserved in Rust or by the template: choose another name")
    return name


def poc_config(toolchain_config: dict, name: str, toolchain_root: Path) -> dict:
    """The PoC's invoke.yaml: ours with the image and workload renamed, and the toolchain's local
    registry and node shared."""
    registry = dict(toolchain_config.get("registry") or {})
    deploy = dict(toolchain_config.get("deploy") or {})
    registry["repository"] = name
    registry["tag"] = None
    deploy["name"] = name
    deploy.pop("env", None)  # set in a -f file: invoke cannot merge a list onto a mapping
    deploy["templates"] = "templates/k8s"
    if deploy.get("pull_secret") and str(deploy["pull_secret"]).startswith("fractalify"):
        deploy["pull_secret"] = None
    return {
        "tasks": {"executor_class": "wasmpod.chain.ChainExecutor"},
        "registry": registry,
        "deploy": deploy,
        "wasmpod": {"registry_dir": str(toolchain_root / "registry"), "node_dir": str(toolchain_root / ".cache" / "node")},
    }


def render_poc(template_dir: Path, k8s_templates: Path, name: str, toolchain_root: Path,
               toolchain_config: dict) -> dict[PurePosixPath, tuple[bytes, int]]:
    """Every file of the new PoC: relative path -> (content, mode)."""
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    environment.filters["toml"] = json.dumps  # a TOML basic string, for the names allowed here
    environment.filters["pystr"] = repr
    environment.filters["shell"] = lambda value: shlex.quote(str(value))
    config_yaml = yaml.safe_dump(poc_config(toolchain_config, name, toolchain_root), sort_keys=False).rstrip()
    variables = {"name": name, "toolchain_root": str(toolchain_root), "config_yaml": config_yaml}
    files: dict[PurePosixPath, tuple[bytes, int]] = {}
    for source in sorted(template_dir.rglob("*")):
        if not source.is_file() or "__pycache__" in source.parts:
            continue
        relative = PurePosixPath(source.relative_to(template_dir).as_posix().replace(NAME_PLACEHOLDER, name))
        data = source.read_bytes()
        if relative.suffix == ".j2":
            relative = relative.with_suffix("")
            try:
                data = environment.from_string(data.decode()).render(**variables).encode()
            except jinja2.TemplateError as error:
                raise UserError(f"template {source} cannot be rendered: {error}") from None
        mode = 0o755 if relative.suffix == ".sh" else 0o644
        files[relative] = (data, mode)
    for source in sorted(k8s_templates.glob("*.j2")):
        files[PurePosixPath("templates/k8s") / source.name] = (source.read_bytes(), 0o644)
    return files


def write_tree(files: dict[PurePosixPath, tuple[bytes, int]], dest: Path, force: bool) -> None:
    """All of `files` under `dest`, or nothing: an existing `dest` is replaced only with `force`."""
    dest = dest.resolve()
    if dest.exists() and not force:
        raise UserError(f"{dest} already exists: choose another --dest, or pass --force to replace it")
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest} exists and is not a directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
    try:
        for relative, (data, mode) in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, mode)
        if dest.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            dest.rename(retired / dest.name)
            staging.rename(dest)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def new_poc(toolchain_root: Path, name: str, dest: Path | None, force: bool) -> Path:
    """Renders `templates/poc` of the toolchain at `toolchain_root` into `dest` (default ./NAME)."""
    check_poc_name(name)
    dest = dest or Path.cwd() / name
    try:
        config = yaml.safe_load((toolchain_root / "invoke.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read {toolchain_root / 'invoke.yaml'}: {error}") from None
    files = render_poc(toolchain_root / "templates" / "poc", toolchain_root / "templates" / "k8s", name,
                       toolchain_root, config)
    write_tree(files, dest, force)
    return dest.resolve()
