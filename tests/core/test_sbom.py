"""`invoke sbom`: the CycloneDX 1.5 document of the real module, checked against cargo itself
(`cargo tree`, which applies the resolver's own feature and target rules), the crate directory's
checksums, the module file and the CycloneDX schema."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess

import pytest
from coretools import ROOT
from testkit import invoke

from wasmpod.build import BuildRequest, build_module
from wasmpod.project import Project
from wasmpod.sbom import build_sbom, cargo_metadata, linked_crates, spdx_expression
from wasmpod.toolchain import find_toolchain

PROJECT = Project.at(ROOT, "fractalify")
PNG_ONLY = BuildRequest(features=("png",))


@pytest.fixture(scope="module")
def default_sbom() -> dict:
    return json.loads(build_sbom(PROJECT, BuildRequest(), build_module(PROJECT)))


@pytest.fixture(scope="module")
def png_sbom() -> dict:
    return json.loads(build_sbom(PROJECT, PNG_ONLY, build_module(PROJECT, PNG_ONLY)))


def components(bom: dict) -> dict[str, dict]:
    return {component["name"]: component for component in bom["components"]}


def linked_by_cargo(request: BuildRequest) -> set[tuple[str, str]]:
    """(name, version) of every crate `cargo tree` says is a normal dependency for the wasm target:
    cargo's own answer, with resolver 2's feature rules, to compare the SBOM's walk against."""
    toolchain = find_toolchain()
    command = [str(toolchain.cargo), "tree", "--edges", "normal", "--target", toolchain.target, "--prefix", "none",
               "--format", "{p}", "--manifest-path", str(PROJECT.crate_dir / "Cargo.toml"),
               *toolchain.cargo_config_args()]
    if request.features is not None:
        command += ["--no-default-features", "--features", ",".join(request.features)]
    done = subprocess.run(command, env=toolchain.cargo_environment(os.environ), capture_output=True, text=True,
                          check=True)
    crates = set()
    for line in done.stdout.splitlines():
        match = re.match(r"^(\S+) v(\S+)", line)
        if match:
            crates.add((match.group(1), match.group(2)))
    crates.discard(("fractalify", PROJECT.crate_version))
    return crates


def test_default_sbom_lists_the_codecs_with_purls_and_licences(default_sbom):
    listed = components(default_sbom)
    for name in ("image", "png", "miniz_oxide", "jpeg-decoder", "gif", "tiff", "weezl", "adler", "fractalify-kernel"):
        assert name in listed, f"{name} is linked into the default module but missing from the SBOM"
    for name, component in listed.items():
        assert component["purl"] == f"pkg:cargo/{name}@{component['version']}"
        assert component["bom-ref"] == component["purl"]
        assert component["type"] == "library" and component["scope"] == "required"
        assert component["licenses"], f"{name} has no licence"
    assert listed["image"]["licenses"] == [{"expression": "MIT"}]
    from license_expression import get_spdx_licensing

    licensing = get_spdx_licensing()
    for name, component in listed.items():
        for licence in component["licenses"]:
            # Raises on what is not SPDX (bitflags' `MIT/Apache-2.0` as cargo has it, for one).
            licensing.parse(licence["expression"], validate=True, strict=True)


def test_components_are_exactly_what_cargo_links_for_the_target(default_sbom, png_sbom):
    """No build-dependency (autocfg), dev-dependency or other target's crate; nothing missing."""
    for bom, request in ((default_sbom, BuildRequest()), (png_sbom, PNG_ONLY)):
        assert {(c["name"], c["version"]) for c in bom["components"]} == linked_by_cargo(request)


def test_build_dependencies_are_left_out(default_sbom):
    assert "autocfg" not in components(default_sbom)  # num-traits' build script's, run on the host


def test_formats_png_lists_png_but_not_the_other_codecs(tmp_path):
    out = tmp_path / "png.cdx.json"
    done = invoke("sbom", "--formats", "png", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    listed = components(json.loads(out.read_bytes()))
    assert "png" in listed and "miniz_oxide" in listed
    for name in ("jpeg-decoder", "gif", "tiff", "weezl"):  # (color_quant: image always links it)
        assert name not in listed


def test_module_digest_in_the_sbom_is_the_files(default_sbom, png_sbom):
    for bom, request in ((default_sbom, BuildRequest()), (png_sbom, PNG_ONLY)):
        module = build_module(PROJECT, request).path
        main = bom["metadata"]["component"]
        assert main["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(module.read_bytes()).hexdigest()}]
        assert main["purl"] == f"pkg:cargo/fractalify@{PROJECT.crate_version}"
        assert main["type"] == "application"
        assert {"name": "wasmpod:module:file", "value": module.name} in main["properties"]


def test_sbom_validates_against_the_cyclonedx_1_5_schema(default_sbom, png_sbom):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    validator = JsonStrictValidator(SchemaVersion.V1_5)
    for bom in (default_sbom, png_sbom):
        assert bom["specVersion"] == "1.5"
        errors = validator.validate_str(json.dumps(bom))
        assert errors is None, errors


def test_two_runs_give_identical_bytes():
    first = invoke("sbom")
    second = invoke("sbom")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


def test_timestamp_is_source_date_epoch():
    document = json.loads(build_sbom(PROJECT, BuildRequest(), build_module(PROJECT), {"SOURCE_DATE_EPOCH": "1700000000"}))
    assert document["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"


def test_serial_number_follows_the_module(default_sbom, png_sbom):
    assert default_sbom["serialNumber"].startswith("urn:uuid:")
    assert default_sbom["serialNumber"] != png_sbom["serialNumber"]


def test_toolchain_is_listed_with_the_target(default_sbom):
    toolchain = find_toolchain()
    said = subprocess.run([str(toolchain.rustc), "-vV"], capture_output=True, text=True, check=True).stdout
    release = re.search(r"^release: (\S+)$", said, re.MULTILINE).group(1)
    tools = {tool["name"]: tool for tool in default_sbom["metadata"]["tools"]["components"]}
    assert tools["rustc"]["version"] == release
    assert {"name": "wasmpod:rustc:target", "value": toolchain.target} in tools["rustc"]["properties"]
    assert {"name": "wasmpod:cargo:target", "value": toolchain.target} in default_sbom["metadata"]["component"]["properties"]


def test_hashes_are_the_crate_sources_own(default_sbom):
    """Debian's crate directory records a real checksum for some crates and a placeholder for the
    rest; a hash is listed exactly when there is a real one, and it is the source's."""
    toolchain = find_toolchain()
    if toolchain.crate_directory is None:
        pytest.skip("crates come from crates.io here: Cargo.lock's checksums, not a crate directory")
    for name, component in components(default_sbom).items():
        checksum_file = toolchain.crate_directory / f"{name}-{component['version']}" / ".cargo-checksum.json"
        if not checksum_file.exists():
            assert "hashes" not in component  # a path crate of this workspace
            continue
        recorded = json.loads(checksum_file.read_text())["package"]
        if re.fullmatch(r"[0-9a-f]{64}", recorded):
            assert component["hashes"] == [{"alg": "SHA-256", "content": recorded}], name
        else:
            assert "hashes" not in component, f"{name}: {recorded!r} is no hash"
    assert "hashes" in components(default_sbom)["byteorder"]  # Debian 12 records this one


def test_dependency_graph_follows_the_crates(default_sbom):
    depends = {entry["ref"]: set(entry.get("dependsOn", [])) for entry in default_sbom["dependencies"]}
    listed = components(default_sbom)
    main = default_sbom["metadata"]["component"]["bom-ref"]
    assert listed["image"]["bom-ref"] in depends[main]
    assert listed["png"]["bom-ref"] in depends[listed["image"]["bom-ref"]]
    assert listed["png"]["bom-ref"] not in depends[main]


@pytest.mark.parametrize("written, expected", [
    ("MIT/Apache-2.0", "MIT OR Apache-2.0"),
    ("MIT / Apache-2.0", "MIT OR Apache-2.0"),
    ("MIT OR Apache-2.0", "MIT OR Apache-2.0"),
    ("", None),
])
def test_cargo_licence_fields_become_spdx_expressions(written, expected):
    assert spdx_expression(written) == expected


def test_an_unknown_format_is_one_line():
    done = invoke("sbom", "--formats", "avif")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: unknown feature(s) avif")


def test_an_unwritable_out_is_one_line(tmp_path):
    done = invoke("sbom", "--out", str(tmp_path / "missing" / "sbom.json"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: cannot write the SBOM to {tmp_path / 'missing' / 'sbom.json'}: No such file or directory"


def test_only_normal_dependencies_for_the_target_and_features_are_linked(tmp_path):
    """A crate of the test's own (offline: Debian's crates) with every kind of dependency the walk
    must tell apart; cargo metadata is real, the answer is known."""
    toolchain = find_toolchain()
    if toolchain.crate_directory is None:
        pytest.skip("needs a crate directory: the crate's dependencies are taken offline from it")
    crate = tmp_path / "src" / "demo"
    (crate / "src").mkdir(parents=True)
    (crate / "src" / "main.rs").write_text("fn main() {}\n")
    (crate / "derive" / "src").mkdir(parents=True)
    (crate / "derive" / "src" / "lib.rs").write_text("")
    (crate / "derive" / "Cargo.toml").write_text(
        '[package]\nname = "demo-derive"\nversion = "0.1.0"\nedition = "2021"\n[lib]\nproc-macro = true\n')
    (crate / "Cargo.toml").write_text("""
[package]
name = "demo"
version = "0.1.0"
edition = "2021"
license = "MIT"

[workspace]

[features]
default = []
extra = ["dep:either"]

[dependencies]
cfg-if = "1"
either = { version = "1", optional = true }
demo-derive = { path = "derive" }

[target.'cfg(not(target_arch = "wasm32"))'.dependencies]
libc = "0.2"

[build-dependencies]
autocfg = "1"

[dev-dependencies]
byteorder = "1"
""")
    project = Project.at(tmp_path, "demo")
    for request, expected in ((BuildRequest(), {"cfg-if"}), (BuildRequest(features=("extra",)), {"cfg-if", "either"})):
        root, crates = linked_crates(cargo_metadata(project, request, toolchain))
        assert root.name == "demo" and root.license == "MIT"
        assert {c.name for c in crates} == expected, request


def test_simd_sbom_describes_the_simd_module(tmp_path):
    out = tmp_path / "simd.cdx.json"
    done = invoke("sbom", "--simd", "--out", str(out))
    assert done.returncode == 0, done.stderr
    main = json.loads(out.read_bytes())["metadata"]["component"]
    module = build_module(PROJECT, BuildRequest(simd=True)).path
    assert main["hashes"][0]["content"] == hashlib.sha256(module.read_bytes()).hexdigest()
    features = {p["name"]: p["value"] for p in main["properties"]}["wasmpod:wasm:features"]
    assert "simd128" in features.split(",")
