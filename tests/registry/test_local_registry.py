"""The embedded local registry: registry.up/status/down, started by push when no registry is
named, never started for a registry that is named."""

from __future__ import annotations

from registries import free_port, invoke, pushed_fields


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
