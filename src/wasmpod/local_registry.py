"""The embedded local registry: Debian's docker-registry on 127.0.0.1, data under `registry/data`.

Another checkout may already run one on the same port: it is used (one registry per port), but
said to be theirs, named by the configuration file on its command line (found through the
socket listening on the port, /proc/net/tcp, and the process holding it), and its data folder is
never called ours."""

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
    # Who runs it when we did not: "another checkout: /x (pid N)", "pid N: COMMAND", or unknown.
    foreign: str | None = None

    def describe(self) -> str:
        if not self.running:
            return f"local registry {self.address}: not running"
        if self.foreign is not None:
            return f"local registry {self.address}: running, started by {self.foreign}, not by this checkout"
        return f"local registry {self.address}: running (pid {self.pid}), data in {self.data_dir}"

    def foreign_note(self) -> str | None:
        """What push says when it stores into a registry this checkout did not start."""
        if not self.running or self.foreign is None:
            return None
        port = self.address.rsplit(":", 1)[1]
        return (f"note: the registry on {self.address} was started by {self.foreign}: the module is stored there; "
                f"stop that one, or give this checkout its own with --port (e.g. `invoke registry.up --port {int(port) + 1}`)")


def listening_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:`port` (or any address), when /proc lets us see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local address HEX:PORT, state 0A = LISTEN, inode
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue  # ended meanwhile, or another user's
    return None


def describe_process(pid: int) -> tuple[tuple[str, ...], str]:
    """Its command line, and who it is in words: a checkout's registry is named by its directory."""
    try:
        argv = tuple(part.decode(errors="replace") for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1])
    except OSError:
        return (), f"pid {pid}"
    config = next((Path(a) for a in argv if a.endswith((".yml", ".yaml"))), None)
    if argv and Path(argv[0]).name == "docker-registry" and config is not None and config.parent.name == "registry":
        return argv, f"another checkout: {config.parent.parent} (pid {pid})"
    return argv, f"pid {pid}: {' '.join(argv)[:120] or '(no command line)'}"


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
        if not answers:
            return RegistryState(self.address, False, None, self.data_dir)
        ours = self._our_pid()
        if ours is not None:
            return RegistryState(self.address, True, ours, self.data_dir)
        pid = listening_pid(self.port)
        if pid is None:
            return RegistryState(self.address, True, None, self.data_dir,
                                 foreign="a process we cannot see (another user's?)")
        argv, who = describe_process(pid)
        if argv[-len(self._command):] == self._command:  # ours, its pid file lost
            return RegistryState(self.address, True, pid, self.data_dir)
        return RegistryState(self.address, True, None, self.data_dir, foreign=who)

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
            state = self.status()
            if state.running:
                raise UserError(f"the registry on {self.address} was started by {state.foreign or 'this checkout, unrecorded'}, "
                                "not by this checkout: stop it where it was started")
            return self.status()
        ours.stop(timeout=10)
        self._pid_file.unlink(missing_ok=True)
        return self.status()
