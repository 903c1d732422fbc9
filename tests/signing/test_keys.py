"""Keys in cosign's formats: cosign's own key files decrypt, ours decrypt through the same code
and by an independent reading of the format, and no secret reaches any output."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.secret import SecretBox

from signing_kit import FIXTURE_PASSWORD
from testkit import invoke
from wasmpod.errors import UserError
from wasmpod.keys import generate_key_pair, load_signing_key, load_verify_key

HELLO = {"COSIGN_PASSWORD": FIXTURE_PASSWORD}


@pytest.mark.parametrize("name", ["encrypted-sigstore-format.key", "encrypted-cosign-format.key"])
def test_cosign_key_files_of_both_pem_types_decrypt_with_hello_to_p256(fixtures, name):
    key = load_signing_key(str(fixtures / name), HELLO)
    assert isinstance(key.private.curve, ec.SECP256R1)
    assert key.public.verifies(b"data", key.sign(b"data"))


def test_a_wrong_password_is_one_line_without_the_password(fixtures):
    with pytest.raises(UserError) as refused:
        load_signing_key(str(fixtures / "encrypted-sigstore-format.key"), {"COSIGN_PASSWORD": "not-hello-123"})
    assert "wrong password" in str(refused.value)
    assert "not-hello-123" not in str(refused.value) and "\n" not in str(refused.value)


def _decrypt_independently(pem: bytes, password: bytes) -> ec.EllipticCurvePrivateKey:
    """The format as the reference describes it, read here without wasmpod.keys."""
    lines = pem.decode().strip().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert lines[-1] == "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"
    envelope = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert envelope["kdf"]["name"] == "scrypt" and envelope["cipher"]["name"] == "nacl/secretbox"
    params = envelope["kdf"]["params"]
    assert (params["r"], params["p"]) == (8, 1)
    secret = hashlib.scrypt(password, salt=base64.b64decode(envelope["kdf"]["salt"]), n=params["N"], r=8, p=1,
                            maxmem=1 << 26, dklen=32)
    der = SecretBox(secret).decrypt(base64.b64decode(envelope["ciphertext"]), base64.b64decode(envelope["cipher"]["nonce"]))
    assert bytes.fromhex("06072a8648ce3d0201") in der[:40]  # PKCS#8's algorithm identifier (id-ecPublicKey), not SEC1
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_keygen_writes_cosigns_format_read_by_the_same_path_as_cosigns_keys(tmp_path):
    files = generate_key_pair(tmp_path / "cosign", lambda confirm: b"s3cret pass")
    assert stat.S_IMODE(files.private.stat().st_mode) == 0o600
    ours = load_signing_key(str(files.private), {"COSIGN_PASSWORD": "s3cret pass"})
    independent = _decrypt_independently(files.private.read_bytes(), b"s3cret pass")
    assert independent.private_numbers() == ours.private.private_numbers()
    assert load_verify_key(str(files.public), {}).pem() == ours.public.pem()
    with pytest.raises(UserError, match="wrong password"):
        load_signing_key(str(files.private), {"COSIGN_PASSWORD": "other"})


def test_keygen_keeps_existing_files_unless_forced(tmp_path):
    generate_key_pair(tmp_path / "k", lambda confirm: b"pw")
    before = (tmp_path / "k.key").read_bytes()
    with pytest.raises(UserError, match="already exist"):
        generate_key_pair(tmp_path / "k", lambda confirm: b"pw")
    assert (tmp_path / "k.key").read_bytes() == before
    generate_key_pair(tmp_path / "k", lambda confirm: b"pw", force=True)
    assert (tmp_path / "k.key").read_bytes() != before


def test_a_plain_pkcs8_key_and_a_key_in_a_variable_sign(tmp_path):
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "plain.pem").write_bytes(pem)
    from_file = load_signing_key(str(tmp_path / "plain.pem"), {})
    from_variable = load_signing_key("env://COSIGN_PRIVATE_KEY", {"COSIGN_PRIVATE_KEY": pem.decode()})
    assert from_file.private.private_numbers() == from_variable.private.private_numbers() == private.private_numbers()


@pytest.mark.parametrize("where, environ, said", [
    ("missing.key", {}, "does not exist"),
    ("env://COSIGN_PRIVATE_KEY", {}, "COSIGN_PRIVATE_KEY is not set"),
    ("cosign.pub", {}, "is a public key"),
])
def test_key_mistakes_are_one_line(fixtures, monkeypatch, where, environ, said):
    monkeypatch.chdir(fixtures)
    with pytest.raises(UserError, match=said):
        load_signing_key(where, environ)


def test_invoke_keygen_prints_no_secret_and_its_key_signs_with_cosign_password(tmp_path, clean_env):
    env = {**clean_env, "COSIGN_PASSWORD": "pw-never-printed"}
    done = invoke("keygen", "--out", str(tmp_path / "ci"), env=env)
    assert done.returncode == 0, done.stderr
    key_text = (tmp_path / "ci.key").read_text()
    body = "".join(key_text.splitlines()[1:-1])
    for output in (done.stdout, done.stderr):
        assert "pw-never-printed" not in output and body[:40] not in output
    assert done.stdout.splitlines() == [f"Private key written to {tmp_path / 'ci.key'}",
                                        f"Public key written to {tmp_path / 'ci.pub'}"]
    again = invoke("keygen", "--out", str(tmp_path / "ci"), env=env)
    assert again.returncode == 1 and again.stderr.startswith("error: ") and len(again.stderr.splitlines()) == 1


def test_invoke_keygen_without_a_password_or_terminal_says_so(tmp_path, clean_env):
    done = invoke("keygen", "--out", str(tmp_path / "k"), env=clean_env)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: the key's password: set COSIGN_PASSWORD (no terminal to ask on)"
    assert not Path(tmp_path / "k.key").exists()


def test_invoke_keygen_asks_for_the_password_twice_on_a_terminal(tmp_path, clean_env):
    """No COSIGN_PASSWORD: asked on the terminal, twice, never echoed; the key decrypts with it."""
    import os
    import pty
    import time

    from testkit import INVOKE, ROOT

    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execve(str(INVOKE), [str(INVOKE), "keygen", "--out", str(tmp_path / "tty")], clean_env)
    seen = b""
    deadline = time.monotonic() + 60
    answered = 0
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if seen.count(b"password for private key") > answered:
            answered += 1
            os.write(fd, b"typed-secret\n")
    os.waitpid(pid, 0)
    assert answered == 2, seen
    assert b"typed-secret" not in seen
    assert load_signing_key(str(tmp_path / "tty.key"), {"COSIGN_PASSWORD": "typed-secret"})


def test_an_empty_cosign_password_is_a_password(tmp_path):
    """As for cosign: COSIGN_PASSWORD set to empty means the empty password, not 'ask'."""
    generate_key_pair(tmp_path / "empty", lambda confirm: b"")
    assert load_signing_key(str(tmp_path / "empty.key"), {"COSIGN_PASSWORD": ""})


def test_a_key_file_asking_for_a_huge_scrypt_cost_is_refused_before_deriving(tmp_path):
    """A key file names its own scrypt cost; N=2^24 would take 16 GiB: refused, not obeyed."""
    envelope = {"kdf": {"name": "scrypt", "params": {"N": 1 << 24, "r": 8, "p": 1}, "salt": base64.b64encode(b"s" * 32).decode()},
                "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(b"n" * 24).decode()},
                "ciphertext": base64.b64encode(b"c" * 80).decode()}
    body = base64.b64encode(json.dumps(envelope).encode()).decode()
    (tmp_path / "costly.key").write_text(f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}\n"
                                         "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    with pytest.raises(UserError, match="outside what cosign writes"):
        load_signing_key(str(tmp_path / "costly.key"), {"COSIGN_PASSWORD": "x"})
