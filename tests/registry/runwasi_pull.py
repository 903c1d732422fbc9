"""A pull written from runwasi's rules and the CNCF Wasm OCI artifact spec
(../shared/reference/runwasi-and-wasm-oci.md), with urllib only, independent of the toolchain's
client and checks: the test that containerd's Wasm shims would accept what we pushed.

Refuses what the shim (or the spec it reads) refuses: a manifest body without the OCI manifest
mediaType, a layer of a type other than `application/wasm` or runwasi's component layer, other
than exactly one layer (the spec's v0), a config that is not `application/vnd.wasm.config.v0+json`,
whose `architecture` is not `wasm`, whose `layerDigests` are not the layers' digests in order, or
that is a wasip1 module with a `component`; and any blob whose bytes do not hash to its digest.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = f"{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json"
ACCEPTED_LAYERS = ("application/wasm", "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm")
WASM_CONFIG = "application/vnd.wasm.config.v0+json"


class Refused(Exception):
    pass


def _get(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url)
    if accept:
        request.add_header("Accept", accept)
    return urllib.request.urlopen(request, timeout=30).read()


def _blob(base: str, digest: str) -> bytes:
    data = _get(f"{base}blobs/{digest}")
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise Refused(f"blob {digest} does not hash to its digest")
    return data


def runwasi_pull(registry: str, repository: str, reference: str) -> tuple[bytes, dict]:
    """(the module's bytes, the config) of an anonymous plain-HTTP registry's artifact, or Refused."""
    base = f"http://{registry}/v2/{repository}/"
    manifest = json.loads(_get(f"{base}manifests/{reference}", ACCEPT))
    if manifest.get("mediaType") != OCI_MANIFEST:
        raise Refused(f"manifest mediaType {manifest.get('mediaType')!r}")
    layers = manifest.get("layers") or []
    if len(layers) != 1:
        raise Refused(f"{len(layers)} layers, not one")
    if layers[0].get("mediaType") not in ACCEPTED_LAYERS:
        raise Refused(f"layer type {layers[0].get('mediaType')!r}")
    if manifest["config"].get("mediaType") != WASM_CONFIG:
        raise Refused(f"config type {manifest['config'].get('mediaType')!r}")
    config = json.loads(_blob(base, manifest["config"]["digest"]))
    if config.get("architecture") != "wasm":
        raise Refused("the config is not a wasm platform")
    if config.get("layerDigests") != [layer["digest"] for layer in layers]:
        raise Refused("layerDigests do not match the layers")
    if config.get("os") == "wasip1" and config.get("component") is not None:
        raise Refused("a wasip1 module with a component")
    return _blob(base, layers[0]["digest"]), config
