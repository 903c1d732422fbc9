"""A small cosign verifier written from ../shared/reference/signing-and-referrers.md, for the tests:
cryptography, json and urllib only, never wasmpod's code, so a signature wasmpod writes is checked
by something that shares none of its mistakes.

It reads a plain-HTTP, anonymous registry (the tests' docker-registry)."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ACCEPT = ("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


def get(url: str, accept: str = ACCEPT) -> tuple[bytes, dict] | None:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def manifest(registry: str, repository: str, reference: str) -> tuple[bytes, dict] | None:
    return get(f"http://{registry}/v2/{repository}/manifests/{reference}")


def blob(registry: str, repository: str, digest: str) -> bytes:
    got = get(f"http://{registry}/v2/{repository}/blobs/{digest}", "*/*")
    assert got is not None, f"blob {digest} missing"
    assert "sha256:" + hashlib.sha256(got[0]).hexdigest() == digest
    return got[0]


def public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def signature_verifies(key: ec.EllipticCurvePublicKey, payload: bytes, signature_b64: str) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64), payload, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False


def cosign_verifies(registry: str, repository: str, digest: str, public_pem: bytes) -> bool:
    """The reference's rule: the `sha256-<hex>.sig` tag has a layer whose signature annotation
    verifies over its blob with the key, and whose payload's docker-manifest-digest is `digest`."""
    key = public_key(public_pem)
    found = manifest(registry, repository, digest.replace(":", "-") + ".sig")
    if found is None:
        return False
    for layer in json.loads(found[0])["layers"]:
        payload = blob(registry, repository, layer["digest"])
        signature = (layer.get("annotations") or {}).get("dev.cosignproject.cosign/signature", "")
        if not signature or not signature_verifies(key, payload, signature):
            continue
        try:
            claimed = json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
        except (ValueError, KeyError, TypeError):
            continue
        if claimed == digest:
            return True
    return False


def expected_payload(docker_reference: str, digest: str) -> bytes:
    """The simple-signing payload, byte for byte as the reference writes it."""
    return ('{"critical":{"identity":{"docker-reference":"%s"},"image":{"docker-manifest-digest":"%s"},'
            '"type":"cosign container image signature"},"optional":null}' % (docker_reference, digest)).encode()


def dsse_verifies(envelope: dict, public_pem: bytes) -> bool:
    """DSSE: the signature is over "DSSEv1 <len type> <type> <len body> <body>"."""
    body = base64.b64decode(envelope["payload"])
    kind = envelope["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)
    key = public_key(public_pem)
    return any(signature_verifies(key, pae, s["sig"]) for s in envelope["signatures"])


def read_fixture_signature(data: bytes) -> tuple[bytes, str, str]:
    """containers/image's dir: signature file: `\\x00sigstore-json\\n` + JSON -> (payload, signature, mimeType)."""
    prefix = b"\x00sigstore-json\n"
    assert data.startswith(prefix), "not a sigstore signature file"
    document = json.loads(data[len(prefix):])
    return (base64.b64decode(document["payload"]), document["annotations"]["dev.cosignproject.cosign/signature"],
            document["mimeType"])
