"""`sbom`: a CycloneDX 1.5 bill of materials of a built module, from cargo's own view of the build.

The components are the crates linked into the module: cargo's resolve graph (`cargo metadata`
for the wasm target, with the features the build used) walked from the root crate along normal
dependencies only. Build dependencies (e.g. autocfg, run on the host by build scripts),
dev-dependencies and proc-macro crates are compiled but never linked into the module, so they
are left out, not listed and marked. The metadata component is the module itself: the root
crate's name, version, purl and licence, with the SHA-256 of the module file. The same module,
sources and toolchain give the same bytes: the serial number is derived from the module's
digest and the timestamp is SOURCE_DATE_EPOCH or the commit time, as for the OCI annotations.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .artifact import provenance_from_git
from .build import BuildRequest, BuiltModule, check_features, wasm_features
from .errors import UserError
from .project import Project
from .toolchain import Toolchain, find_toolchain

MEDIA_TYPE = "application/vnd.cyclonedx+json"
# The serial number is a name-based UUID under this namespace: the same module, the same serial.
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/fractalify/wasmpod/sbom")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Crate:
    """One package of cargo's resolve graph, with what the SBOM says about it."""

    package_id: str
    name: str
    version: str
    license: str | None  # an SPDX expression, as normalised by `spdx_expression`
    sha256: str | None  # of the .crate file, when the source records it
    source: str | None  # cargo's source id; None for path crates (the workspace's own)
    dependencies: tuple[str, ...]  # package ids of the crates this one links

    @property
    def purl(self) -> str:
        return f"pkg:cargo/{self.name}@{self.version}"


def spdx_expression(license_field: str | None) -> str | None:
    """Cargo's `license` as an SPDX expression: older crates write `MIT/Apache-2.0` (cargo
    documents `/` as a deprecated OR), which no SPDX parser reads."""
    if not license_field or not license_field.strip():
        return None
    return " OR ".join(part.strip() for part in license_field.split("/") if part.strip())


def cargo_metadata(project: Project, request: BuildRequest, toolchain: Toolchain) -> dict:
    """`cargo metadata` for the wasm target and the request's features, with the same toolchain
    and crate source as `build` (so the graph is the one the module was compiled from)."""
    command = [str(toolchain.cargo), "metadata", "--format-version", "1", "--filter-platform", toolchain.target,
               "--manifest-path", str(project.crate_dir / "Cargo.toml"), *toolchain.cargo_config_args()]
    if request.features is not None:
        command += ["--no-default-features", "--features", ",".join(request.features)]
    done = subprocess.run(command, env=toolchain.cargo_environment(os.environ), capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UserError(f"cargo metadata failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout)


def linked_crates(metadata: dict) -> tuple[Crate, list[Crate]]:
    """(the root crate, every crate linked into it) from `cargo metadata` output. Only edges of
    kind normal are followed; cargo has already dropped optional dependencies whose feature is
    off and, with --filter-platform, dependencies for other targets."""
    packages = {package["id"]: package for package in metadata["packages"]}
    nodes = {node["id"]: node for node in metadata["resolve"]["nodes"]}
    root_id = metadata["resolve"]["root"]
    lock_checksums = _lock_checksums(Path(metadata["workspace_root"]) / "Cargo.lock")

    def linked_dependencies(package_id: str) -> tuple[str, ...]:
        linked = []
        for dependency in nodes[package_id]["deps"]:
            normal = any(kind["kind"] is None for kind in dependency["dep_kinds"])
            proc_macro = any("proc-macro" in target["kind"] for target in packages[dependency["pkg"]]["targets"])
            if normal and not proc_macro:
                linked.append(dependency["pkg"])
        return tuple(sorted(linked))

    crates: dict[str, Crate] = {}
    pending = [root_id]
    while pending:
        package_id = pending.pop()
        if package_id in crates:
            continue
        package = packages[package_id]
        dependencies = linked_dependencies(package_id)
        crates[package_id] = Crate(
            package_id=package_id,
            name=package["name"],
            version=package["version"],
            license=spdx_expression(package.get("license")),
            sha256=_crate_sha256(package, lock_checksums),
            source=package.get("source"),
            dependencies=dependencies,
        )
        pending.extend(dependencies)
    root = crates.pop(root_id)
    return root, sorted(crates.values(), key=lambda crate: (crate.name, crate.version))


def _lock_checksums(lock: Path) -> dict[tuple[str, str], str]:
    """(name, version) -> checksum from Cargo.lock (crates.io writes the .crate's SHA-256 there)."""
    try:
        packages = tomllib.loads(lock.read_text()).get("package", [])
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {(p["name"], p["version"]): p["checksum"] for p in packages if "checksum" in p}


def _crate_sha256(package: dict, lock_checksums: dict[tuple[str, str], str]) -> str | None:
    """The .crate's SHA-256 from Cargo.lock: crates.io's index gives it, and for a directory
    source (Debian's crates, vendored crates) cargo copies the `package` sum of the crate's
    `.cargo-checksum.json`. Debian writes "Could not get crate checksum" there for most of its
    crates: anything but 64 hex digits is no hash."""
    if package.get("source") is None:
        return None
    checksum = lock_checksums.get((package["name"], package["version"]))
    return checksum if isinstance(checksum, str) and _SHA256_HEX.match(checksum) else None


@dataclass(frozen=True)
class Tool:
    name: str
    version: str
    description: str
    properties: tuple[tuple[str, str], ...] = ()


def toolchain_tools(toolchain: Toolchain, module: BuiltModule) -> list[Tool]:
    """rustc (with its commit and the target it compiled for), cargo, and wasm-opt when it
    made the module."""
    rustc = _version_fields(subprocess.run([str(toolchain.rustc), "-vV"], capture_output=True, text=True).stdout)
    cargo = subprocess.run([str(toolchain.cargo), "--version"], capture_output=True, text=True,
                           env=toolchain.cargo_environment(os.environ)).stdout.split()
    tools = [
        Tool("rustc", rustc.get("release", "unknown"),
             f"compiled the module for {toolchain.target} (rustc {rustc.get('release', '?')}, "
             f"commit {rustc.get('commit-hash', 'unknown')}, host {rustc.get('host', '?')})",
             (("wasmpod:rustc:target", toolchain.target),
              ("wasmpod:rustc:target-features", ",".join(wasm_features(module.simd))))),
        Tool("cargo", cargo[1] if len(cargo) > 1 else "unknown", "resolved and built the crates"),
    ]
    # build.py names wasm-opt's output directory so; cargo's own module lies elsewhere.
    wasm_opt = shutil.which("wasm-opt")
    if module.path.parent.name == "wasm-opt" and wasm_opt:
        said = subprocess.run([wasm_opt, "--version"], capture_output=True, text=True).stdout.split()
        tools.append(Tool("wasm-opt", said[2] if len(said) > 2 else "unknown", "optimised the module (binaryen, -Oz)"))
    return tools


def _version_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def reproducible_timestamp(project: Project, environ: Mapping[str, str]) -> datetime.datetime:
    """SOURCE_DATE_EPOCH, else the commit time, else (outside git) the Unix epoch: never the
    clock, so two runs give the same bytes."""
    created = provenance_from_git(project.root, project.crate_version, dict(environ)).created
    if created is None:
        return datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def build_sbom(project: Project, request: BuildRequest, module: BuiltModule,
               environ: Mapping[str, str] | None = None) -> bytes:
    """The CycloneDX 1.5 JSON document of `module`, built from `project` as `request` says.
    `environ` gives SOURCE_DATE_EPOCH; without it the commit time is used."""
    check_features(project, request)
    toolchain = find_toolchain()
    root, crates = linked_crates(cargo_metadata(project, request, toolchain))
    return compose_sbom(project, request, module, root, crates, toolchain_tools(toolchain, module), toolchain.target,
                        reproducible_timestamp(project, environ or {}))


def compose_sbom(project: Project, request: BuildRequest, module: BuiltModule, root: Crate, crates: list[Crate],
                 tools: list[Tool], target: str, timestamp: datetime.datetime) -> bytes:
    """The document itself, from what cargo and the toolchain said: pure."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentScope, ComponentType
    from cyclonedx.model.license import LicenseExpression
    from cyclonedx.output.json import JsonV1Dot5
    from packageurl import PackageURL

    def component(crate: Crate, kind: ComponentType, **more) -> Component:
        return Component(
            type=kind, name=crate.name, version=crate.version, bom_ref=crate.purl,
            purl=PackageURL(type="cargo", name=crate.name, version=crate.version),
            licenses=[LicenseExpression(crate.license)] if crate.license else None,
            **more,
        )

    features = "default" if request.features is None else ",".join(request.features)
    main = component(
        root, ComponentType.APPLICATION,
        description=f"{module.path.name}: crate {root.name} {root.version} compiled for {target}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=module.sha256)],
        properties=[
            Property(name="wasmpod:module:file", value=module.path.name),
            Property(name="wasmpod:module:size", value=str(module.size)),
            Property(name="wasmpod:cargo:target", value=target),
            Property(name="wasmpod:cargo:features", value=features),
            Property(name="wasmpod:wasm:features", value=",".join(wasm_features(request.simd))),
            # What is left out, so a reader does not take its absence for an omission.
            Property(name="wasmpod:sbom:excluded", value="build-dependencies, dev-dependencies, proc-macros: compiled, not linked"),
        ],
    )
    by_id = {crate.package_id: component(
        crate, ComponentType.LIBRARY, scope=ComponentScope.REQUIRED,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=crate.sha256)] if crate.sha256 else None,
        properties=[Property(name="wasmpod:cargo:source", value=crate.source or "path (this workspace)")],
    ) for crate in crates}

    wasmpod_version = importlib.metadata.version("wasmpod")
    tool_components = [Component(type=ComponentType.APPLICATION, name=tool.name, version=tool.version,
                                 description=tool.description,
                                 properties=[Property(name=k, value=v) for k, v in tool.properties] or None)
                       for tool in tools]
    tool_components.append(Component(type=ComponentType.APPLICATION, name="wasmpod", version=wasmpod_version,
                                     description="wrote this SBOM from cargo metadata"))
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, f"{module.sha256}:{target}:{features}:{request.simd}"),
        metadata=BomMetaData(component=main, timestamp=timestamp),
        components=by_id.values(),
    )
    for tool in tool_components:
        bom.metadata.tools.components.add(tool)
    bom.register_dependency(main, [by_id[package_id] for package_id in root.dependencies])
    for crate in crates:
        bom.register_dependency(by_id[crate.package_id], [by_id[package_id] for package_id in crate.dependencies])
    text = JsonV1Dot5(bom).output_as_string(indent=2)
    # Sorted keys: the library's own key order follows its class layout, which a release may change.
    return (json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
