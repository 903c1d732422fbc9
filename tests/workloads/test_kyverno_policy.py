"""`deploy --create-policy`: the Kyverno ClusterPolicy that admits the image only when signed by
the given key, checked against Kyverno's ClusterPolicy schema (kyverno/README.md says where it
comes from), and the flag's way through configuration, dry run and kubectl."""

from __future__ import annotations

import copy
import fnmatch
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from test_deploy import fake_kubectl, one_line_error
from testkit import invoke

from wasmpod.errors import UserError
from wasmpod.manifests import ImagePolicy, check_public_key_pem, render_policy

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates" / "k8s"
KYVERNO = Path(__file__).parent / "kyverno"
COSIGN_PUB = KYVERNO / "cosign.pub"  # a real cosign public key (containers/image's fixtures)
POLICY = ImagePolicy("default-fractalify-signed", "foobar.azurecr.io/fractalify", COSIGN_PUB.read_text())


def strict(schema):
    """Every object of the schema closed to other keys, as kubernetes-validate's strict mode does
    for the built-in kinds: the API server would drop an unknown (misspelt) field without a word,
    and a dropped `failureAction` or `ignoreTlog` changes what the policy does."""
    if isinstance(schema, dict):
        closed = {key: strict(value) for key, value in schema.items()}
        if "properties" in closed and "additionalProperties" not in closed:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [strict(value) for value in schema]
    return schema


SCHEMA = strict(json.loads((KYVERNO / "clusterpolicy-v1.schema.json").read_text()))


def schema_errors(obj: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def verify_images(obj: dict) -> dict:
    [rule] = obj["spec"]["rules"]
    [verify] = rule["verifyImages"]
    return verify


def test_policy_passes_kyverno_clusterpolicy_schema():
    _, _, obj = render_policy(TEMPLATES, POLICY)
    assert obj["apiVersion"] == "kyverno.io/v1" and obj["kind"] == "ClusterPolicy"
    assert schema_errors(obj) == []


@pytest.mark.parametrize("path, bad", [
    (("spec", "rules", 0, "verifyImages", 0, "attestors", 0, "entries", 0, "keys", "rekor"), {"ignoreTLog": True}),
    (("spec", "rules", 0, "verifyImages", 0), {"failureAction": "Enforced"}),
    (("spec", "rules", 0, "verifyImages", 0), {"type": "cosign"}),
])
def test_the_schema_check_catches_a_misspelt_field(path, bad):
    """The check itself: a misspelt key, a wrong enum value, are caught."""
    _, _, obj = render_policy(TEMPLATES, POLICY)
    broken = copy.deepcopy(obj)
    node = broken
    for step in path:
        node = node[step]
    if "ignoreTLog" in bad:
        node.clear()
    node.update(bad)
    assert schema_errors(broken)


def test_policy_requires_the_key_signature_without_transparency_log_and_pins_digests():
    _, _, obj = render_policy(TEMPLATES, POLICY)
    assert obj["metadata"]["name"] == "default-fractalify-signed"
    assert obj["spec"]["validationFailureAction"] == "Enforce"
    [rule] = obj["spec"]["rules"]
    assert rule["match"] == {"any": [{"resources": {"kinds": ["Pod"]}}]}
    verify = verify_images(obj)
    assert verify["imageReferences"] == ["foobar.azurecr.io/fractalify:*", "foobar.azurecr.io/fractalify@*"]
    assert verify["type"] == "Cosign"
    assert verify["failureAction"] == "Enforce"
    assert verify["mutateDigest"] is True and verify["verifyDigest"] is True and verify["required"] is True
    [attestor] = verify["attestors"]
    [entry] = attestor["entries"]
    assert entry["keys"]["rekor"] == {"ignoreTlog": True}
    assert entry["keys"]["ctlog"] == {"ignoreSCT": True}


def test_the_public_key_pem_survives_exactly():
    for pem in (COSIGN_PUB.read_text(), COSIGN_PUB.read_text().rstrip("\n"), COSIGN_PUB.read_text().replace("\n", "\r\n")):
        _, text, obj = render_policy(TEMPLATES, ImagePolicy("p", "r.example/x", check_public_key_pem(pem, "key")))
        assert verify_images(obj)["attestors"][0]["entries"][0]["keys"]["publicKeys"] == pem
        assert yaml.safe_load(text) == obj


def test_image_references_match_the_repository_only():
    patterns = render_policy(TEMPLATES, POLICY)[2]["spec"]["rules"][0]["verifyImages"][0]["imageReferences"]

    def admitted_by(image: str) -> bool:  # Kyverno's wildcard: `*` any run of characters
        return any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)

    assert admitted_by("foobar.azurecr.io/fractalify:v0.2.0")
    assert admitted_by("foobar.azurecr.io/fractalify:v0.2.0@sha256:" + "a" * 64)
    assert admitted_by("foobar.azurecr.io/fractalify@sha256:" + "a" * 64)
    assert not admitted_by("foobar.azurecr.io/fractalify-other:v0.2.0")
    assert not admitted_by("other.io/fractalify:v0.2.0")


@pytest.mark.parametrize("text, says", [
    ("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n", "is a private key"),
    ("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n", "is a private key"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host\n", "is not a PEM public key"),
    ("-----BEGIN PUBLIC KEY-----\nnot base64 !!\n-----END PUBLIC KEY-----\n", "is not a PEM public key"),
    ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEFNLqFhf\n-----END PUBLIC KEY-----\n", "is not a PEM public key"),
    ("", "is not a PEM public key"),
])
def test_what_is_not_a_public_key_is_refused(text, says):
    with pytest.raises(UserError, match=says):
        check_public_key_pem(text, "k.pub")


def test_a_value_placed_without_quoting_is_refused_in_the_policy_too(tmp_path):
    broken = tmp_path / "k8s"
    shutil.copytree(TEMPLATES, broken)
    template = broken / "kyverno-policy.yaml.j2"
    template.write_text(template.read_text().replace("publicKeys: {{ p.public_key_pem | q }}",
                                                     "publicKeys: {{ p.public_key_pem }}"))
    with pytest.raises(UserError, match="without `| q`"):
        render_policy(broken, POLICY)


def test_dry_run_prints_the_policy_before_the_pod(env):
    done = invoke("deploy", "--create-policy", "--verify-key", str(COSIGN_PUB), "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    policy, pod = yaml.safe_load_all(done.stdout)
    assert policy["kind"] == "ClusterPolicy" and pod["kind"] == "Pod"
    assert verify_images(policy)["imageReferences"] == ["127.0.0.1:5000/fractalify:*", "127.0.0.1:5000/fractalify@*"]
    assert verify_images(policy)["attestors"][0]["entries"][0]["keys"]["publicKeys"] == COSIGN_PUB.read_text()
    assert schema_errors(policy) == []


def test_policy_settings_come_from_configuration_too(env, tmp_path):
    config = tmp_path / "policy.yaml"
    config.write_text(f"deploy:\n  create_policy: true\n  verify_key: {COSIGN_PUB}\n")
    from_file = invoke("-f", str(config), "deploy", "--dry-run", env=env)
    from_env = invoke("deploy", "--dry-run", env={**env, "INVOKE_DEPLOY_CREATE_POLICY": "true",
                                                   "INVOKE_DEPLOY_VERIFY_KEY": str(COSIGN_PUB)})
    for done in (from_file, from_env):
        assert done.returncode == 0, done.stderr
        assert [d["kind"] for d in yaml.safe_load_all(done.stdout)] == ["ClusterPolicy", "Pod"]
    without = invoke("deploy", "--dry-run", env=env)
    assert [d["kind"] for d in yaml.safe_load_all(without.stdout)] == ["Pod"]


def test_policy_mistakes_are_one_line(env, tmp_path):
    one_line_error(invoke("deploy", "--create-policy", "--dry-run", env=env), "--create-policy needs", "--verify-key")
    one_line_error(invoke("deploy", "--create-policy", "--verify-key", str(tmp_path / "none.pub"), "--dry-run", env=env),
                   "key file", "none.pub", "does not exist")
    private = tmp_path / "cosign.key"
    private.write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    one_line_error(invoke("deploy", "--create-policy", "--verify-key", str(private), "--dry-run", env=env),
                   "is a private key")
    one_line_error(invoke("deploy", "--create-policy", "--verify-key", str(COSIGN_PUB), env=env),
                   "--create-policy is for a cluster with Kyverno")
    # Kyverno keeps a policy's name in labels: a DNS label, 63 characters at most.
    one_line_error(invoke("deploy", "--create-policy", "--verify-key", str(COSIGN_PUB), "--dry-run", "--name", "f" * 60,
                          env=env), "the policy name", "DNS-1123 label")


def test_kubectl_applies_the_policy_with_the_pinned_pod_and_undeploy_leaves_it(registry, env, tmp_path):
    path, record = fake_kubectl(tmp_path)
    env = {**env, **path}
    # The key the policy trusts is the one deploy verifies with: the module is signed with it.
    env = {**env, "COSIGN_PASSWORD": "policy-test"}
    assert invoke("keygen", "--out", str(tmp_path / "signer"), env=env).returncode == 0
    signer = tmp_path / "signer.pub"
    assert invoke("push", "--registry", registry.address, "--sign-key", str(tmp_path / "signer.key"),
                  env=env).returncode == 0
    done = invoke("deploy", "--registry", registry.address, "--target", "kubectl", "--pin", "--create-policy",
                  "--verify-key", str(signer), env=env)
    assert done.returncode == 0, done.stderr
    call = json.loads(record.read_text().splitlines()[0])
    files = [call["argv"][i + 1] for i, arg in enumerate(call["argv"]) if arg == "-f"]
    assert [Path(f).name for f in files] == ["default-fractalify-signed.clusterpolicy.yaml", "fractalify.pod.yaml"]
    policy, pod = (yaml.safe_load(call["files"][f]) for f in files)
    image = pod["spec"]["containers"][0]["image"]
    assert "@sha256:" in image
    assert any(fnmatch.fnmatchcase(image, p) for p in verify_images(policy)["imageReferences"])

    config = tmp_path / "policy.yaml"
    config.write_text(f"deploy:\n  create_policy: true\n  verify_key: {signer}\n")
    gone = invoke("-f", str(config), "undeploy", "--target", "kubectl", "--registry", registry.address, env=env)
    assert gone.returncode == 0, gone.stderr
    delete = json.loads(record.read_text().splitlines()[1])["argv"]
    deleted = [Path(delete[i + 1]).name for i, arg in enumerate(delete) if arg == "-f"]
    assert deleted == ["fractalify.pod.yaml"]  # the policy guards the repository, not this workload
