"""The supply-chain tasks as a user runs them: keygen, sign, verify, referrers, push --sign-key,
deploy --verify-key, and the local node's own check of what it pulled."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import cosign_reference
from signing_kit import TINY_MODULE, push_module_bytes
from testkit import ROOT, invoke
from wasmpod.keys import load_verify_key
from wasmpod.oci_client import RegistryClient, Transport
from wasmpod.reference import ImageReference

PASSWORD = "task-test-password"


def one_line_error(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert PASSWORD not in done.stderr + done.stdout
    return lines[0]


@pytest.fixture
def keys(tmp_path, clean_env) -> tuple[Path, Path, dict]:
    env = {**clean_env, "COSIGN_PASSWORD": PASSWORD}
    done = invoke("keygen", "--out", str(tmp_path / "k"), env=env)
    assert done.returncode == 0, done.stderr
    return tmp_path / "k.key", tmp_path / "k.pub", env


@pytest.fixture(scope="module")
def built() -> Path:
    done = invoke("build", timeout=900)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


def test_sign_then_verify_passes_with_the_key_and_fails_with_another(pushed, keys, fixtures):
    private, public, env = keys
    ref = str(pushed.reference)
    done = invoke("sign", ref, "--key", str(private), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"Signed: {ref}@{pushed.digest}"
    ok = invoke("verify", ref, "--key", str(public), env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"Verified: {ref}@{pushed.digest}")
    one_line_error(invoke("verify", ref, "--key", str(fixtures / "cosign.pub"), env=env),
                   "is not verified", "does not verify with this key")


def test_verify_fails_after_a_repush_of_different_bytes_under_the_tag(pushed, keys, tmp_path):
    private, public, env = keys
    ref = str(pushed.reference)
    assert invoke("sign", ref, "--key", str(private), env=env).returncode == 0
    new_digest = pushed.push_again(tmp_path, TINY_MODULE + b"\x01")
    one_line_error(invoke("verify", ref, "--key", str(public), env=env), "is not verified", "no signature",
                   new_digest.replace(":", "-"))


def test_verify_fails_on_a_tampered_signature(pushed, keys):
    private, public, env = keys
    ref = str(pushed.reference)
    assert invoke("sign", ref, "--key", str(private), env=env).returncode == 0
    registry, tag = pushed.reference.registry, pushed.digest.replace(":", "-") + ".sig"
    body, _ = cosign_reference.manifest(registry, "fractalify", tag)
    manifest = json.loads(body)
    annotation = manifest["layers"][0]["annotations"]
    signature = bytearray(__import__("base64").b64decode(annotation["dev.cosignproject.cosign/signature"]))
    signature[10] ^= 0x40
    annotation["dev.cosignproject.cosign/signature"] = __import__("base64").b64encode(bytes(signature)).decode()
    pushed.client.store_manifest("fractalify", tag, json.dumps(manifest).encode(), manifest["mediaType"])
    one_line_error(invoke("verify", ref, "--key", str(public), env=env), "is not verified", "does not verify")


def test_referrers_lists_what_is_attached(pushed, keys):
    private, _, env = keys
    assert invoke("sign", str(pushed.reference), "--key", str(private), env=env).returncode == 0
    done = invoke("referrers", str(pushed.reference), "--json", env=env)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["digest"] == pushed.digest
    assert [a["kind"] for a in found["attachments"]] == ["signature"]


def test_push_with_a_key_in_a_variable_signs_the_digest_it_pushed(registry, keys, built):
    private, public, env = keys
    env = {**env, "COSIGN_PRIVATE_KEY": private.read_text()}
    done = invoke("push", "--registry", registry.address, "--sign-key", "env://COSIGN_PRIVATE_KEY", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    digest = next(line.split(": ", 1)[1] for line in lines if line.startswith("Digest: "))
    assert lines[-1].startswith("Signature: ") and digest.replace(":", "-") + ".sig" in lines[-1]
    assert cosign_reference.cosign_verifies(registry.address, "fractalify", digest, public.read_bytes())
    assert private.read_text().splitlines()[1] not in done.stdout + done.stderr


def test_push_with_a_wrong_password_pushes_nothing(registry, keys, built):
    private, _, env = keys
    done = invoke("push", "--registry", registry.address, "--sign-key", str(private),
                  env={**env, "COSIGN_PASSWORD": "wrong"})
    one_line_error(done, "wrong password")
    assert cosign_reference.get(f"http://{registry.address}/v2/fractalify/tags/list", "application/json") is None


def test_deploy_with_verify_key_refuses_an_unsigned_module_and_runs_a_signed_one(registry, keys, built, tmp_path,
                                                                                  workload_names):
    private, public, env = keys
    (tmp_path / "in").mkdir()
    name = workload_names("signed")
    deploy = ("deploy", "--registry", registry.address, "--kind", "job", "--name", name, "--input-dir",
              str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), "--verify-key", str(public))
    assert invoke("push", "--registry", registry.address, env=env).returncode == 0
    refused = invoke(*deploy, env=env)
    one_line_error(refused, "is not verified", "no signature", "refusing to deploy it")
    assert name not in invoke("status", env=env).stdout
    assert invoke("push", "--registry", registry.address, "--sign-key", str(private), env=env).returncode == 0
    done = invoke(*deploy, "--pin", env=env)
    assert done.returncode == 0, done.stderr
    assert "Succeeded" in done.stdout


def test_the_local_node_refuses_a_pulled_digest_that_does_not_verify(registry, keys, built, tmp_path):
    """The node's own admission check: rendered for a tag, then the tag moved to unsigned bytes
    before the node pulled; the node verifies the digest it pulled, refuses, and starts nothing."""
    from wasmpod.config import deploy_settings
    from wasmpod.deploy import render_deployment
    from wasmpod.local_node import LocalNode
    from wasmpod.project import Project
    from wasmpod.settings import RegistrySettings
    from wasmpod.signing import NotVerified

    private, public, env = keys
    assert invoke("push", "--registry", registry.address, "--sign-key", str(private), env=env).returncode == 0
    (tmp_path / "in").mkdir()
    project = Project.at(ROOT)
    registry_settings = RegistrySettings(registry=registry.address)
    settings = deploy_settings({}, {"kind": "job", "name": "moved", "input_dir": str(tmp_path / "in"),
                                    "output_dir": str(tmp_path / "out")}, project)
    rendered = render_deployment(project, registry_settings, settings, env, dry_run=False)
    client = RegistryClient(registry.address, Transport.choose(registry.address), None)
    push_module_bytes(client, ImageReference(registry.address, "fractalify", rendered.image.tag), tmp_path, TINY_MODULE)
    node = LocalNode(tmp_path / "node")
    key = load_verify_key(str(public), {})
    with pytest.raises(NotVerified, match="refusing to run it on the local node"):
        node.apply(rendered.objects, lambda address: Transport.choose(address), verify_key=key)
    assert not (tmp_path / "node" / "default" / "moved").exists()


def test_the_keys_come_from_configuration_too(registry, keys, built, tmp_path):
    """registry.sign_key and deploy.verify_key, here through INVOKE_* variables (a -f file works alike)."""
    private, public, env = keys
    (tmp_path / "in").mkdir()
    configured = {**env, "INVOKE_REGISTRY_SIGN_KEY": str(private), "INVOKE_DEPLOY_VERIFY_KEY": str(public)}
    done = invoke("push", "--registry", registry.address, env=configured)
    assert done.returncode == 0, done.stderr
    digest = next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("Digest: "))
    assert cosign_reference.cosign_verifies(registry.address, "fractalify", digest, public.read_bytes())
    other = tmp_path / "other"
    assert invoke("keygen", "--out", str(other), env=env).returncode == 0
    refused = invoke("deploy", "--registry", registry.address, "--kind", "job", "--name", "cfg", "--input-dir",
                     str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                     env={**configured, "INVOKE_DEPLOY_VERIFY_KEY": f"{other}.pub"})
    one_line_error(refused, "is not verified", "does not verify with this key", "refusing to deploy it")


def test_push_with_sbom_and_a_key_attaches_the_referrer_and_the_attestation(registry, keys, built):
    """`invoke push --sbom --sign-key`: the generator's SBOM of the pushed module, as an OCI 1.1
    referrer (in the fallback index: docker-registry has no referrers API) and as a signed attestation."""
    private, public, env = keys
    done = invoke("push", "--registry", registry.address, "--sbom", "--sign-key", str(private), env=env)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()[-6:]] == ["Pushed", "Size", "Digest", "Signature",
                                                                               "SBOM", "Attested"]
    digest = next(line.split(": ")[1] for line in done.stdout.splitlines() if line.startswith("Digest: "))
    hex_digest = digest[7:]
    index = json.loads(cosign_reference.manifest(registry.address, "fractalify", f"sha256-{hex_digest}")[0])
    assert [m["artifactType"] for m in index["manifests"]] == ["application/vnd.cyclonedx+json"]
    referrer = json.loads(cosign_reference.manifest(registry.address, "fractalify", index["manifests"][0]["digest"])[0])
    document = json.loads(cosign_reference.blob(registry.address, "fractalify", referrer["layers"][0]["digest"]))
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.5"
    assert "pkg:cargo/png@" in json.dumps(document["components"])
    attestation = json.loads(cosign_reference.manifest(registry.address, "fractalify", f"sha256-{hex_digest}.att")[0])
    envelope = json.loads(cosign_reference.blob(registry.address, "fractalify", attestation["layers"][0]["digest"]))
    assert cosign_reference.dsse_verifies(envelope, public.read_bytes())


def test_push_of_both_layouts_signs_each_and_a_runwasi_deploy_verifies_its_own(registry, keys, built, tmp_path,
                                                                              workload_names):
    """`push --runtime all --sign-key`: two manifests, two digests, each signed; a deploy for
    runwasi with the public key then checks the runwasi layout's signature and runs it."""
    private, public, env = keys
    done = invoke("push", "--registry", registry.address, "--runtime", "all", "--sign-key", str(private), env=env)
    assert done.returncode == 0, done.stderr
    digests = dict(reversed(line.removeprefix("Digest: ").rstrip(")").split(" (")) for line in done.stdout.splitlines()
                   if line.startswith("Digest: "))
    assert set(digests) == {"krustlet", "runwasi"} and digests["krustlet"] != digests["runwasi"], done.stdout
    for digest in digests.values():
        assert cosign_reference.cosign_verifies(registry.address, "fractalify", digest, public.read_bytes())
    (tmp_path / "in").mkdir()
    name = workload_names("both")
    deploy = invoke("deploy", "--runtime", "runwasi", "--registry", registry.address, "--kind", "job", "--name", name,
                    "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                    "--verify-key", str(public), "--pin", env=env)
    assert deploy.returncode == 0, deploy.stderr
    assert "Succeeded" in deploy.stdout and digests["runwasi"] in deploy.stdout + invoke("status", env=env).stdout
