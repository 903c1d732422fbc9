"""Registry credentials: CI variables, then the docker config (`auths`, `credHelpers`,
`credsStore`, and `identitytoken` as `az acr login` writes it). Secrets never reach output."""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .atomic_files import write_atomically
from .errors import UserError

USERNAME_VARIABLE = "REGISTRY_USERNAME"
PASSWORD_VARIABLE = "REGISTRY_PASSWORD"
# What a credential helper returns as the user name when the secret is an identity token.
TOKEN_USERNAME = "<token>"


@dataclass(frozen=True)
class Credentials:
    username: str
    # Secrets are kept out of repr() so no log or traceback can show them.
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)  # an OAuth2 refresh token (ACR)
    source: str = ""  # where they came from, for error messages

    def basic_header(self) -> str:
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def docker_config_path(environ: dict[str, str]) -> Path:
    directory = environ.get("DOCKER_CONFIG") or str(Path(environ.get("HOME") or Path.home()) / ".docker")
    return Path(directory) / "config.json"


def _read_docker_config(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the docker config {path}: {error}") from None
    if not isinstance(config, dict):
        raise UserError(f"the docker config {path} is not a JSON object")
    return config


def _lookup_keys(registry: str) -> list[str]:
    """The spellings docker itself uses as keys for one registry."""
    return [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/", f"https://{registry}/v2/"]


def resolve_credentials(registry: str, environ: dict[str, str]) -> Credentials | None:
    """The credentials for `registry`, or None for anonymous access."""
    username, password = environ.get(USERNAME_VARIABLE) or "", environ.get(PASSWORD_VARIABLE) or ""
    if username or password:
        if not (username and password):
            raise UserError(f"set both {USERNAME_VARIABLE} and {PASSWORD_VARIABLE}, or neither")
        return Credentials(username, password=password, source=f"{USERNAME_VARIABLE}/{PASSWORD_VARIABLE}")

    path = docker_config_path(environ)
    config = _read_docker_config(path)
    auths = config.get("auths") or {}
    for key in _lookup_keys(registry):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        found = _from_auths_entry(entry, f"{path} ({key})")
        if found:
            return found
    helpers = config.get("credHelpers") or {}
    for key in _lookup_keys(registry):
        if helpers.get(key):
            return _from_helper(helpers[key], key)
    if config.get("credsStore"):
        return _from_helper(config["credsStore"], registry)
    return None


def _from_auths_entry(entry: dict, source: str) -> Credentials | None:
    username, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        try:
            username, colon, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            colon = ""
        if not colon:  # else a damaged entry would quietly mean anonymous access
            raise UserError(f"the 'auth' value for {source} is not base64 of user:password: run "
                            "`invoke login` again or fix the docker config")
    if entry.get("identitytoken"):
        return Credentials(username or TOKEN_USERNAME, identity_token=entry["identitytoken"], source=source)
    if username and password:
        return Credentials(username, password=password, source=source)
    return None


def _from_helper(helper: str, server: str) -> Credentials | None:
    binary = f"docker-credential-{helper}"
    try:
        done = subprocess.run([binary, "get"], input=server, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise UserError(f"the docker config names credential helper {binary}, which is not installed") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"credential helper {binary} did not answer within 30 s") from None
    if done.returncode != 0:
        # Helpers answer "credentials not found" with a non-zero status: anonymous access.
        return None
    try:
        answer = json.loads(done.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"credential helper {binary} gave an answer that is not its JSON") from None
    source = f"credential helper {binary}"
    if username == TOKEN_USERNAME:
        return Credentials(TOKEN_USERNAME, identity_token=secret, source=source)
    return Credentials(username, password=secret, source=source)


def save_credentials(registry: str, credentials: Credentials, environ: dict[str, str]) -> Path | str:
    """Stores credentials the way docker would: through the configured helper, or in the docker
    config's `auths` (written atomically, mode 0600). Returns where they went."""
    path = docker_config_path(environ)
    config = _read_docker_config(path)
    helper = (config.get("credHelpers") or {}).get(registry) or config.get("credsStore")
    if helper:
        binary = f"docker-credential-{helper}"
        payload = json.dumps({"ServerURL": registry, "Username": credentials.username,
                              "Secret": credentials.password or credentials.identity_token})
        try:
            done = subprocess.run([binary, "store"], input=payload, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            raise UserError(f"credential helper {binary} could not be run to store the credentials") from None
        if done.returncode != 0:
            raise UserError(f"credential helper {binary} refused to store the credentials")
        return binary
    entry = {"auth": base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()}
    config.setdefault("auths", {})[registry] = entry
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write_atomically(path, json.dumps(config, indent=2), mode=0o600)
