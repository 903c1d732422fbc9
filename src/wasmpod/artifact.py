"""The OCI artifact Krustlet pulls, composed as bytes: pure, so its digest is known before upload.

wasm-to-oci's layout: an OCI image manifest whose body carries no `mediaType` (Krustlet's
oci-distribution 0.8 refuses `application/vnd.oci.image.manifest.v1+json` there), the two-byte
`{}` config and exactly one wasm layer titled with the module's file name.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.wasm.content.layer.v1+wasm"
CONFIG_BYTES = b"{}"
# Which build an artifact carries: the WebAssembly features its module uses beyond the MVP
# (rustc's names, comma-separated). Without "simd128" it loads on Krustlet's wasmtime 0.30.
WASM_FEATURES_ANNOTATION = "io.wasmpod.wasm.features"
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
# Media types a pull accepts for the manifest (what Krustlet and wasm-to-oci send).
MANIFEST_ACCEPT = ", ".join([MANIFEST_MEDIA_TYPE, "application/vnd.docker.distribution.manifest.v2+json"])


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file read in pieces, so memory does not grow with its size."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Blob:
    media_type: str
    digest: str
    size: int

    def descriptor(self, annotations: dict[str, str] | None = None) -> dict[str, object]:
        described: dict[str, object] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if annotations:
            described["annotations"] = annotations
        return described


@dataclass(frozen=True)
class Artifact:
    """Everything a push uploads: the module file, the config bytes and the manifest bytes."""

    module: Path
    layer: Blob
    config: Blob
    manifest: bytes

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)


@dataclass(frozen=True)
class Provenance:
    """The standard `org.opencontainers.image.*` annotations; None values are left out."""

    source: str | None = None
    revision: str | None = None
    version: str | None = None
    created: str | None = None
    # The WebAssembly features the module uses beyond the MVP ("bulk-memory,...,simd128"), or None.
    wasm_features: str | None = None

    def annotations(self) -> dict[str, str]:
        fields = {"source": self.source, "revision": self.revision, "version": self.version, "created": self.created}
        annotations = {f"org.opencontainers.image.{name}": value for name, value in fields.items() if value}
        annotations[WASM_FEATURES_ANNOTATION] = self.wasm_features or "mvp"
        return annotations


def compose_artifact(module: Path, provenance: Provenance, layer_digest: str | None = None) -> Artifact:
    """The manifest bytes for `module`; the same module and provenance give the same digest."""
    layer = Blob(LAYER_MEDIA_TYPE, layer_digest or file_digest(module), module.stat().st_size)
    config = Blob(CONFIG_MEDIA_TYPE, sha256_digest(CONFIG_BYTES), len(CONFIG_BYTES))
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "config": config.descriptor(),
        "layers": [layer.descriptor({"org.opencontainers.image.title": module.name})],
    }
    annotations = provenance.annotations()
    if annotations:
        manifest["annotations"] = annotations
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    return Artifact(module=module, layer=layer, config=config, manifest=body)


def check_krustlet_manifest(body: bytes) -> dict:
    """Krustlet's rules for a manifest it will run; raises ValueError naming the broken rule."""
    try:
        manifest = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: a hostile "[[[[..." nested past the parser's depth
        raise ValueError("the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise ValueError("the manifest is not a JSON object")
    media_type = manifest.get("mediaType")
    if media_type not in (None, "application/vnd.docker.distribution.manifest.v2+json"):
        raise ValueError(f"the manifest body carries mediaType {str(media_type)[:100]!r}, which Krustlet refuses")
    layers = manifest.get("layers") or []
    if not isinstance(layers, list) or not layers:
        raise ValueError("the manifest has no layer")
    if not all(isinstance(layer, dict) for layer in layers):
        raise ValueError("a layer of the manifest is not a JSON object")
    wrong = [str(layer.get("mediaType"))[:100] for layer in layers if layer.get("mediaType") != LAYER_MEDIA_TYPE]
    if wrong:
        raise ValueError(f"layers of type {', '.join(wrong)} are not wasm modules ({LAYER_MEDIA_TYPE})")
    for layer in layers:
        # The digest goes into a URL path and the size bounds the download: both must be sane.
        if not isinstance(layer.get("digest"), str) or not _SHA256.match(layer["digest"]):
            raise ValueError(f"layer digest {str(layer.get('digest'))[:100]!r} is not sha256:<64 hex digits>")
        if type(layer.get("size")) is not int or layer["size"] < 0:
            raise ValueError(f"layer size {str(layer.get('size'))[:40]!r} is not a byte count")
    return manifest


def provenance_from_git(root: Path, version: str, environ: dict[str, str]) -> Provenance:
    """Source and revision from git; `created` from SOURCE_DATE_EPOCH or the commit time, so the
    same commit always yields the same manifest digest. Outside git: only what is known."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() or None if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        revision = f"{revision}-dirty" if revision else None
    epoch_text = environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct")
    created = None
    if epoch_text:
        try:
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch_text)))
        except ValueError:
            created = None
    source = _public_url(git("config", "--get", "remote.origin.url"))
    return Provenance(source=source, revision=revision, version=version, created=created)


def _public_url(remote: str | None) -> str | None:
    """A remote URL fit to publish: `git@host:org/repo.git` -> `https://host/org/repo`; no credentials."""
    if not remote:
        return None
    if remote.startswith("git@") and ":" in remote:
        host, path = remote[4:].split(":", 1)
        remote = f"https://{host}/{path}"
    if "://" in remote and "@" in remote.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = remote.split("://", 1)
        remote = f"{scheme}://{rest.split('@', 1)[1]}"
    if remote.startswith(("/", "file:")):
        return None
    return remote.removesuffix(".git")
