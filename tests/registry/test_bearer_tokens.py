"""Bearer auth against a real docker-registry configured for token auth, with an identity token
exchanged for an access token as `az acr login` writes it.

The token service is a test double at a boundary we cannot otherwise reach (a registry's OAuth2
endpoint, such as ACR's): a small HTTP server on 127.0.0.1 that issues RS256 JWTs (signed with
openssl) which the real registry verifies against the certificate in its configuration."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import urllib.parse
import http.server
from pathlib import Path

import pytest

from registries import PASSWORD, USER, Registry, docker_config, free_port, invoke, pushed_fields
from krustlet_pull import krustlet_pull

SERVICE, ISSUER, REFRESH_TOKEN = "test-registry", "test-issuer", "refresh-6f1c2e"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    def __init__(self, directory: Path):
        self.key, self.cert = directory / "token.key", directory / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=token",
                        "-keyout", str(self.key), "-out", str(self.cert)], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.grants: list[str] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, body: dict | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self.answer(401, {"error": "bad credentials"})
                service.grants.append("password")
                self.answer(200, {"token": service.issue(query.get("scope", [""])[0])})

            def do_POST(self):
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [REFRESH_TOKEN]:
                    return self.answer(400, {"error": "invalid_grant"})  # as OAuth2 (RFC 6749, 5.2) says
                service.grants.append("refresh_token")
                self.answer(200, {"access_token": service.issue(form.get("scope", [""])[0])})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def issue(self, scope: str) -> str:
        access = []
        if scope.startswith("repository:"):
            _, name, actions = scope.split(":")
            access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": f"t{now}{len(self.grants)}", "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                                   check=True, capture_output=True).stdout
        return f"{signing_input}.{b64url(signature)}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_registry(tmp_path):
    service = TokenService(tmp_path)
    port = free_port()
    storage = tmp_path / "storage"
    storage.mkdir()
    config = tmp_path / "config.yml"
    config.write_text("\n".join([
        "version: 0.1", "log:", "  accesslog:", "    disabled: false", "storage:", "  filesystem:",
        f"    rootdirectory: {storage}", "http:", f"  addr: 127.0.0.1:{port}", "auth:", "  token:",
        f"    realm: {service.realm}", f"    service: {SERVICE}", f"    issuer: {ISSUER}",
        f"    rootcertbundle: {service.cert}", ""]))
    registry = Registry(f"127.0.0.1:{port}", storage, tmp_path / "registry.log", config, auth=True).start()
    registry.tokens = service
    yield registry
    registry.stop()
    service.stop()


def test_identity_token_is_exchanged_for_access_tokens(token_registry, clean_env, tmp_path):
    docker_config(clean_env, {"auths": {token_registry.address: {
        "auth": base64.b64encode(b"00000000-0000-0000-0000-000000000000:").decode(), "identitytoken": REFRESH_TOKEN}}})
    done = invoke("push", "--registry", token_registry.address, env=clean_env, timeout=60)
    assert done.returncode == 0, done.stderr + token_registry.log.read_text()[-1500:]
    assert REFRESH_TOKEN not in done.stdout + done.stderr
    assert set(token_registry.tokens.grants) == {"refresh_token"}
    module = Path(invoke("build", env=clean_env).stdout.strip().splitlines()[-1])
    assert krustlet_pull(token_registry.address, "fractalify", "v0.2.0", USER, PASSWORD) == module.read_bytes()
    pulled = invoke("pull", f"{token_registry.address}/fractalify:v0.2.0", "-o", str(tmp_path / "m.wasm"), env=clean_env)
    assert pulled.returncode == 0 and (tmp_path / "m.wasm").read_bytes() == module.read_bytes()


def test_password_over_bearer_and_a_wrong_identity_token(token_registry, clean_env):
    env = {**clean_env, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    done = invoke("push", "--registry", token_registry.address, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert pushed_fields(done.stdout)["Pushed"].endswith("/fractalify:v0.2.0")
    docker_config(clean_env, {"auths": {token_registry.address: {"identitytoken": "expired-token"}}})
    refused = invoke("push", "--registry", token_registry.address, env=clean_env, timeout=30)
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1 and "refused the identity token" in refused.stderr
    assert "expired-token" not in refused.stdout + refused.stderr
