"""Integrity and security properties of push and pull, each with a test that fails when the
property is broken: digests checked on read-back and on pull, TLS for every registry that is
not loopback, the CI variables before the docker config, wasm layers only, and no credentials
sent to a host a registry redirects to.

A registry that damages bytes or redirects elsewhere is a test double at a boundary we cannot
otherwise reach: `proxy.RegistryProxy`, a small HTTP server on 127.0.0.1 in front of a real
docker-registry (and, as the redirect target, a second one addressed as `localhost`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import RegistryProxy, is_blob_get, is_manifest_get
from registries import PASSWORD, USER, WASM, basic_auth, docker_config, invoke, one_line, store_artifact, store_module
from wasmpod.artifact import LAYER_MEDIA_TYPE, Provenance, compose_artifact, sha256_digest
from wasmpod.credentials import Credentials, resolve_credentials
from wasmpod.errors import UserError
from wasmpod.oci_client import RegistryClient, Transport
from wasmpod.push import push_artifact
from wasmpod.reference import ImageReference

TAR_LAYER = "application/vnd.oci.image.layer.v1.tar"


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def damage_blobs(request, status: int, body: bytes) -> bytes:
    """The same length, one bit changed: only a digest check can tell."""
    return flip_last_byte(body) if is_blob_get(request) and status == 200 and body else body


def damage_manifests(request, status: int, body: bytes) -> bytes:
    """A manifest still valid, pointing at the same layer, titled differently: only a digest check can tell."""
    return body.replace(b"module.wasm", b"modulX.wasm") if is_manifest_get(request) and status == 200 else body


def make_module(tmp_path: Path) -> Path:
    path = tmp_path / "module.wasm"
    path.write_bytes(WASM)
    return path


@pytest.mark.parametrize("damage", [damage_blobs, damage_manifests])
def test_push_reads_back_and_fails_when_the_registry_returns_damaged_bytes(registry, tmp_path, damage):
    artifact = compose_artifact(make_module(tmp_path), Provenance(version="1"))
    with RegistryProxy(registry.address, rewrite=damage) as proxy:
        client = RegistryClient(proxy.address, Transport.choose(proxy.address), None)
        with pytest.raises(UserError) as refused:
            push_artifact(client, ImageReference(proxy.address, "mod", "v1"), artifact)
    assert "damaged" in str(refused.value)


@pytest.mark.parametrize("damage", [damage_blobs, damage_manifests])
def test_pull_fails_on_damaged_bytes_and_writes_nothing(registry, tmp_path, clean_env, damage):
    store_module(registry.address, tmp_path / "blobs")
    out = tmp_path / "out"
    out.mkdir()
    with RegistryProxy(registry.address, rewrite=damage) as proxy:
        done = invoke("pull", f"{proxy.address}/mod:v1", "-o", str(out), env=clean_env, timeout=60)
    assert done.returncode == 1 and one_line(done.stderr) and "digest" in done.stderr, done.stderr
    assert list(out.iterdir()) == []


def test_pull_by_digest_refuses_a_manifest_with_other_bytes(registry, tmp_path, clean_env):
    """The registry sends no digest of its own here: only the digest asked for can catch it."""
    body, _ = store_module(registry.address, tmp_path / "blobs")

    def other_manifest(request) -> bool:
        if not is_manifest_get(request):
            return False
        request.answer(200, body.replace(b"module.wasm", b"modulX.wasm"),
                       {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        return True

    out = tmp_path / "out"
    out.mkdir()
    with RegistryProxy(registry.address, intercept=other_manifest) as proxy:
        done = invoke("pull", f"{proxy.address}/mod@{sha256_digest(body)}", "-o", str(out), env=clean_env, timeout=60)
    assert done.returncode == 1 and one_line(done.stderr) and "not the" in done.stderr, done.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("layers", [[(TAR_LAYER, b"tar bytes", None)],
                                    [(LAYER_MEDIA_TYPE, WASM, {"org.opencontainers.image.title": "m.wasm"}),
                                     (TAR_LAYER, b"tar bytes", None)]], ids=["tar-layer", "second-tar-layer"])
def test_pull_refuses_layers_that_are_not_wasm_and_writes_nothing(registry, tmp_path, clean_env, layers):
    store_artifact(registry.address, "mixed", "v1", layers, tmp_path / "blobs")
    out = tmp_path / "out"
    out.mkdir()
    done = invoke("pull", f"{registry.address}/mixed:v1", "-o", str(out), env=clean_env, timeout=60)
    assert done.returncode == 1 and one_line(done.stderr) and "not wasm modules" in done.stderr, done.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("name", ["myregistry.azurecr.io", "ghcr.io", "registry.example.com:5000", "10.0.0.5:5000",
                                  "[2001:db8::1]:5000", "localhost.example.com", "127.0.0.1.nip.io:5000"])
def test_every_registry_that_is_not_loopback_is_spoken_to_over_tls_by_default(name):
    transport = Transport.choose(name)
    assert not transport.plain_http and transport.verify is True
    client = RegistryClient(name, transport, None)
    assert client.base_url == f"https://{name}/v2/"


@pytest.mark.parametrize("name", ["127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.8.9.10:80"])
def test_loopback_registries_are_spoken_to_over_plain_http(name):
    transport = Transport.choose(name)
    assert transport.plain_http
    assert RegistryClient(name, transport, None).base_url == f"http://{name}/v2/"


def test_the_variables_win_over_the_docker_config(auth_registry, clean_env):
    right = {"REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    wrong = {"REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": "not-the-password"}
    # The variables right, the docker config wrong: the variables are used, so access works.
    docker_config(clean_env, {"auths": {auth_registry.address: {"auth": basic_auth(USER, "not-the-password")}}})
    credentials = resolve_credentials(auth_registry.address, {**clean_env, **right})
    assert RegistryClient(auth_registry.address, Transport.choose(auth_registry.address), credentials).check_access()
    # The variables wrong, the docker config right: still the variables, so it is refused, naming them.
    docker_config(clean_env, {"auths": {auth_registry.address: {"auth": basic_auth()}}})
    credentials = resolve_credentials(auth_registry.address, {**clean_env, **wrong})
    with pytest.raises(UserError) as refused:
        RegistryClient(auth_registry.address, Transport.choose(auth_registry.address), credentials).check_access()
    assert "REGISTRY_USERNAME" in str(refused.value) and "not-the-password" not in str(refused.value)


def test_no_credentials_go_to_a_host_the_registry_redirects_to(auth_registry, tmp_path, clean_env):
    """The registry answers the blob GET with 307 to another host (as registries do to storage):
    that host must never see the Authorization header the registry got."""
    _, digest = store_module(auth_registry.address, tmp_path / "blobs",
                             credentials=Credentials(USER, password=PASSWORD, source="test"))

    def serve_blob(request) -> bool:
        if not is_blob_get(request, digest):
            return False
        request.answer(200, WASM, {"Content-Type": "application/octet-stream"})
        return True

    with RegistryProxy(None, intercept=serve_blob, host="localhost") as storage:
        def redirect(request) -> bool:
            if not is_blob_get(request, digest):
                return False
            request.answer(307, b"", {"Location": f"http://{storage.address}{request.path}"})
            return True

        with RegistryProxy(auth_registry.address, intercept=redirect) as proxy:
            env = {**clean_env, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
            done = invoke("pull", f"{proxy.address}/mod:v1", "-o", str(tmp_path / "m.wasm"), env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.wasm").read_bytes() == WASM
    blob_requests = [headers for method, path, headers in proxy.seen if path.endswith(digest)]
    assert blob_requests and all("authorization" in map(str.lower, h) for h in blob_requests)
    # Header names only: a failure report must not show a credential.
    storage_names = [sorted(map(str.lower, headers)) for _, _, headers in storage.seen]
    assert storage_names and all("authorization" not in names for names in storage_names), storage_names
