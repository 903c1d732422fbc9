"""A pull written from Krustlet's rules (../shared/reference/krustlet-and-oci.md), with urllib only,
independent of the toolchain's client: the check that Krustlet would accept what we pushed."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
WASM_LAYER = "application/vnd.wasm.content.layer.v1+wasm"


class Refused(Exception):
    pass


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    params = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        params[key] = value.strip('"')
    return scheme.lower(), params


def krustlet_pull(registry: str, repository: str, reference: str, username: str | None = None,
                  password: str | None = None, scheme: str = "http", cafile: str | None = None) -> bytes:
    context = ssl.create_default_context(cafile=cafile) if scheme == "https" else None
    base = f"{scheme}://{registry}/v2/"
    authorization = None
    try:
        urllib.request.urlopen(base, context=context, timeout=10)
    except urllib.error.HTTPError as error:
        if error.code != 401:
            raise
        kind, params = _challenge(error.headers.get("WWW-Authenticate", ""))
        if kind == "bearer":
            query = urllib.parse.urlencode({"service": params.get("service", ""),
                                            "scope": f"repository:{repository}:pull"})
            request = urllib.request.Request(f"{params['realm']}?{query}")
            if username:
                request.add_header("Authorization", "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())
            token = json.load(urllib.request.urlopen(request, context=context, timeout=10))
            authorization = "Bearer " + (token.get("token") or token["access_token"])
        else:
            authorization = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def get(path: str, accept: str | None = None) -> bytes:
        request = urllib.request.Request(f"{base}{repository}/{path}")
        if accept:
            request.add_header("Accept", accept)
        if authorization:
            request.add_header("Authorization", authorization)
        return urllib.request.urlopen(request, context=context, timeout=30).read()

    manifest = json.loads(get(f"manifests/{reference}", ACCEPT))
    media_type = manifest.get("mediaType")
    if media_type is not None and media_type != "application/vnd.docker.distribution.manifest.v2+json":
        raise Refused(f"unsupported media type {media_type}")
    layers = manifest.get("layers") or []
    if not layers:
        raise Refused("no layers")
    if any(layer.get("mediaType") != WASM_LAYER for layer in layers):
        raise Refused("a layer that is not wasm")
    return get(f"blobs/{layers[0]['digest']}")
