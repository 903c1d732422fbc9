"""push, pull and login against real docker-registry instances on 127.0.0.1."""

from __future__ import annotations

import base64

import hashlib
import json
import os
import stat
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from registries import PASSWORD, USER, basic_auth, docker_config, invoke, make_registry, pushed_fields
from krustlet_pull import Refused, krustlet_pull
from wasmpod.artifact import Provenance, compose_artifact
from wasmpod.errors import UserError
from wasmpod.oci_client import RegistryClient, Transport
from wasmpod.push import push_artifact
from wasmpod.reference import ImageReference


@pytest.fixture(scope="module")
def module() -> Path:
    done = invoke("build", timeout=900)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


def skopeo_raw(reference: str, *extra: str) -> dict:
    done = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", *extra, f"docker://{reference}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_anonymous_push_is_the_wasm_to_oci_layout_and_krustlet_pulls_it(registry, clean_env, module):
    done = invoke("push", "--registry", registry.address, env=clean_env)
    assert done.returncode == 0, done.stderr
    fields = pushed_fields(done.stdout)
    assert fields["Pushed"] == f"{registry.address}/fractalify:v0.2.0"
    assert int(fields["Size"]) == module.stat().st_size
    manifest = skopeo_raw(f"{registry.address}/fractalify:v0.2.0")
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.address}/fractalify:v0.2.0"],
                         capture_output=True, timeout=60).stdout
    assert fields["Digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()  # the registry's digest
    assert "mediaType" not in manifest
    assert manifest["config"] == {"mediaType": "application/vnd.wasm.config.v1+json", "size": 2,
                                  "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.wasm.content.layer.v1+wasm"
    assert layer["annotations"] == {"org.opencontainers.image.title": "fractalify.wasm"}
    annotations = manifest["annotations"]
    assert annotations["org.opencontainers.image.version"] == "0.2.0"
    assert len(annotations["org.opencontainers.image.revision"].split("-")[0]) == 40
    assert annotations["org.opencontainers.image.created"].endswith("Z")
    assert annotations["io.wasmpod.wasm.features"] == "bulk-memory,nontrapping-fptoint,mutable-globals"
    assert krustlet_pull(registry.address, "fractalify", "v0.2.0") == module.read_bytes()


def test_the_simd_build_is_pushed_under_its_own_tag_and_says_what_it_needs(registry, clean_env):
    done = invoke("build", "--simd", "push", "--registry", registry.address, env=clean_env, timeout=900)
    assert done.returncode == 0, done.stderr
    assert pushed_fields(done.stdout)["Pushed"] == f"{registry.address}/fractalify:v0.2.0-simd"
    annotations = skopeo_raw(f"{registry.address}/fractalify:v0.2.0-simd")["annotations"]
    assert annotations["io.wasmpod.wasm.features"].split(",")[-1] == "simd128"


def test_skopeo_copies_the_module_byte_for_byte(registry, clean_env, module, tmp_path):
    assert invoke("push", "--registry", registry.address, env=clean_env).returncode == 0
    target = tmp_path / "copy"
    done = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.address}/fractalify:v0.2.0",
                           f"dir:{target}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(module.read_bytes()).hexdigest()
    assert (target / digest).read_bytes() == module.read_bytes()


def test_same_module_and_commit_give_the_same_digest_and_repush_uploads_nothing(registry, clean_env):
    env = {**clean_env, "SOURCE_DATE_EPOCH": "1700000000"}
    first = invoke("push", "--registry", registry.address, "--json", env=env)
    assert first.returncode == 0, first.stderr
    sessions = registry.upload_sessions("fractalify")
    assert sessions == 2  # the config and the module
    second = invoke("push", "--registry", registry.address, "--json", env=env)
    assert json.loads(second.stdout)["digest"] == json.loads(first.stdout)["digest"]
    assert json.loads(second.stdout)["blobs_uploaded"] == 0
    assert registry.upload_sessions("fractalify") == sessions
    manifest = skopeo_raw(f"{registry.address}/fractalify:v0.2.0")
    assert manifest["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"


def test_repository_and_tag_flags(registry, clean_env):
    done = invoke("push", "--registry", registry.address, "--repository", "team/fractal", "--tag", "rc1", env=clean_env)
    assert done.returncode == 0, done.stderr
    assert pushed_fields(done.stdout)["Pushed"] == f"{registry.address}/team/fractal:rc1"


def test_htpasswd_auth_through_the_variables(auth_registry, clean_env, module):
    env = {**clean_env, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    done = invoke("push", "--registry", auth_registry.address, env=env)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert krustlet_pull(auth_registry.address, "fractalify", "v0.2.0", USER, PASSWORD) == module.read_bytes()
    assert skopeo_raw(f"{auth_registry.address}/fractalify:v0.2.0", "--creds", f"{USER}:{PASSWORD}")["layers"]


def test_htpasswd_auth_through_the_docker_config(auth_registry, clean_env):
    docker_config(clean_env, {"auths": {auth_registry.address: {"auth": basic_auth()}}})
    done = invoke("push", "--registry", auth_registry.address, env=clean_env)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("auth", [base64.b64encode(b"user-without-colon").decode(), "not base64 at all!",
                                  base64.b64encode(b"\xff\xfe:x").decode()])
def test_a_damaged_auth_entry_in_the_docker_config_is_one_line_not_anonymous(auth_registry, clean_env, auth):
    path = docker_config(clean_env, {"auths": {auth_registry.address: {"auth": auth}}})
    done = invoke("push", "--registry", auth_registry.address, env=clean_env, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"the 'auth' value for {path} ({auth_registry.address}) is not base64 of user:password" in done.stderr


def test_credential_helper_from_cred_helpers_and_creds_store(auth_registry, clean_env, tmp_path):
    helpers = tmp_path / "bin"
    helpers.mkdir()
    helper = helpers / "docker-credential-testhelper"
    helper.write_text("#!/bin/sh\nread server\n"
                      f"printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n")
    helper.chmod(0o755)
    env = {**clean_env, "PATH": f"{helpers}:{clean_env['PATH']}"}
    docker_config(env, {"credHelpers": {auth_registry.address: "testhelper"}})
    assert invoke("push", "--registry", auth_registry.address, env=env).returncode == 0
    docker_config(env, {"credsStore": "testhelper"})
    done = invoke("push", "--registry", auth_registry.address, env=env)
    assert done.returncode == 0, done.stderr


def test_anonymous_push_to_an_auth_registry_says_what_to_set(auth_registry, clean_env):
    done = invoke("push", "--registry", auth_registry.address, env=clean_env, timeout=30)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "REGISTRY_USERNAME" in done.stderr


def test_wrong_password_fails_fast_with_one_line_and_no_secret(auth_registry, clean_env):
    env = {**clean_env, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": "wrong-Secret-123"}
    done = invoke("push", "--registry", auth_registry.address, env=env, timeout=30)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "refused the credentials" in done.stderr
    assert "wrong-Secret-123" not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_registry_that_is_down_fails_fast_with_one_line(clean_env):
    from registries import free_port

    done = invoke("push", "--registry", f"127.0.0.1:{free_port()}", env=clean_env, timeout=30)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "cannot reach registry" in done.stderr


def test_tls_with_a_self_signed_ca(tls_registry, clean_env, module):
    plain = invoke("push", "--registry", tls_registry.address, "--insecure", "--ca-file", str(tls_registry.ca_file),
                   env=clean_env)
    assert plain.returncode != 0 and "--insecure" in plain.stderr  # contradictory: refused
    env = {**clean_env, "INVOKE_REGISTRY_PLAIN_HTTP": "false"}
    untrusted = invoke("push", "--registry", tls_registry.address, env=env, timeout=30)
    assert untrusted.returncode != 0
    assert len(untrusted.stderr.strip().splitlines()) == 1 and "TLS" in untrusted.stderr and "--ca-file" in untrusted.stderr
    trusted = invoke("push", "--registry", tls_registry.address, "--ca-file", str(tls_registry.ca_file), env=clean_env)
    assert trusted.returncode == 0, trusted.stderr
    insecure = invoke("push", "--registry", tls_registry.address, "--insecure", env=clean_env)
    assert insecure.returncode == 0, insecure.stderr
    assert krustlet_pull(tls_registry.address, "fractalify", "v0.2.0", scheme="https",
                         cafile=str(tls_registry.ca_file)) == module.read_bytes()


def test_pull_writes_the_module_and_prints_three_lines(registry, clean_env, module, tmp_path):
    pushed = pushed_fields(invoke("push", "--registry", registry.address, env=clean_env).stdout)
    out = tmp_path / "pulled.wasm"
    done = invoke("pull", f"{registry.address}/fractalify:v0.2.0", "-o", str(out), env=clean_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"Pulled: {registry.address}/fractalify:v0.2.0",
                                        f"Size: {module.stat().st_size}", f"Digest: {pushed['Digest']}"]
    assert out.read_bytes() == module.read_bytes()
    by_digest = invoke("pull", f"{registry.address}/fractalify@{pushed['Digest']}", "-o", str(tmp_path / "d.wasm"),
                       env=clean_env)
    assert by_digest.returncode == 0 and (tmp_path / "d.wasm").read_bytes() == module.read_bytes()


def test_pull_refuses_a_manifest_krustlet_would_refuse(registry, clean_env, tmp_path):
    import urllib.request

    blob = b"\0asm\1\0\0\0"
    base = f"http://{registry.address}/v2/bad"
    for data in (b"{}", blob):
        session = urllib.request.urlopen(urllib.request.Request(f"{base}/blobs/uploads/", method="POST"))
        location = session.headers["Location"]
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        separator = "&" if "?" in location else "?"
        urllib.request.urlopen(urllib.request.Request(f"{location}{separator}digest={digest}", data=data, method="PUT",
                                                      headers={"Content-Type": "application/octet-stream"}))
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.wasm.config.v1+json", "size": 2,
                           "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()},
                "layers": [{"mediaType": "application/vnd.wasm.content.layer.v1+wasm", "size": len(blob),
                            "digest": "sha256:" + hashlib.sha256(blob).hexdigest()}]}
    urllib.request.urlopen(urllib.request.Request(f"{base}/manifests/v1", data=json.dumps(manifest).encode(), method="PUT",
                                                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
    with pytest.raises(Refused):
        krustlet_pull(registry.address, "bad", "v1")
    done = invoke("pull", f"{registry.address}/bad:v1", "-o", str(tmp_path / "bad.wasm"), env=clean_env)
    assert done.returncode != 0 and "mediaType" in done.stderr
    assert not (tmp_path / "bad.wasm").exists()


def test_login_checks_before_saving(auth_registry, clean_env):
    config = Path(clean_env["DOCKER_CONFIG"]) / "config.json"
    wrong = invoke("login", auth_registry.address, "--username", USER, "--password-stdin", input="not-it\n",
                   env=clean_env, timeout=30)
    assert wrong.returncode != 0 and not config.exists()
    assert "not-it" not in wrong.stdout + wrong.stderr
    right = invoke("login", auth_registry.address, "--username", USER, "--password-stdin", input=PASSWORD + "\n",
                   env=clean_env, timeout=30)
    assert right.returncode == 0, right.stderr
    assert PASSWORD not in right.stdout + right.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["auths"][auth_registry.address]["auth"] == basic_auth()
    assert invoke("push", "--registry", auth_registry.address, env=clean_env).returncode == 0


def test_saved_credentials_go_through_a_new_private_file_and_no_planted_link(auth_registry, clean_env, tmp_path):
    """The docker config is written to a temporary file created exclusively (a link planted where a
    temporary file could be is never followed), with mode 0600 from the start, then renamed."""
    docker_dir = Path(clean_env["DOCKER_CONFIG"])
    docker_dir.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for planted in (".config.json.tmp", ".config.json.new", "config.json.tmp"):
        (docker_dir / planted).symlink_to(victim)
    done = invoke("login", auth_registry.address, "--username", USER, "--password-stdin", input=PASSWORD + "\n",
                  env=clean_env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep me"
    config = docker_dir / "config.json"
    assert not config.is_symlink() and stat.S_IMODE(config.stat().st_mode) == 0o600
    assert sorted(p.name for p in docker_dir.iterdir() if not p.is_symlink()) == ["config.json"]


def big_module(path: Path, mebibytes: int) -> Path:
    with path.open("wb") as handle:
        handle.write(b"\0asm\1\0\0\0")
        for _ in range(mebibytes):
            handle.write(os.urandom(1 << 20))
    return path


def test_large_module_streams_in_chunks_with_bounded_memory(registry, tmp_path):
    module = big_module(tmp_path / "big.wasm", 24)
    client = RegistryClient(registry.address, Transport.choose(registry.address), None)
    artifact = compose_artifact(module, Provenance(version="1"))
    progress = []
    tracemalloc.start()
    pushed = push_artifact(client, ImageReference(registry.address, "big", "v1"), artifact,
                           lambda sent, total: progress.append((sent, total)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 2**20, peak  # well below the module's 24 MiB: it is never held whole
    assert len(progress) >= 6 and progress[-1] == (module.stat().st_size, module.stat().st_size)
    assert pushed.digest == artifact.manifest_digest
    assert krustlet_pull(registry.address, "big", "v1") == module.read_bytes()


def test_registry_killed_mid_push_fails_clearly_and_holds_nothing(tmp_path):
    registry = make_registry(tmp_path / "doomed").start()
    try:
        module = big_module(tmp_path / "big.wasm", 24)
        client = RegistryClient(registry.address, Transport.choose(registry.address), None)

        def kill_after_first_chunk(sent: int, total: int) -> None:
            registry.kill()

        with pytest.raises(UserError) as raised:
            push_artifact(client, ImageReference(registry.address, "big", "v1"), compose_artifact(module, Provenance()),
                          kill_after_first_chunk)
        assert "cannot reach registry" in str(raised.value) or "stalled" in str(raised.value)
        registry.start()
        with pytest.raises(Exception):
            krustlet_pull(registry.address, "big", "v1")
    finally:
        registry.stop()
