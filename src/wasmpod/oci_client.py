"""Talking to an OCI registry through the ORAS Python client, with what it lacks added here:
a bounded retry policy, time-outs, the auth scheme chosen from the registry's challenge
(Basic, or Bearer with per-scope tokens and ACR identity tokens), and one clear error per failure.

Bounds on everything a registry sends (a registry may be broken or hostile): every answer is
streamed and read here with a cap (1 MiB for small answers, 4 MiB for a manifest, a blob's
declared size), and every request has a deadline on progress (`_StallGuard`): headers within
30 s, then 64 KiB of body per 30 s, else its socket is shut down and the transfer fails. A
request body goes out 64 KiB at a time, each piece within 30 s.

ORAS-py's own retry sleeps 3+5+11+29+83 s on any error, its default `token` backend fails on a
Basic challenge, and its `push()` writes a manifest Krustlet refuses; so we use its `Registry`
for requests, containers and blob uploads, and replace `do_request`'s retry and the auth backend.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
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
# Bounds on what a registry sends.
SMALL_BODY_LIMIT = 1 << 20  # errors, token answers, upload-session answers: a few hundred bytes in practice
MANIFEST_LIMIT = 4 << 20  # what registries themselves accept (distribution's default limit)
HEADERS_WITHIN = 30.0  # seconds from the request sent to the whole status line and headers
PROGRESS_WINDOW = 30.0  # seconds in which a body must make PROGRESS_BYTES of progress (or end)
PROGRESS_BYTES = 64 * 1024
READ_PIECE = 16 * 1024  # small enough that progress is seen well within a window on a slow link
MAX_REDIRECTS = 5

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
        original.close()  # its body is never read: free the connection and its stall guard
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
        # Streamed, so the answer is read here with a bound, not whole by requests.
        options = {"verify": self._tls_verify, "timeout": (CONNECT_TIMEOUT, READ_TIMEOUT), "stream": True}
        _StallGuard.forget()
        try:
            if creds and creds.identity_token:
                # An identity token is an OAuth2 refresh token: exchange it for an access token.
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, **params}
                answer = self.session.post(realm, data=form, **options)
            elif creds:
                answer = self.session.get(realm, params=params, headers={"Authorization": creds.basic_header()}, **options)
            else:
                answer = self.session.get(realm, params=params, **options)
        except requests.exceptions.RequestException as error:
            guard = _StallGuard.fired_on_this_thread()
            if guard is not None:
                raise stalled(guard.host) from None
            raise UserError(f"cannot reach the token service {realm} of {self.registry}: {_reason(error)}") from None
        _read_whole(answer, SMALL_BODY_LIMIT, "a token answer")
        # OAuth2 answers a bad or expired refresh token with 400 invalid_grant (RFC 6749, 5.2).
        if answer.status_code in (401, 403) or (answer.status_code == 400 and creds and creds.identity_token):
            raise refused_credentials(self.registry, creds)
        if answer.status_code != 200:
            raise UserError(f"the token service {realm} of {self.registry} answered {answer.status_code}")
        try:
            body = answer.json()
            return body.get("token") or body["access_token"]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
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


def _short_body(error: BaseException) -> tuple[int, int] | None:
    """(bytes read, bytes still expected) when `error` is a body cut short of its Content-Length."""
    while error is not None:
        if isinstance(error, http.client.IncompleteRead):  # urllib3's keeps a count, http.client's the bytes
            partial = error.partial if isinstance(error.partial, int) else len(error.partial)
            return partial, error.expected or 0
        error = error.args[0] if error.args and isinstance(error.args[0], BaseException) else error.__context__
    return None


def _is_unreachable(error: requests.exceptions.ConnectionError) -> bool:
    """Refused, unresolvable or unroutable: no point retrying. (A reset mid-request is transient.)"""
    first = error.args[0] if error.args else None
    reason = getattr(first, "reason", None)
    return isinstance(reason, urllib3.exceptions.NewConnectionError) or isinstance(first, urllib3.exceptions.NewConnectionError)


class _StallGuard:
    """A deadline on progress for one request on one socket: the status line and headers within
    HEADERS_WITHIN seconds, then PROGRESS_BYTES of body per PROGRESS_WINDOW. A per-recv read
    time-out cannot see a registry that trickles one byte a second; this can. When the deadline
    passes, a daemon thread shuts the socket down, so the blocked read ends at once."""

    _current = threading.local()  # the guard of this thread's latest request: did it fire?

    def __init__(self, sock: socket.socket, host: str):
        self.host = host
        self.fired = False
        self._sock = sock
        self._deadline = time.monotonic() + HEADERS_WITHIN
        self._progress = 0
        self._done = threading.Event()
        _StallGuard._current.guard = self
        threading.Thread(target=self._watch, name=f"stall-guard {host}", daemon=True).start()

    def _watch(self) -> None:
        while not self._done.wait(max(0.0, self._deadline - time.monotonic()) + 0.05):
            if time.monotonic() >= self._deadline:
                self.fired = True
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed: nothing is blocked on it
                return

    def progressed(self, count: int) -> None:
        """`count` more bytes of body arrived: a full PROGRESS_BYTES opens a new window."""
        self._progress += count
        if self._progress >= PROGRESS_BYTES:
            self._progress = 0
            self._deadline = time.monotonic() + PROGRESS_WINDOW

    def stop(self) -> None:
        self._done.set()

    @classmethod
    def forget(cls) -> None:
        cls._current.guard = None

    @classmethod
    def fired_on_this_thread(cls) -> "_StallGuard | None":
        guard = getattr(cls._current, "guard", None)
        return guard if guard is not None and guard.fired else None


class _GuardedConnectionMixin:
    """urllib3 connections with the same deadline on progress both ways: a request's body goes
    out PROGRESS_BYTES at a time, each within PROGRESS_WINDOW, and each response gets a
    `_StallGuard` once the request is sent. (urllib3 sends the body with the socket's time-out
    set to the connect time-out, 5 s, and `sendall` makes that a total: a 4 MiB chunk on an
    uplink under 1 MB/s would fail every time.)"""

    _stall_guard: _StallGuard | None = None
    _target: str | None = None

    def send(self, data) -> None:  # type: ignore[no-untyped-def]
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) <= PROGRESS_BYTES:
            return super().send(data)
        if self.sock is None:
            self.connect()  # within the connect time-out, as http.client would
        self.sock.settimeout(PROGRESS_WINDOW)
        try:
            view = memoryview(data)
            for start in range(0, len(view), PROGRESS_BYTES):
                super().send(view[start:start + PROGRESS_BYTES])
        finally:
            self.sock.settimeout(self.timeout)

    def getresponse(self):  # type: ignore[no-untyped-def]
        self._end_guard()
        guard = _StallGuard(self.sock, self._peer())
        self._stall_guard = guard
        try:
            response = super().getresponse()
        except BaseException:
            guard.stop()
            raise
        response.stall_guard = guard  # the body's reader reports progress to it
        return response

    def close(self) -> None:
        self._end_guard()
        super().close()

    def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Through HTTP_PROXY the URL is absolute: its host is the registry, this connection's the proxy's.
        self._target = urllib.parse.urlsplit(url).netloc if "://" in url else None
        return super().request(method, url, *args, **kwargs)

    def _peer(self) -> str:
        """Who is not answering: the registry, and the proxy when one stands between."""
        here = f"{self.host}:{self.port}"
        tunnel_host = getattr(self, "_tunnel_host", None)  # HTTPS_PROXY: a CONNECT tunnel to the registry
        target = f"{tunnel_host}:{self._tunnel_port}" if tunnel_host else getattr(self, "_target", None)
        return f"{target} (through the proxy {here})" if target and target != here else here

    def _end_guard(self) -> None:
        if self._stall_guard is not None:
            self._stall_guard.stop()
            self._stall_guard = None


class _GuardedHTTPConnection(_GuardedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _GuardedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


GUARDED_POOLS = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class _GuardedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections have the stall guard, direct or through a proxy
    (HTTPS_PROXY: a CONNECT tunnel; HTTP_PROXY: requests sent to the proxy)."""

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = GUARDED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):  # type: ignore[no-untyped-def]
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is urllib3.ProxyManager:  # a SOCKS manager has connection classes of its own
            manager.pool_classes_by_scheme = GUARDED_POOLS
        return manager


def _guard_session(session: requests.Session, registry: str) -> None:
    """Every connection of `session` gets a stall guard, and redirect answers are read bounded
    (requests would read a redirect's whole body to free its connection). A loopback registry is
    never reached through a proxy (as Go's clients, docker and skopeo, have it): HTTP_PROXY set
    for the outside world must not take the embedded registry's traffic away."""
    for prefix in ("http://", "https://"):
        session.mount(prefix, _GuardedAdapter())
    if is_loopback(registry):
        # Also keeps ~/.netrc away; this client chooses its own credentials and TLS settings.
        session.trust_env = False
    session.max_redirects = MAX_REDIRECTS
    session.hooks["response"].append(_read_redirect_bounded)


def _read_redirect_bounded(response: requests.Response, **_: object) -> requests.Response:
    if response.is_redirect:
        _read_whole(response, SMALL_BODY_LIMIT, "a redirect")
    return response


def stalled(host: str) -> UserError:
    return UserError(f"registry {host} stalled: no progress within {HEADERS_WITHIN:.0f} s (it stopped answering "
                     "or trickles); try again later")


def _stream_body(response: requests.Response, limit: int, write: Callable[[bytes], object], host: str) -> int:
    """Reads the body into `write`, never more than `limit` + 1 bytes (one more says it is too
    long); returns how many bytes came. A stall or a broken connection is a UserError."""
    guard: _StallGuard | None = getattr(response.raw, "stall_guard", None)
    total = 0
    try:
        while total <= limit:
            piece = response.raw.read(min(READ_PIECE, limit + 1 - total), decode_content=True)
            if not piece:
                break
            total += len(piece)
            if guard is not None:
                guard.progressed(len(piece))
            write(piece)
    except (urllib3.exceptions.HTTPError, OSError) as error:
        response.close()
        if guard is not None and guard.fired:
            raise stalled(guard.host) from None
        short = _short_body(error)
        if short is not None:  # it answered, then closed early: not a question of reaching it
            raise UserError(f"registry {host} closed the connection after {short[0]:,} of the {sum(short):,} bytes "
                            "it announced; try again, and check the registry if it happens again") from None
        raise unreachable(host, error) from None
    finally:
        if guard is not None:
            guard.stop()
    if guard is not None and guard.fired:  # shut down mid-body: what came may look like an end
        response.close()
        raise stalled(guard.host)
    if total > limit:
        response.close()  # not drained: the rest is never read
    else:
        response.raw.release_conn()
    return total


class BodyTooLarge(UserError):
    """A registry sent more than the bound for what was asked."""


def _read_whole(response: requests.Response, limit: int, what: str, host: str | None = None) -> None:
    """Reads a small body (at most `limit` bytes) into `response.content`; refuses a longer one."""
    host = host or requests.utils.urlparse(response.url).netloc
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit and response.request.method != "HEAD":
        response.close()
        raise BodyTooLarge(f"registry {host} sent {what} of {int(declared)} bytes, over the {_size(limit)} limit: refused")
    buffer = bytearray()
    if _stream_body(response, limit, buffer.extend, host) > limit:
        raise BodyTooLarge(f"registry {host} sent {what} of more than {_size(limit)}, the limit: refused")
    response._content = bytes(buffer)
    response._content_consumed = True


def _size(count: int) -> str:
    return f"{count >> 20} MiB" if count >= 1 << 20 else f"{count} bytes"


class _BoundedRegistry(oras.provider.Registry):
    """ORAS's Registry with time-outs, a bounded retry for transient faults only, and progress."""

    def __init__(self, registry: str, transport: Transport, credentials: Credentials | None):
        super().__init__(hostname=registry, insecure=transport.plain_http, tls_verify=transport.verify)
        _guard_session(self.session, registry)
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
        """One request with the retry policy. Bodies are always streamed from the socket and read
        here with a bound; only a successful answer the caller asked to stream (a blob) is left
        for it to read (`_stream_body`, capped at the blob's size)."""
        once = oras.provider.Registry.do_request.__wrapped__  # ORAS's request without its retry
        delay = 0.5
        while True:
            _StallGuard.forget()
            started = time.monotonic()
            try:
                response = once(self, url, method, data=data, headers=dict(headers or {}), json=json, stream=True)
            except requests.exceptions.RequestException as error:
                guard = _StallGuard.fired_on_this_thread()
                if guard is not None:  # never retried: each try would cost another 30 s
                    raise stalled(guard.host) from None
                # A failed attempt's own time counts against the budget: time-outs (a TLS handshake
                # gets 5 s) must not each add their length to the back-off.
                self.retry_left -= time.monotonic() - started
                response = self._failed(error, delay)
            except ValueError:  # ORAS: a 401/403 without a challenge to answer
                raise UserError(f"registry {self.hostname} refused access without saying how to authenticate") from None
            if response is not None and not (stream and response.status_code == 200):
                manifest = method == "GET" and "/manifests/" in url
                _read_whole(response, MANIFEST_LIMIT if manifest else SMALL_BODY_LIMIT,
                            "a manifest" if manifest else f"an answer to {method}", self.hostname)
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

    def _failed(self, error: requests.exceptions.RequestException, delay: float) -> None:
        """Raises the UserError for a failed request, or returns None when it is worth retrying."""
        if isinstance(error, requests.exceptions.SSLError):
            raise UserError(f"TLS with registry {self.hostname} failed ({_reason(error)}): pass --ca-file with "
                            "the CA that signed its certificate, or --insecure to skip verification") from None
        if isinstance(error, requests.exceptions.ConnectTimeout):
            raise UserError(f"registry {self.hostname} did not answer within {CONNECT_TIMEOUT:.0f} s: "
                            "is the address right and is it running?") from None
        if isinstance(error, requests.exceptions.ConnectionError):
            if _is_unreachable(error) or self.retry_left < delay:
                raise unreachable(self.hostname, error) from None
            return None
        if isinstance(error, requests.exceptions.Timeout):
            if self.retry_left < delay:
                raise UserError(f"registry {self.hostname} stalled: it kept timing out through {RETRY_BUDGET:.0f} s of "
                                "retries (it stopped answering or trickles); try again later") from None
            return None
        if isinstance(error, requests.exceptions.TooManyRedirects):
            raise UserError(f"registry {self.hostname} redirected more than {MAX_REDIRECTS} times: refused") from None
        raise UserError(f"the request to registry {self.hostname} failed: {_reason(error)}") from None


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

    def download_blob(self, repository: str, digest: str, size: int, into: BinaryIO) -> None:
        """Streams a blob into `into`, reading at most one byte past its declared `size`; raises
        `BlobMismatch` when the size is wrong (said as such) or, the size right, the digest is."""
        url = f"{self._oras.prefix}://{self._container(repository).get_blob_url(digest)}"
        response = self._request(url, "GET", stream=True)
        if response.status_code != 200:
            raise UserError(f"registry {self.registry} did not return blob {digest[:19]}: {_explain(response)}")
        hasher = hashlib.sha256()
        written = 0

        def take(piece: bytes) -> None:
            nonlocal written
            piece = piece[:size - written]  # the byte past the size only proves it is too long
            hasher.update(piece)
            into.write(piece)
            written += len(piece)

        got = _stream_body(response, size, take, self.registry)
        if got > size:
            raise BlobMismatch(f"registry {self.registry} sent more than the {size} bytes blob {digest[:19]} declares "
                               "(wrong size)")
        if got < size:
            raise BlobMismatch(f"registry {self.registry} sent {got} bytes of blob {digest[:19]}, which declares {size} "
                               "(wrong size)")
        if "sha256:" + hasher.hexdigest() != digest:
            raise BlobMismatch(f"registry {self.registry} sent blob {digest[:19]} with digest "
                               f"sha256:{hasher.hexdigest()[:12]} (wrong bytes)")


class BlobMismatch(UserError):
    """A blob arrived with the wrong size or bytes: the caller says what that means for it."""


def _explain(response: requests.Response) -> str:
    """The registry's own error words when it sent them (OCI error JSON), else the status."""
    # The body was read with a bound (do_request); a hostile one may still be any JSON at all.
    try:
        errors = response.json().get("errors") or []
        words = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                          + (f" ({json.dumps(e['detail'])[:200]})" if e.get("detail") else "")
                          for e in errors if isinstance(e, dict))
        if words:
            return f"{response.status_code} {_printable(words)[:500]}"
    except (ValueError, AttributeError, TypeError, RecursionError):
        pass
    return f"{response.status_code} {_printable(str(response.reason))[:100]}"


def _printable(text: str) -> str:
    """A registry's words on one line: no control characters (the error stays one line)."""
    return "".join(char if char.isprintable() else " " for char in text)

