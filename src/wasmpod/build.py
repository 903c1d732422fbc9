"""`build`: the crate compiled to a wasm32-wasi module, skipped entirely when nothing changed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .atomic_files import write_atomically
from .errors import UserError
from .project import Project
from .toolchain import DEBIAN_CRATE_REGISTRY, Toolchain, find_toolchain


@dataclass(frozen=True)
class BuildRequest:
    """What to build: the crate's default features, or exactly `features`; `simd` adds
    WebAssembly SIMD (for wasmtime 0.33+, runwasi, SpinKube; Krustlet's wasmtime 0.30 refuses it)."""

    features: tuple[str, ...] | None = None
    simd: bool = False
    # `invoke dev`'s build: no LTO, many codegen units, incremental, no wasm-opt. A one-line change
    # to a new PoC builds in 0.3 s instead of 2.5 to 3.4 s (measured here), for a module about 16%
    # larger that is never released (dev pushes it under the tag `dev`).
    quick: bool = False

    @property
    def variant(self) -> str:
        """Names the build, so variants keep separate outputs and do not rebuild each other."""
        name = "default" if self.features is None else "features-" + ("-".join(self.features) or "none")
        name = f"simd-{name}" if self.simd else name
        return f"quick-{name}" if self.quick else name


# cargo's own variables for profile keys (they beat Cargo.toml), for a quick build.
QUICK_PROFILE = {"CARGO_PROFILE_RELEASE_LTO": "false", "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "16",
                 "CARGO_PROFILE_RELEASE_INCREMENTAL": "true"}


@dataclass(frozen=True)
class BuiltModule:
    path: Path
    size: int
    sha256: str
    rebuilt: bool

    simd: bool = False

    def as_json(self) -> dict[str, object]:
        return {"path": str(self.path), "size": self.size, "sha256": self.sha256, "rebuilt": self.rebuilt,
                "simd": self.simd}


def build_module(project: Project, request: BuildRequest = BuildRequest(), log: TextIO = sys.stderr) -> BuiltModule:
    """Compiles the project's crate for wasm32-wasi in release mode, unless nothing changed."""
    check_features(project, request)
    stamp_path = project.cache_dir / "build" / f"{request.variant}.json"
    fingerprint = source_fingerprint(project.crate_dir, request)
    fresh = _fresh_module(stamp_path, fingerprint, request.simd)
    if fresh is not None:
        return fresh

    toolchain = find_toolchain()
    target_dir = project.crate_dir / "target" / request.variant
    module = target_dir / toolchain.target / "release" / project.module_file_name
    _forget_lock_of_other_source(project, toolchain)
    command = [str(toolchain.cargo), "build", "--release", "--target", toolchain.target,
               "--manifest-path", str(project.crate_dir / "Cargo.toml"), "--target-dir", str(target_dir),
               *toolchain.cargo_config_args()]
    if request.features is not None:
        command += ["--no-default-features", "--features", ",".join(request.features)]
    env = toolchain.cargo_environment(os.environ)
    target_features = ",".join(f"+{feature}" for feature in wasm_features(request.simd))
    env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + f" -C target-feature={target_features}").strip()
    if request.quick:
        env.update(QUICK_PROFILE)
    print(f"building {project.crate_name} for {toolchain.target} with {toolchain.rustc}", file=log, flush=True)
    status, messages = run_cargo(command, env, log)
    if status != 0:
        if toolchain.crate_directory is not None and (crate := unresolved_crate(messages)):
            raise UserError(offline_crate_hint(crate, toolchain.crate_directory, debian_package_version(crate)))
        raise UserError(f"cargo build failed (exit {status}); the compiler's messages are above")
    if not module.exists():
        raise UserError(f"cargo succeeded but {module} is missing: is the crate a binary named {project.crate_name}?")
    if not request.quick:
        module = optimize_with_wasm_opt(module, target_dir / "wasm-opt" / module.name, request.simd, log)

    data = module.read_bytes()
    built = BuiltModule(module, len(data), hashlib.sha256(data).hexdigest(), rebuilt=True, simd=request.simd)
    stamp_path.parent.mkdir(parents=True, exist_ok=True)
    stamp = {
        "fingerprint": fingerprint,
        "module": built.as_json(),
        "module_mtime_ns": module.stat().st_mtime_ns,
        "rustc": str(toolchain.rustc),
        "rustc_mtime_ns": toolchain.rustc.stat().st_mtime_ns,
        "crate_directory": str(toolchain.crate_directory) if toolchain.crate_directory else None,
    }
    write_atomically(stamp_path, json.dumps(stamp, indent=2))
    return built


def prebuilt_module(path: Path, simd: bool = False) -> BuiltModule:
    """A module built elsewhere (a CI job's artifact), to push as it is."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read the module {path}: {error.strerror}") from None
    if data[:4] != b"\0asm":
        raise UserError(f"{path} is not a WebAssembly module (it does not start with \\0asm)")
    return BuiltModule(path, len(data), hashlib.sha256(data).hexdigest(), rebuilt=False, simd=simd)


def run_cargo(command: list[str], env: dict[str, str], log: TextIO) -> tuple[int, str]:
    """Runs cargo with its messages passed on to `log` as they come (progress on our stderr, so
    stdout keeps only the result); returns its exit status and the messages, to read a failure."""
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.PIPE, text=True, errors="replace")
    assert process.stderr is not None
    kept: list[str] = []
    for line in process.stderr:
        log.write(line)
        log.flush()
        kept.append(line)
    return process.wait(), "".join(kept[-400:])


# When the crate directory (or crates.io) has no crate of that name: newer cargo says it in one
# line, Debian 12's cargo 1.63 (when it suggests similar names) in two.
_NO_MATCHING_PACKAGE = re.compile(r"no matching package named `([^`]+)` found"
                                  r"|no matching package found\s+searched package name: `([^`]+)`")


def unresolved_crate(messages: str) -> str | None:
    """The crate cargo could not find, from its messages, or None for any other failure."""
    found = _NO_MATCHING_PACKAGE.search(messages)
    return (found.group(1) or found.group(2)) if found else None


def debian_package_of(crate: str) -> str:
    """Debian's name for a crate's source package: `librust-<name>-dev`, '_' written as '-'."""
    return f"librust-{crate.lower().replace('_', '-')}-dev"


def debian_package_version(crate: str) -> str | None:
    """The version of the crate's Debian package that apt knows, or None (no such package, or no apt)."""
    apt_cache = shutil.which("apt-cache")
    if apt_cache is None:
        return None
    try:
        shown = subprocess.run([apt_cache, "show", "--no-all-versions", debian_package_of(crate)],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    version = re.search(r"^Version: (\S+)", shown.stdout, re.MULTILINE)
    return version.group(1) if shown.returncode == 0 and version else None


def offline_crate_hint(crate: str, crate_directory: Path, debian_version: str | None) -> str:
    """One line: which crate, why this build cannot have it, and the two ways to get it."""
    package = debian_package_of(crate)
    where = ("Debian's packaged crates" if crate_directory == DEBIAN_CRATE_REGISTRY else "the crates in")
    debian = (f"apt-get install {package} (Debian's {debian_version}) brings it" if debian_version else
              f"Debian has no {package} (apt-cache knows none; run apt-get update if its lists are old)")
    return (f"crate `{crate}` cannot be resolved: this build is offline and uses {where} {crate_directory}; {debian}; "
            "or install a Rust toolchain with the wasm32-wasip1 target (rustup target add wasm32-wasip1), "
            "which takes crates from crates.io")


def build_native(project: Project, features: tuple[str, ...] = (), log: TextIO = sys.stderr) -> Path:
    """The same crate built for this machine (release), to compare the module against; `features`
    are added to the defaults (e.g. fractalify's `plain-kernel`)."""
    toolchain = find_toolchain()
    target_dir = project.crate_dir / "target" / "-".join(("native", *features))
    _forget_lock_of_other_source(project, toolchain)
    command = [str(toolchain.cargo), "build", "--release", "--manifest-path", str(project.crate_dir / "Cargo.toml"),
               "--target-dir", str(target_dir), *toolchain.cargo_config_args()]
    if features:
        command += ["--features", ",".join(features)]
    result = subprocess.run(command, env=toolchain.cargo_environment(os.environ), stdout=log, stderr=log)
    if result.returncode != 0:
        raise UserError(f"native cargo build failed (exit {result.returncode}); the compiler's messages are above")
    return target_dir / "release" / project.crate_name


def cargo_test(project: Project, log: TextIO = sys.stderr) -> int:
    """Runs the crate's own tests natively (`cargo test`); returns cargo's exit status."""
    toolchain = find_toolchain()
    _forget_lock_of_other_source(project, toolchain)
    command = [str(toolchain.cargo), "test", "--workspace", "--manifest-path", str(project.crate_dir / "Cargo.toml"),
               "--target-dir", str(project.crate_dir / "target" / "native"), *toolchain.cargo_config_args()]
    return subprocess.run(command, env=toolchain.cargo_environment(os.environ), stdout=log, stderr=log).returncode


def parse_feature_list(text: str | None) -> tuple[str, ...] | None:
    """`"png, JPEG"` -> `("jpeg", "png")`; None keeps the crate's default features."""
    if text is None:
        return None
    return tuple(sorted({name.strip().lower() for name in text.split(",") if name.strip()}))


# WebAssembly proposals every module is compiled with. All were finished before wasmtime 0.30,
# Krustlet's engine, and are on in its default configuration, so the default build still loads
# there (tests/core/test_krustlet_engine.py). Bulk memory makes memcpy and memset one instruction
# each (PNG decoding 15% faster in wasmtime); saturating conversions spare the checks around
# float-to-int casts. (Sign extension too would be, but Rust 1.63 warns at its name.)
COMMON_WASM_FEATURES = ("bulk-memory", "nontrapping-fptoint", "mutable-globals")
# rustc's names for them, and binaryen's.
WASM_OPT_FEATURE_FLAGS = {"bulk-memory": "--enable-bulk-memory", "nontrapping-fptoint": "--enable-nontrapping-float-to-int",
                          "mutable-globals": "--enable-mutable-globals",
                          "simd128": "--enable-simd"}


def wasm_features(simd: bool) -> tuple[str, ...]:
    """The target features (rustc's names) of the default build, or of the `--simd` one."""
    return COMMON_WASM_FEATURES + (("simd128",) if simd else ())


def optimize_with_wasm_opt(module: Path, output: Path, simd: bool, log: TextIO) -> Path:
    """Binaryen's optimiser, when it is installed: 1% smaller at -Oz and as fast (measured
    here). The file keeps its name, which becomes the OCI layer's title. Without wasm-opt,
    cargo's module. wasm-opt reads the features a module uses from its `target_features`
    section (a newer compiler may use more than we ask for) and is told ours as well, for
    crates whose build script strips that section; the output drops it and the names."""
    wasm_opt = shutil.which("wasm-opt")
    if wasm_opt is None:
        return module
    output.parent.mkdir(parents=True, exist_ok=True)
    enable = [WASM_OPT_FEATURE_FLAGS[feature] for feature in wasm_features(simd)]
    command = [wasm_opt, "-Oz", *enable, "--strip-debug", "--strip-producers", "--strip-target-features",
               str(module), "-o", str(output)]
    result = subprocess.run(command, stdout=log, stderr=log)
    if result.returncode != 0:
        raise UserError(f"wasm-opt failed on {module} (exit {result.returncode}); its messages are above")
    return output


def check_features(project: Project, request: BuildRequest) -> None:
    if request.features is None:
        return
    manifest = tomllib.loads((project.crate_dir / "Cargo.toml").read_text())
    known = sorted(name for name in manifest.get("features", {}) if name != "default")
    unknown = [f for f in request.features if f not in known]
    if unknown:
        raise UserError(f"unknown feature(s) {', '.join(unknown)} for {project.crate_name}; choose from {', '.join(known)}")
    if not request.features:
        raise UserError(f"choose at least one of {', '.join(known)}")


# Bump when the way a module is made changes, so every stamp made the old way is stale.
BUILD_RECIPE = "3: cargo release with the common wasm features, build.rs strips debug info, wasm-opt -Oz when installed"


def source_fingerprint(crate_dir: Path, request: BuildRequest) -> str:
    """A digest of everything that decides the module: the crate's sources, the request, the
    recipe and the wasm-opt in use."""
    digest = hashlib.sha256(f"{BUILD_RECIPE}\0{request!r}\0{_tool_identity('wasm-opt')}".encode())
    for path in sorted(crate_dir.rglob("*")):
        relative = path.relative_to(crate_dir)
        if relative.parts[0] in ("target", "Cargo.lock") or not path.is_file():
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _tool_identity(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        return "absent"
    stat = Path(path).stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def _fresh_module(stamp_path: Path, fingerprint: str, simd: bool) -> BuiltModule | None:
    """The module of the last build when its sources, toolchain and output are unchanged."""
    try:
        stamp = json.loads(stamp_path.read_text())
        module = Path(stamp["module"]["path"])
        unchanged = (
            stamp["fingerprint"] == fingerprint
            and module.stat().st_mtime_ns == stamp["module_mtime_ns"]
            and module.stat().st_size == stamp["module"]["size"]
            and Path(stamp["rustc"]).stat().st_mtime_ns == stamp["rustc_mtime_ns"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not unchanged:
        return None
    return BuiltModule(module, stamp["module"]["size"], stamp["module"]["sha256"], rebuilt=False, simd=simd)


def _forget_lock_of_other_source(project: Project, toolchain: Toolchain) -> None:
    """A Cargo.lock made against Debian's crate directory has no checksums and breaks a
    crates.io build (and the other way round): drop it when the crate source changes."""
    lock = project.crate_dir / "Cargo.lock"
    marker = project.cache_dir / "build" / "lock-source"
    source = str(toolchain.crate_directory or "crates.io")
    if lock.exists() and (not marker.exists() or marker.read_text() != source):
        lock.unlink()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(source)

