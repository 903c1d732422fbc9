"""Faults: transient ones are retried with a bounded back-off; the others fail at once, clearly.

The fault injector is a test double at a boundary we cannot otherwise reach (a registry that
answers 503 or resets connections on demand): `proxy.RegistryProxy`, a small HTTP proxy on
127.0.0.1 in front of the real registry; so is the silent port (a host that never answers)."""

from __future__ import annotations

import socket
import time

from proxy import RegistryProxy
from registries import invoke, make_registry, pushed_fields


class FlakyProxy(RegistryProxy):
    """Answers 503 to (or, with `reset`, drops the connection of) the first `failures` requests for
    blob uploads, and forwards everything else."""

    def __init__(self, upstream: str, failures: int, reset: bool = False):
        self.failures = failures
        self.reset = reset
        self.refused = 0
        super().__init__(upstream, intercept=self._fail)

    def _fail(self, request) -> bool:
        if "/blobs/uploads/" not in request.path or self.refused >= self.failures:
            return False
        self.refused += 1
        if self.reset:
            request.reset()
        else:
            request.answer(503)
        return True


def test_two_503s_are_retried_and_the_push_succeeds(registry, clean_env):
    with FlakyProxy(registry.address, failures=2) as proxy:
        done = invoke("push", "--registry", proxy.address, env=clean_env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert proxy.refused == 2
    assert pushed_fields(done.stdout)["Pushed"].startswith(proxy.address)


def test_a_registry_that_keeps_answering_503_fails_after_the_bounded_retry(registry, clean_env):
    with FlakyProxy(registry.address, failures=10**6) as proxy:
        done = invoke("push", "--registry", proxy.address, env=clean_env, timeout=90)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "503" in done.stderr
    assert 5 <= proxy.refused < 40  # retried, with back-off, and then given up


def test_connections_reset_mid_push_are_retried(registry, clean_env):
    with FlakyProxy(registry.address, failures=2, reset=True) as proxy:
        done = invoke("push", "--registry", proxy.address, env=clean_env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert proxy.refused == 2


class SilentPort:
    """A port on 127.0.0.1 that never accepts: its listen queue is full, so new connections get no
    answer, as from a firewalled or unroutable host (a test double: a socket, no server)."""

    def __enter__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.fillers = []
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(self.listener.getsockname())
            self.fillers.append(filler)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        for filler in self.fillers:
            filler.close()
        self.listener.close()


def test_a_host_that_never_answers_fails_within_the_connect_timeout(clean_env):
    with SilentPort() as silent:
        done = invoke("push", "--registry", silent.address, env=clean_env, timeout=30)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "did not answer within" in done.stderr


def test_plain_http_to_a_tls_registry_points_at_tls(tmp_path, clean_env):
    tls = make_registry(tmp_path / "tls", tls=True).start()
    try:
        done = invoke("push", "--registry", tls.address, env=clean_env, timeout=30)
    finally:
        tls.stop()
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "HTTPS" in done.stderr and "--ca-file" in done.stderr
