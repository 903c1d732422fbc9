"""Files that appear whole or not at all, and never through someone else's link.

Every file the toolchain writes for later reading (the docker config with its credentials, the
rendered manifests with the pull Secret, the local node's state, build stamps) goes through here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError


def write_atomically(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Writes `data` to a new temporary file beside `path` and renames it over `path`.

    The temporary file is created exclusively (`O_EXCL`, which also refuses to follow a symbolic
    link planted at its name) with `mode` from the start, so a secret is never readable by others,
    not even for a moment; it is flushed to disk before the rename, so a crash leaves the old file
    or the new one, never half of either.
    """
    payload = data.encode() if isinstance(data, str) else data
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def make_directory(path: Path, what: str) -> Path:
    """`mkdir -p path`, or one line saying why not: a file in the way, a parent that is not a
    directory, no permission, a file system that refuses (/proc)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what} {path} is a file, not a directory: remove it or choose another path") from None
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise UserError(f"cannot create {what} {path}: {reason}; choose a path you can write to") from None
    return path
