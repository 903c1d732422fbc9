"""Running a wasm32-wasi command module in wasmtime the way Krustlet runs a Pod's container:
`args` become argv verbatim, each volume is preopened at its mount path, `env` is passed as is."""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .atomic_files import make_directory
from .errors import UserError

# Exit status reported when the run was stopped from outside (128 + SIGINT, as a shell does).
STOPPED = 130
# The module's exit status when its output directory was removed under it (its contract): it
# can never write through that directory again, and a restart opens the one there now.
OUTPUT_REMOVED = 75


@dataclass(frozen=True)
class WasiRun:
    module: Path
    argv: tuple[str, ...]
    # (host directory, guest path) pairs, preopened read-write.
    preopens: tuple[tuple[Path, str], ...]
    env: tuple[tuple[str, str], ...] = ()
    # None: the module writes to this process's own stdout/stderr.
    stdout: Path | None = None
    stderr: Path | None = None
    # runwasi's way: compiled modules kept in this directory, keyed by the layer's digest and the
    # engine's version and settings (see `compiled_module_file`). None: wasmtime's own cache.
    compiled_cache: Path | None = None
    layer_digest: str = ""


@dataclass
class RunResult:
    status: int
    # Why the module ended abnormally (a trap), or None.
    trap: str | None = field(default=None)
    # With a compiled cache: whether the module came from it (True) or was compiled (False).
    from_cache: bool | None = None


# The engine's settings the runwasi path compiles with, part of the cache key: code compiled with
# other settings (or by another wasmtime) must not be loaded. wasmtime's default Config, its own
# cache off (this cache replaces it, as the wasmtime shim's replaces it with containerd's content store).
RUNWASI_ENGINE_SETTINGS = "wasmtime.Config() defaults; cache off"


def wasmtime_version() -> str:
    from importlib.metadata import version

    return version("wasmtime")


def compiled_module_file(cache: Path, layer_digest: str) -> Path:
    """Where the compiled code of the layer `layer_digest` lives for this engine."""
    import hashlib

    key = hashlib.sha256(f"{layer_digest}\n{wasmtime_version()}\n{RUNWASI_ENGINE_SETTINGS}".encode()).hexdigest()
    return cache / f"{key}.cwasm"


def _load_module(engine, run: WasiRun):
    """The module, compiled or (runwasi's way) from the compiled cache; and whether it came from it."""
    import wasmtime

    if run.compiled_cache is None:
        return wasmtime.Module.from_file(engine, str(run.module)), None
    compiled = compiled_module_file(run.compiled_cache, run.layer_digest)
    if compiled.exists():
        try:
            # Loads machine code without checks: only this node's own cache directory (mode 0700)
            # is read, and the key names the engine that wrote it.
            return wasmtime.Module.deserialize_file(engine, str(compiled)), True
        except wasmtime.WasmtimeError:
            pass  # damaged, or written by an engine the key did not tell apart: compile again
    module = wasmtime.Module.from_file(engine, str(run.module))
    run.compiled_cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = compiled.with_name(f".{compiled.name}.{os.getpid()}.tmp")  # instances may compile at once
    temp.write_bytes(module.serialize())
    temp.replace(compiled)
    return module, False


def run_wasi(run: WasiRun, stop: threading.Event | None = None,
             watch: Callable[[], None] | None = None) -> RunResult:
    """Runs `run` to its end; with `stop`, until `stop` is set or Ctrl-C, which end it with
    `STOPPED` (the caller removes what it left). A stoppable run calls `watch` about ten times a
    second while it runs (the local node looks there for an instance's first line).

    wasmtime's interruption checks are never compiled in: epoch interruption puts a check on
    every loop back-edge, which made the module a fifth slower (decoding, the kernel and
    encoding alike, measured here). So a stoppable run is a `WasiProcess`, stopped by ending it,
    and the others run here, on this thread.
    """
    if stop is None:
        return _run_here(run)
    process = WasiProcess(run)
    try:
        result = process.wait(timeout=0.1)
        while result is None:
            if watch is not None:
                watch()
            result = process.stop() if stop.is_set() else process.wait(timeout=0.1)
    except KeyboardInterrupt:
        result = process.stop()
    return result


def _run_here(run: WasiRun) -> RunResult:
    """`run` on this thread, to its end (nothing can stop it from outside but ending the process)."""
    import wasmtime  # imported here: only running tasks pay for it

    for host, _guest in run.preopens:
        if not host.is_dir():
            raise UserError(f"{host} is not a directory: create it or pass an existing one")
    config = wasmtime.Config()
    if run.compiled_cache is None:
        config.cache = True  # wasmtime's compiled-code cache makes the second start fast (runwasi's path keeps its own)
    engine = wasmtime.Engine(config)
    try:
        module, from_cache = _load_module(engine, run)
    except (wasmtime.WasmtimeError, OSError) as error:
        raise UserError(f"cannot load {run.module}: {str(error).splitlines()[0]}") from None
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = list(run.argv)
    wasi.env = [list(pair) for pair in run.env]
    for host, guest in run.preopens:
        wasi.preopen_dir(str(host), guest)
    if run.stdout is None:
        wasi.inherit_stdout()
    else:
        wasi.stdout_file = str(run.stdout)
    if run.stderr is None:
        wasi.inherit_stderr()
    else:
        wasi.stderr_file = str(run.stderr)
    store.set_wasi(wasi)
    try:
        instance = linker.instantiate(store, module)
        instance.exports(store)["_start"](store)
        return RunResult(0, from_cache=from_cache)
    except wasmtime.ExitTrap as exit_trap:
        return RunResult(exit_trap.code, from_cache=from_cache)
    except wasmtime.Trap as trap:
        return RunResult(1, trap=str(trap).splitlines()[0], from_cache=from_cache)
    except wasmtime.WasmtimeError as error:
        return RunResult(1, trap=str(error).splitlines()[0], from_cache=from_cache)


class WasiProcess:
    """`run` in a child process (`python -m wasmpod.localrun`), so stopping it is ending that
    process: the guest needs no interruption checks. The caller removes what a stopped run left.
    The run goes to the child on its stdin and the outcome comes back through a pipe of its own
    (stdout and stderr are the guest's), so nothing is written to disk to be left behind; and the
    child ends with its parent, however the parent ends (even by SIGKILL)."""

    def __init__(self, run: WasiRun) -> None:
        outcome_read, outcome_write = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "wasmpod.localrun", str(os.getpid()), str(outcome_write)],
                stdin=subprocess.PIPE, pass_fds=(outcome_write,))
        finally:
            os.close(outcome_write)  # the child's copy is the only one: EOF once it has ended
        self._outcome = os.fdopen(outcome_read, "rb")
        assert self._process.stdin is not None
        try:
            with self._process.stdin as stdin:
                stdin.write(json.dumps(_run_as_json(run)).encode())
        except BrokenPipeError:
            pass  # the child has already ended (its parent check); wait() reports it

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """The result once the run has ended; None if it still runs after `timeout` seconds."""
        try:
            status = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        with self._outcome:
            reported = self._outcome.read()
        if reported:
            outcome = json.loads(reported)
        else:
            # Ended by a signal (Ctrl-C reaches the whole foreground process group) or killed.
            outcome = {"status": STOPPED if status < 0 else status, "trap": None, "error": None}
        if outcome["error"]:
            raise UserError(outcome["error"])
        return RunResult(outcome["status"], trap=outcome["trap"], from_cache=outcome.get("from_cache"))

    def stop(self) -> RunResult:
        """Ends the run at once (the module keeps no state a kill could corrupt: its outputs
        appear whole or not at all) and returns its result, `STOPPED` unless it had ended."""
        self._process.kill()
        result = self.wait()
        assert result is not None
        return result


def _run_as_json(run: WasiRun) -> dict[str, object]:
    return {"module": str(run.module), "argv": list(run.argv), "preopens": [[str(h), g] for h, g in run.preopens],
            "env": [list(pair) for pair in run.env], "stdout": str(run.stdout) if run.stdout else None,
            "stderr": str(run.stderr) if run.stderr else None,
            "compiled_cache": str(run.compiled_cache) if run.compiled_cache else None, "layer_digest": run.layer_digest}


def _run_from_json(data: dict) -> WasiRun:
    def optional_path(value: str | None) -> Path | None:
        return Path(value) if value else None

    return WasiRun(Path(data["module"]), tuple(data["argv"]), tuple((Path(h), g) for h, g in data["preopens"]),
                   tuple((k, v) for k, v in data["env"]), optional_path(data["stdout"]), optional_path(data["stderr"]),
                   optional_path(data["compiled_cache"]), data["layer_digest"])


def _child_main(parent: int, outcome_fd: int) -> None:
    """The child side of `WasiProcess`: a signal ends it at once, whatever the guest is doing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _end_with_parent(parent)
    run = _run_from_json(json.load(sys.stdin))
    try:
        result = _run_here(run)
        outcome = {"status": result.status, "trap": result.trap, "error": None, "from_cache": result.from_cache}
    except UserError as error:
        outcome = {"status": 1, "trap": None, "error": str(error)}
    with os.fdopen(outcome_fd, "wb") as report:
        report.write(json.dumps(outcome).encode())


# prctl(2): the signal a process gets when the thread that started it ends. Linux only.
PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int) -> None:
    """Asks the kernel for SIGKILL once `parent` is gone, so a parent killed outright (a CI job's
    SIGKILL, the OOM killer) leaves no run behind; a watch-mode run would otherwise go on
    forever. `WasiProcess` is made and waited for on one thread, so that thread ends only after
    the run."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the request was in place
        os._exit(STOPPED)


@contextmanager
def _sigterm_stops(stop: threading.Event) -> Iterator[None]:
    """Within: SIGTERM (`kill`, a cancelled CI job) sets `stop`, so the run ends as after Ctrl-C,
    its leftovers removed, instead of the process dying with the run still going. Only the main
    thread can take signals; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def remove_instance_leftovers(output_dir: Path, instance: str) -> list[Path]:
    """Deletes the claims and temporary files an interrupted instance left in `output_dir`.

    fractalify names its temporaries `.<name>.<instance>.tmp` and writes its instance id first
    in each claim `.<name>.claim`; without this a stopped run would hold its image for ten
    minutes. Returns what was removed.
    """
    removed: list[Path] = []
    for temp in output_dir.rglob(f".*.{instance}.tmp"):
        temp.unlink(missing_ok=True)
        removed.append(temp)
    for claim in output_dir.rglob(".*.claim"):
        try:
            owner = claim.read_text().split()
        except OSError:
            continue
        if owner and owner[0] == instance:
            claim.unlink(missing_ok=True)
            removed.append(claim)
    return removed


# Where a Pod's hostPath volumes are mounted in the seed Pod, and so where the module looks.
GUEST_INPUT = "/input_dir"
GUEST_OUTPUT = "/output_dir"


def names_wasmtime_cannot_list(root: Path) -> list[str]:
    """The names under `root` that are not valid UTF-8, escaped (`caf\\xe9.png`), relative to `root`.
    wasmtime answers a listing of their directory with EILSEQ, so the module only sees that
    directory fail; the host can say which name it is."""
    found = []
    for directory, subdirectories, files in os.walk(os.fsencode(root)):
        for name in subdirectories + files:
            try:
                name.decode()
            except UnicodeDecodeError:
                found.append(escaped(os.path.relpath(os.path.join(directory, name), os.fsencode(root))))
    return sorted(found)


def escaped(raw: bytes) -> str:
    """A file name fit for one log line, escaped as the module escapes names: backslashes doubled,
    bytes that are not UTF-8 and control characters as `\\xNN`."""
    text = raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    return re.sub("[\x00-\x1f\x7f-\x9f]", lambda match: f"\\x{ord(match.group()):02x}", text)


def env_prefix(program: str) -> str:
    """The prefix of the variables a workload reads: `fractalify` -> `FRACTALIFY_`."""
    return program.upper().replace("-", "_") + "_"


def run_on_directories(
    module: Path,
    program: str,
    input_dir: Path,
    output_dir: Path,
    flags: list[str],
    environ: dict[str, str],
    instance_locks: Path | None = None,
) -> RunResult:
    """Runs the workload as its Pod would, on two host directories, passing the workload's own
    variables (`FRACTALIFY_*`) through from `environ`. A stopped run leaves no claims behind;
    with `instance_locks`, neither does a killed one (see `_stable_instance`)."""
    with _stable_instance(output_dir, instance_locks) as stable:
        return _run_on_directories(module, program, input_dir, output_dir, flags, environ, stable)


@contextmanager
def _stable_instance(output_dir: Path, locks: Path | None) -> Iterator[str | None]:
    """This run's instance ID: `run-<output directory's hash>-<n>`, the first n whose lock file
    (in `locks`) no live run holds, held until the run ends. A run killed outright (`kill -9`)
    frees its lock with its process, so the next run on that output directory is the same
    instance and takes the killed one's claims back at once, instead of finding its images
    claimed for ten minutes; two runs at once still get two IDs. None without `locks`."""
    if locks is None:
        yield None
        return
    import fcntl
    import hashlib

    make_directory(locks, "the run locks directory")
    key = hashlib.sha256(str(output_dir.resolve()).encode()).hexdigest()[:12]
    for slot in range(64):
        handle = open(locks / f"{key}-{slot}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        with handle:
            yield f"run-{key}-{slot}"
        return
    yield None  # 64 runs at once on one directory: a random ID each from here on


def _run_on_directories(module: Path, program: str, input_dir: Path, output_dir: Path, flags: list[str],
                        environ: dict[str, str], stable_instance: str | None) -> RunResult:
    import secrets

    if not input_dir.is_dir():  # before the output directory is made: a mistake leaves nothing behind
        raise UserError(f"{input_dir} is not a directory: create it or pass an existing one")
    make_directory(output_dir, "the output directory")
    prefix = env_prefix(program)
    instance = environ.get(prefix + "INSTANCE") or stable_instance or f"run-{secrets.token_hex(6)}"
    env = {name: value for name, value in environ.items() if name.startswith(prefix)}
    env[prefix + "INSTANCE"] = instance
    run = WasiRun(
        module=module,
        argv=(program, *flags, GUEST_INPUT, GUEST_OUTPUT),
        preopens=((input_dir.resolve(), GUEST_INPUT), (output_dir.resolve(), GUEST_OUTPUT)),
        env=tuple(sorted(env.items())),
    )
    for name in names_wasmtime_cannot_list(input_dir):
        print(f"run: {name}: this name is not valid UTF-8, and wasmtime refuses to list the directory that holds it, "
              "so the module cannot see the images beside it: rename it", file=sys.stderr)
    stop = threading.Event()
    with _sigterm_stops(stop):
        result = run_wasi(run, stop)  # stoppable by Ctrl-C and SIGTERM
        # A watcher whose output directory was removed ends for a restart, as the local node
        # restarts it: start it again on the directory there now (made again if need be).
        while result.status == OUTPUT_REMOVED and not stop.is_set():
            make_directory(output_dir, "the output directory")
            print(f"run: starting {program} again on the output directory {output_dir} there now", file=sys.stderr)
            result = run_wasi(run, stop)
    if result.status == STOPPED:
        remove_instance_leftovers(output_dir, instance)
    return result


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), int(sys.argv[2]))
