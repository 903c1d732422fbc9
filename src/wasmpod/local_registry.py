"""The embedded local registry: Debian's docker-registry on 127.0.0.1, data under `registry/data`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .atomic_files import write_atomically
from .processes import ProcessIdentity

DEFAULT_PORT = 5000
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class RegistryState:
    address: str
    running: bool
    pid: int | None  # None when not running, or when it is not one we started
    data_dir: Path

    def describe(self) -> str:
        if not self.running:
            return f"local registry {self.address}: not running"
        owner = f"pid {self.pid}" if self.pid else "not started by us"
        return f"local registry {self.address}: running ({owner}), data in {self.data_dir}"


@dataclass(frozen=True)
class LocalRegistry:
    """One project's registry: its configuration in `registry/`, its state in `registry/data/`."""

    directory: Path
    port: int = DEFAULT_PORT

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / f"registry-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "registry.log"

    def _answers(self) -> bool | None:
        """True: a registry answers; False: something else does; None: nothing listens."""
        try:
            with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as reply:
                return reply.headers.get("Docker-Distribution-Api-Version") is not None or reply.status == 200
        except urllib.error.HTTPError as error:
            return error.headers.get("Docker-Distribution-Api-Version") is not None
        except (urllib.error.URLError, OSError):
            return None

    @property
    def _command(self) -> tuple[str, ...]:
        return ("serve", str(self.directory / "config.yml"))

    def _ours(self) -> ProcessIdentity | None:
        """The registry we started, if it still runs: a pid file that is damaged, or names a
        process that is not this registry (pid reused, file planted), names nothing."""
        try:
            identity = ProcessIdentity.from_json(json.loads(self._pid_file.read_text())["process"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return identity if identity.command == self._command and identity.is_running() else None

    def _our_pid(self) -> int | None:
        ours = self._ours()
        return ours.pid if ours else None

    def status(self) -> RegistryState:
        answers = self._answers()
        return RegistryState(self.address, answers is True, self._our_pid() if answers else None, self.data_dir)

    def up(self) -> RegistryState:
        """Starts the registry unless one already answers there; returns once it answers."""
        answers = self._answers()
        if answers is True:
            return self.status()
        if answers is False:
            raise UserError(f"port {self.port} is taken by something that is not a registry: choose another with --port")
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        if not Path(binary).exists():
            raise UserError("docker-registry is not installed: apt-get install docker-registry (or run ./bootstrap.sh)")
        (self.data_dir / "storage").mkdir(parents=True, exist_ok=True)
        env = {**os.environ,
               "REGISTRY_HTTP_ADDR": self.address,
               "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str((self.data_dir / "storage").resolve())}
        with self.log_file.open("ab") as log:
            # A session of its own: the registry outlives the invoke command that started it.
            process = subprocess.Popen([binary, *self._command], env=env,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        identity = ProcessIdentity.of(process.pid, self._command, just_started=True)
        if identity is not None:  # None: it has already ended, which the loop below reports
            write_atomically(self._pid_file, json.dumps({"process": identity.as_json(), "port": self.port}))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._pid_file.unlink(missing_ok=True)
                last = self.log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise UserError(f"docker-registry exited at start ({last[0][:200]}); see {self.log_file}")
            if self._answers():
                return self.status()
            time.sleep(0.1)
        process.terminate()
        raise UserError(f"docker-registry did not answer on {self.address} within {START_TIMEOUT:.0f} s; see {self.log_file}")

    def down(self) -> RegistryState:
        """Stops the registry we started; one we did not start is left alone."""
        ours = self._ours()
        if ours is None:
            self._pid_file.unlink(missing_ok=True)
            if self._answers():
                raise UserError(f"the registry on {self.address} was not started by this project: stop it where it was started")
            return self.status()
        ours.stop(timeout=10)
        self._pid_file.unlink(missing_ok=True)
        return self.status()
