"""Keys, a pushed module and a client for the signing tests (real docker-registry on 127.0.0.1)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from signing_kit import FIXTURE_PASSWORD, FIXTURES, TINY_MODULE, Pushed, push_module_bytes  # noqa: E402
from wasmpod.keys import SigningKey, load_signing_key  # noqa: E402
from wasmpod.oci_client import RegistryClient, Transport  # noqa: E402
from wasmpod.reference import ImageReference  # noqa: E402


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
