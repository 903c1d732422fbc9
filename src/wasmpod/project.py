"""Where things are in a project built with wasmpod (fractalify itself, or a PoC from `invoke new`)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError


@dataclass(frozen=True)
class Project:
    """A project root holding one Rust crate that builds a wasm32-wasi command module."""

    root: Path
    crate_dir: Path
    crate_name: str
    crate_version: str
    # Where the embedded local registry and the local node keep their state; a PoC made with
    # `invoke new` points both at the toolchain's, so all projects share one registry and node.
    registry_dir: Path
    node_dir: Path

    @classmethod
    def at(cls, root: Path, crate: str | None = None, registry_dir: Path | None = None,
           node_dir: Path | None = None) -> "Project":
        """The project at `root`; its crate is `src/<crate>` (default: the only crate under `src/`)."""
        root = root.resolve()
        if crate is None:
            manifests = sorted((root / "src").glob("*/Cargo.toml"))
            if len(manifests) != 1:
                raise UserError(f"expected exactly one Rust crate under {root / 'src'}, found {len(manifests)}")
            crate_dir = manifests[0].parent
        else:
            crate_dir = root / "src" / crate
        manifest = crate_dir / "Cargo.toml"
        try:
            package = tomllib.loads(manifest.read_text())["package"]
        except (OSError, tomllib.TOMLDecodeError, KeyError) as error:
            raise UserError(f"cannot read the crate manifest {manifest}: {error}") from None
        return cls(root=root, crate_dir=crate_dir, crate_name=package["name"], crate_version=package["version"],
                   registry_dir=registry_dir or root / "registry", node_dir=node_dir or root / ".cache" / "node")

    @property
    def module_file_name(self) -> str:
        """cargo names a binary's module after the crate, dashes kept."""
        return f"{self.crate_name}.wasm"

    @property
    def cache_dir(self) -> Path:
        """Git-ignored working state of the toolchain (build stamps, helper environments)."""
        return self.root / ".cache"
