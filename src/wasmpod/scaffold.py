"""`invoke new`: a new proof of concept rendered from `templates/poc`, written whole or not at all.

A PoC stands alone: its bootstrap.sh makes its own .venv and installs the toolchain named in its
requirements.txt (a wheel copied into `toolchain/`, a checkout or a git URL), its local registry's
configuration and Kubernetes templates are copies in its tree, and nothing in it names the checkout
that made it except that requirement. Rendering is pure (`render_poc` returns the files);
`write_tree` only places them: into a hidden temporary directory beside the destination, then one
rename, so a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from .errors import UserError
from .toolchain_data import checkout_root, template_root, toolchain_data

# A cargo package name that is also a DNS-1123 label (it names the image, the Pod and its container).
_POC_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_PLACEHOLDER = "__name__"
RESERVED_NAMES = {"test", "self", "super", "crate", "std", "core", "alloc", "proc-macro", "poc"}
COMMON_PART = "_common"  # rendered into every PoC; the other folders of templates/poc are the templates
DESCRIPTION_FILE = "_template.txt"  # a template's one-line description, not rendered
DEFAULT_TEMPLATE = "files"
WORKFLOW_PATH = PurePosixPath(".github/workflows/build-push-deploy.yml")

Files = dict[PurePosixPath, tuple[bytes, int]]


def check_poc_name(name: str) -> str:
    if not _POC_NAME.match(name or ""):
        raise UserError(f"{name!r} cannot name a PoC: use 1 to 63 lower-case letters, digits and '-', starting with "
                        "a letter and not ending with '-' (it is the crate name, the image and the Pod's name)")
    if name in RESERVED_NAMES:
        raise UserError(f"{name!r} is reserved in Rust or by the template: choose another name")
    return name


def available_templates(poc_templates: Path | None = None) -> dict[str, str]:
    """Template name -> its one-line description."""
    poc_templates = poc_templates or template_root() / "poc"
    return {folder.name: (folder / DESCRIPTION_FILE).read_text().strip()
            for folder in sorted(poc_templates.iterdir())
            if folder.is_dir() and folder.name != COMMON_PART and (folder / DESCRIPTION_FILE).is_file()}


def describe_templates() -> str:
    templates = available_templates()
    width = max(map(len, templates))
    return "\n".join(f"{name:<{width}}  {about}" for name, about in templates.items())


@dataclass(frozen=True)
class ToolchainSource:
    """Where the PoC's .venv gets wasmpod from: one requirements.txt line, and the wheel to carry
    in `toolchain/` when it is one (so a copy or a clone of the PoC needs nothing else)."""

    requirement: str
    wheel: Path | None = None


def toolchain_source(spec: str | None) -> ToolchainSource:
    """`--toolchain SPEC`: a wheel file, a checkout directory, or a URL pip understands (git+https://,
    https://...whl). Default: the checkout running this code, else what this wasmpod was installed from."""
    if spec is None:
        spec = _own_origin()
    if "://" in spec and not spec.startswith("file://"):
        return ToolchainSource(f"wasmpod @ {_with_host(spec)}")
    path = Path(unquote(urlparse(spec).path) if spec.startswith("file://") else spec).expanduser()
    if path.is_file() and path.name.startswith("wasmpod-") and path.suffix == ".whl":
        return ToolchainSource(f"./toolchain/{path.name}", wheel=path.resolve())
    if path.is_dir() and (path / "pyproject.toml").is_file() and (path / "src" / "wasmpod").is_dir():
        return ToolchainSource(f"wasmpod @ {path.resolve().as_uri()}")
    raise UserError(f"--toolchain {spec!r} is not a wasmpod wheel (wasmpod-*.whl), a wasmpod checkout, or a URL "
                    "such as git+https://host/org/repo@REF")


def _own_origin() -> str:
    root = checkout_root()
    if root is not None:
        return str(root)
    try:
        direct_url = json.loads(metadata.distribution("wasmpod").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        direct_url = {}
    if isinstance(direct_url, dict) and isinstance(direct_url.get("url"), str):
        return requirement_url(direct_url)
    raise UserError("cannot tell where this wasmpod was installed from: name it with --toolchain WHEEL|DIR|URL")


def _with_host(url: str) -> str:
    """git+file:///repo as git+file://localhost/repo: pip 23's PEP 508 parser (Python 3.11's venv)
    refuses a VCS URL with an empty host, though git reads both the same."""
    scheme, separator, rest = url.partition(":///")
    return f"{scheme}://localhost/{rest}" if separator and scheme.endswith("+file") else url


def requirement_url(direct_url: dict) -> str:
    """The URL pip installed from (PEP 610's direct_url.json), as pip takes it again: a git
    checkout as git+URL@COMMIT, so the PoC gets exactly the toolchain that made it."""
    vcs = direct_url.get("vcs_info")
    if isinstance(vcs, dict) and isinstance(vcs.get("vcs"), str) and isinstance(vcs.get("commit_id"), str):
        return _with_host(f"{vcs['vcs']}+{direct_url['url']}@{vcs['commit_id']}")
    return direct_url["url"]


def poc_variables(name: str, template: str, toolchain: ToolchainSource) -> dict[str, str]:
    return {"name": name, "prefix": name.upper().replace("-", "_"), "template": template,
            "toolchain_requirement": toolchain.requirement}


def render_poc(templates: Path, name: str, template: str, toolchain: ToolchainSource) -> Files:
    """Every file of the new PoC: relative path -> (content, mode)."""
    import jinja2

    known = available_templates(templates / "poc")
    if template not in known:
        raise UserError(f"no PoC template {template!r}: choose one of {', '.join(known)} (invoke new --list)")
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    environment.filters["toml"] = json.dumps  # a TOML basic string, for the names allowed here
    environment.filters["pystr"] = repr
    environment.filters["shell"] = lambda value: shlex.quote(str(value))
    # The toolchain's own Debian installer goes into the PoC's bootstrap.sh as it is (shell, not a template).
    variables = {**poc_variables(name, template, toolchain),
                 "debian_installer": (templates / "bootstrap" / "debian-packages.sh").read_text()}
    files: Files = {}
    for part in (templates / "poc" / COMMON_PART, templates / "poc" / template):
        for source in sorted(part.rglob("*")):
            if not source.is_file() or "__pycache__" in source.parts or source.name == DESCRIPTION_FILE:
                continue
            relative = PurePosixPath(source.relative_to(part).as_posix().replace(NAME_PLACEHOLDER, name))
            data = source.read_bytes()
            if relative.suffix == ".j2":
                relative = relative.with_suffix("")
                try:
                    data = environment.from_string(data.decode()).render(**variables).encode()
                except jinja2.TemplateError as error:
                    raise UserError(f"template {source} cannot be rendered: {error}") from None
            files[relative] = (data, 0o755 if relative.suffix == ".sh" else 0o644)
    # Copies, so the PoC deploys with the toolchain's manifests, registry and pipeline but needs none of its files.
    for source in sorted((templates / "k8s").glob("*.j2")):
        files[PurePosixPath("templates/k8s") / source.name] = (source.read_bytes(), 0o644)
    files[PurePosixPath("registry/config.yml")] = ((toolchain_data("registry") / "config.yml").read_bytes(), 0o644)
    files[WORKFLOW_PATH] = ((toolchain_data("ci") / "github-actions.yml").read_bytes(), 0o644)
    if toolchain.wheel is not None:
        files[PurePosixPath("toolchain") / toolchain.wheel.name] = (toolchain.wheel.read_bytes(), 0o644)
    return files


def write_tree(files: Files, dest: Path, force: bool) -> None:
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


def check_destination(dest: Path) -> Path:
    """A PoC is a project of its own: never inside the toolchain's tree (its files, tests and
    git history would mix), which is where `invoke new NAME` run from the checkout would write."""
    dest = dest.resolve()
    for tree in filter(None, (checkout_root(), Path(__file__).resolve().parent)):
        if dest == tree or tree in dest.parents:
            raise UserError(f"{dest} is inside the wasmpod toolchain's tree {tree}: run invoke new from the folder "
                            "that should hold the PoC, or pass --dest DIR outside it")
    return dest


def new_poc(name: str, dest: Path | None, force: bool, template: str = DEFAULT_TEMPLATE,
            toolchain: str | None = None) -> Path:
    """Renders PoC template `template` into `dest` (default ./NAME, from wherever it is run)."""
    check_poc_name(name)
    dest = check_destination(dest or Path.cwd() / name)
    write_tree(render_poc(template_root(), name, template, toolchain_source(toolchain)), dest, force)
    return dest
