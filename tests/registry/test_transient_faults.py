"""Faults: transient ones are retried with a bounded back-off; the others fail at once, clearly.

The fault injector is a test double at a boundary we cannot otherwise reach (a registry that
answers 503 or resets connections on demand): a small HTTP proxy on 127.0.0.1 in front of the
real registry; so is the silent port (a host that never answers)."""

from __future__ import annotations

import http.client
import http.server
import socket
import struct
import threading
import time

from registries import free_port, invoke, make_registry, pushed_fields


class FlakyProxy:
    """Answers 503 to (or, with `reset`, drops the connection of) the first `failures` requests for
    blob uploads, and forwards everything else."""

    def __init__(self, upstream: str, failures: int, reset: bool = False):
        self.upstream = upstream
        self.failures = failures
        self.reset = reset
        self.refused = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if "/blobs/uploads/" in self.path and proxy.refused < proxy.failures:
                    proxy.refused += 1
                    if proxy.reset:  # close with RST: the client sees "connection reset by peer"
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.close_connection = True
                        return
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        value = value.replace(proxy.upstream, proxy.address)
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


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
