"""Transient faults are retried with a bounded back-off; others are not.

The fault injector is a test double at a boundary we cannot otherwise reach (a registry that
answers 503 on demand): a small HTTP proxy on 127.0.0.1 in front of the real registry."""

from __future__ import annotations

import http.client
import http.server
import threading

from registries import free_port, invoke, pushed_fields


class FlakyProxy:
    """Answers 503 to the first `failures` requests for blob uploads, forwards everything else."""

    def __init__(self, upstream: str, failures: int):
        self.upstream = upstream
        self.failures = failures
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
