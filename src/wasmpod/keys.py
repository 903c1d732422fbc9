"""Signing keys in cosign's formats, so one key pair works with both `invoke sign` and `cosign`.

Public key: PKIX PEM (`PUBLIC KEY`). Private key: cosign's encrypted PEM (`ENCRYPTED SIGSTORE
PRIVATE KEY`, or the older `ENCRYPTED COSIGN PRIVATE KEY`) holding the JSON of
secure-systems-lab's `encrypted` package: scrypt derives a 32-byte key from the password, NaCl's
secretbox (XSalsa20-Poly1305) seals the PKCS#8 DER of the key. A plain PKCS#8 `PRIVATE KEY` PEM
(or an `EC PRIVATE KEY`) is read too, for keys made with openssl.

Where a key comes from, as cosign takes it: a file path, or `env://NAME` for PEM text in a variable
(CI: `--sign-key env://COSIGN_PRIVATE_KEY`). The password: COSIGN_PASSWORD (set, even to empty),
else asked on the terminal; never printed.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from .atomic_files import write_atomically
from .errors import UserError

PASSWORD_VARIABLE = "COSIGN_PASSWORD"
ENV_PREFIX = "env://"
ENCRYPTED_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
WRITTEN_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"  # what cosign 2.x and 3.x write
# cosign's (go-securesystemslib's) parameters for new keys.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
# A key file names its own scrypt cost; above this much memory it is refused rather than obeyed.
SCRYPT_MEMORY_LIMIT = 256 * 1024 * 1024
KEY_FILE_LIMIT = 64 * 1024  # a PEM key is under 1 KiB; anything this large is not one

PasswordSource = Callable[[bool], bytes]  # (confirm twice?) -> password


@dataclass(frozen=True)
class SigningKey:
    """A private key ready to sign, and where it came from (for messages; never the key itself)."""

    private: ec.EllipticCurvePrivateKey
    source: str

    def __repr__(self) -> str:  # no traceback or log shows the key
        return f"SigningKey(source={self.source!r})"

    def sign(self, data: bytes) -> bytes:
        """ASN.1 DER ECDSA over SHA-256 of `data`, as cosign signs a payload."""
        return self.private.sign(data, ec.ECDSA(hashes.SHA256()))

    @property
    def public(self) -> "VerifyKey":
        return VerifyKey(self.private.public_key(), self.source)


@dataclass(frozen=True)
class VerifyKey:
    public: ec.EllipticCurvePublicKey
    source: str

    def verifies(self, data: bytes, signature: bytes) -> bool:
        try:
            self.public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            return True
        except (InvalidSignature, ValueError):
            return False

    def pem(self) -> bytes:
        return public_pem(self.public)


def public_pem(public: ec.EllipticCurvePublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def password_from(environ: Mapping[str, str], prompt: Callable[[str], str] = getpass.getpass) -> PasswordSource:
    """COSIGN_PASSWORD when it is set (empty is a password too, as for cosign), else the terminal."""

    def ask(confirm: bool) -> bytes:
        if PASSWORD_VARIABLE in environ:
            return environ[PASSWORD_VARIABLE].encode()
        if not sys.stdin.isatty():
            raise UserError(f"the key's password: set {PASSWORD_VARIABLE} (no terminal to ask on)")
        first = prompt("Enter password for private key: ")
        if confirm and prompt("Enter password for private key again: ") != first:
            raise UserError("the two passwords differ: nothing written")
        return first.encode()

    return ask


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    need = 128 * r * n * p + 1024 * 1024
    if n < 2 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16 or need > SCRYPT_MEMORY_LIMIT:
        raise UserError(f"the key's scrypt parameters (N={n}, r={r}, p={p}) are outside what cosign writes: refused")
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=need * 2, dklen=32)


def encrypt_private_key(private: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """cosign's encrypted PEM of `private` (what `cosign generate-key-pair` writes)."""
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    salt = os.urandom(32)
    nonce = os.urandom(SecretBox.NONCE_SIZE)
    sealed = SecretBox(_scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(der, nonce).ciphertext
    envelope = {
        "kdf": {"name": "scrypt", "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
                "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    return _pem(WRITTEN_PEM_TYPE, json.dumps(envelope, separators=(",", ":")).encode())


def _pem(kind: str, data: bytes) -> bytes:
    text = base64.b64encode(data).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return (f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n").encode()


def _pem_blocks(text: bytes) -> list[tuple[str, bytes]]:
    """(type, decoded body) of each PEM block; nothing else of the text is kept."""
    blocks = []
    kind, body = None, []
    for raw in text.decode("ascii", errors="replace").splitlines():
        line = raw.strip()
        if line.startswith("-----BEGIN ") and line.endswith("-----"):
            kind, body = line[len("-----BEGIN "):-5], []
        elif kind is not None and line == f"-----END {kind}-----":
            try:
                blocks.append((kind, base64.b64decode("".join(body), validate=True)))
            except ValueError:
                raise UserError(f"the {kind} block is not valid base64") from None
            kind = None
        elif kind is not None:
            body.append(line)
    return blocks


def decrypt_private_key(kind: str, sealed_json: bytes, password: bytes, source: str) -> ec.EllipticCurvePrivateKey:
    """The key inside cosign's encrypted PEM body; a wrong password is one line."""
    try:
        envelope = json.loads(sealed_json)
        kdf, cipher = envelope["kdf"], envelope["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise UserError(f"{source}: {kind} uses {kdf['name']} and {cipher['name']}; cosign's are scrypt and nacl/secretbox")
        params = kdf["params"]
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        ciphertext = base64.b64decode(envelope["ciphertext"], validate=True)
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{source} is not a cosign key: its {kind} block is not the JSON cosign writes") from None
    try:
        der = SecretBox(_scrypt(password, salt, n, r, p)).decrypt(ciphertext, nonce)
    except (CryptoError, ValueError):
        raise UserError(f"cannot decrypt {source}: wrong password (COSIGN_PASSWORD)") from None
    return _ec_private_key(serialization.load_der_private_key(der, password=None), source)


def _ec_private_key(key: object, source: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(f"{source} holds a {type(key).__name__.lstrip('_')}; signing here takes ECDSA keys (cosign's default P-256)")
    return key


def read_key_text(where: str, environ: Mapping[str, str]) -> tuple[bytes, str]:
    """The PEM text of a key given as a file path or as `env://NAME`, and a name for messages."""
    if where.startswith(ENV_PREFIX):
        name = where[len(ENV_PREFIX):]
        value = environ.get(name)
        if not value:
            raise UserError(f"the key {where}: variable {name} is not set or empty")
        return value.encode(), f"the key in ${name}"
    path = Path(where).expanduser()
    try:
        with path.open("rb") as handle:
            text = handle.read(KEY_FILE_LIMIT + 1)
    except FileNotFoundError:
        raise UserError(f"key file {where} does not exist") from None
    except OSError as error:
        raise UserError(f"cannot read key file {where}: {error.strerror}") from None
    if len(text) > KEY_FILE_LIMIT:
        raise UserError(f"{where} is larger than any key: is it the right file?")
    return text, f"key file {where}"


def load_signing_key(where: str, environ: Mapping[str, str], password: PasswordSource | None = None) -> SigningKey:
    """A private key from cosign's encrypted PEM (either type; password asked only for these) or
    a plain PKCS#8 / SEC1 PEM."""
    text, source = read_key_text(where, environ)
    for kind, body in _pem_blocks(text):
        if kind in ENCRYPTED_PEM_TYPES:
            ask = password or password_from(environ)
            return SigningKey(decrypt_private_key(kind, body, ask(False), source), source)
        if kind in ("PRIVATE KEY", "EC PRIVATE KEY"):
            try:
                key = (serialization.load_der_private_key(body, password=None) if kind == "PRIVATE KEY"
                       else serialization.load_pem_private_key(text, password=None))
            except (ValueError, TypeError):
                raise UserError(f"{source}: its {kind} block does not parse") from None
            return SigningKey(_ec_private_key(key, source), source)
        if kind == "PUBLIC KEY":
            raise UserError(f"{source} is a public key: signing needs the private key (cosign.key)")
    raise UserError(f"{source} holds no private key (expected a PEM block ENCRYPTED SIGSTORE PRIVATE KEY or PRIVATE KEY)")


def load_verify_key(where: str, environ: Mapping[str, str]) -> VerifyKey:
    """A PKIX PEM public key (cosign.pub), from a file or `env://NAME`."""
    text, source = read_key_text(where, environ)
    for kind, body in _pem_blocks(text):
        if kind == "PUBLIC KEY":
            try:
                key = serialization.load_der_public_key(body)
            except (ValueError, TypeError):
                raise UserError(f"{source}: its PUBLIC KEY block does not parse") from None
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise UserError(f"{source} is a {type(key).__name__.lstrip('_')}; verifying here takes ECDSA keys "
                                "(cosign's default P-256)")
            return VerifyKey(key, source)
        if kind in ENCRYPTED_PEM_TYPES or kind in ("PRIVATE KEY", "EC PRIVATE KEY"):
            raise UserError(f"{source} is a private key: verify with the public key (cosign.pub)")
    raise UserError(f"{source} holds no PUBLIC KEY PEM block")


@dataclass(frozen=True)
class KeyPairFiles:
    private: Path
    public: Path


def generate_key_pair(prefix: Path, password: PasswordSource, force: bool = False) -> KeyPairFiles:
    """`invoke keygen`: PREFIX.key (cosign's encrypted format, mode 0600) and PREFIX.pub (PKIX PEM),
    the files `cosign generate-key-pair` writes. Existing files are kept unless `force`."""
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        raise UserError(f"{' and '.join(existing)} already exist: choose another --out, or pass --force to replace them")
    if not private_path.parent.is_dir():
        raise UserError(f"directory {private_path.parent} does not exist")
    secret = password(True)
    private = ec.generate_private_key(ec.SECP256R1())
    write_atomically(private_path, encrypt_private_key(private, secret).decode(), mode=0o600)
    write_atomically(public_path, public_pem(private.public_key()).decode(), mode=0o644)
    return KeyPairFiles(private_path, public_path)
