"""Image references (`registry/repository:tag@digest`): parsing and the loopback rule."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .errors import UserError

# The distribution spec's grammar, simplified to what a push or a Pod needs.
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class ImageReference:
    registry: str  # host[:port], exactly as written (pull secrets are keyed by it)
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def reference(self) -> str:
        """What goes after `/manifests/`: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> "ImageReference":
        return ImageReference(self.registry, self.repository, self.tag, digest)


def check_registry(registry: str) -> str:
    if not registry or "/" in registry or not _HOST.match(registry):
        raise UserError(f"registry {registry!r} is not a host[:port] (e.g. myregistry.azurecr.io or 127.0.0.1:5000)")
    return registry


def check_repository(repository: str) -> str:
    if not _REPOSITORY.match(repository or ""):
        raise UserError(f"repository {repository!r} is not valid: lower-case letters, digits and . _ - / only")
    return repository


def check_tag(tag: str) -> str:
    if not _TAG.match(tag or ""):
        raise UserError(f"tag {tag!r} is not valid: up to 128 letters, digits, '.', '_' or '-', not starting with '.' or '-'")
    return tag


def parse_reference(text: str) -> ImageReference:
    """Parses a full reference; the registry part is required (no implicit Docker Hub)."""
    rest, _, digest = text.strip().partition("@")
    if digest and not _DIGEST.match(digest):
        raise UserError(f"{text!r}: the digest must be sha256:<64 hex digits>")
    registry, slash, path = rest.partition("/")
    if not slash or not ("." in registry or ":" in registry or registry == "localhost"):
        raise UserError(f"{text!r} does not name a registry: write it as REGISTRY/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/NAME:v1")
    repository, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    return ImageReference(
        registry=check_registry(registry),
        repository=check_repository(repository),
        tag=check_tag(tag) if colon else None,
        digest=digest or None,
    )


def is_loopback(registry: str) -> bool:
    """`localhost`, 127.0.0.0/8 and ::1 (with or without a port): served over plain HTTP."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 or registry.startswith("[") else registry
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
