"""A registry with the OCI 1.1 referrers API, for the tests: a small proxy in front of the real
docker-registry (2.8, which has no such API) that does what ACR does. A test double at a boundary
this machine cannot reach (no registry here implements the API); it says so by its name.

- A manifest PUT whose body has a `subject` is passed on, recorded, and answered with `OCI-Subject`.
- `GET /v2/<name>/referrers/<digest>` answers an image index of the recorded referrers.
- Everything else is passed through unchanged."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ReferrersApiProxy:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.referrers: dict[tuple[str, str], list[dict]] = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
                connection = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                connection.close()
                return answer.status, answer.getheaders(), data

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes, extra: dict | None = None) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_GET(self) -> None:
                parts = self.path.split("?")[0].split("/")
                if len(parts) >= 5 and parts[-2] == "referrers":
                    name, digest = "/".join(parts[2:-2]), parts[-1]
                    with proxy.lock:
                        manifests = list(proxy.referrers.get((name, digest), []))
                    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                        "manifests": manifests}).encode()
                    self._reply(200, [("Content-Type", "application/vnd.oci.image.index.v1+json")], index)
                    return
                self._reply(*self._forward(None))

            def do_HEAD(self) -> None:
                self._reply(*self._forward(None))

            def do_POST(self) -> None:
                self._reply(*self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0))))

            def do_PATCH(self) -> None:
                self.do_POST()

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, data = self._forward(body)
                extra = {}
                parts = self.path.split("?")[0].split("/")
                if "/manifests/" in self.path and status in (200, 201):
                    try:
                        manifest = json.loads(body)
                    except ValueError:
                        manifest = {}
                    subject = manifest.get("subject") if isinstance(manifest, dict) else None
                    if subject:
                        name = "/".join(parts[2:-2])
                        entry = {"mediaType": manifest.get("mediaType"), "size": len(body),
                                 "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                                 "artifactType": manifest.get("artifactType")}
                        with proxy.lock:
                            proxy.referrers.setdefault((name, subject["digest"]), []).append(entry)
                        extra["OCI-Subject"] = subject["digest"]
                self._reply(status, headers, data, extra)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ReferrersApiProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
