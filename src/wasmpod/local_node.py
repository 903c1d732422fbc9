"""The embedded local node: does with a rendered Pod, Job or Deployment what Krustlet would.

It pulls the module named by the image reference (with the credentials of the Pod's pull
secret, Krustlet's way: `username` and `password` under the registry exactly as written), mounts
each hostPath volume at its mountPath (a WASI preopen), passes `args` as argv and `env`, and runs
the module in wasmtime in a background process, one per workload, under `.cache/node/`.

    .cache/node/<namespace>/<name>/
        workload.json   what to run (argv, env, preopens, how many instances)
        module.wasm     the pulled module
        status.json     phase and per-instance state, kept current by the runner
        runner.pid      the background runner
        instance-N.out, instance-N.err   each instance's stdout and stderr
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic_files import write_atomically
from .errors import UserError
from .localrun import STOPPED, WasiRun, env_prefix, remove_instance_leftovers, run_wasi
from .manifests import pod_specs
from .processes import is_alive, stop
from .reference import parse_reference

STOP_TIMEOUT = 15.0


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
    instances: int  # replicas, parallel Job pods, or 1
    completions: int  # Job: how many successful runs finish it; else 0
    restart: bool  # restartPolicy Always: an instance that ends is started again


def workload_from_objects(objects: list[dict]) -> tuple[NodeWorkload, dict[str, dict]]:
    """The workload object and the Secrets (by name) among rendered objects."""
    secrets = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Secret"}
    workloads = [o for o in objects if o.get("kind") in ("Pod", "Job", "Deployment")]
    if len(workloads) != 1:
        raise UserError(f"the local node runs one workload at a time, got {len(workloads)}")
    obj = workloads[0]
    spec = pod_specs(obj)[0]
    container = spec["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
    preopens = []
    for volume in spec.get("volumes") or []:
        if "hostPath" not in volume:
            kind = next(iter(set(volume) - {"name"}), "?")
            raise UserError(f"the local node mounts hostPath volumes only; volume {volume['name']!r} is {kind}: "
                            "deploy it with --target kubectl")
        host = Path(volume["hostPath"]["path"])
        if volume["hostPath"].get("type") == "DirectoryOrCreate":
            host.mkdir(parents=True, exist_ok=True)
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
        argv=list(container.get("args") or []),
        env={e["name"]: str(e.get("value", "")) for e in container.get("env") or []},
        preopens=preopens,
        instances=instances,
        completions=completions,
        restart=spec.get("restartPolicy", "Always") == "Always",
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
                auths = json.loads(base64.b64decode(value)).get("auths", {})
            except ValueError:
                continue
            entry = auths.get(registry) or {}
            if entry.get("username") and entry.get("password"):
                return Credentials(entry["username"], password=entry["password"], source=f"pull secret {name}")
    return None


@dataclass(frozen=True)
class WorkloadState:
    name: str
    namespace: str
    kind: str
    phase: str  # Pending | Running | Succeeded | Failed | Stopped
    instances: list[dict]
    image: str
    directory: Path

    def describe(self) -> str:
        states = ", ".join(f"#{i['index']} {i['state']}" + (f" (exit {i['exit_code']})" if i.get("exit_code") not in (None, 0) else "")
                           for i in self.instances) or "no instances"
        return f"{self.namespace}/{self.name}  {self.kind}  {self.phase}  [{states}]  {self.image}"


class LocalNode:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir

    def workload_dir(self, namespace: str, name: str) -> Path:
        return self.state_dir / namespace / name

    def apply(self, objects: list[dict], transport_for, wait_for_job: bool = True, verify_key=None) -> WorkloadState:
        """Pulls the module, then starts the runner in the background (replacing a workload of the
        same name). A Job is waited for, and its end reported. With `verify_key` (a keys.VerifyKey),
        the module runs only if the digest pulled verifies with it, as an admission controller would."""
        from .oci_client import CredentialsRequired, RegistryClient
        from .push import pull_module

        workload, secrets = workload_from_objects(objects)
        spec = [s for o in objects for s in pod_specs(o)][0]
        secret_names = [s["name"] for s in spec.get("imagePullSecrets") or []]
        credentials = pull_credentials(workload.image, secret_names, secrets)
        directory = self.workload_dir(workload.namespace, workload.name)
        reference = parse_reference(workload.image)
        client = RegistryClient(reference.registry, transport_for(reference.registry), credentials)
        # Pull first: a deploy the node cannot pull changes nothing, the running workload stays.
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.state_dir, prefix=".pull-") as staging:
            try:
                transfer = pull_module(client, reference, Path(staging) / "module.wasm")
                if verify_key is not None:
                    from .signing import require_signature

                    require_signature(client, reference.with_digest(transfer.digest), verify_key, "run it on the local node")
                pulled = transfer.path
            except CredentialsRequired:
                raise UserError(f"{reference.registry} asks for credentials and the node pulls with the Pod's pull "
                                "secret only (as Krustlet does): deploy with --pull-secret NAME "
                                "--create-pull-secret") from None
            self.delete(workload.namespace, workload.name)
            directory.mkdir(parents=True, exist_ok=True)
            pulled.replace(directory / "module.wasm")
        (directory / "workload.json").write_text(json.dumps(asdict(workload), indent=2))
        _write_json(directory / "status.json", {"phase": "Pending", "instances": []})
        log = (directory / "runner.log").open("ab")
        process = subprocess.Popen([sys.executable, "-m", "wasmpod.local_node", str(directory)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        (directory / "runner.pid").write_text(str(process.pid))
        if workload.kind == "Job" and wait_for_job:
            while process.poll() is None:
                time.sleep(0.2)
        else:
            # Report a workload that dies at once (a module that cannot start) instead of "Running".
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and process.poll() is None and self._read(directory).phase == "Pending":
                time.sleep(0.05)
        return self._read(directory)

    def _read(self, directory: Path) -> WorkloadState:
        workload = json.loads((directory / "workload.json").read_text())
        try:
            status = json.loads((directory / "status.json").read_text())
        except (OSError, ValueError):
            status = {"phase": "Unknown", "instances": []}
        phase = status.get("phase", "Unknown")
        if phase in ("Pending", "Running") and not is_alive(_read_pid(directory)):
            phase = "Failed"
        return WorkloadState(workload["name"], workload["namespace"], workload["kind"], phase,
                             status.get("instances", []), workload["image"], directory)

    def list(self) -> list[WorkloadState]:
        return [self._read(d) for d in sorted(self.state_dir.glob("*/*")) if (d / "workload.json").exists()]

    def logs(self, namespace: str, name: str) -> str:
        directory = self.workload_dir(namespace, name)
        if not (directory / "workload.json").exists():
            raise UserError(f"no workload {namespace}/{name} on the local node (see `invoke status`)")
        parts = []
        for out in sorted(directory.glob("instance-*.out"), key=lambda p: int(p.stem.split("-")[1])):
            err = out.with_suffix(".err")
            parts.extend(f"[{out.stem}] {line}" for line in out.read_text(errors="replace").splitlines())
            if err.exists():
                parts.extend(f"[{out.stem} stderr] {line}" for line in err.read_text(errors="replace").splitlines())
        return "\n".join(parts)

    def delete(self, namespace: str, name: str) -> bool:
        """Stops the runner (its instances are interrupted and their claims removed) and forgets
        the workload. Returns whether there was one."""
        directory = self.workload_dir(namespace, name)
        if not directory.exists():
            return False
        pid = _read_pid(directory)
        if is_alive(pid):
            stop(pid, STOP_TIMEOUT, group=True)
        for path in sorted(directory.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        directory.rmdir()
        return True


def _read_pid(directory: Path) -> int | None:
    try:
        return int((directory / "runner.pid").read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: object) -> None:
    write_atomically(path, json.dumps(value, indent=2))


def run_workload(directory: Path) -> int:
    """The background runner: runs the workload's instances until they end or SIGTERM."""
    workload = NodeWorkload(**json.loads((directory / "workload.json").read_text()))
    module = directory / "module.wasm"
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    lock = threading.Lock()
    instances = [{"index": i, "state": "Waiting", "exit_code": None, "restarts": 0} for i in range(max(workload.completions, workload.instances))]
    prefix = env_prefix(workload.argv[0] if workload.argv else workload.name)

    def publish(phase: str) -> None:
        with lock:
            _write_json(directory / "status.json", {"phase": phase, "instances": instances})

    def run_instance(index: int) -> None:
        instance_id = f"{workload.name}-{index}"
        env = {**workload.env, f"{prefix}INSTANCE": instance_id}
        if workload.kind == "Job" and workload.completions > 1:
            env["JOB_COMPLETION_INDEX"] = str(index)
        # Two files: wasmtime opens each path itself, so one shared file would be overwritten.
        run = WasiRun(module, tuple(workload.argv), tuple((Path(h), g) for h, g in workload.preopens),
                      tuple(sorted(env.items())), stdout=directory / f"instance-{index}.out",
                      stderr=directory / f"instance-{index}.err")
        backoff = 1.0
        while True:
            with lock:
                instances[index]["state"] = "Running"
            publish("Running")
            try:
                result = run_wasi(run, stopping)
            except UserError as error:
                with (directory / f"instance-{index}.err").open("a") as log:
                    log.write(f"local node: {error}\n")
                result = None
            status = 1 if result is None else result.status
            with lock:
                instances[index]["exit_code"] = None if status == STOPPED else status
                instances[index]["state"] = "Stopped" if status == STOPPED else ("Succeeded" if status == 0 else "Failed")
            if status == STOPPED:
                for host, _guest in workload.preopens:
                    remove_instance_leftovers(Path(host), instance_id)
                return
            if not workload.restart or stopping.is_set():
                return
            with lock:
                instances[index]["restarts"] += 1
            if stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)

    publish("Running")
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
    states = {i["state"] for i in instances}
    phase = "Stopped" if stopping.is_set() else ("Succeeded" if states == {"Succeeded"} else "Failed")
    publish(phase)
    return 0 if phase in ("Succeeded", "Stopped") else 1


if __name__ == "__main__":
    sys.exit(run_workload(Path(sys.argv[1])))
