"""The runwasi layout (the CNCF Wasm OCI artifact) against real docker-registry instances: what
push writes, read back by skopeo, accepted by a pull written from runwasi's rules
(runwasi_pull.py) and refused by Krustlet's (krustlet_pull.py), and the other way round."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from krustlet_pull import Refused as KrustletRefused
from krustlet_pull import krustlet_pull
from registries import invoke, one_line, pushed_fields
from runwasi_pull import Refused as RunwasiRefused
from runwasi_pull import runwasi_pull
from wasmpod.artifact import Blob, Provenance, compose_wasm_oci_artifact, sha256_digest
from wasmpod.errors import UserError
from wasmpod.oci_client import RegistryClient, Transport
from wasmpod.push import pull_module, push_artifact
from wasmpod.reference import ImageReference


@pytest.fixture(scope="module")
def module() -> Path:
    done = invoke("build", timeout=900)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


def skopeo(reference: str, *flags: str) -> bytes:
    done = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", *flags, f"docker://{reference}"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_runwasi_push_is_the_cncf_wasm_artifact_and_runwasis_rules_accept_it(registry, clean_env, module):
    done = invoke("push", "--registry", registry.address, "--runtime", "runwasi", env=clean_env)
    assert done.returncode == 0, done.stderr
    fields = pushed_fields(done.stdout)
    reference = f"{registry.address}/fractalify:v0.2.0-runwasi"
    assert fields["Pushed"] == reference
    raw = skopeo(reference)
    assert fields["Digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    manifest = json.loads(raw)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert "artifactType" not in manifest
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/wasm"
    assert layer["digest"] == "sha256:" + hashlib.sha256(module.read_bytes()).hexdigest()
    assert layer["annotations"] == {"org.opencontainers.image.title": "fractalify.wasm"}
    annotations = manifest["annotations"]
    assert annotations["org.opencontainers.image.version"] == "0.2.0"
    assert len(annotations["org.opencontainers.image.revision"].split("-")[0]) == 40
    # skopeo reads the config blob back too
    config = json.loads(skopeo(reference, "--config"))
    assert config == {"created": annotations["org.opencontainers.image.created"], "author": None,
                      "architecture": "wasm", "os": "wasip1", "layerDigests": [layer["digest"]], "component": None}
    data, _ = runwasi_pull(registry.address, "fractalify", "v0.2.0-runwasi")
    assert data == module.read_bytes()
    with pytest.raises(KrustletRefused):
        krustlet_pull(registry.address, "fractalify", "v0.2.0-runwasi")


def test_krustlets_layout_is_refused_by_runwasis_rules_and_still_accepted_by_krustlets(registry, clean_env, module):
    assert invoke("push", "--registry", registry.address, env=clean_env).returncode == 0
    assert krustlet_pull(registry.address, "fractalify", "v0.2.0") == module.read_bytes()
    with pytest.raises(RunwasiRefused):
        runwasi_pull(registry.address, "fractalify", "v0.2.0")
    done = invoke("pull", f"{registry.address}/fractalify:v0.2.0", "--runtime", "runwasi", "-o", "/dev/null",
                  env=clean_env)
    assert done.returncode == 1 and one_line(done.stderr) and "runwasi" in done.stderr, done.stderr


def test_runtime_all_pushes_both_layouts_and_says_both_digests(registry, clean_env, module):
    done = invoke("push", "--simd", "--registry", registry.address, "--runtime", "all", "--json",
                  env=clean_env, timeout=900)
    assert done.returncode == 0, done.stderr
    pushed = json.loads(done.stdout)
    by_runtime = {entry["runtime"]: entry for entry in pushed["pushed"]}
    assert by_runtime["krustlet"]["reference"] == f"{registry.address}/fractalify:v0.2.0-simd"
    assert by_runtime["runwasi"]["reference"] == f"{registry.address}/fractalify:v0.2.0-simd-runwasi"
    for runtime, tag in (("krustlet", "v0.2.0-simd"), ("runwasi", "v0.2.0-simd-runwasi")):
        assert pushed[f"{runtime}_digest"] == "sha256:" + hashlib.sha256(skopeo(f"{registry.address}/fractalify:{tag}")).hexdigest()
    assert by_runtime["runwasi"]["blobs_uploaded"] == 1  # the layer is shared: only the config was new
    lines = invoke("push", "--registry", registry.address, "--runtime", "all", "--simd", env=clean_env).stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["Pushed", "Size", "Digest"] * 2
    assert lines[2].endswith("(krustlet)") and lines[5].endswith("(runwasi)")


def _store_changed(address: str, module: Path, tag: str, change) -> None:
    """Stores the runwasi artifact after `change(manifest, config)` edits the two objects in place,
    with the config's descriptor made to match (so only the rule under test is broken)."""
    good = compose_wasm_oci_artifact(module, Provenance(version="0.2.0"))
    manifest, config = json.loads(good.manifest), json.loads(good.config_bytes)
    change(manifest, config)
    config_bytes = json.dumps(config).encode()
    blob = Blob(manifest["config"]["mediaType"], sha256_digest(config_bytes), len(config_bytes))
    manifest["config"].update(digest=blob.digest, size=blob.size)
    artifact = replace(good, config=blob, config_bytes=config_bytes, manifest=json.dumps(manifest).encode())
    client = RegistryClient(address, Transport.choose(address), None)
    push_artifact(client, ImageReference(address, "mod", tag), artifact)


BROKEN = {
    "krustlets-layer-type": lambda m, c: m["layers"][0].update(mediaType="application/vnd.wasm.content.layer.v1+wasm"),
    "no-architecture": lambda m, c: c.pop("architecture"),
    "architecture-amd64": lambda m, c: c.update(architecture="amd64"),
    "layer-digests-not-the-layers": lambda m, c: c.update(layerDigests=["sha256:" + "0" * 64]),
    "no-manifest-media-type": lambda m, c: m.pop("mediaType"),
    "empty-config": lambda m, c: c.clear(),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_what_the_shim_refuses_the_node_refuses(registry, module, tmp_path, case):
    _store_changed(registry.address, module, case, BROKEN[case])
    with pytest.raises(RunwasiRefused):  # the independent reading of the rules refuses it
        runwasi_pull(registry.address, "mod", case)
    client = RegistryClient(registry.address, Transport.choose(registry.address), None)
    with pytest.raises(UserError, match="not a module runwasi's shims would run"):
        pull_module(client, ImageReference(registry.address, "mod", case), tmp_path / "m.wasm", "runwasi")
    assert not (tmp_path / "m.wasm").exists()


def test_the_unchanged_artifact_passes_both_readings(registry, module, tmp_path):
    """The control for the refusals above: the same path with nothing changed is accepted."""
    _store_changed(registry.address, module, "unchanged", lambda m, c: None)
    assert runwasi_pull(registry.address, "mod", "unchanged")[0] == module.read_bytes()
    client = RegistryClient(registry.address, Transport.choose(registry.address), None)
    pulled = pull_module(client, ImageReference(registry.address, "mod", "unchanged"), tmp_path / "m.wasm", "runwasi")
    assert pulled.path.read_bytes() == module.read_bytes()


def test_push_reads_the_runwasi_config_back_and_fails_when_it_comes_back_damaged(registry, module):
    from proxy import RegistryProxy, is_blob_get

    artifact = compose_wasm_oci_artifact(module, Provenance(version="0.2.0"))

    def damage_config(request, status: int, body: bytes) -> bytes:
        if is_blob_get(request) and status == 200 and artifact.config.digest in request.path:
            return body.replace(b'"wasm"', b'"wasi"')  # same length: only the digest check can tell
        return body

    with RegistryProxy(registry.address, rewrite=damage_config) as proxy:
        client = RegistryClient(proxy.address, Transport.choose(proxy.address), None)
        with pytest.raises(UserError, match="reading the config back"):
            push_artifact(client, ImageReference(proxy.address, "mod", "v1-runwasi"), artifact)
