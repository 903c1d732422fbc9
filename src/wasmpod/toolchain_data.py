"""Where the toolchain's own files are: the templates, the local registry's configuration and the
CI pipeline. One lookup for an installed wheel (`wasmpod/data/...`) and for a checkout (the
repository's `templates/`, `registry/`, `examples/ci/`), so scaffold and manifests never guess."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

_PACKAGE_DIR = Path(__file__).resolve().parent
# Each area's folder in a checkout; in a wheel it is wasmpod/data/<area> (pyproject.toml maps them).
_CHECKOUT_FOLDERS = {"templates": "templates", "registry": "registry", "ci": "examples/ci"}


def checkout_root() -> Path | None:
    """The repository this package runs from (an editable install), or None for a wheel."""
    root = _PACKAGE_DIR.parents[1]
    if (root / "pyproject.toml").is_file() and (root / "src" / "wasmpod").resolve() == _PACKAGE_DIR:
        return root
    return None


def toolchain_data(area: str) -> Path:
    """The folder of one area (`templates`, `registry`, `ci`) of the toolchain's files."""
    packaged = _PACKAGE_DIR / "data" / area
    if packaged.is_dir():
        return packaged
    root = checkout_root()
    if root is not None and (root / _CHECKOUT_FOLDERS[area]).is_dir():
        return root / _CHECKOUT_FOLDERS[area]
    raise UserError(f"the wasmpod installation at {_PACKAGE_DIR} lacks its {area} files: reinstall it")


def template_root() -> Path:
    """`templates/`: `k8s` (the workload's manifests), `poc/...` (what `invoke new` renders)."""
    return toolchain_data("templates")
