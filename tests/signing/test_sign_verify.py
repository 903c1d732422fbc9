"""Signatures we write, in a real registry: cosign's format exactly (checked by the test's own
verifier and by skopeo), appended to other signers', and verified by cosign's rule."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

import cosign_reference
from signing_kit import TINY_MODULE
from wasmpod.errors import UserError
from wasmpod.referrers import resolve_subject
from wasmpod.signing import (SIGNATURE_ANNOTATION, SIGNATURE_SUFFIX, SIMPLE_SIGNING_MEDIA_TYPE, append_layer,
                             sign_image, simple_signing_payload, verify_image)


def skopeo_raw(reference: str) -> bytes:
    done = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def sig_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def test_a_signature_is_cosigns_format_and_the_reference_verifier_accepts_it(pushed, cosign_key, fixtures):
    signed = sign_image(pushed.client, pushed.reference, cosign_key)
    assert signed.subject.digest == pushed.digest  # the digest the registry holds
    raw = skopeo_raw(f"{pushed.reference.registry}/fractalify:{sig_tag(pushed.digest)}")
    manifest = json.loads(raw)
    assert list(manifest) == ["schemaVersion", "mediaType", "config", "layers"]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert list(layer["annotations"]) == ["dev.cosignproject.cosign/signature"]
    payload = cosign_reference.blob(pushed.reference.registry, "fractalify", layer["digest"])
    assert payload == cosign_reference.expected_payload(f"{pushed.reference.registry}/fractalify", pushed.digest)
    config = json.loads(cosign_reference.blob(pushed.reference.registry, "fractalify", manifest["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    public = cosign_key.public.pem()
    assert cosign_reference.cosign_verifies(pushed.reference.registry, "fractalify", pushed.digest, public)
    assert verify_image(pushed.client, pushed.reference, cosign_key.public).verified


def test_signing_appends_and_keeps_another_signers_layer(pushed, cosign_key, other_cosign_key):
    sign_image(pushed.client, pushed.reference, other_cosign_key)
    first = json.loads(skopeo_raw(f"{pushed.reference.registry}/fractalify:{sig_tag(pushed.digest)}"))["layers"]
    sign_image(pushed.client, pushed.reference, cosign_key)
    layers = json.loads(skopeo_raw(f"{pushed.reference.registry}/fractalify:{sig_tag(pushed.digest)}"))["layers"]
    assert len(layers) == 2 and layers[0] == first[0]  # the other signer's layer, byte for byte
    for key in (cosign_key, other_cosign_key):
        assert cosign_reference.cosign_verifies(pushed.reference.registry, "fractalify", pushed.digest, key.public.pem())
        assert verify_image(pushed.client, pushed.reference, key.public).verified


def test_signing_again_with_the_same_key_adds_nothing(pushed, cosign_key):
    sign_image(pushed.client, pushed.reference, cosign_key)
    before = skopeo_raw(f"{pushed.reference.registry}/fractalify:{sig_tag(pushed.digest)}")
    again = sign_image(pushed.client, pushed.reference, cosign_key)
    assert not again.write.added
    assert skopeo_raw(f"{pushed.reference.registry}/fractalify:{sig_tag(pushed.digest)}") == before


def test_verify_fails_with_another_key(pushed, cosign_key, other_cosign_key):
    sign_image(pushed.client, pushed.reference, cosign_key)
    result = verify_image(pushed.client, pushed.reference, other_cosign_key.public)
    assert not result.verified
    assert "does not verify with this key" in result.reason


def test_verify_fails_after_different_bytes_are_pushed_under_the_same_tag(pushed, cosign_key, tmp_path):
    sign_image(pushed.client, pushed.reference, cosign_key)
    new_digest = pushed.push_again(tmp_path, TINY_MODULE + b"\x00")
    assert new_digest != pushed.digest
    result = verify_image(pushed.client, pushed.reference, cosign_key.public)
    assert not result.verified and result.subject.digest == new_digest
    assert result.reason == f"no signature: {sig_tag(new_digest)} does not exist"
    # The old digest keeps its signature.
    assert verify_image(pushed.client, pushed.reference.with_digest(pushed.digest), cosign_key.public).verified


def test_verify_fails_on_a_tampered_signature(pushed, cosign_key):
    payload = simple_signing_payload(f"{pushed.reference.registry}/fractalify", pushed.digest)
    signature = bytearray(cosign_key.sign(payload))
    signature[-1] ^= 0x01
    subject = resolve_subject(pushed.client, pushed.reference)
    append_layer(pushed.client, subject, SIGNATURE_SUFFIX, payload, SIMPLE_SIGNING_MEDIA_TYPE,
                 {SIGNATURE_ANNOTATION: base64.b64encode(bytes(signature)).decode()}, lambda layer: False)
    result = verify_image(pushed.client, pushed.reference, cosign_key.public)
    assert not result.verified and "does not verify" in result.reason
    assert not cosign_reference.cosign_verifies(pushed.reference.registry, "fractalify", pushed.digest,
                                                cosign_key.public.pem())


def test_verify_fails_on_a_valid_signature_of_another_digest(pushed, cosign_key):
    """A signature copied from another image: it verifies, but names another digest."""
    other = "sha256:" + "ab" * 32
    payload = simple_signing_payload(f"{pushed.reference.registry}/fractalify", other)
    subject = resolve_subject(pushed.client, pushed.reference)
    append_layer(pushed.client, subject, SIGNATURE_SUFFIX, payload, SIMPLE_SIGNING_MEDIA_TYPE,
                 {SIGNATURE_ANNOTATION: base64.b64encode(cosign_key.sign(payload)).decode()}, lambda layer: False)
    result = verify_image(pushed.client, pushed.reference, cosign_key.public)
    assert not result.verified and "another digest" in result.reason


def test_signing_a_reference_that_does_not_exist_is_one_line(pushed, cosign_key):
    from dataclasses import replace

    with pytest.raises(UserError, match="does not exist in its registry"):
        sign_image(pushed.client, replace(pushed.reference, tag="v9"), cosign_key)


def test_a_digest_the_registry_does_not_hold_is_not_signed(pushed, cosign_key):
    with pytest.raises(UserError, match="does not exist in its registry"):
        sign_image(pushed.client, pushed.reference.with_digest("sha256:" + "cd" * 32), cosign_key)


def test_a_registry_reporting_a_digest_its_bytes_do_not_have_is_refused(pushed, cosign_key):
    """What is signed is the digest of the bytes, never a header: a registry (or something between)
    that says another digest is refused, nothing signed. (docker-registry is honest, so its answer
    is changed on the way, at the client's boundary.)"""
    from wasmpod.oci_client import FoundManifest

    honest = pushed.client.find_manifest

    def lying(repository, reference, accept):
        found = honest(repository, reference, accept)
        return FoundManifest(found.body, "sha256:" + "12" * 32, found.media_type) if found else None

    pushed.client.find_manifest = lying
    with pytest.raises(UserError, match="reports digest sha256:1212"):
        sign_image(pushed.client, pushed.reference, cosign_key)
    pushed.client.find_manifest = honest
    assert cosign_reference.manifest(pushed.reference.registry, "fractalify", sig_tag(pushed.digest)) is None


def test_a_signature_manifest_with_too_many_layers_is_refused_without_fetching_them(pushed, cosign_key):
    """A hostile registry must not make verify fetch blobs without end: over 256 layers, refused."""
    from wasmpod.referrers import upload_bytes
    from wasmpod.signing import compose_cosign_manifest, cosign_config, layer_descriptor

    payload = simple_signing_payload(f"{pushed.reference.registry}/fractalify", pushed.digest)
    blob = upload_bytes(pushed.client, "fractalify", SIMPLE_SIGNING_MEDIA_TYPE, payload)
    layer = layer_descriptor(blob, {SIGNATURE_ANNOTATION: base64.b64encode(cosign_key.sign(payload)).decode()})
    config = upload_bytes(pushed.client, "fractalify", "application/vnd.oci.image.config.v1+json",
                          cosign_config([blob.digest] * 257))
    pushed.client.store_manifest("fractalify", sig_tag(pushed.digest), compose_cosign_manifest(config, [layer] * 257),
                                 "application/vnd.oci.image.manifest.v1+json")
    result = verify_image(pushed.client, pushed.reference, cosign_key.public)
    assert not result.verified and "257 layers, more than the 256 checked" in result.reason
