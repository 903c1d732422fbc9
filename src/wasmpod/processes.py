"""The background processes the toolchain starts (the local registry, the local node's runners):
who they are, whether one is alive, and stopping it.

A pid alone never names a process of ours: pids are reused, and a pid file can be stale, damaged
or planted. A `ProcessIdentity` is the pid, the process's start time (field 22 of /proc/PID/stat,
in clock ticks since boot: a reused pid has another) and the command line we started it with; a
signal is sent only after all three are checked again.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


def is_alive(pid: int | None) -> bool:
    """True while `pid` runs; a zombie (ended, not yet reaped) does not count."""
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it, if it is our own child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (after the command name, which may hold spaces and ')')."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return int(fields[19]) if len(fields) > 19 and fields[0] != "Z" else None


def _cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1])


@dataclass(frozen=True)
class ProcessIdentity:
    """A process we started: its pid, its start time, and the end of its command line."""

    pid: int
    start_time: int
    command: tuple[str, ...]  # what its argv ends with, e.g. ("-m", "wasmpod.local_node", DIR)

    @classmethod
    def of(cls, pid: int, command: tuple[str, ...], just_started: bool = False) -> "ProcessIdentity | None":
        """The identity of the running process `pid`, if its command line ends with `command`."""
        deadline = time.monotonic() + (2.0 if just_started else 0.0)
        while _cmdline(pid) == () and time.monotonic() < deadline:
            time.sleep(0.01)  # the kernel shows a new command line a moment after exec
        start = _start_time(pid)
        identity = cls(pid, start, command) if start is not None else None
        return identity if identity is not None and identity.is_running() else None

    def is_running(self) -> bool:
        """This very process runs: same pid, same start time, same command (not a zombie)."""
        if self.pid <= 1 or _start_time(self.pid) != self.start_time:
            return False
        argv = _cmdline(self.pid)
        return argv is not None and argv[-len(self.command):] == self.command

    def as_json(self) -> dict[str, object]:
        return {"pid": self.pid, "start_time": self.start_time, "command": list(self.command)}

    @classmethod
    def from_json(cls, data: object) -> "ProcessIdentity":
        """Raises ValueError unless `data` has the shape `as_json` writes."""
        if not isinstance(data, dict) or set(data) != {"pid", "start_time", "command"}:
            raise ValueError("expected an object with pid, start_time and command")
        pid, start, command = data["pid"], data["start_time"], data["command"]
        if not (type(pid) is int and type(start) is int and pid > 1 and start >= 0):
            raise ValueError("pid and start_time must be whole numbers")
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            raise ValueError("command must be a list of text")
        return cls(pid, start, tuple(command))

    def signal(self, signum: int, group: bool = False) -> bool:
        """Sends `signum` (to its whole process group with `group`, only when it leads that
        group) if this is still our process; returns whether it was sent."""
        if not self.is_running():
            return False
        try:
            if group:
                if os.getpgid(self.pid) != self.pid:
                    return False
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float, group: bool = False) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds (to its process group with `group`);
        nothing at all if the process is not ours."""
        if not self.signal(signal.SIGTERM):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_running():
            is_alive(self.pid)  # reaps it when it is our child
            time.sleep(0.05)
        self.signal(signal.SIGKILL, group=group)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_running():  # until the kernel has ended it
            is_alive(self.pid)
            time.sleep(0.02)


def find_processes(command: tuple[str, ...]) -> list[ProcessIdentity]:
    """Every running process whose command line ends with `command` (for when the record of the
    one we started is lost or damaged)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            identity = ProcessIdentity.of(int(entry.name), command)
            if identity is not None:
                found.append(identity)
    return found
