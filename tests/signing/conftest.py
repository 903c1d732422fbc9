"""Keys, a pushed module and a client for the signing tests (real docker-registry on 127.0.0.1)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wasmpod.artifact import Provenance, compose_artifact  # noqa: E402
from wasmpod.keys import SigningKey, load_signing_key  # noqa: E402
from wasmpod.oci_client import RegistryClient, Transport  # noqa: E402
from wasmpod.push import push_artifact  # noqa: E402
from wasmpod.reference import ImageReference  # noqa: E402

# A copy of ../shared/reference/cosign-fixtures (Apache-2.0 test data from containers/image and cosign).
FIXTURES = Path(__file__).resolve().parent / "cosign-fixtures"
FIXTURE_PASSWORD = "hello"
# A module small enough to push in milliseconds: the signing tests are about what hangs off it.
TINY_MODULE = b"\x00asm\x01\x00\x00\x00"


@dataclass
class Pushed:
    client: RegistryClient
    reference: ImageReference  # by tag
    digest: str
    registry: object

    def push_again(self, tmp_path: Path, content: bytes) -> str:
        """Different bytes under the same tag; returns the new digest."""
        return push_module_bytes(self.client, self.reference, tmp_path, content, name="again")


def push_module_bytes(client: RegistryClient, reference: ImageReference, tmp_path: Path, content: bytes,
                      name: str = "module") -> str:
    module = tmp_path / f"{name}.wasm"
    module.write_bytes(content)
    return push_artifact(client, reference, compose_artifact(module, Provenance(version="1.0.0"))).digest


@pytest.fixture
def fixtures() -> Path:
    assert FIXTURES.is_dir(), f"the cosign fixtures are missing: {FIXTURES}"
    return FIXTURES


@pytest.fixture
def cosign_key(fixtures) -> SigningKey:
    """cosign's own key (the pair of nothing in the fixtures' signatures; a real cosign-made key file)."""
    return load_signing_key(str(fixtures / "encrypted-sigstore-format.key"), {"COSIGN_PASSWORD": FIXTURE_PASSWORD})


@pytest.fixture
def other_cosign_key(fixtures) -> SigningKey:
    return load_signing_key(str(fixtures / "encrypted-cosign-format.key"), {"COSIGN_PASSWORD": FIXTURE_PASSWORD})


@pytest.fixture
def pushed(registry, tmp_path) -> Pushed:
    client = RegistryClient(registry.address, Transport.choose(registry.address), None)
    reference = ImageReference(registry.address, "fractalify", "v1.0.0")
    return Pushed(client, reference, push_module_bytes(client, reference, tmp_path, TINY_MODULE), registry)
