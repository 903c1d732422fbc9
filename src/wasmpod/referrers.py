"""What is attached to a module in its registry, and attaching an SBOM (`push --sbom`).

Two ways things hang off a manifest, and `discover` reads both (as `oras discover` does, plus
cosign's tags):

- cosign's tags beside the image: `sha256-<hex>.sig` (signatures) and `sha256-<hex>.att`
  (attestations), written by signing.py;
- OCI 1.1 referrers: a manifest whose `subject` is the module's manifest. A registry with the
  referrers API lists them at `/v2/<name>/referrers/<digest>`; for one without (distribution 2.8,
  GHCR, Docker Hub) the client keeps an image index at the tag `sha256-<hex>` (the "fallback
  index"), reading it, adding, and writing it back, never dropping another client's entries.

An SBOM is a referrer with `artifactType` application/vnd.cyclonedx+json, the empty config and
one layer; with a key it is also attested at `.att` (signing.attest_sbom), which Kyverno reads.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from .artifact import Blob, sha256_digest
from .errors import UserError
from .oci_client import BlobMismatch, RegistryClient
from .reference import ImageReference

if TYPE_CHECKING:  # only for the annotations: importing build here would load it for every push
    from .build import BuiltModule
    from .project import Project

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ANY_MANIFEST = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BYTES = b"{}"
CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json"
TITLE_ANNOTATION = "org.opencontainers.image.title"
# Attachments are small (a signature payload is ~250 bytes, an SBOM some KiB): a larger one is
# refused rather than read into memory.
SMALL_BLOB_LIMIT = 4 * 1024 * 1024


def compact_json(value: object) -> bytes:
    """JSON as Go's encoding/json writes it (no spaces, keys in the order given): the bytes of
    manifests, payloads and indexes, so their digests are what cosign and oras would compute."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def attached_tag(digest: str, suffix: str = "") -> str:
    """`sha256:<hex>` -> `sha256-<hex>` + suffix (`.sig`, `.att`, or "" for the fallback index)."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}-{hex_part}{suffix}"


@dataclass(frozen=True)
class Subject:
    """The manifest things are attached to: its descriptor as the registry holds it."""

    reference: ImageReference  # pinned to `digest`
    digest: str
    media_type: str
    size: int

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @property
    def docker_reference(self) -> str:
        """`registry/repository`, as cosign names the image in a signature (`ref.Context().Name()`)."""
        return f"{self.reference.registry}/{self.reference.repository}"


def resolve_subject(client: RegistryClient, reference: ImageReference) -> Subject:
    """The digest the registry holds for a tag (or checks a given digest): what gets signed and
    what verification compares with. The digest is computed from the bytes, not trusted from a header."""
    found = client.find_manifest(reference.repository, reference.reference, ANY_MANIFEST)
    if found is None:
        raise UserError(f"{reference} does not exist in its registry: push it first")
    digest = sha256_digest(found.body)
    if reference.digest and digest != reference.digest:
        raise UserError(f"the registry returned a manifest with digest {digest}, not the {reference.digest} asked for")
    if found.digest and found.digest != digest:
        raise UserError(f"the registry reports digest {found.digest} for a manifest whose bytes hash to {digest}")
    media_type = found.media_type or _media_type_in(found.body) or OCI_MANIFEST
    return Subject(reference.with_digest(digest), digest, media_type, len(found.body))


def _media_type_in(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def upload_bytes(client: RegistryClient, repository: str, media_type: str, data: bytes) -> Blob:
    """Uploads a small blob (unless the registry has it) and returns its descriptor."""
    blob = Blob(media_type, sha256_digest(data), len(data))
    with tempfile.TemporaryDirectory(prefix="wasmpod-attach-") as scratch:
        path = Path(scratch) / "blob"
        path.write_bytes(data)
        client.upload_blob(repository, blob, path)
    return blob


def read_small_blob(client: RegistryClient, repository: str, descriptor: dict, what: str) -> bytes:
    """The bytes of a small blob named by a descriptor. The client reads no more than the
    declared size and checks size and digest (BlobMismatch, a UserError, says which is wrong)."""
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if (not isinstance(digest, str) or isinstance(size, bool) or not isinstance(size, int)
            or not 0 <= size <= SMALL_BLOB_LIMIT):
        raise UserError(f"{what} has a descriptor without a usable digest and size (at most {SMALL_BLOB_LIMIT} bytes)")
    sink = io.BytesIO()
    try:
        client.download_blob(repository, digest, size, sink)
    except BlobMismatch as error:
        raise UserError(f"{what}: {error}") from None
    return sink.getvalue()


def read_manifest_json(client: RegistryClient, repository: str, reference: str, accept: str) -> tuple[dict, bytes] | None:
    """A manifest or index as JSON (and its bytes), None when there is none."""
    found = client.find_manifest(repository, reference, accept)
    if found is None:
        return None
    try:
        parsed = json.loads(found.body)
    except ValueError:
        raise UserError(f"{client.registry}/{repository}:{reference} is not JSON: refusing to read or change it") from None
    if not isinstance(parsed, dict):
        raise UserError(f"{client.registry}/{repository}:{reference} is not a manifest: refusing to read or change it")
    return parsed, found.body


# --- OCI 1.1 referrers -------------------------------------------------------------------


@dataclass(frozen=True)
class Referrer:
    digest: str
    artifact_type: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def descriptor(self) -> dict[str, object]:
        described: dict[str, object] = {"mediaType": OCI_MANIFEST, "digest": self.digest, "size": self.size,
                                        "artifactType": self.artifact_type}
        if self.annotations:
            described["annotations"] = dict(sorted(self.annotations.items()))
        return described


def compose_referrer(subject: Subject, artifact_type: str, layer: Blob, layer_annotations: dict[str, str],
                     annotations: dict[str, str]) -> bytes:
    """An OCI 1.1 artifact manifest: the empty config, one layer, `subject` and `artifactType`.
    Pure: the same inputs give the same digest, so a repeated attach adds nothing."""
    empty = Blob(EMPTY_MEDIA_TYPE, sha256_digest(EMPTY_BYTES), len(EMPTY_BYTES))
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [layer.descriptor(dict(sorted(layer_annotations.items())))],
        "subject": subject.descriptor(),
    }
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    return compact_json(manifest)


def push_referrer(client: RegistryClient, subject: Subject, manifest: bytes, artifact_type: str,
                  annotations: dict[str, str]) -> str:
    """Stores a referrer by digest, then, unless the registry indexed it itself (`OCI-Subject`),
    adds it to the fallback index. The referrer goes first, so the index never names a manifest
    the registry lacks. Returns where it is listed: "referrers API" or the fallback tag."""
    repository = subject.reference.repository
    digest = sha256_digest(manifest)
    stored = client.store_manifest(repository, digest, manifest, OCI_MANIFEST)
    if stored.digest and stored.digest != digest:
        raise UserError(f"registry {client.registry} stored the referrer as {stored.digest}, not {digest}")
    if stored.subject:
        return "referrers API"
    entry = Referrer(digest, artifact_type, len(manifest), annotations)
    return add_to_fallback_index(client, subject, entry)


def add_to_fallback_index(client: RegistryClient, subject: Subject, entry: Referrer) -> str:
    """Read the index at `sha256-<hex>`, add `entry` unless it is there, write it back. Others'
    entries (and the index's own fields) are kept as they were. (Two clients writing at the same
    moment can still lose one entry: registries offer no conditional PUT of a tag.)"""
    repository = subject.reference.repository
    tag = attached_tag(subject.digest)
    existing = read_manifest_json(client, repository, tag, OCI_INDEX)
    index: dict = existing[0] if existing else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    manifests = index.get("manifests")
    if index.get("mediaType", OCI_INDEX) != OCI_INDEX or not isinstance(manifests, list):
        raise UserError(f"{client.registry}/{repository}:{tag} is not an image index: the referrers fallback tag is "
                        "taken by something else; not changing it")
    if any(isinstance(m, dict) and m.get("digest") == entry.digest for m in manifests):
        return tag
    index["manifests"] = manifests + [entry.descriptor()]
    client.store_manifest(repository, tag, compact_json(index), OCI_INDEX)
    return tag


def list_referrers(client: RegistryClient, subject: Subject) -> tuple[list[dict], str]:
    """The referrers' descriptors, and where they were found: the registry's referrers API, else
    the fallback index (else none)."""
    repository = subject.reference.repository
    index = client.list_referrers(repository, subject.digest)
    if index is not None:
        return [m for m in index.get("manifests") or [] if isinstance(m, dict)], "referrers API"
    tag = attached_tag(subject.digest)
    existing = read_manifest_json(client, repository, tag, OCI_INDEX)
    if existing is None:
        return [], "none (no referrers API, no fallback index)"
    return [m for m in existing[0].get("manifests") or [] if isinstance(m, dict)], f"fallback index {tag}"


# --- discover ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    kind: str  # "signature", "attestation" or the referrer's artifactType
    where: str  # tag or digest
    detail: str  # counts and types, for people


@dataclass(frozen=True)
class Discovery:
    subject: Subject
    attachments: list[Attachment]
    referrers_source: str

    def lines(self) -> list[str]:
        lines = [f"{self.subject.reference}"]
        for attachment in self.attachments:
            lines.append(f"  {attachment.kind}  {attachment.where}  {attachment.detail}")
        if not self.attachments:
            lines.append("  nothing attached")
        lines.append(f"  (referrers from: {self.referrers_source})")
        return lines

    def as_json(self) -> dict[str, object]:
        return {"reference": str(self.subject.reference), "digest": self.subject.digest,
                "referrers_source": self.referrers_source,
                "attachments": [{"kind": a.kind, "where": a.where, "detail": a.detail} for a in self.attachments]}


def discover(client: RegistryClient, reference: ImageReference) -> Discovery:
    """`invoke referrers REF`: cosign's `.sig` and `.att` tags and the OCI 1.1 referrers of the
    manifest the reference names."""
    subject = resolve_subject(client, reference)
    repository = reference.repository
    attachments: list[Attachment] = []
    tags = set(client.list_tags(repository))
    for suffix, kind in ((".sig", "signature"), (".att", "attestation")):
        tag = attached_tag(subject.digest, suffix)
        if tag not in tags:
            continue
        found = read_manifest_json(client, repository, tag, ANY_MANIFEST)
        layers = [layer for layer in (found[0].get("layers") or [] if found else []) if isinstance(layer, dict)]
        types = sorted({str(layer.get("mediaType")) for layer in layers})
        attachments.append(Attachment(kind, tag, f"{len(layers)} layer(s): {', '.join(types) or 'none'}"))
    referrers, source = list_referrers(client, subject)
    for entry in referrers:
        annotations = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
        title = annotations.get(TITLE_ANNOTATION) or ""
        attachments.append(Attachment(str(entry.get("artifactType") or entry.get("mediaType") or "?"),
                                      str(entry.get("digest")), f"{entry.get('size')} bytes" + (f", {title}" if title else "")))
    return Discovery(subject, attachments, source)


# --- SBOM ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttachedSbom:
    subject: Subject
    referrer_digest: str
    listed_in: str  # "referrers API" or the fallback index tag
    attestation_tag: str | None = None

    def lines(self) -> list[str]:
        lines = [f"SBOM: {self.subject.reference.registry}/{self.subject.reference.repository}@{self.referrer_digest} "
                 f"(listed in the {self.listed_in})"]
        if self.attestation_tag:
            lines.append(f"Attested: {self.attestation_tag}")
        return lines


def attach_sbom(client: RegistryClient, reference: ImageReference, sbom: bytes, key=None,
                created: str | None = None) -> AttachedSbom:
    """Attaches a CycloneDX JSON SBOM to the manifest `reference` names, as an OCI 1.1 referrer
    (listed by the referrers API or in the fallback index); with a signing key, also as a signed
    in-toto attestation at `sha256-<hex>.att`, which cosign and Kyverno verify."""
    try:
        document = json.loads(sbom)
    except ValueError:
        raise UserError("the SBOM is not JSON: expected CycloneDX JSON") from None
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        raise UserError("the SBOM is not a CycloneDX document (bomFormat CycloneDX)")
    subject = resolve_subject(client, reference)
    repository = reference.repository
    layer = upload_bytes(client, repository, CYCLONEDX_MEDIA_TYPE, sbom)
    upload_bytes(client, repository, EMPTY_MEDIA_TYPE, EMPTY_BYTES)
    annotations = {"org.opencontainers.image.created": created} if created else {}
    manifest = compose_referrer(subject, CYCLONEDX_MEDIA_TYPE, layer, {TITLE_ANNOTATION: "sbom.cdx.json"}, annotations)
    listed_in = push_referrer(client, subject, manifest, CYCLONEDX_MEDIA_TYPE, annotations)
    attestation = None
    if key is not None:
        from .signing import attest_sbom

        attestation = attest_sbom(client, subject, document, key)
    return AttachedSbom(subject, sha256_digest(manifest), listed_in, attestation)


def module_sbom(project: Project, module: BuiltModule, environ: Mapping[str, str]) -> bytes:
    """The pushed module's CycloneDX SBOM, for the build push made (all formats; SIMD or not)."""
    from .build import BuildRequest
    from .sbom import build_sbom

    return build_sbom(project, BuildRequest(simd=module.simd), module, dict(environ))
