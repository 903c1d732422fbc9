"""The supply-chain tasks: `keygen`, `sign`, `verify`, `referrers` (cosign's formats; see signing.py).

Each parses its flags, calls one library function, and prints. `push --sign-key`/`--sbom` and
`deploy --verify-key` are flags of those tasks (invoke_tasks.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from .cli import print_json, task

KEY_HELP = "cosign private key: a file (cosign.key, or PKCS#8 PEM) or env://NAME (PEM text in a variable); password from COSIGN_PASSWORD"
PUBLIC_KEY_HELP = "public key to verify with: a file (cosign.pub) or env://NAME"
CONNECTION_HELP = {
    "reference": "REGISTRY/REPOSITORY[:TAG][@DIGEST]",
    "plain_http": "talk plain HTTP (default for loopback registries only)",
    "insecure": "skip TLS certificate verification",
    "ca_file": "CA bundle that signed the registry's certificate",
    "json": "print JSON instead of lines",
}


def _client_for(c, reference: str, plain_http: bool, insecure: bool, ca_file: str | None):
    from .invoke_tasks import project_of, registry_settings_of
    from .push import connect
    from .reference import parse_reference

    image = parse_reference(reference)
    settings = registry_settings_of(c, image.registry, image.repository, None, plain_http, insecure, ca_file)
    return connect(project_of(c).registry_dir, settings, dict(os.environ)), image


@task(help={"out": "path prefix of the two files: PREFIX.key and PREFIX.pub (default: cosign)",
            "force": "replace existing files"})
def keygen(c, out="cosign", force=False):
    """Write a P-256 key pair as cosign does: PREFIX.key (encrypted with COSIGN_PASSWORD, or asked) and PREFIX.pub."""
    from .keys import generate_key_pair, password_from

    written = generate_key_pair(Path(out), password_from(dict(os.environ)), force=force)
    print(f"Private key written to {written.private}")
    print(f"Public key written to {written.public}")


@task(help={**{k: v for k, v in CONNECTION_HELP.items() if k != "json"}, "key": KEY_HELP})
def sign(c, reference, key, plain_http=False, insecure=False, ca_file=None):
    """Sign the manifest the registry holds for REF, cosign's way (appended at sha256-<hex>.sig)."""
    from .keys import load_signing_key
    from .signing import sign_image

    signing_key = load_signing_key(key, dict(os.environ))
    client, image = _client_for(c, reference, plain_http, insecure, ca_file)
    print("\n".join(sign_image(client, image, signing_key).lines()))


@task(help={**CONNECTION_HELP, "key": PUBLIC_KEY_HELP})
def verify(c, reference, key, plain_http=False, insecure=False, ca_file=None, json=False):
    """Pass exactly when `cosign verify --key KEY --insecure-ignore-tlog REF` would; say why not in one line."""
    from .keys import load_verify_key
    from .signing import NotVerified, verify_image

    public = load_verify_key(key, dict(os.environ))
    client, image = _client_for(c, reference, plain_http, insecure, ca_file)
    result = verify_image(client, image, public)
    if json:
        print_json({"reference": str(result.subject.reference), "verified": result.verified, "reason": result.reason})
    if not result.verified:
        raise NotVerified(f"{result.subject.reference} is not verified: {result.reason}")
    if not json:
        print("\n".join(result.lines()))


@task(help=CONNECTION_HELP)
def referrers(c, reference, plain_http=False, insecure=False, ca_file=None, json=False):
    """List what is attached to REF: cosign's .sig/.att tags and OCI 1.1 referrers (API or fallback index)."""
    from .referrers import discover

    client, image = _client_for(c, reference, plain_http, insecure, ca_file)
    found = discover(client, image)
    if json:
        print_json(found.as_json())
    else:
        print("\n".join(found.lines()))


SUPPLY_CHAIN_TASKS = (keygen, sign, verify, referrers)
