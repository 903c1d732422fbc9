"""Signatures in cosign's key-based format, which `cosign verify --key`, Kyverno (`type: Cosign`)
and Ratify read; and their verification, with cosign's rule.

A module's signatures live at the tag `sha256-<hex of its manifest digest>.sig`: an OCI image
manifest with one layer per signature. A layer's blob is the simple-signing payload (below), its
annotation `dev.cosignproject.cosign/signature` the base64 ASN.1 DER ECDSA signature over SHA-256
of those bytes. A new signature is appended (read, add a layer, write), never replacing another
signer's. `cosign verify --key K --insecure-ignore-tlog` passes when at least one layer's signature
verifies with K and its payload names the image's digest; `verify_signatures` is that rule.

Attestations (a signed SBOM) use the same layout at `sha256-<hex>.att`, a layer being a DSSE
envelope around an in-toto statement.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Callable, Mapping

from .artifact import Blob, sha256_digest
from .errors import UserError
from .keys import SigningKey, VerifyKey
from .oci_client import RegistryClient
from .reference import ImageReference
from .referrers import (DOCKER_MANIFEST, OCI_MANIFEST, Subject, attached_tag, compact_json, read_manifest_json,
                        read_small_blob, resolve_subject, upload_bytes)

SIGNATURE_SUFFIX = ".sig"
ATTESTATION_SUFFIX = ".att"
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PREDICATE_TYPE_ANNOTATION = "predicateType"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v0.1"
CYCLONEDX_PREDICATE_TYPE = "https://cyclonedx.org/bom"
SIGNATURE_ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST])
ZERO_TIME = "0001-01-01T00:00:00Z"
# Each layer costs a blob request: a hostile registry must not make verification fetch without end.
MAX_SIGNATURE_LAYERS = 256  # go-containerregistry's zero time, which cosign's config carries


def simple_signing_payload(docker_reference: str, digest: str, annotations: Mapping[str, str] | None = None) -> bytes:
    """The payload cosign signs, byte for byte: compact JSON in sigstore's key order
    (pkg/signature/payload), `optional` null without annotations. No other field: containers/image
    refuses unknown top-level ones."""
    return compact_json({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": COSIGN_SIGNATURE_TYPE,
        },
        "optional": dict(sorted(annotations.items())) if annotations else None,
    })


def cosign_config(layer_digests: list[str]) -> bytes:
    """The config cosign writes for its signature images (go-containerregistry's ConfigFile of
    an empty image with these layers appended). Nothing verifies it; kept the same for tools that
    compare."""
    return compact_json({
        "architecture": "",
        "created": ZERO_TIME,
        "history": [{"created": ZERO_TIME} for _ in layer_digests],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": list(layer_digests)},
        "config": {},
    })


def compose_cosign_manifest(config: Blob, layers: list[dict]) -> bytes:
    """go-containerregistry's field order: schemaVersion, mediaType, config, layers."""
    config_descriptor = {"mediaType": config.media_type, "size": config.size, "digest": config.digest}
    return compact_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": layers})


def layer_descriptor(blob: Blob, annotations: Mapping[str, str]) -> dict[str, object]:
    # go-containerregistry writes a descriptor's fields in this order; annotations (a Go map) sorted.
    return {"mediaType": blob.media_type, "size": blob.size, "digest": blob.digest,
            "annotations": dict(sorted(annotations.items()))}


@dataclass(frozen=True)
class CosignTagWrite:
    tag: str
    layers: int  # layers at the tag afterwards
    added: bool  # False: the same payload, signed by the same key, was there already

    @property
    def digest_note(self) -> str:
        return f"{self.layers} signature layer(s)" if self.added else f"already signed ({self.layers} layer(s))"


def _existing_layers(client: RegistryClient, repository: str, tag: str) -> list[dict] | None:
    """The layers at a cosign tag; None when the tag does not exist."""
    found = read_manifest_json(client, repository, tag, SIGNATURE_ACCEPT)
    if found is None:
        return None
    layers = found[0].get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise UserError(f"{client.registry}/{repository}:{tag} has no list of layers: not a cosign signature manifest; "
                        "not changing it")
    return layers


def append_layer(client: RegistryClient, subject: Subject, suffix: str, payload: bytes, media_type: str,
                 annotations: Mapping[str, str], already_there: Callable[[dict], bool]) -> CosignTagWrite:
    """Adds one layer (`payload` with `annotations`) to the manifest at `sha256-<hex><suffix>`,
    keeping every layer already there (another signer's), unless `already_there` says one of them
    is this very signature. Blobs first, then the manifest, then a read-back of the tag."""
    repository = subject.reference.repository
    tag = attached_tag(subject.digest, suffix)
    layers = _existing_layers(client, repository, tag) or []
    if any(already_there(layer) for layer in layers):
        return CosignTagWrite(tag, len(layers), added=False)
    blob = upload_bytes(client, repository, media_type, payload)
    layers = layers + [layer_descriptor(blob, annotations)]
    config_bytes = cosign_config([str(layer.get("digest")) for layer in layers])
    config = upload_bytes(client, repository, OCI_CONFIG, config_bytes)
    manifest = compose_cosign_manifest(config, layers)
    client.store_manifest(repository, tag, manifest, OCI_MANIFEST)
    stored = client.find_manifest(repository, tag, SIGNATURE_ACCEPT)
    if stored is None or sha256_digest(stored.body) != sha256_digest(manifest):
        raise UserError(f"{client.registry}/{repository}:{tag} does not hold the manifest just written: was it changed "
                        "meanwhile? sign again")
    return CosignTagWrite(tag, len(layers), added=True)


# --- signatures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    subject: Subject
    write: CosignTagWrite
    key_source: str

    def lines(self) -> list[str]:
        return [f"Signed: {self.subject.reference}", f"Signature: {self.subject.reference.registry}/"
                f"{self.subject.reference.repository}:{self.write.tag} ({self.write.digest_note})"]


def sign_subject(client: RegistryClient, subject: Subject, key: SigningKey) -> Signed:
    """Signs the manifest digest the registry holds, cosign's way, appending to its `.sig`."""
    payload = simple_signing_payload(subject.docker_reference, subject.digest)
    payload_digest = sha256_digest(payload)
    public = key.public

    def same_signature(layer: dict) -> bool:
        # cosign's duplicate rule: the same payload, with a signature this key made.
        if layer.get("digest") != payload_digest:
            return False
        signature = _decoded_signature(layer)
        return signature is not None and public.verifies(payload, signature)

    signature = key.sign(payload)
    write = append_layer(client, subject, SIGNATURE_SUFFIX, payload, SIMPLE_SIGNING_MEDIA_TYPE,
                         {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}, same_signature)
    return Signed(subject, write, key.source)


def sign_image(client: RegistryClient, reference: ImageReference, key: SigningKey) -> Signed:
    """`invoke sign REF --key FILE`: resolves the tag to the digest the registry holds, then signs that."""
    return sign_subject(client, resolve_subject(client, reference), key)


def _decoded_signature(layer: dict) -> bytes | None:
    annotations = layer.get("annotations")
    text = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(text, str) or not text:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


@dataclass(frozen=True)
class Verification:
    subject: Subject
    verified: bool
    reason: str  # one line: why it passed or failed
    key_source: str

    def lines(self) -> list[str]:
        return [f"Verified: {self.subject.reference}", f"  {self.reason}"]


class NotVerified(UserError):
    """The module is not signed by the key (no signature, another key, another digest)."""


def check_signature_layer(layer: dict, payload: bytes, key: VerifyKey, digest: str) -> str | None:
    """cosign's rule for one signature: it verifies over the payload with the key, and the payload
    parses and names `digest` (the media type and docker-reference are not checked, as cosign
    does not). Returns None when it holds, else why not."""
    signature = _decoded_signature(layer)
    if signature is None:
        return "a layer without a signature annotation"
    if not key.verifies(payload, signature):
        return "a signature that does not verify with this key"
    try:
        claimed = json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError):
        return "a signed payload that is not a simple-signing document"
    if claimed != digest:
        return f"a signature of another digest ({str(claimed)[:19]}...)"
    return None


def verify_subject(client: RegistryClient, subject: Subject, key: VerifyKey) -> Verification:
    repository = subject.reference.repository
    tag = attached_tag(subject.digest, SIGNATURE_SUFFIX)
    layers = _existing_layers(client, repository, tag)
    if layers is None:
        return Verification(subject, False, f"no signature: {tag} does not exist", key.source)
    if not layers:
        return Verification(subject, False, f"no signature: {tag} has no layers", key.source)
    if len(layers) > MAX_SIGNATURE_LAYERS:
        return Verification(subject, False, f"{tag} has {len(layers)} layers, more than the {MAX_SIGNATURE_LAYERS} "
                            "checked: refused", key.source)
    failures: list[str] = []
    for index, layer in enumerate(layers):
        try:
            payload = read_small_blob(client, repository, layer, f"signature layer {index + 1} of {tag}")
        except UserError as error:
            failures.append(str(error))
            continue
        why = check_signature_layer(layer, payload, key, subject.digest)
        if why is None:
            return Verification(subject, True, f"signature layer {index + 1} of {len(layers)} at {tag} verifies with "
                                f"{key.source} and names {subject.digest}", key.source)
        failures.append(why)
    counted = sorted({f: failures.count(f) for f in failures}.items())
    said = "; ".join(f"{n} x {what}" if n > 1 else what for what, n in counted)
    return Verification(subject, False, f"no signature at {tag} verifies with {key.source}: {said}", key.source)


def verify_image(client: RegistryClient, reference: ImageReference, key: VerifyKey) -> Verification:
    """`invoke verify REF --key FILE`: passes exactly when `cosign verify --key FILE
    --insecure-ignore-tlog REF` would."""
    return verify_subject(client, resolve_subject(client, reference), key)


def require_signature(client: RegistryClient, reference: ImageReference, key: VerifyKey, action: str) -> Verification:
    """The admission check of deploy and the local node: `reference` (pinned to the digest that
    will run) must verify with the key, else NotVerified naming why and what was refused."""
    result = verify_image(client, reference, key)
    if not result.verified:
        raise NotVerified(f"{result.subject.reference} is not verified ({result.reason}): refusing to {action}")
    return result


# --- attestations (a signed SBOM) ------------------------------------------------------------


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope's signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def in_toto_statement(subject: Subject, predicate_type: str, predicate: object) -> bytes:
    return compact_json({
        "_type": IN_TOTO_STATEMENT_TYPE,
        "predicateType": predicate_type,
        "subject": [{"name": subject.docker_reference, "digest": {"sha256": subject.digest.partition(":")[2]}}],
        "predicate": predicate,
    })


def attest_sbom(client: RegistryClient, subject: Subject, sbom: object, key: SigningKey) -> str:
    """`cosign attest --type cyclonedx`'s layout: the SBOM as the predicate of an in-toto statement
    about the module's digest, in a DSSE envelope signed with the key, appended at `.att`.
    Returns the tag."""
    statement = in_toto_statement(subject, CYCLONEDX_PREDICATE_TYPE, sbom)
    signature = key.sign(dsse_pae(IN_TOTO_PAYLOAD_TYPE, statement))
    envelope = compact_json({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": base64.b64encode(statement).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
    })
    public = key.public

    def same_statement(layer: dict) -> bool:
        # A re-attach of the same SBOM by the same key adds nothing (ECDSA signatures differ each
        # time, so the statement is compared and the envelope's signature checked).
        if layer.get("mediaType") != DSSE_MEDIA_TYPE:
            return False
        try:
            other = json.loads(read_small_blob(client, subject.reference.repository, layer, "an attestation layer"))
            if base64.b64decode(other["payload"]) != statement:
                return False
            return any(public.verifies(dsse_pae(IN_TOTO_PAYLOAD_TYPE, statement), base64.b64decode(s["sig"]))
                       for s in other["signatures"])
        except (UserError, ValueError, KeyError, TypeError):
            return False

    write = append_layer(client, subject, ATTESTATION_SUFFIX, envelope, DSSE_MEDIA_TYPE,
                         {SIGNATURE_ANNOTATION: "", PREDICATE_TYPE_ANNOTATION: CYCLONEDX_PREDICATE_TYPE}, same_statement)
    return write.tag


# --- what push attaches --------------------------------------------------------------------


@dataclass(frozen=True)
class SupplyChain:
    """What `push --sign-key`/`--sbom` attach to the module just pushed, prepared before the push
    so that a wrong key or password fails before anything is uploaded."""

    key: SigningKey | None
    sbom: bytes | None

    @classmethod
    def prepare(cls, sign_key: str | None, sbom: bool, project: object, module: object,
                environ: Mapping[str, str]) -> "SupplyChain":
        from .keys import load_signing_key
        from .referrers import module_sbom

        key = load_signing_key(sign_key, environ) if sign_key else None
        return cls(key, module_sbom(project, module, environ) if sbom else None)

    def attach(self, client: RegistryClient, pinned: ImageReference) -> tuple[str, ...]:
        """Signs the digest push verified (`pinned`), then attaches the SBOM; one line each."""
        if self.key is None and self.sbom is None:
            return ()
        from .referrers import attach_sbom

        lines: list[str] = []
        if self.key is not None:
            lines += sign_subject(client, resolve_subject(client, pinned), self.key).lines()[1:]
        if self.sbom is not None:
            lines += attach_sbom(client, pinned, self.sbom, key=self.key).lines()
        return tuple(lines)
