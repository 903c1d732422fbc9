"""Our verifier against signatures made by the real cosign (cosign-fixtures/README.md says what
each must give), both by the rule alone and after a round trip through a real registry's .sig tag."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cosign_reference import cosign_verifies, read_fixture_signature, signature_verifies
from wasmpod.keys import load_verify_key
from wasmpod.oci_client import RegistryClient, Transport
from wasmpod.reference import ImageReference
from wasmpod.referrers import Subject
from wasmpod.signing import (SIGNATURE_ANNOTATION, SIGNATURE_SUFFIX, SIMPLE_SIGNING_MEDIA_TYPE, append_layer,
                             check_signature_layer, verify_subject)


def fixture_bytes(fixtures: Path, name: str) -> bytes:
    """A fixture file; some are git symbolic links flattened into their target's path
    (`../dir-img-cosign-valid/signature-1`): those are followed to the folder here."""
    data = (fixtures / name).read_bytes()
    if data.startswith(b"../dir-img-"):
        return (fixtures / data.decode().removeprefix("../dir-img-")).read_bytes()
    return data


def manifest_digest(fixtures: Path, folder: str) -> str:
    return "sha256:" + hashlib.sha256(fixture_bytes(fixtures, f"{folder}/manifest.json")).hexdigest()


# (signature file, manifest folder whose digest is checked, public key, accepted?) from the fixtures' README.
CASES = [
    ("cosign-valid/signature-1", "cosign-valid", "cosign.pub", True),
    ("cosign-valid/signature-1", "cosign-valid", "cosign2.pub", False),
    ("cosign-valid-2/signature-1", "cosign-valid-2", "cosign.pub", True),
    ("cosign-valid-2/signature-2", "cosign-valid-2", "cosign.pub", True),
    ("cosign-valid-2/signature-2", "cosign-valid-2", "cosign2.pub", False),
    ("cosign-key-rekor-valid/signature-1", "cosign-key-rekor-valid", "cosign2.pub", True),
    ("cosign-key-rekor-valid/signature-1", "cosign-key-rekor-valid", "cosign.pub", False),
    ("unknown-cosign-key.signature", "cosign-valid", "cosign.pub", False),
    ("cosign-valid/signature-1", "cosign-modified-manifest", "cosign.pub", False),  # the digest claim fails
    ("cosign-manifest-digest-error/signature-1", "cosign-modified-manifest", "cosign.pub", False),
    ("cosign-other-attachment/signature-1", "cosign-valid", "cosign.pub", False),
]


def layer_of(payload: bytes, signature: str, media_type: str) -> dict:
    return {"mediaType": media_type, "size": len(payload), "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
            "annotations": {SIGNATURE_ANNOTATION: signature}}


@pytest.mark.parametrize("signature_file, folder, key_file, accepted", CASES)
def test_each_cosign_fixture_is_accepted_or_refused_as_its_readme_says(fixtures, signature_file, folder, key_file,
                                                                       accepted):
    payload, signature, media_type = read_fixture_signature(fixture_bytes(fixtures, signature_file))
    digest = manifest_digest(fixtures, folder)
    key = load_verify_key(str(fixtures / key_file), {})
    why = check_signature_layer(layer_of(payload, signature, media_type), payload, key, digest)
    assert (why is None) == accepted, why
    # The test's own verifier, from the reference, agrees (so the table above is the reference's rule).
    public = (fixtures / key_file).read_bytes()
    from cosign_reference import public_key
    ours_independent = signature_verifies(public_key(public), payload, signature)
    if ours_independent:
        ours_independent = json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == digest
    assert ours_independent == accepted


def test_the_flattened_link_itself_is_no_signature(fixtures):
    with pytest.raises(AssertionError, match="not a sigstore signature"):
        read_fixture_signature((fixtures / "cosign-manifest-digest-error/signature-1").read_bytes())


@pytest.mark.parametrize("signature_file, folder, key_file, accepted", CASES)
def test_cosign_fixtures_round_trip_through_a_real_registry(registry, fixtures, signature_file, folder, key_file,
                                                            accepted):
    """The fixture's payload and signature as a layer of the `.sig` tag of its manifest's digest,
    as cosign stores them; `verify` reads it back from the registry."""
    client = RegistryClient(registry.address, Transport.choose(registry.address), None)
    payload, signature, media_type = read_fixture_signature(fixture_bytes(fixtures, signature_file))
    digest = manifest_digest(fixtures, folder)
    subject = Subject(ImageReference(registry.address, "cosign-signed", None, digest), digest,
                      "application/vnd.docker.distribution.manifest.v2+json", 428)
    append_layer(client, subject, SIGNATURE_SUFFIX, payload, media_type or SIMPLE_SIGNING_MEDIA_TYPE,
                 {SIGNATURE_ANNOTATION: signature}, lambda layer: False)
    result = verify_subject(client, subject, load_verify_key(str(fixtures / key_file), {}))
    assert result.verified == accepted, result.reason
    assert "\n" not in result.reason
    assert cosign_verifies(registry.address, "cosign-signed", digest, (fixtures / key_file).read_bytes()) == accepted


def test_signatures_of_two_signers_verify_with_either_key(registry, fixtures):
    """cosign-valid-2 holds two signatures of one manifest; with a second signer's (cosign2's) layer
    appended, each key finds its own."""
    client = RegistryClient(registry.address, Transport.choose(registry.address), None)
    digest = manifest_digest(fixtures, "cosign-valid")
    subject = Subject(ImageReference(registry.address, "cosign-signed", None, digest), digest,
                      "application/vnd.docker.distribution.manifest.v2+json", 428)
    for name in ("cosign-valid/signature-1", "unknown-cosign-key.signature", "cosign-valid-2/signature-2"):
        payload, signature, media_type = read_fixture_signature(fixture_bytes(fixtures, name))
        append_layer(client, subject, SIGNATURE_SUFFIX, payload, media_type, {SIGNATURE_ANNOTATION: signature},
                     lambda layer: False)
    assert verify_subject(client, subject, load_verify_key(str(fixtures / "cosign.pub"), {})).verified
    refused = verify_subject(client, subject, load_verify_key(str(fixtures / "cosign2.pub"), {}))
    assert not refused.verified
    assert "3 x a signature that does not verify with this key" in refused.reason
