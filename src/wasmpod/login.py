"""`login`: credentials checked against the registry before they are saved."""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from .credentials import PASSWORD_VARIABLE, USERNAME_VARIABLE, Credentials, save_credentials
from .errors import UserError
from .push import connect
from .settings import RegistrySettings


def login_to_registry(settings: RegistrySettings, username: str | None, password_stream: TextIO | None,
                      environ: dict[str, str]) -> str:
    """Asks the registry whether the credentials work (GET /v2/ answered through its challenge),
    and only then stores them. Returns the line to print; the password is never part of it."""
    if settings.registry is None:
        raise UserError("name the registry to log in to, e.g. `invoke login myregistry.azurecr.io`")
    username = username or environ.get(USERNAME_VARIABLE) or _ask("Username: ", secret=False)
    if password_stream is not None:
        password = password_stream.read().rstrip("\r\n")
    else:
        password = environ.get(PASSWORD_VARIABLE) or _ask("Password: ", secret=True)
    if not username or not password:
        raise UserError(f"give a user name and a password ({USERNAME_VARIABLE}/{PASSWORD_VARIABLE}, "
                        "--username and --password-stdin, or at the prompt)")
    credentials = Credentials(username, password=password, source="the login")
    asked = connect(None, settings, environ, credentials=credentials).check_access()
    where = save_credentials(settings.registry, credentials, environ)
    note = "" if asked else " (the registry did not ask for credentials; they are saved for when it does)"
    return f"Login Succeeded: {username}@{settings.registry}, saved in {where}{note}"


def _ask(prompt: str, secret: bool) -> str:
    if not sys.stdin.isatty():
        raise UserError(f"no terminal to ask on: set {USERNAME_VARIABLE} and {PASSWORD_VARIABLE}, "
                        "or pass --username and --password-stdin")
    return getpass.getpass(prompt) if secret else input(prompt)
