"""The embedded local registry: registry.up/status/down, started by push when no registry is
named, never started for a registry that is named."""

from __future__ import annotations

import shutil

from registries import WASM, free_port, invoke, pushed_fields
from testkit import ROOT

from wasmpod.artifact import Provenance, compose_artifact
from wasmpod.local_registry import LocalRegistry
from wasmpod.oci_client import RegistryClient, Transport
from wasmpod.push import push_artifact
from wasmpod.reference import ImageReference


def test_up_status_down(clean_env):
    port = str(free_port())
    try:
        up = invoke("registry.up", "--port", port, env=clean_env)
        assert up.returncode == 0, up.stderr
        assert f"127.0.0.1:{port}: running" in up.stdout
        assert invoke("registry.up", "--port", port, env=clean_env).returncode == 0  # already up: a no-op
        assert "running (pid" in invoke("registry.status", "--port", port, env=clean_env).stdout
    finally:
        down = invoke("registry.down", "--port", port, env=clean_env)
    assert down.returncode == 0 and "not running" in down.stdout
    assert "not running" in invoke("registry.status", "--port", port, env=clean_env).stdout


def test_push_without_registry_starts_the_local_one(clean_env):
    port = str(free_port())
    assert "not running" in invoke("registry.status", "--port", port, env=clean_env).stdout
    try:
        done = invoke("push", "--port", port, env=clean_env)
        assert done.returncode == 0, done.stderr
        assert pushed_fields(done.stdout)["Pushed"] == f"127.0.0.1:{port}/fractalify:v0.2.0"
        assert "running" in invoke("registry.status", "--port", port, env=clean_env).stdout
    finally:
        invoke("registry.down", "--port", port, env=clean_env)


def test_a_named_registry_is_never_started(clean_env):
    port = str(free_port())
    done = invoke("push", "--registry", f"127.0.0.1:{port}", "--port", port, env=clean_env, timeout=30)
    assert done.returncode != 0 and "cannot reach registry" in done.stderr
    assert "not running" in invoke("registry.status", "--port", port, env=clean_env).stdout


def test_a_registry_another_checkout_started_is_named_as_theirs_and_its_data_never_called_ours(clean_env, tmp_path):
    port = free_port()
    other = tmp_path / "other-checkout" / "registry"
    other.mkdir(parents=True)
    shutil.copy(ROOT / "registry" / "config.yml", other / "config.yml")
    theirs = LocalRegistry(other, port)
    theirs.up()
    try:
        said = invoke("registry.status", "--port", str(port), env=clean_env).stdout
        assert f"started by another checkout: {tmp_path / 'other-checkout'} (pid" in said, said
        assert "data in" not in said and str(ROOT) not in said
        pushed = invoke("push", "--port", str(port), env=clean_env)
        assert pushed.returncode == 0, pushed.stderr
        assert f"the registry on 127.0.0.1:{port} was started by another checkout: {tmp_path / 'other-checkout'}" in pushed.stdout
        assert pushed_fields(pushed.stdout)["Pushed"] == f"127.0.0.1:{port}/fractalify:v0.2.0"
        down = invoke("registry.down", "--port", str(port), env=clean_env)
        assert down.returncode == 1 and str(tmp_path / "other-checkout") in down.stderr
        assert theirs.status().running  # not ours to stop
    finally:
        theirs.down()


def test_pushing_over_a_tag_that_moved_says_from_and_to_and_hints_at_pin(registry, tmp_path):
    client = RegistryClient(registry.address, Transport.choose(registry.address), None)
    target = ImageReference(registry.address, "moving", "v0.2.0")
    first, second = tmp_path / "first.wasm", tmp_path / "second.wasm"
    first.write_bytes(WASM)
    second.write_bytes(WASM + b"\0")
    before = push_artifact(client, target, compose_artifact(first, Provenance()))
    assert before.moved_from is None and len(before.lines()) == 3
    again = push_artifact(client, target, compose_artifact(first, Provenance()))
    assert again.moved_from is None and len(again.lines()) == 3  # the same bytes: nothing moved
    after = push_artifact(client, target, compose_artifact(second, Provenance()))
    assert after.lines()[0] == (f"tag v0.2.0 moved from {before.digest} to {after.digest}: nodes pulling with "
                                "imagePullPolicy IfNotPresent keep the old module; deploy with --pin to name the digest")
    assert after.lines()[-3:] == [f"Pushed: {target}", f"Size: {len(WASM) + 1}", f"Digest: {after.digest}"]
