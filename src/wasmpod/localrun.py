"""Running a wasm32-wasi command module in wasmtime the way Krustlet runs a Pod's container:
`args` become argv verbatim, each volume is preopened at its mount path, `env` is passed as is."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

# Exit status reported when the run was stopped from outside (128 + SIGINT, as a shell does).
STOPPED = 130


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


@dataclass
class RunResult:
    status: int
    # Why the module ended abnormally (a trap), or None.
    trap: str | None = field(default=None)


def run_wasi(run: WasiRun, stop: threading.Event | None = None) -> RunResult:
    """Runs `run` to its end, or until `stop` is set or Ctrl-C, which end it with `STOPPED`.

    The module runs on a worker thread (wasmtime releases the GIL), so the calling thread stays
    free to notice Ctrl-C or `stop` and interrupt the guest through wasmtime's epoch deadline.
    """
    import wasmtime  # imported here: only running tasks pay for it

    for host, _guest in run.preopens:
        if not host.is_dir():
            raise UserError(f"{host} is not a directory: create it or pass an existing one")
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.cache = True  # wasmtime's compiled-code cache makes the second start fast
    engine = wasmtime.Engine(config)
    try:
        module = wasmtime.Module.from_file(engine, str(run.module))
    except (wasmtime.WasmtimeError, OSError) as error:
        raise UserError(f"cannot load {run.module}: {str(error).splitlines()[0]}") from None
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    store.set_epoch_deadline(1)
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

    outcome: list[RunResult] = []

    def guest() -> None:
        try:
            instance = linker.instantiate(store, module)
            instance.exports(store)["_start"](store)
            outcome.append(RunResult(0))
        except wasmtime.ExitTrap as exit_trap:
            outcome.append(RunResult(exit_trap.code))
        except wasmtime.Trap as trap:
            if trap.trap_code == wasmtime.TrapCode.INTERRUPT:
                outcome.append(RunResult(STOPPED))
            else:
                outcome.append(RunResult(1, trap=str(trap).splitlines()[0]))
        except wasmtime.WasmtimeError as error:
            outcome.append(RunResult(1, trap=str(error).splitlines()[0]))

    worker = threading.Thread(target=guest, name=f"wasi:{run.module.name}", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
            if stop is not None and stop.is_set():
                engine.increment_epoch()
                worker.join()
    except KeyboardInterrupt:
        engine.increment_epoch()
        worker.join()
    return outcome[0] if outcome else RunResult(STOPPED)


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
) -> RunResult:
    """Runs the workload as its Pod would, on two host directories, passing the workload's own
    variables (`FRACTALIFY_*`) through from `environ`. A stopped run leaves no claims behind."""
    import secrets

    output_dir.mkdir(parents=True, exist_ok=True)
    prefix = env_prefix(program)
    instance = environ.get(prefix + "INSTANCE") or f"run-{secrets.token_hex(6)}"
    env = {name: value for name, value in environ.items() if name.startswith(prefix)}
    env[prefix + "INSTANCE"] = instance
    run = WasiRun(
        module=module,
        argv=(program, *flags, GUEST_INPUT, GUEST_OUTPUT),
        preopens=((input_dir.resolve(), GUEST_INPUT), (output_dir.resolve(), GUEST_OUTPUT)),
        env=tuple(sorted(env.items())),
    )
    result = run_wasi(run)
    if result.status == STOPPED:
        remove_instance_leftovers(output_dir, instance)
    return result
