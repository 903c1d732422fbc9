"""Finding a Rust toolchain that can target wasm32-wasi, online or offline."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

# Debian's crate packages (`librust-*-dev`) land here; cargo can use it as a directory source.
DEBIAN_CRATE_REGISTRY = Path("/usr/share/cargo/registry")

INSTALL_HINT = (
    "no Rust toolchain can target wasm32-wasi: run `rustup target add wasm32-wasip1`, "
    "or on Debian `apt-get install rustc cargo libstd-rust-dev-wasm32 lld-14 librust-image-dev`"
)


@dataclass(frozen=True)
class Toolchain:
    """A rustc/cargo pair and the wasm target name its standard library is installed under."""

    rustc: Path
    cargo: Path
    target: str  # "wasm32-wasip1" (Rust 1.78+) or "wasm32-wasi" (older, e.g. Debian 12's 1.63)
    # Crates come from this directory instead of crates.io (Debian's packaged crates), or None.
    crate_directory: Path | None

    def cargo_environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """`environ` with cargo pointed at this rustc and the rustdoc beside it (a rustdoc of
        another release cannot read the crates this rustc compiled, e.g. for doctests)."""
        rustdoc = self.rustc.with_name("rustdoc")
        return {**environ, "RUSTC": str(self.rustc), **({"RUSTDOC": str(rustdoc)} if rustdoc.exists() else {})}

    def cargo_config_args(self) -> list[str]:
        """`--config` flags replacing crates.io with the crate directory, when there is one."""
        if self.crate_directory is None:
            return []
        return [
            "--offline",
            "--config", 'source.crates-io.replace-with="offline-crates"',
            "--config", f'source.offline-crates.directory="{self.crate_directory}"',
        ]


def wasm_target_of(rustc: Path) -> str | None:
    """The wasm32-wasi target whose standard library `rustc` has, if any."""
    try:
        sysroot = subprocess.run(
            [str(rustc), "--print", "sysroot"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    for target in ("wasm32-wasip1", "wasm32-wasi"):
        if (Path(sysroot) / "lib" / "rustlib" / target / "lib").is_dir():
            return target
    return None


def crates_io_reachable(timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(("index.crates.io", 443), timeout=timeout):
            return True
    except OSError:
        return False


def find_toolchain(search_path: str | None = None, debian_bin: Path = Path("/usr/bin")) -> Toolchain:
    """Prefers the toolchain on PATH (rustup: newer compiler, crates.io) and falls back to Debian's.

    Debian's rustc is paired with Debian's crates: today's crates.io releases need a newer
    compiler than Debian 12's 1.63. `search_path` and `debian_bin` exist for tests.
    """
    debian_rustc, debian_cargo = debian_bin / "rustc", debian_bin / "cargo"
    path_rustc = shutil.which("rustc", path=search_path)
    path_cargo = shutil.which("cargo", path=search_path)
    if path_rustc and path_cargo and Path(path_rustc).resolve() != debian_rustc.resolve():
        target = wasm_target_of(Path(path_rustc))
        if target:
            directory = None
            if not crates_io_reachable() and DEBIAN_CRATE_REGISTRY.is_dir():
                directory = DEBIAN_CRATE_REGISTRY
            return Toolchain(Path(path_rustc), Path(path_cargo), target, directory)
    if debian_rustc.exists() and debian_cargo.exists():
        target = wasm_target_of(debian_rustc)
        if target:
            # Debian's rustc links wasm with rust-lld, a link to lld-14 that the package only recommends.
            if not (debian_bin / "rust-lld").resolve().exists():
                raise UserError("Debian's Rust can target wasm32-wasi but cannot link it: apt-get install lld-14 (rust-lld)")
            if not DEBIAN_CRATE_REGISTRY.is_dir():
                raise UserError(
                    f"Debian's Rust can target wasm32-wasi but {DEBIAN_CRATE_REGISTRY} is missing: "
                    "apt-get install librust-image-dev (and the librust-*-dev packages your crate needs)"
                )
            return Toolchain(debian_rustc, debian_cargo, target, DEBIAN_CRATE_REGISTRY)
    raise UserError(INSTALL_HINT)
