"""`push` and `pull`: the module as an OCI artifact in the layout its runtime pulls (Krustlet's or
runwasi's), verified by reading it back."""

from __future__ import annotations

import io
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from .artifact import (Artifact, check_krustlet_manifest, check_runwasi_config, check_runwasi_manifest, compose_artifact,
                       compose_wasm_oci_artifact, provenance_from_git, sha256_digest)
from .atomic_files import make_directory
from .build import BuiltModule, wasm_features
from .credentials import Credentials, resolve_credentials
from .errors import UserError
from .local_registry import LocalRegistry
from .oci_client import BlobMismatch, ProgressCallback, RegistryClient, Transport
from .project import Project
from .reference import ImageReference
from .settings import KRUSTLET, RUNWASI, RegistrySettings


@dataclass(frozen=True)
class Transfer:
    """What push and pull print, as wasm-to-oci did."""

    verb: str  # "Pushed" or "Pulled"
    reference: ImageReference
    size: int
    digest: str
    blobs_uploaded: int = 0
    path: Path | None = None
    runtime: str = KRUSTLET  # whose layout
    layer_digest: str = ""  # the module's, checked: the local node keys its compiled cache by it
    moved_from: str | None = None  # the digest the tag named before this push, when it named another
    registry_note: str | None = None  # the local registry on our port is another checkout's
    attached: tuple[str, ...] = ()  # what push attached: signature, SBOM (one line each)

    def lines(self) -> list[str]:
        """Notes first, so Pushed/Size/Digest stay together after them (then what was attached)."""
        lines = []
        if self.moved_from:
            # IfNotPresent (Kubernetes' default for a tag other than latest) keeps a node's cached old module.
            lines.append(f"tag {self.reference.tag} moved from {self.moved_from} to {self.digest}: nodes pulling "
                         "with imagePullPolicy IfNotPresent keep the old module; deploy with --pin to name the digest")
        if self.registry_note:
            lines.append(self.registry_note)
        return lines + [f"{self.verb}: {self.reference}", f"Size: {self.size}", f"Digest: {self.digest}", *self.attached]

    def as_json(self) -> dict[str, object]:
        described: dict[str, object] = {
            "reference": str(self.reference), "pinned": str(self.reference.with_digest(self.digest)),
            "size": self.size, "digest": self.digest, "runtime": self.runtime,
        }
        if self.verb == "Pushed":
            described["blobs_uploaded"] = self.blobs_uploaded
            described["moved_from"] = self.moved_from
            described["registry_note"] = self.registry_note
        if self.path is not None:
            described["path"] = str(self.path)
        if self.attached:
            described["attached"] = list(self.attached)
        return described


class _Discard:
    """A sink that only counts: verifying a layer must not hold it in memory."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


def push_artifact(client: RegistryClient, target: ImageReference, artifact: Artifact,
                  on_progress: ProgressCallback | None = None) -> Transfer:
    """Uploads the blobs the registry lacks, then the manifest, then reads both back: success
    is reported only for what the registry holds, byte for byte."""
    if not target.tag:
        raise UserError(f"{target} has no tag to push to")
    repository = target.repository
    client.check_access()
    with tempfile.TemporaryDirectory(prefix="wasmpod-push-") as scratch:
        config_path = Path(scratch) / "config.json"
        config_path.write_bytes(artifact.config_bytes)
        uploaded = int(client.upload_blob(repository, artifact.config, config_path))
    uploaded += int(client.upload_blob(repository, artifact.layer, artifact.module, on_progress))
    previous = _tagged_digest(client, target)
    stored_digest = client.put_manifest(repository, target.tag, artifact.manifest)
    expected = artifact.manifest_digest
    if stored_digest and stored_digest != expected:
        raise UserError(f"registry {client.registry} stored the manifest as {stored_digest}, not {expected}: "
                        "something between us and it changed the bytes")
    _verify(client, target, artifact)
    return Transfer("Pushed", target, artifact.layer.size, expected, blobs_uploaded=uploaded, runtime=artifact.runtime,
                    layer_digest=artifact.layer.digest, moved_from=previous if previous and previous != expected else None)


def _tagged_digest(client: RegistryClient, target: ImageReference) -> str | None:
    """The digest of what the tag names now; None when it names nothing (or the registry will
    not say: the push itself then reports what is wrong)."""
    try:
        body, _ = client.get_manifest(target.repository, target.tag or "")
    except UserError:
        return None
    return sha256_digest(body)


def _verify(client: RegistryClient, target: ImageReference, artifact: Artifact) -> None:
    body, _ = client.get_manifest(target.repository, target.tag or "")
    if sha256_digest(body) != artifact.manifest_digest:
        raise UserError(f"{target} now points to {sha256_digest(body)}, not the manifest just pushed "
                        f"({artifact.manifest_digest}): damaged on the way, or pushed again meanwhile?")
    try:
        client.download_blob(target.repository, artifact.layer.digest, artifact.layer.size, _Discard())
    except BlobMismatch as error:
        raise UserError(f"reading the module layer back: {error}: the upload was damaged; push again") from None
    try:
        # The runwasi config is what the shim reads as the platform: it must be there, byte for byte.
        client.download_blob(target.repository, artifact.config.digest, artifact.config.size, _Discard())
    except BlobMismatch as error:
        raise UserError(f"reading the config back: {error}: the upload was damaged; push again") from None


def pull_module(client: RegistryClient, source: ImageReference, output: Path | None,
                runtime: str = KRUSTLET) -> Transfer:
    """Fetches a module as its runtime would and verifies every digest; the file appears only
    complete. Krustlet: its manifest rules, then `layers[0]`. runwasi: the shim's rules for the
    manifest and for the config it reads as a platform, then the one layer."""
    body, reported = client.get_manifest(source.repository, source.reference)
    digest = sha256_digest(body)
    if source.digest and digest != source.digest:
        raise UserError(f"the registry returned a manifest with digest {digest}, not the {source.digest} asked for")
    if reported and reported != digest:
        raise UserError(f"the registry reports digest {reported} for a manifest whose bytes hash to {digest}")
    try:
        if runtime == RUNWASI:
            manifest = check_runwasi_manifest(body)
            check_runwasi_config(_fetch_config(client, source, manifest["config"]), manifest)
        else:
            manifest = check_krustlet_manifest(body)
    except ValueError as error:
        who = "runwasi's shims" if runtime == RUNWASI else "Krustlet"
        raise UserError(f"{source} is not a module {who} would run: {error}") from None
    layer = manifest["layers"][0]
    target = output if output is not None else Path.cwd()
    if target.is_dir():  # only then does the layer's title name the file
        annotations = layer.get("annotations")  # a hostile manifest may put anything here
        title = annotations.get("org.opencontainers.image.title") if isinstance(annotations, dict) else None
        target = target / (_plain_file_name(title) if title is not None else f"{source.repository.rsplit('/', 1)[-1]}.wasm")
    if target.exists() and not target.is_file():  # a device or a socket would be replaced by the rename
        raise UserError(f"{target} is not a regular file: pull --output into a directory or to a new file name")
    make_directory(target.parent, "the output directory")
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as handle:
        temp = Path(handle.name)
        try:
            client.download_blob(source.repository, layer["digest"], layer["size"], handle)
        except BlobMismatch as error:
            temp.unlink(missing_ok=True)
            raise UserError(f"the module layer: {error}: nothing written") from None
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    temp.replace(target)
    return Transfer("Pulled", source, layer["size"], digest, path=target, runtime=runtime, layer_digest=layer["digest"])


def _fetch_config(client: RegistryClient, source: ImageReference, descriptor: dict) -> bytes:
    """The config blob, its size bounded by the manifest's check and its digest verified."""
    into = io.BytesIO()
    try:
        client.download_blob(source.repository, descriptor["digest"], descriptor["size"], into)
    except BlobMismatch as error:
        raise UserError(f"the config of {source}: {error}") from None
    return into.getvalue()


def _plain_file_name(title: object) -> str:
    """The layer's title as a file name, only if it is a plain one: a hostile registry must not
    pick where the module is written (`../x`, `/etc/x`), nor write a hidden file (`.bashrc`)."""
    name = title if isinstance(title, str) else ""
    if (not name or name.startswith(".") or "/" in name or "\\" in name or len(name.encode()) > 255
            or any(not char.isprintable() for char in name)):
        raise UserError(f"the module layer's title {str(title)[:80]!r} is not a plain file name: refused; "
                        "name the output file with -o FILE")
    return name


def terminal_progress(label: str, stream: TextIO = sys.stderr) -> ProgressCallback | None:
    """A one-line progress bar on a terminal; nothing when output goes to a file or CI log."""
    if not stream.isatty():
        return None

    def show(sent: int, total: int) -> None:
        width = 30
        filled = int(width * sent / total) if total else width
        stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] "
                     f"{sent / 2**20:.1f}/{total / 2**20:.1f} MiB")
        if sent >= total:
            stream.write("\n")
        stream.flush()

    return show


def connect(registry_dir: Path | None, settings: RegistrySettings, environ: dict[str, str],
            credentials: Credentials | None | bool = True) -> RegistryClient:
    """A client for the settings' registry; the embedded local one (started when it is not
    running) when none is named. A named registry is never started for you.

    `credentials`: True resolves them from the environment and docker config; None is anonymous.
    """
    if settings.registry is None:
        if registry_dir is None:
            raise UserError("name a registry with --registry")
        address = LocalRegistry(registry_dir, settings.local_port).up().address
    else:
        address = settings.registry
    if credentials is True:
        credentials = resolve_credentials(address, environ)
    transport = Transport.choose(address, settings.plain_http, settings.insecure, settings.ca_file)
    return RegistryClient(address, transport, credentials or None)


@dataclass(frozen=True)
class PushReport:
    """One push: an artifact per runtime layout asked for (Krustlet's first)."""

    pushed: tuple[Transfer, ...]

    def lines(self) -> list[str]:
        if len(self.pushed) == 1:
            return self.pushed[0].lines()  # wasm-to-oci's three lines, as before
        return [f"{line} ({transfer.runtime})" if line.startswith("Digest:") else line
                for transfer in self.pushed for line in transfer.lines()]

    def as_json(self) -> dict[str, object]:
        if len(self.pushed) == 1:
            return self.pushed[0].as_json()
        return {"pushed": [transfer.as_json() for transfer in self.pushed],
                **{f"{transfer.runtime}_digest": transfer.digest for transfer in self.pushed}}


COMPOSERS = {KRUSTLET: compose_artifact, RUNWASI: compose_wasm_oci_artifact}


def push_module(project: Project, module: BuiltModule, settings: RegistrySettings, environ: dict[str, str],
                runtimes: tuple[str, ...] = (KRUSTLET,), sbom: bool = False) -> PushReport:
    """`invoke push`: the built module to the settings' registry in each runtime's layout, each
    under its own tag (v<crate version>[-simd][-runwasi] by default); with `settings.sign_key`
    each signed and with `sbom` its SBOM attached, once it is verified there. The layer blob is
    shared, so a second layout uploads only its config and manifest."""
    from .signing import SupplyChain

    # The key (and its password) first: a wrong one must fail before anything is pushed.
    supply_chain = SupplyChain.prepare(settings.sign_key, sbom, project, module, environ)
    note = None
    if settings.registry is None:
        note = LocalRegistry(project.registry_dir, settings.local_port).up().foreign_note()
    client = connect(project.registry_dir, settings, environ)
    provenance = replace(provenance_from_git(project.root, project.crate_version, environ),
                         wasm_features=",".join(wasm_features(module.simd)))
    pushed = []
    for runtime in runtimes:
        target = ImageReference(client.registry, settings.repository,
                                settings.tag_for(project.crate_version, module.simd, runtime))
        artifact = COMPOSERS[runtime](module.path, provenance, layer_digest=f"sha256:{module.sha256}")
        transfer = push_artifact(client, target, artifact, terminal_progress(f"uploading {module.path.name}"))
        attached = supply_chain.attach(client, transfer.reference.with_digest(transfer.digest))
        pushed.append(replace(transfer, attached=attached))
    if note:  # said once, before the first artifact's lines
        pushed[0] = replace(pushed[0], registry_note=note)
    return PushReport(tuple(pushed))
