"""Real registries for the tests: Debian's docker-registry on 127.0.0.1, started and
stopped by the tests, plain, with htpasswd (bcrypt) auth, or with TLS from a CA made here."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
from testkit import invoke  # noqa: F401  (re-exported for the registry tests)

USER, PASSWORD = "ci-user", "s3cret-Pa55word"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Registry:
    address: str
    storage: Path
    log: Path
    config: Path
    process: subprocess.Popen | None = None
    ca_file: Path | None = None
    auth: bool = False
    extra: dict = field(default_factory=dict)

    def start(self) -> "Registry":
        env = {**os.environ, "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(self.storage)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(["docker-registry", "serve", str(self.config)], env=env,
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        scheme = "https" if self.ca_file else "http"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                import ssl
                context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
                urllib.request.urlopen(f"{scheme}://{self.address}/v2/", timeout=1, context=context)
                return self
            except urllib.error.HTTPError:
                return self  # 401: it answers
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()

    def upload_sessions(self, repository: str) -> int:
        """Blob upload sessions opened so far, from the registry's access log."""
        return self.log.read_text().count(f'"POST /v2/{repository}/blobs/uploads/')


def write_config(directory: Path, port: int, htpasswd: Path | None = None, tls: tuple[Path, Path] | None = None) -> Path:
    lines = ["version: 0.1", "log:", "  level: info", "  accesslog:", "    disabled: false",
             "storage:", "  filesystem:", f"    rootdirectory: {directory / 'storage'}", "  delete:", "    enabled: true",
             "http:", f"  addr: 127.0.0.1:{port}"]
    if tls:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
    if htpasswd:
        lines += ["auth:", "  htpasswd:", "    realm: test-registry", f"    path: {htpasswd}"]
    config = directory / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    return config


def make_registry(directory: Path, auth: bool = False, tls: bool = False) -> Registry:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    htpasswd = None
    if auth:
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    pair, ca = None, None
    if tls:
        ca, pair = make_certificates(directory)
    config = write_config(directory, port, htpasswd, pair)
    (directory / "storage").mkdir(exist_ok=True)
    return Registry(f"127.0.0.1:{port}", directory / "storage", directory / "registry.log", config, ca_file=ca, auth=auth)


def make_certificates(directory: Path) -> tuple[Path, tuple[Path, Path]]:
    """A CA, and a server certificate for IP 127.0.0.1 signed by it (openssl)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")
    return directory / "ca.crt", (directory / "server.crt", directory / "server.key")


def docker_config(env: dict, content: dict) -> Path:
    path = Path(env["DOCKER_CONFIG"]) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def basic_auth(user: str = USER, password: str = PASSWORD) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def pushed_fields(stdout: str) -> dict[str, str]:
    fields = dict(line.split(": ", 1) for line in stdout.strip().splitlines()[-3:])
    assert list(fields) == ["Pushed", "Size", "Digest"], stdout
    return fields


WASM = b"\0asm\1\0\0\0" + bytes(range(256)) * 64  # a small "module": 16 KiB and 8 bytes


def store_artifact(address: str, repository: str, tag: str, layers: list[tuple[str, bytes, dict | None]],
                   workdir: Path, credentials=None) -> tuple[bytes, list[str]]:
    """Stores a manifest with any `layers` ((media type, bytes, annotations)) and the wasm config in
    a real registry, through the client (so a test can store what a push never would). Returns the
    manifest's bytes and the layers' digests."""
    from wasmpod.artifact import CONFIG_BYTES, CONFIG_MEDIA_TYPE, Blob, sha256_digest
    from wasmpod.oci_client import RegistryClient, Transport

    client = RegistryClient(address, Transport.choose(address), credentials)
    workdir.mkdir(parents=True, exist_ok=True)
    descriptors = []
    for index, (media_type, data, layer_annotations) in enumerate([(CONFIG_MEDIA_TYPE, CONFIG_BYTES, None), *layers]):
        path = workdir / f"blob-{index}"
        path.write_bytes(data)
        blob = Blob(media_type, sha256_digest(data), len(data))
        client.upload_blob(repository, blob, path)
        descriptors.append(blob.descriptor(layer_annotations))
    body = json.dumps({"schemaVersion": 2, "config": descriptors[0], "layers": descriptors[1:]}).encode()
    client.put_manifest(repository, tag, body)
    return body, [str(d["digest"]) for d in descriptors[1:]]


def store_module(address: str, workdir: Path, title: str = "module.wasm", repository: str = "mod", tag: str = "v1",
                 credentials=None) -> tuple[bytes, str]:
    """`WASM` as a one-layer module titled `title`; returns the manifest's bytes and the layer's digest."""
    from wasmpod.artifact import LAYER_MEDIA_TYPE

    body, digests = store_artifact(address, repository, tag,
                                   [(LAYER_MEDIA_TYPE, WASM, {"org.opencontainers.image.title": title})],
                                   workdir, credentials)
    return body, digests[0]


def one_line(stderr: str) -> bool:
    """The house rule for failures: exactly one line, no traceback."""
    return len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
