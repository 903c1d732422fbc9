"""A registry that misbehaves on demand: a test double at a boundary we cannot otherwise reach
(a real registry cannot be made to answer 503, reset connections, trickle, lie about sizes or
redirect elsewhere). It is a small HTTP server on 127.0.0.1, usually in front of a real
docker-registry, and is stopped by the test (`with RegistryProxy(...) as proxy:`)."""

from __future__ import annotations

import http.client
import http.server
import socket
import ssl
import struct
import threading
import time
from pathlib import Path
from typing import Callable

from registries import free_port

# request -> True when it answered the request itself
Intercept = Callable[["http.server.BaseHTTPRequestHandler"], bool]
# (request, status, body) -> the body to send instead
Rewrite = Callable[["http.server.BaseHTTPRequestHandler", int, bytes], bytes]


class RegistryProxy:
    """Each request is offered to `intercept` first; the rest are forwarded to `upstream` (a
    real registry; None: answered 404) and the answer's body passed through `rewrite`. Every
    request's method, path and headers are kept in `seen`. `host` is the name the proxy is
    addressed by (`localhost` makes it another host than 127.0.0.1 to a client); it always
    binds 127.0.0.1."""

    def __init__(self, upstream: str | None, intercept: Intercept | None = None, rewrite: Rewrite | None = None,
                 host: str = "127.0.0.1", body_rate: float | None = None, tls: tuple[Path, Path] | None = None):
        self.upstream = upstream
        self.body_rate = body_rate  # bytes a second at which request bodies are read: a slow link
        self.intercept = intercept or (lambda request: False)
        self.rewrite = rewrite or (lambda request, status, body: body)
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.stopping = threading.Event()  # tells intercepts that stall or trickle to end
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                proxy.seen.append((self.command, self.path, dict(self.headers.items())))
                length = int(self.headers.get("Content-Length") or 0)
                self.body = proxy.read_body(self.rfile, length) if length else None
                try:
                    if proxy.intercept(self):
                        self.close_connection = True
                        return
                except OSError:  # the client gave up on a hostile answer: that is the point
                    self.close_connection = True
                    return
                if proxy.upstream is None:
                    return self.answer(404)
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request(self.command, self.path, body=self.body, headers=headers)
                answer = connection.getresponse()
                data = proxy.rewrite(self, answer.status, answer.read())
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value.replace(proxy.upstream, proxy.address))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def reset(self) -> None:
                """Close with RST: the client sees "connection reset by peer"."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def trickle(self, data: bytes, per_second: float = 1.0) -> None:
                """Sends `data` one byte at a time, `per_second` bytes a second, until the proxy stops."""
                for byte in data:
                    if proxy.stopping.wait(1 / per_second):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()

            def stall(self) -> None:
                """Says nothing until the proxy stops."""
                proxy.stopping.wait()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        if body_rate is not None:  # a small receive buffer: else the kernel would take megabytes at once
            self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        if tls is not None:  # (certificate, key): it speaks HTTPS
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.address = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def read_body(self, stream, length: int) -> bytes:
        if self.body_rate is None:
            return stream.read(length)
        pieces = []
        while length > 0:
            piece = stream.read(min(length, 64 * 1024))
            if not piece:
                break
            pieces.append(piece)
            length -= len(piece)
            time.sleep(len(piece) / self.body_rate)
        return b"".join(pieces)

    def __enter__(self) -> "RegistryProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def is_blob_get(request: http.server.BaseHTTPRequestHandler, digest: str | None = None) -> bool:
    return request.command == "GET" and "/blobs/sha256:" in request.path and (digest is None or request.path.endswith(digest))


def is_manifest_get(request: http.server.BaseHTTPRequestHandler) -> bool:
    return request.command == "GET" and "/manifests/" in request.path


def timed(action: Callable[[], object]) -> tuple[object, float]:
    """`action()` and the seconds it took (to report; bounds on it are generous, not assertions of speed)."""
    started = time.monotonic()
    result = action()
    return result, time.monotonic() - started


class RawServer:
    """A TCP port on 127.0.0.1 whose every connection (a client may retry) goes to `handle` on a
    thread of its own; for servers below HTTP."""

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopping = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(connection,), daemon=True).start()

    def handle(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.listener.close()


class TrickleHandshake(RawServer):
    """Answers a TLS ClientHello with the header of a 16 KiB record and then one byte a second: a
    TLS server that trickles its handshake (below HTTP, so not a `RegistryProxy`)."""

    def handle(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(65536)  # the ClientHello
                connection.sendall(b"\x16\x03\x03\x40\x00")  # a handshake record of 16 KiB follows...
                while not self.stopping.wait(1.0):
                    connection.sendall(b"\x00")  # ...one byte a second
            except OSError:
                return


class ConnectTunnel(RawServer):
    """What HTTPS_PROXY names: a forward proxy that answers CONNECT HOST:PORT and then relays bytes
    both ways, always to `upstream` (so HOST may be a name only the tunnel resolves). The targets
    asked for are kept in `targets`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.targets: list[str] = []
        self.open: list[socket.socket] = []

    def handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            piece = client.recv(4096)
            if not piece:
                client.close()
                return
            head += piece
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        self.targets.append(target)
        host, port = self.upstream.rsplit(":", 1)
        server = socket.create_connection((host, int(port)))
        self.open += [client, server]
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=self._relay, args=(server, client), daemon=True).start()
        self._relay(client, server)

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        for end in self.open:
            end.close()
