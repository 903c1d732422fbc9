"""Talking to an OCI registry through the ORAS Python client, with what it lacks added here:
a bounded retry policy, time-outs, the auth scheme chosen from the registry's challenge
(Basic, or Bearer with per-scope tokens and ACR identity tokens), and one clear error per failure.

ORAS-py's own retry sleeps 3+5+11+29+83 s on any error, its default `token` backend fails on a
Basic challenge, and its `push()` writes a manifest Krustlet refuses; so we use its `Registry`
for requests, containers and blob uploads, and replace `do_request`'s retry and the auth backend.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import oras.auth
import oras.container
import oras.provider
import requests
import urllib3

from .artifact import MANIFEST_ACCEPT, MANIFEST_MEDIA_TYPE, Blob
from .credentials import Credentials
from .errors import UserError
from .reference import is_loopback

CONNECT_TIMEOUT = 5.0  # a registry that is down or unroutable fails within seconds
READ_TIMEOUT = 60.0
RETRY_BUDGET = 30.0  # seconds of back-off in all, per client
TRANSIENT_STATUS = {502, 503, 504}
CHUNKED_ABOVE = 8 * 1024 * 1024  # blobs larger than this are streamed in chunks
CHUNK_SIZE = 4 * 1024 * 1024

ProgressCallback = Callable[[int, int], None]  # (bytes sent so far, total)


@dataclass(frozen=True)
class Transport:
    """How to reach a registry: plain HTTP for loopback by default, HTTPS otherwise (and whenever a
    CA file or --insecure is given)."""

    plain_http: bool
    verify: bool | str  # True, False (--insecure) or the path of a CA bundle (--ca-file)

    @classmethod
    def choose(cls, registry: str, plain_http: bool | None = None, insecure: bool = False,
               ca_file: str | None = None) -> "Transport":
        if ca_file and not Path(ca_file).is_file():
            raise UserError(f"--ca-file {ca_file} does not exist")
        # --ca-file or --insecure only make sense with TLS, so they mean HTTPS even on loopback.
        use_plain = (is_loopback(registry) and not (ca_file or insecure)) if plain_http is None else plain_http
        verify: bool | str = False if insecure else (str(Path(ca_file).resolve()) if ca_file else True)
        return cls(plain_http=use_plain, verify=verify)


class _Challenge:
    """A parsed `WWW-Authenticate` header: scheme plus parameters."""

    def __init__(self, header: str):
        scheme, _, rest = header.strip().partition(" ")
        self.scheme = scheme.lower()
        self.params: dict[str, str] = {}
        for key, value in _split_params(rest):
            self.params[key.lower()] = value


def _split_params(text: str) -> list[tuple[str, str]]:
    """`realm="a",service="b",scope="repository:x:pull,push"` -> pairs (commas inside quotes kept)."""
    pairs, key, value, in_quotes, reading_key = [], "", "", False, True
    for char in text + ",":
        if reading_key:
            if char == "=":
                reading_key = False
            elif char != "," and not char.isspace():
                key += char
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "," and not in_quotes:
            pairs.append((key, value))
            key, value, reading_key = "", "", True
        else:
            value += char
    return [(k, v) for k, v in pairs if k]


class ChallengeAuth(oras.auth.TokenAuth):
    """Answers whatever the registry asks for: Basic with the credentials, or Bearer with a token
    for the challenge's scope (from the credentials, an identity token, or anonymously)."""

    def __init__(self, registry: str, credentials: Credentials | None):
        super().__init__()
        self.registry = registry
        self.credentials = credentials
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._header: str | None = None

    def get_auth_header(self) -> dict[str, str]:
        return {"Authorization": self._header} if self._header else {}

    def authenticate_request(self, original: requests.Response, headers: dict, refresh: bool = False):
        header = original.headers.get("WWW-Authenticate")
        if not header:
            return headers, False
        challenge = _Challenge(header)
        if challenge.scheme == "basic":
            if self.credentials is None or self.credentials.password is None:
                raise needs_credentials(self.registry)
            self._header = self.credentials.basic_header()
        elif challenge.scheme == "bearer":
            scope = challenge.params.get("scope", "")
            if refresh or scope not in self._tokens:
                self._tokens[scope] = self._fetch_token(challenge)
            self._header = f"Bearer {self._tokens[scope]}"
        else:
            raise UserError(f"registry {self.registry} asks for {challenge.scheme} authentication, which is not supported")
        self.token = self._header  # makes ORAS send it up front on the next requests
        headers = dict(headers or {})
        headers["Authorization"] = self._header
        return headers, True

    def _fetch_token(self, challenge: _Challenge) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise UserError(f"registry {self.registry} sent a Bearer challenge without a realm")
        params = {k: v for k, v in challenge.params.items() if k in ("service", "scope")}
        creds = self.credentials
        try:
            if creds and creds.identity_token:
                # An identity token is an OAuth2 refresh token: exchange it for an access token.
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, **params}
                answer = self.session.post(realm, data=form, verify=self._tls_verify, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            elif creds:
                answer = self.session.get(realm, params=params, headers={"Authorization": creds.basic_header()},
                                          verify=self._tls_verify, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            else:
                answer = self.session.get(realm, params=params, verify=self._tls_verify, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        except requests.exceptions.RequestException as error:
            raise UserError(f"cannot reach the token service {realm} of {self.registry}: {_reason(error)}") from None
        # OAuth2 answers a bad or expired refresh token with 400 invalid_grant (RFC 6749, 5.2).
        if answer.status_code in (401, 403) or (answer.status_code == 400 and creds and creds.identity_token):
            raise refused_credentials(self.registry, creds)
        if answer.status_code != 200:
            raise UserError(f"the token service {realm} of {self.registry} answered {answer.status_code}")
        try:
            body = answer.json()
            return body.get("token") or body["access_token"]
        except (ValueError, KeyError):
            raise UserError(f"the token service {realm} of {self.registry} sent no token") from None


class CredentialsRequired(UserError):
    """The registry asked for credentials and there were none."""


def needs_credentials(registry: str) -> UserError:
    return CredentialsRequired(f"registry {registry} needs credentials: set REGISTRY_USERNAME and REGISTRY_PASSWORD, "
                     f"or run `invoke login {registry}`")


def refused_credentials(registry: str, credentials: Credentials | None) -> UserError:
    if credentials is None:
        return needs_credentials(registry)
    what = "identity token" if credentials.identity_token else f"credentials of user {credentials.username!r}"
    return UserError(f"registry {registry} refused the {what} (from {credentials.source}): check them, "
                     f"or run `invoke login {registry}`")


def _reason(error: Exception) -> str:
    """The innermost useful words of a requests/urllib3 error, without URLs' query strings."""
    inner: BaseException = error
    while True:
        nested = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        nested = nested or getattr(inner, "reason", None)
        if not isinstance(nested, BaseException) or nested is inner:
            break
        inner = nested
    text = str(inner)
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(inner, ConnectionResetError) or "Connection reset" in text or "Connection aborted" in text:
        return "the connection was reset"
    if isinstance(inner, urllib3.exceptions.NameResolutionError) or "Name or service not known" in text:
        return "the host name does not resolve"
    return text.split(": ", 1)[-1][:200]


def _is_unreachable(error: requests.exceptions.ConnectionError) -> bool:
    """Refused, unresolvable or unroutable: no point retrying. (A reset mid-request is transient.)"""
    first = error.args[0] if error.args else None
    reason = getattr(first, "reason", None)
    return isinstance(reason, urllib3.exceptions.NewConnectionError) or isinstance(first, urllib3.exceptions.NewConnectionError)


class _BoundedRegistry(oras.provider.Registry):
    """ORAS's Registry with time-outs, a bounded retry for transient faults only, and progress."""

    def __init__(self, registry: str, transport: Transport, credentials: Credentials | None):
        super().__init__(hostname=registry, insecure=transport.plain_http, tls_verify=transport.verify)
        # ORAS sends requests without a time-out: a host that drops packets would hang for minutes.
        self.session.request = functools.partial(self.session.request, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        self.auth = ChallengeAuth(registry, credentials)
        self.auth.session = self.session
        self.auth.prefix = self.prefix
        self.auth._tls_verify = transport.verify
        self.retry_left = RETRY_BUDGET
        self.on_progress: ProgressCallback | None = None
        self.progress_total = 0
        self.progress_sent = 0
        self.upload_sessions = 0

    def do_request(self, url, method="GET", data=None, headers=None, json=None, stream=False):
        once = oras.provider.Registry.do_request.__wrapped__  # ORAS's request without its retry
        delay = 0.5
        while True:
            try:
                response = once(self, url, method, data=data, headers=dict(headers or {}), json=json, stream=stream)
            except requests.exceptions.SSLError as error:
                raise UserError(f"TLS with registry {self.hostname} failed ({_reason(error)}): pass --ca-file with "
                                "the CA that signed its certificate, or --insecure to skip verification") from None
            except requests.exceptions.ConnectTimeout:
                raise UserError(f"registry {self.hostname} did not answer within {CONNECT_TIMEOUT:.0f} s: "
                                "is the address right and is it running?") from None
            except requests.exceptions.ConnectionError as error:
                if _is_unreachable(error) or self.retry_left < delay:
                    raise unreachable(self.hostname, error) from None
                response = None
            except requests.exceptions.Timeout:
                if self.retry_left < delay:
                    raise UserError(f"registry {self.hostname} stopped answering (no reply within {READ_TIMEOUT:.0f} s)") from None
                response = None
            if response is not None and response.status_code in TRANSIENT_STATUS and self.retry_left < delay:
                raise UserError(f"registry {self.hostname} kept answering {response.status_code} {response.reason} "
                                f"through {RETRY_BUDGET:.0f} s of retries: it is overloaded or down; try again later")
            if response is not None and response.status_code not in TRANSIENT_STATUS:
                if method == "PATCH" and response.status_code in (200, 201, 202, 204) and self.on_progress:
                    self.progress_sent += len(data or b"")
                    self.on_progress(self.progress_sent, self.progress_total)
                if method == "POST" and "/blobs/uploads/" in url:
                    self.upload_sessions += 1
                return response
            time.sleep(delay)
            self.retry_left -= delay
            delay = min(delay * 2, 8.0)


def unreachable(registry: str, error: Exception) -> UserError:
    return UserError(f"cannot reach registry {registry}: {_reason(error)}; is it running and is the address right?")


@dataclass(frozen=True)
class StoredManifest:
    digest: str  # as the registry reports it
    subject: str | None  # the OCI-Subject header: the registry keeps the referrers index itself


@dataclass(frozen=True)
class FoundManifest:
    body: bytes
    digest: str  # as the registry reports it
    media_type: str  # its Content-Type


def _next_page(base_url: str, link: str) -> str | None:
    """The next page of a listing from RFC 5988 `Link: </v2/...?n=..&last=..>; rel="next"`."""
    if 'rel="next"' not in link or "<" not in link:
        return None
    target = link[link.index("<") + 1:link.index(">")] if ">" in link else ""
    if not target.startswith("/v2/"):
        return None  # only pages of this registry: never a request to a host it names
    return base_url.removesuffix("/v2/") + target


class RegistryClient:
    """The operations push and pull need, each raising `UserError` with what to do."""

    def __init__(self, registry: str, transport: Transport, credentials: Credentials | None):
        self.registry = registry
        self.transport = transport
        self.credentials = credentials
        self._oras = _BoundedRegistry(registry, transport, credentials)

    @property
    def base_url(self) -> str:
        return f"{self._oras.prefix}://{self.registry}/v2/"

    @property
    def upload_sessions(self) -> int:
        """How many blob upload sessions this client opened (0 when every blob was there)."""
        return self._oras.upload_sessions

    def _container(self, repository: str, reference: str = "latest") -> oras.container.Container:
        separator = "@" if reference.startswith("sha256:") else ":"
        return oras.container.Container(f"{repository}{separator}{reference}", registry=self.registry)

    def _request(self, url: str, method: str = "GET", **kwargs) -> requests.Response:
        response = self._oras.do_request(url, method, **kwargs)
        if response.status_code == 401:
            raise refused_credentials(self.registry, self.credentials)
        return response

    def check_access(self) -> bool:
        """GET /v2/: proves the registry answers and, when it asks, that the credentials work.
        Returns whether it asked for credentials."""
        response = self._request(self.base_url)
        if self.transport.plain_http and response.status_code == 400 and "HTTPS" in response.text:
            raise UserError(f"registry {self.registry} speaks HTTPS, not plain HTTP: pass --ca-file with the CA that "
                            "signed its certificate, or --insecure to skip verification")
        if response.status_code != 200:
            raise UserError(f"{self.base_url} answered {response.status_code}: is {self.registry} an OCI registry?")
        return self._oras.auth.token is not None

    def blob_exists(self, repository: str, digest: str) -> bool:
        url = f"{self._oras.prefix}://{self._container(repository).get_blob_url(digest)}"
        response = self._request(url, "HEAD")
        return response.status_code == 200

    def upload_blob(self, repository: str, blob: Blob, path: Path, on_progress: ProgressCallback | None = None) -> bool:
        """Uploads unless the registry has it (returns whether bytes were sent). Over 8 MiB it is
        streamed in 4 MiB chunks, so memory does not grow with the module's size."""
        if self.blob_exists(repository, blob.digest):
            return False
        container = self._container(repository)
        layer = {"digest": blob.digest, "size": blob.size, "mediaType": blob.media_type}
        try:
            if blob.size > CHUNKED_ABOVE:
                self._oras.on_progress, self._oras.progress_total, self._oras.progress_sent = on_progress, blob.size, 0
                response = self._oras.chunked_upload(str(path), container, layer, chunk_size=CHUNK_SIZE)
            else:
                response = self._oras.put_upload(str(path), container, layer)
        except ValueError as error:  # ORAS's way of saying an upload step was refused
            raise UserError(f"registry {self.registry} refused the upload of {blob.digest[:19]}: {error}") from None
        finally:
            self._oras.on_progress = None
        if response.status_code == 401:
            raise refused_credentials(self.registry, self.credentials)
        if response.status_code == 403:
            raise UserError(f"registry {self.registry} denied pushing to {repository}: does this account have push rights?")
        if response.status_code not in (200, 201, 202, 204):
            raise UserError(f"registry {self.registry} refused blob {blob.digest[:19]}: {_explain(response)}")
        return True

    def put_manifest(self, repository: str, tag: str, body: bytes) -> str:
        """PUTs the exact bytes; returns the digest the registry reports."""
        url = f"{self._oras.prefix}://{self._container(repository, tag).manifest_url()}"
        response = self._request(url, "PUT", data=body, headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        if response.status_code == 403:
            raise UserError(f"registry {self.registry} denied pushing to {repository}: does this account have push rights?")
        if response.status_code in (400, 415):
            raise UserError(f"registry {self.registry} refused the manifest ({_explain(response)}): it may not accept "
                            f"OCI artifacts of media type {MANIFEST_MEDIA_TYPE} with a wasm config")
        if response.status_code not in (200, 201):
            raise UserError(f"registry {self.registry} did not store the manifest: {_explain(response)}")
        return response.headers.get("Docker-Content-Digest", "")

    # Manifests of any media type (signatures, indexes, referrers), tags and the referrers API:
    # what attaching and discovering signatures and SBOMs needs (signing.py, referrers.py).

    def store_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> StoredManifest:
        """PUTs the exact bytes as `media_type` under a tag or a digest."""
        url = f"{self._oras.prefix}://{self._container(repository, reference).manifest_url()}"
        response = self._request(url, "PUT", data=body, headers={"Content-Type": media_type})
        if response.status_code == 403:
            raise UserError(f"registry {self.registry} denied pushing to {repository}: does this account have push rights?")
        if response.status_code not in (200, 201):
            raise UserError(f"registry {self.registry} did not store the {media_type} manifest {reference}: {_explain(response)}")
        # OCI-Subject: the registry indexed the manifest's subject itself (it has the referrers API).
        return StoredManifest(response.headers.get("Docker-Content-Digest", ""), response.headers.get("OCI-Subject"))

    def find_manifest(self, repository: str, reference: str, accept: str) -> FoundManifest | None:
        """The manifest's bytes, the registry's digest and media type; None when there is none."""
        url = f"{self._oras.prefix}://{self._container(repository, reference).manifest_url()}"
        response = self._request(url, "GET", headers={"Accept": accept})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise UserError(f"registry {self.registry} did not return manifest {reference}: {_explain(response)}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return FoundManifest(response.content, response.headers.get("Docker-Content-Digest", ""), media_type)

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of the repository (following the `Link` pages); none for an unknown repository."""
        url: str | None = f"{self.base_url}{repository}/tags/list?n=1000"
        tags: list[str] = []
        for _ in range(1000):  # a registry whose pages never end must not keep us here
            if url is None:
                return tags
            response = self._request(url, "GET")
            if response.status_code == 404:
                return tags
            if response.status_code != 200:
                raise UserError(f"registry {self.registry} did not list the tags of {repository}: {_explain(response)}")
            try:
                tags += [t for t in response.json().get("tags") or [] if isinstance(t, str)]
            except (ValueError, AttributeError):
                raise UserError(f"registry {self.registry} answered the tag list of {repository} with something not JSON") from None
            url = _next_page(self.base_url, response.headers.get("Link", ""))
        return tags

    def list_referrers(self, repository: str, digest: str) -> dict | None:
        """The OCI 1.1 referrers API's image index for `digest`; None when the registry has no such API."""
        url = f"{self.base_url}{repository}/referrers/{digest}"
        response = self._request(url, "GET", headers={"Accept": "application/vnd.oci.image.index.v1+json"})
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        # A registry without the API answers 404 (distribution 2.8, GHCR, Docker Hub), or 200 with
        # something that is no index (a catch-all route).
        if response.status_code == 404 or (response.status_code == 200 and media_type != "application/vnd.oci.image.index.v1+json"):
            return None
        if response.status_code != 200:
            raise UserError(f"registry {self.registry} did not answer the referrers of {digest[:19]}: {_explain(response)}")
        try:
            index = response.json()
        except ValueError:
            raise UserError(f"registry {self.registry} sent referrers of {digest[:19]} that are not JSON") from None
        return index if isinstance(index, dict) else None

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """The manifest's bytes as stored, and the digest the registry reports."""
        url = f"{self._oras.prefix}://{self._container(repository, reference).manifest_url()}"
        response = self._request(url, "GET", headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            raise UserError(f"{self.registry}/{repository} has no manifest {reference}: push it first")
        if response.status_code != 200:
            raise UserError(f"registry {self.registry} did not return manifest {reference}: {_explain(response)}")
        return response.content, response.headers.get("Docker-Content-Digest", "")

    def download_blob(self, repository: str, digest: str, into: BinaryIO) -> str:
        """Streams a blob into `into`; returns the sha256 digest of what arrived."""
        import hashlib

        url = f"{self._oras.prefix}://{self._container(repository).get_blob_url(digest)}"
        response = self._request(url, "GET", stream=True)
        if response.status_code != 200:
            raise UserError(f"registry {self.registry} did not return blob {digest[:19]}: {_explain(response)}")
        hasher = hashlib.sha256()
        try:
            for piece in response.iter_content(1 << 20):
                hasher.update(piece)
                into.write(piece)
        except requests.exceptions.RequestException as error:
            raise unreachable(self.registry, error) from None
        return "sha256:" + hasher.hexdigest()


def _explain(response: requests.Response) -> str:
    """The registry's own error words when it sent them (OCI error JSON), else the status."""
    try:
        errors = response.json().get("errors") or []
        words = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                          + (f" ({json.dumps(e['detail'])[:200]})" if e.get("detail") else "")
                          for e in errors if isinstance(e, dict))
        if words:
            return f"{response.status_code} {words}"
    except ValueError:
        pass
    return f"{response.status_code} {response.reason}"

