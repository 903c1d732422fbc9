"""The settings each step runs with: frozen, made once from flags (and, later, config layers),
validated once, and handed down. No other module reads flags or the environment for these."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError
from .reference import check_registry, check_repository, check_tag


SIMD_TAG_SUFFIX = "-simd"


@dataclass(frozen=True)
class RegistrySettings:
    """Where push, pull and deploy find the registry, and how to talk to it."""

    registry: str | None = None  # None: the embedded local registry
    repository: str = "fractalify"
    tag: str | None = None  # None: "v" + the crate's version
    plain_http: bool | None = None  # None: plain HTTP for loopback registries only
    insecure: bool = False  # skip TLS verification
    ca_file: str | None = None
    local_port: int = 5000
    sign_key: str | None = None  # push signs what it pushed with this key (a file, or env://NAME)

    def __post_init__(self) -> None:
        if self.registry is not None:
            check_registry(self.registry)
        check_repository(self.repository)
        if self.tag is not None:
            check_tag(self.tag)
        if not 1 <= self.local_port <= 65535:
            raise UserError(f"the local registry port must be 1..65535, not {self.local_port}")
        if self.insecure and self.ca_file:
            raise UserError("--insecure skips TLS verification, so --ca-file would be ignored: give one of them")

    def tag_for(self, crate_version: str, simd: bool = False) -> str:
        """The tag: given, or v<crate version>; a SIMD build's carries `-simd`, so the two builds
        of one version never overwrite each other."""
        tag = self.tag or f"v{crate_version}"
        return f"{tag}{SIMD_TAG_SUFFIX}" if simd and not tag.endswith(SIMD_TAG_SUFFIX) else tag
