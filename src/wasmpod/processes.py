"""The background processes the toolchain starts (the local registry, the local node's runners):
whether one is alive, and stopping it."""

from __future__ import annotations

import os
import signal
import time


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


def stop(pid: int, timeout: float, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds (to its whole process group with `group`)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_alive(pid):
        time.sleep(0.05)
    if is_alive(pid):
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
