"""The embedded local node: does with a rendered Pod, Job or Deployment what Krustlet would, or,
for a Pod with a `runtimeClassName`, what containerd's wasmtime shim (runwasi) would.

It pulls the module named by the image reference (with the credentials of the Pod's pull
secret, Krustlet's way: `username` and `password` under the registry exactly as written), mounts
each hostPath volume at its mountPath (a WASI preopen), passes `args` as argv and `env`, and runs
the module in wasmtime in a background process, one per workload, under `.cache/node/`.

runwasi's way differs in four places: the pull follows the shim's rules (the CNCF Wasm OCI
artifact), argv is `command` then `args`, the module's `/` is a root holding only its mount points
(preopened at `/`, each mount preopened at its own absolute path, which wins as the longer
prefix), and compiled modules are kept in `.cache/node/.compiled`, keyed by the layer's digest
and the engine, so a module the node has run before starts without compiling.

    .cache/node/<namespace>/<name>/
        workload.json   what to run: a `NodeWorkload` (argv, env, preopens, how many instances)
        module.wasm     the pulled module
        runner.json     the background runner: a `ProcessIdentity` (pid, start time, command)
        status.json     a `RunnerStatus`: phase and each instance's state, kept current by the runner
        rootfs/         runwasi only: the module's `/`, holding only the mount points
        runner.log      the runner's own output
        instance-N.out, instance-N.err   each instance's stdout and stderr (of its current run)
    .cache/node/<namespace>/.<name>.lock   flock: deploy and undeploy exclusive, status and logs shared
    .cache/node/.compiled/<key>.cwasm       runwasi: compiled modules (localrun.compiled_module_file)

This module is the only one that reads or writes these files; each is checked when read, and a
damaged one is one line naming it. The runner is signalled only after its identity is checked.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

from .atomic_files import make_directory, write_atomically
from .errors import UserError
from .localrun import STOPPED, WasiRun, env_prefix, remove_instance_leftovers, run_wasi
from .manifests import pod_specs
from .processes import ProcessIdentity, find_processes
from .reference import parse_reference
from .settings import KRUSTLET, RUNTIMES, RUNWASI

STOP_TIMEOUT = 15.0
# How long deploy waits for every instance to print its first line (the banner, before its first scan).
START_TIMEOUT = 30.0
# restartPolicy Always: the wait before a restart doubles from the first to the last, and is back
# to the first once an instance has run this long (Kubernetes: 10 s to 5 min, reset after 10 min).
BACKOFF_FIRST, BACKOFF_LAST, BACKOFF_RESET = 1.0, 30.0, 60.0


@dataclass(frozen=True)
class NodeWorkload:
    """One workload as the runner sees it, derived from the rendered objects."""

    kind: str  # Pod | Job | Deployment
    name: str
    namespace: str
    image: str
    argv: list[str]
    env: dict[str, str]
    preopens: list[tuple[str, str]]  # (host directory, guest path)
    create_dirs: list[str]  # hostPath type DirectoryOrCreate: made again before every (re)start
    instances: int  # replicas, parallel Job pods, or 1
    completions: int  # Job: how many successful runs finish it; else 0
    restart: bool  # restartPolicy Always: an instance that ends is started again
    runtime: str = KRUSTLET  # RUNWASI when the Pod names a runtimeClassName
    layer_digest: str = ""  # the pulled module's (checked): the compiled cache's key


def workload_from_objects(objects: list[dict]) -> tuple[NodeWorkload, dict[str, dict]]:
    """The workload object and the Secrets (by name) among rendered objects."""
    secrets = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Secret"}
    workloads = [o for o in objects if o.get("kind") in ("Pod", "Job", "Deployment")]
    if len(workloads) != 1:
        raise UserError(f"the local node runs one workload at a time, got {len(workloads)}")
    obj = workloads[0]
    spec = pod_specs(obj)[0]
    container = spec["containers"][0]
    runtime = RUNWASI if spec.get("runtimeClassName") else KRUSTLET
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
    preopens = []
    create_dirs: list[str] = []
    for volume in spec.get("volumes") or []:
        if "hostPath" not in volume:
            kind = next(iter(set(volume) - {"name"}), "?")
            raise UserError(f"the local node mounts hostPath volumes only; volume {volume['name']!r} is {kind}: "
                            "deploy it with --target kubectl")
        host = Path(volume["hostPath"]["path"])
        if volume["hostPath"].get("type") == "DirectoryOrCreate":
            make_directory(host, f"the hostPath of volume {volume['name']!r},")
            create_dirs.append(str(host))
        if host.exists() and not host.is_dir():
            raise UserError(f"hostPath {host} is a file, not a directory: deploy with --input-dir pointing at a directory")
        if not host.is_dir():
            raise UserError(f"hostPath {host} does not exist on this node: create it, or deploy with --input-dir pointing elsewhere")
        if volume["name"] in mounts:
            preopens.append((str(host), mounts[volume["name"]]))
    kind = obj["kind"]
    job_spec = obj.get("spec") or {}
    if kind == "Job":
        completions = int(job_spec.get("completions", 1))
        instances = min(int(job_spec.get("parallelism", 1)), completions)
    else:
        completions = 0
        instances = int(job_spec.get("replicas", 1)) if kind == "Deployment" else 1
    workload = NodeWorkload(
        kind=kind,
        name=obj["metadata"]["name"],
        namespace=obj["metadata"].get("namespace", "default"),
        image=container["image"],
        # Krustlet ignores `command`; runwasi's argv is command (the module's name) then args.
        argv=[*(container.get("command") or [] if runtime == RUNWASI else []), *(container.get("args") or [])],
        env={e["name"]: str(e.get("value", "")) for e in container.get("env") or []},
        preopens=preopens,
        create_dirs=create_dirs,
        instances=instances,
        completions=completions,
        restart=spec.get("restartPolicy", "Always") == "Always",
        runtime=runtime,
    )
    return workload, secrets


def pull_credentials(image: str, secret_names: list[str], secrets: dict[str, dict]):
    """Krustlet's reading of imagePullSecrets: `auths[<registry as in the image>]` with both
    `username` and `password` (it ignores `auth`)."""
    from .credentials import Credentials

    registry = parse_reference(image).registry
    for name in secret_names:
        secret = secrets.get(name)
        if secret is None:
            raise UserError(f"pull secret {name!r} is not known to the local node: deploy with --create-pull-secret")
        for value in (secret.get("data") or {}).values():
            try:
                config = json.loads(base64.b64decode(value))
            except ValueError:
                continue
            auths = config.get("auths") if isinstance(config, dict) else None
            entry = auths.get(registry) if isinstance(auths, dict) else None
            if isinstance(entry, dict) and entry.get("username") and entry.get("password"):
                return Credentials(entry["username"], password=entry["password"], source=f"pull secret {name}")
    return None


# An instance's states, as kubectl shows a container's.
WAITING, RUNNING, SUCCEEDED, ERROR, CRASH_LOOP, TERMINATED = (
    "Waiting", "Running", "Succeeded", "Error", "CrashLoopBackOff", "Terminated")
INSTANCE_STATES = (WAITING, RUNNING, SUCCEEDED, ERROR, CRASH_LOOP, TERMINATED)
# A workload's phase; CrashLoopBackOff (as kubectl shows a Pod) while an instance waits to restart after failing.
PHASES = ("Pending", "Running", "CrashLoopBackOff", "Succeeded", "Failed", "Stopped")


@dataclass
class InstanceStatus:
    """One instance as the runner last saw it."""

    index: int
    state: str = WAITING
    # Its current run (between runs: its last) printed its first line: the banner, before its first scan.
    started: bool = False
    exit_code: int | None = None  # of its last run
    restarts: int = 0
    last_error: str = ""  # the last line its last run wrote on stderr (or its trap)

    def describe(self) -> str:
        ended = self.state in (ERROR, CRASH_LOOP)
        # A running instance that was restarted shows how its previous run ended, as kubectl's Last State.
        history = [f"last exit {self.exit_code}"] if not ended and self.restarts and self.exit_code is not None else []
        details = ([f"exit {self.exit_code}"] if ended and self.exit_code else []) + \
                  ([f"{self.restarts} restarts"] if self.restarts else []) + history
        text = f"#{self.index} {self.state}" + (f" ({', '.join(details)})" if details else "")
        return text + (f": {self.last_error}" if ended and self.last_error else "")


@dataclass
class RunnerStatus:
    """status.json: what the runner publishes."""

    phase: str
    instances: list[InstanceStatus] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> "RunnerStatus":
        checked = _fields_of(data, cls, {"phase": lambda v: v in PHASES, "instances": lambda v: isinstance(v, list)})
        return cls(checked["phase"], [InstanceStatus(**_fields_of(item, InstanceStatus, INSTANCE_FIELDS))
                                      for item in checked["instances"]])


def _fields_of(data: object, cls: type, checks: dict[str, Callable[[Any], bool]]) -> dict[str, Any]:
    """`data` if it is an object with exactly the fields of dataclass `cls`, each passing its check."""
    names = {f.name for f in fields(cls)}
    if not isinstance(data, dict) or set(data) != names:
        raise ValueError(f"expected an object with {', '.join(sorted(names))}")
    wrong = sorted(name for name, check in checks.items() if not check(data[name]))
    if wrong:
        raise ValueError(f"{', '.join(wrong)} of the wrong kind")
    return data


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


INSTANCE_FIELDS: dict[str, Callable[[Any], bool]] = {
    "index": _is_int, "state": lambda v: v in INSTANCE_STATES, "started": lambda v: type(v) is bool,
    "exit_code": lambda v: v is None or _is_int(v), "restarts": _is_int, "last_error": lambda v: isinstance(v, str)}
WORKLOAD_FIELDS: dict[str, Callable[[Any], bool]] = {
    "kind": lambda v: v in ("Pod", "Job", "Deployment"), "name": lambda v: isinstance(v, str),
    "namespace": lambda v: isinstance(v, str), "image": lambda v: isinstance(v, str), "argv": _is_texts,
    "env": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    "preopens": lambda v: isinstance(v, list) and all(_is_texts(p) and len(p) == 2 for p in v),
    "create_dirs": _is_texts, "instances": _is_int, "completions": _is_int, "restart": lambda v: type(v) is bool,
    "runtime": lambda v: v in RUNTIMES, "layer_digest": lambda v: isinstance(v, str)}


def _workload_from_json(data: object) -> NodeWorkload:
    checked = _fields_of(data, NodeWorkload, WORKLOAD_FIELDS)
    return NodeWorkload(**{**checked, "preopens": [tuple(pair) for pair in checked["preopens"]]})


def runner_command(directory: Path) -> tuple[str, ...]:
    """How a workload's runner is started (after the interpreter), and so how it is recognised."""
    return ("-m", "wasmpod.local_node", str(directory))


@dataclass(frozen=True)
class WorkloadState:
    name: str
    namespace: str
    kind: str
    phase: str  # one of PHASES
    instances: list[InstanceStatus]
    image: str
    directory: Path
    runner_lost: bool = False  # the runner ended without saying how the workload ended

    def describe(self) -> str:
        states = ", ".join(i.describe() for i in self.instances) or "no instances"
        note = "  (runner not running)" if self.runner_lost else ""
        return f"{self.namespace}/{self.name}  {self.kind}  {self.phase}  [{states}]  {self.image}{note}"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "kind": self.kind, "phase": self.phase,
                "image": self.image, "runner_lost": self.runner_lost,
                "instances": [asdict(instance) for instance in self.instances]}

    def first_failure(self) -> InstanceStatus | None:
        """The first instance whose run ended in an error."""
        return next((i for i in self.instances if i.state in (ERROR, CRASH_LOOP) and i.exit_code), None)


class DamagedState(UserError):
    """A state file of the local node that is missing, truncated, empty or of the wrong shape."""

    def __init__(self, path: Path, why: str) -> None:
        namespace, name = path.parent.parent.name, path.parent.name
        self.path = path
        super().__init__(f"{path} is damaged ({why}): `invoke undeploy --name {name} --namespace {namespace}` "
                         "stops the workload and removes it")


def _load(path: Path, parse: Callable[[object], Any]) -> Any:
    """A state file, checked: its text, its JSON, its shape."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DamagedState(path, "missing") from None
    except OSError as error:
        raise DamagedState(path, error.strerror or str(error)) from None
    if not text.strip():
        raise DamagedState(path, "empty")
    try:
        return parse(json.loads(text))
    except ValueError as error:
        raise DamagedState(path, f"not what the local node writes: {str(error).splitlines()[0]}") from None
    except (TypeError, KeyError, AttributeError):
        raise DamagedState(path, "not what the local node writes: wrong shape") from None


def _write_json(path: Path, value: object) -> None:
    write_atomically(path, json.dumps(value, indent=2))


class WorkloadFiles:
    """One workload's directory: the only reader and writer of its state files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.workload_file = directory / "workload.json"
        self.runner_file = directory / "runner.json"
        self.status_file = directory / "status.json"
        self.module = directory / "module.wasm"
        self.rootfs = directory / "rootfs"

    def exists(self) -> bool:
        return self.directory.is_dir()

    def workload(self) -> NodeWorkload:
        return _load(self.workload_file, _workload_from_json)

    def write_workload(self, workload: NodeWorkload) -> None:
        _write_json(self.workload_file, asdict(workload))

    def status(self) -> RunnerStatus:
        return _load(self.status_file, RunnerStatus.from_json)

    def write_status(self, status: RunnerStatus) -> None:
        _write_json(self.status_file, status.as_json())

    def runner(self) -> ProcessIdentity:
        """The runner as recorded; a record that names anything but this directory's runner is damaged."""
        def parse(data: object) -> ProcessIdentity:
            identity = ProcessIdentity.from_json(data)
            if identity.command != runner_command(self.directory):
                raise ValueError("it names another command than this workload's runner")
            return identity

        return _load(self.runner_file, parse)

    def write_runner(self, identity: ProcessIdentity) -> None:
        _write_json(self.runner_file, identity.as_json())

    def running_runners(self) -> list[ProcessIdentity]:
        """This workload's runner if it runs: the recorded one, checked, or (record damaged or
        stale) any process whose command line is this directory's runner."""
        try:
            recorded = self.runner()
            if recorded.is_running():
                return [recorded]
        except DamagedState:
            pass
        return find_processes(runner_command(self.directory))

    def stdout(self, index: int) -> Path:
        return self.directory / f"instance-{index}.out"

    def stderr(self, index: int) -> Path:
        return self.directory / f"instance-{index}.err"

    def instance_logs(self) -> list[tuple[int, Path, Path]]:
        indices = sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("instance-*.out")
                         if p.stem.split("-")[1].isdigit())
        return [(i, self.stdout(i), self.stderr(i)) for i in indices]


@dataclass(frozen=True)
class LogLine:
    """One line an instance wrote, on its stdout or its stderr."""

    instance: int
    stream: str  # "stdout" | "stderr"
    text: str

    def prefixed(self) -> str:
        return f"[instance-{self.instance}{' stderr' if self.stream == 'stderr' else ''}] {self.text}"

    def as_json(self) -> dict[str, Any]:
        return {"instance": self.instance, "stream": self.stream, "line": self.text}


@dataclass
class _LogCursor:
    """How far one log file has been read: a new file (redeploy) or a shorter one (the runner
    empties it before every restart) is read again from its start."""

    inode: int = -1
    offset: int = 0
    partial: bytes = b""

    def read_new(self, path: Path) -> list[str]:
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_ino != self.inode or stat.st_size < self.offset:
                    self.inode, self.offset, self.partial = stat.st_ino, 0, b""
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in complete]


def _last(texts: list[str], count: int | None) -> list[str]:
    """The last `count` of `texts` (all with None; `texts[-0:]` would be all of them too)."""
    return texts if count is None else texts[len(texts) - count:] if count else []


def _last_line(path: Path) -> str:
    """The last non-empty line of `path` (its end only: a log can be long)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:500] if lines else ""


def _has_first_line(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return b"\n" in handle.read(65536)
    except OSError:
        return False


class LocalNode:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir

    def workload_dir(self, namespace: str, name: str) -> Path:
        return self.state_dir / namespace / name

    @contextmanager
    def _locked(self, namespace: str, name: str, exclusive: bool) -> Iterator[WorkloadFiles]:
        """The workload's lock, beside its directory (which undeploy removes): deploy and
        undeploy hold it exclusively, status and logs shared."""
        lock_dir = self.state_dir / namespace
        lock_dir.mkdir(parents=True, exist_ok=True)
        path = self._lock_file(namespace, name)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            # undeploy removes the file under its lock: a lock taken on a removed file locks nothing.
            try:
                current = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        try:
            yield WorkloadFiles(self.workload_dir(namespace, name))
        finally:
            os.close(fd)

    def _lock_file(self, namespace: str, name: str) -> Path:
        return self.state_dir / namespace / f".{name}.lock"

    def apply(self, objects: list[dict], transport_for, wait_for_job: bool = True, verify_key=None) -> WorkloadState:
        """Pulls the module, then starts the runner in the background (replacing a workload of the
        same name) and waits until each instance has started its first scan. A Job is waited for
        (without the lock, so status and logs can look meanwhile), and its end reported. With
        `verify_key` (a keys.VerifyKey) the module runs only if the digest pulled verifies with it,
        as an admission controller would."""
        from .oci_client import CredentialsRequired, RegistryClient
        from .push import pull_module

        workload, secrets = workload_from_objects(objects)
        spec = [s for o in objects for s in pod_specs(o)][0]
        secret_names = [s["name"] for s in spec.get("imagePullSecrets") or []]
        credentials = pull_credentials(workload.image, secret_names, secrets)
        reference = parse_reference(workload.image)
        client = RegistryClient(reference.registry, transport_for(reference.registry), credentials)
        # Pull first: a deploy the node cannot pull changes nothing, the running workload stays.
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.state_dir, prefix=".pull-") as staging:
            try:
                transfer = pull_module(client, reference, Path(staging) / "module.wasm", workload.runtime)
                if verify_key is not None:
                    from .signing import require_signature

                    require_signature(client, reference.with_digest(transfer.digest), verify_key, "run it on the local node")
                pulled = transfer.path
                workload = replace(workload, layer_digest=transfer.layer_digest)
            except CredentialsRequired:
                raise UserError(f"{reference.registry} asks for credentials and the node pulls with the Pod's pull "
                                "secret only (as Krustlet does): deploy with --pull-secret NAME "
                                "--create-pull-secret") from None
            with self._locked(workload.namespace, workload.name, exclusive=True) as files:
                self._remove(files)
                files.directory.mkdir(parents=True)
                pulled.replace(files.module)
                if workload.runtime == RUNWASI:
                    make_root(files.rootfs, [guest for _host, guest in workload.preopens])
                files.write_workload(workload)
                files.write_status(RunnerStatus("Pending"))
                with (files.directory / "runner.log").open("ab") as log:
                    process = subprocess.Popen([sys.executable, *runner_command(files.directory)],
                                               stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
                identity = ProcessIdentity.of(process.pid, runner_command(files.directory), just_started=True)
                if identity is None:
                    raise UserError(f"the local node's runner for {workload.namespace}/{workload.name} ended at "
                                    f"once: see {files.directory / 'runner.log'}")
                files.write_runner(identity)
                if workload.kind != "Job":
                    return self._wait_until_started(files, process)
        if wait_for_job:
            process.wait()
        with self._locked(workload.namespace, workload.name, exclusive=False) as files:
            if not files.exists():
                raise UserError(f"{workload.namespace}/{workload.name} was undeployed while deploy waited for it")
            return self._read(files)

    def _wait_until_started(self, files: WorkloadFiles, process: subprocess.Popen) -> WorkloadState:
        """Until every instance has printed its first line; an instance that ends first fails
        the deploy with its own last line (the workload stays, as Kubernetes keeps a Pod)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            process.poll()  # reaps the runner if it ended
            state = self._read(files)
            failed = state.first_failure()
            if failed is not None:
                raise UserError(f"{state.namespace}/{state.name} instance #{failed.index} exited with status "
                                f"{failed.exit_code}: {failed.last_error or '(nothing on stderr)'}; it stays deployed, "
                                f"restarting with back-off as a {state.kind} would: fix it and deploy again, or "
                                f"`invoke undeploy --name {state.name}`")
            if state.runner_lost or state.phase not in ("Pending", "Running"):
                return state
            if state.instances and all(i.started for i in state.instances):
                return state
            if time.monotonic() > deadline:
                raise UserError(f"{state.namespace}/{state.name} did not start within {START_TIMEOUT:.0f} s: "
                                f"see `invoke logs --name {state.name}` and `invoke status`")
            time.sleep(0.05)

    def _read(self, files: WorkloadFiles) -> WorkloadState:
        """The workload as its files say, made honest: without a running runner nothing runs."""
        workload = files.workload()
        status = files.status()
        runner_lost = status.phase in ("Pending", "Running", "CrashLoopBackOff") and not files.runner().is_running()
        phase, instances = status.phase, status.instances
        if runner_lost:
            phase = "Failed"
            instances = [InstanceStatus(i.index, TERMINATED if i.state in (RUNNING, CRASH_LOOP, WAITING) else i.state,
                                        False, i.exit_code, i.restarts, i.last_error) for i in instances]
        return WorkloadState(workload.name, workload.namespace, workload.kind, phase, instances, workload.image,
                             files.directory, runner_lost)

    def status(self, namespace: str, name: str) -> WorkloadState:
        with self._locked(namespace, name, exclusive=False) as files:
            if not files.exists():
                raise UserError(f"no workload {namespace}/{name} on the local node (see `invoke status`)")
            return self._read(files)

    def list(self) -> list[WorkloadState | DamagedState]:
        """Every workload's state; a damaged one as the error that says what to do."""
        states: list[WorkloadState | DamagedState] = []
        for directory in sorted(d for d in self.state_dir.glob("[!.]*/[!.]*") if d.is_dir()):  # not .pull-* staging
            with self._locked(directory.parent.name, directory.name, exclusive=False) as files:
                if files.exists():
                    try:
                        states.append(self._read(files))
                    except DamagedState as damaged:
                        states.append(damaged)
        return states

    def logs(self, namespace: str, name: str, tail: int | None = None) -> list[LogLine]:
        """Each instance's output of its current (or last) run, stdout then stderr; with `tail`,
        the last `tail` lines of each."""
        with self._locked(namespace, name, exclusive=False) as files:
            if not files.exists():
                raise UserError(f"no workload {namespace}/{name} on the local node (see `invoke status`)")
            files.workload()  # checked: a damaged workload says so
            lines: list[LogLine] = []
            for index, out, err in files.instance_logs():
                for stream, path in (("stdout", out), ("stderr", err)):
                    texts = _LogCursor().read_new(path)
                    lines.extend(LogLine(index, stream, text) for text in _last(texts, tail))
            return lines

    def follow(self, namespace: str, name: str, emit: Callable[[LogLine], None], stop: threading.Event,
               tail: int | None = None, until_gone: bool = True, poll: float = 0.1) -> None:
        """Emits each instance's lines as they are written (after the last `tail` of each, or all
        of them), across restarts and redeploys, until `stop` is set or, with `until_gone`, the
        workload is undeployed."""
        cursors: dict[tuple[int, str], _LogCursor] = {}
        first = True
        while not stop.is_set():
            # Not locked while absent: taking the lock would make its file again after undeploy removed it.
            if self.workload_dir(namespace, name).is_dir():
                with self._locked(namespace, name, exclusive=False) as files:
                    for index, out, err in files.instance_logs() if files.exists() else []:
                        for stream, path in (("stdout", out), ("stderr", err)):
                            fresh = (index, stream) not in cursors
                            texts = cursors.setdefault((index, stream), _LogCursor()).read_new(path)
                            if fresh and first:
                                texts = _last(texts, tail)
                            for text in texts:
                                emit(LogLine(index, stream, text))
                first = False
            elif until_gone:
                if first:
                    raise UserError(f"no workload {namespace}/{name} on the local node (see `invoke status`)")
                return
            stop.wait(poll)

    def delete(self, namespace: str, name: str) -> bool:
        """Stops the runner (its instances are interrupted and their claims removed) and forgets
        the workload, whatever state its files are in. Returns whether there was one."""
        with self._locked(namespace, name, exclusive=True) as files:
            removed = self._remove(files)
            self._lock_file(namespace, name).unlink()  # still held: see _locked
            return removed

    def _remove(self, files: WorkloadFiles) -> bool:
        """Under the exclusive lock: stop our runner (found by its checked identity or, that
        lost, by its command line; never any other process), remove what its instances left in
        their directories (a runner killed outright could not), then the directory."""
        if not files.exists():
            return False
        for runner in files.running_runners():
            runner.stop(STOP_TIMEOUT, group=True)
        try:
            workload = files.workload()
        except DamagedState:
            workload = None  # where its instances wrote is lost with it; a restarted instance of that id takes its claims back
        if workload is not None:
            for index in range(max(workload.completions, workload.instances)):
                for host, _guest in workload.preopens:
                    if Path(host).is_dir():
                        remove_instance_leftovers(Path(host), instance_id(workload, index))
        shutil.rmtree(files.directory)
        return True


def compiled_cache_of(state_dir: Path) -> Path:
    """runwasi's compiled modules, shared by every workload (a dot name: never a namespace)."""
    return state_dir / ".compiled"


def make_root(rootfs: Path, mount_paths: list[str]) -> None:
    """The module's `/` on runwasi: an empty directory holding only the mount points, as a
    container's root holds its mounts (wasmtime follows no symlink out of a preopen, and a bind
    mount needs root, so the mounts themselves are preopened at their paths beside it)."""
    rootfs.mkdir()
    for guest in mount_paths:
        parts = PurePosixPath(guest).parts
        if not PurePosixPath(guest).is_absolute() or ".." in parts:
            raise UserError(f"mountPath {guest!r} must be an absolute path without '..'")
        rootfs.joinpath(*parts[1:]).mkdir(parents=True, exist_ok=True)


def module_preopens(workload: NodeWorkload, files: WorkloadFiles) -> tuple[tuple[Path, str], ...]:
    """Krustlet: each mount at its mountPath. runwasi: `/` (the root of mount points) and each
    mount at its absolute path; WASI libc resolves a path by its longest preopened prefix, so
    `/output_dir/x` reaches the mount and `/x` the otherwise empty root."""
    mounts = tuple((Path(host), guest) for host, guest in workload.preopens)
    return ((files.rootfs, "/"), *mounts) if workload.runtime == RUNWASI else mounts


def program_name(argv0: str) -> str:
    """The workload's name in its argv[0]: runwasi's is the module's file (`fractalify.wasm`,
    optionally `#function`)."""
    return argv0.split("#", 1)[0].removesuffix(".wasm")


def instance_id(workload: NodeWorkload, index: int) -> str:
    return f"{workload.name}-{index}"


def run_workload(directory: Path) -> int:
    """The background runner: runs the workload's instances until they end or SIGTERM."""
    files = WorkloadFiles(directory)
    workload = files.workload()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    lock = threading.Lock()
    instances = [InstanceStatus(i) for i in range(max(workload.completions, workload.instances))]
    prefix = env_prefix(program_name(workload.argv[0]) if workload.argv else workload.name)
    compiled_cache = compiled_cache_of(directory.parent.parent) if workload.runtime == RUNWASI else None
    phase = "Running"

    def publish(**changes: Any) -> None:
        """Changes one instance (`index=`) and writes status.json."""
        with lock:
            if "index" in changes:
                instance = instances[changes.pop("index")]
                for key, value in changes.items():
                    setattr(instance, key, value)
            crashing = phase == "Running" and any(i.state == CRASH_LOOP for i in instances)
            files.write_status(RunnerStatus("CrashLoopBackOff" if crashing else phase, instances))

    def run_instance(index: int) -> None:
        own_id = instance_id(workload, index)
        env = {**workload.env, f"{prefix}INSTANCE": own_id}
        if workload.kind == "Job" and workload.completions > 1:
            env["JOB_COMPLETION_INDEX"] = str(index)
        out, err = files.stdout(index), files.stderr(index)
        # Two files: wasmtime opens each path itself, so one shared file would be overwritten.
        run = WasiRun(files.module, tuple(workload.argv), module_preopens(workload, files),
                      tuple(sorted(env.items())), stdout=out, stderr=err, compiled_cache=compiled_cache,
                      layer_digest=workload.layer_digest)

        def watch() -> None:
            if not instances[index].started and _has_first_line(out):
                publish(index=index, started=True)

        backoff = BACKOFF_FIRST
        while True:
            for host in workload.create_dirs:  # the module exits 75 when its output directory went away
                Path(host).mkdir(parents=True, exist_ok=True)
            for log in (out, err):
                log.write_bytes(b"")  # this run's output only, so its first line is its own
            publish(index=index, state=RUNNING, started=False)
            began = time.monotonic()
            try:
                result = run_wasi(run, stopping, watch)
                status, trap = result.status, result.trap
                if result.from_cache is not None:
                    print(f"instance {index}: module {'from the compiled cache' if result.from_cache else 'compiled and cached'}"
                          f" ({workload.layer_digest[:19]})", flush=True)
            except UserError as error:
                with err.open("a") as log:
                    log.write(f"local node: {error}\n")
                status, trap = 1, None
            for host, _guest in workload.preopens:  # an interrupted or killed run leaves claims
                remove_instance_leftovers(Path(host), own_id)
            if status == STOPPED and stopping.is_set():
                publish(index=index, state=TERMINATED, started=False)
                return
            last = trap or _last_line(err) or ("killed by a signal" if status == STOPPED else "")
            # A run that printed its first line had started, even if it ended before `watch` saw it.
            ended = {"exit_code": status, "last_error": last if status else "", "started": _has_first_line(out)}
            if not workload.restart:
                publish(index=index, state=SUCCEEDED if status == 0 else ERROR, **ended)
                return
            if time.monotonic() - began >= BACKOFF_RESET:
                backoff = BACKOFF_FIRST
            publish(index=index, state=CRASH_LOOP, restarts=instances[index].restarts + 1, **ended)
            if stopping.wait(backoff):
                publish(index=index, state=TERMINATED)
                return
            backoff = min(backoff * 2, BACKOFF_LAST)

    publish()
    if workload.kind == "Job":
        # Up to `instances` at once until `completions` runs have been made.
        pending = list(range(len(instances)))
        running: list[threading.Thread] = []
        while (pending or running) and not stopping.is_set():
            running = [t for t in running if t.is_alive()]
            while pending and len(running) < workload.instances:
                thread = threading.Thread(target=run_instance, args=(pending.pop(0),), daemon=True)
                thread.start()
                running.append(thread)
            time.sleep(0.05)
        for thread in running:
            thread.join()
    else:
        threads = [threading.Thread(target=run_instance, args=(i,), daemon=True) for i in range(workload.instances)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # A Job with any failed instance is Failed, as in Kubernetes.
    states = {i.state for i in instances}
    phase = "Stopped" if stopping.is_set() else ("Succeeded" if states == {SUCCEEDED} else "Failed")
    publish()
    return 0 if phase in ("Succeeded", "Stopped") else 1


if __name__ == "__main__":
    sys.exit(run_workload(Path(sys.argv[1])))
