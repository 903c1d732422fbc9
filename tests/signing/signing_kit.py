"""Shared by the signing tests: the cosign fixtures' place, a tiny module and pushing it.
(Not in conftest.py: every test folder has a `conftest` module, and an import by that name would
find whichever was loaded first.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wasmpod.artifact import Provenance, compose_artifact
from wasmpod.oci_client import RegistryClient
from wasmpod.push import push_artifact
from wasmpod.reference import ImageReference

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
