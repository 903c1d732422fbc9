"""`invoke dev`: the PoC engineer's loop. Watches the crate's sources, the templates and
invoke.yaml; on each save rebuilds, pushes to the local registry, redeploys on the local node,
and streams the workload's logs (one prefix per instance) all along.

    save --watchfiles--> build --> push (local registry, tag `dev`) --> deploy (local node, pinned)
         a build or deploy error is shown; the last good workload keeps running
    Ctrl-C: stop watching, undeploy what dev deployed

The workload is deployed with a short scan interval (its own `<PREFIX>_INTERVAL`), so an input
is taken within a fraction of a second; `--fresh` removes the outputs written since dev started
before each redeploy (with the old workload stopped first, so it cannot write them again), and
the new instances make them again from the inputs already there.
"""

from __future__ import annotations

import queue
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from .build import BuildRequest, build_module
from .config import DeploySettings, declared_env
from .deploy import deploy_workload
from .errors import UserError
from .local_node import LocalNode, LogLine
from .localrun import env_prefix
from .manifests import EnvVar
from .project import Project
from .push import push_module
from .settings import RegistrySettings

DEV_TAG = "dev"  # dev pushes here, so a release tag (v0.2.0) is never moved by a save
DEFAULT_INTERVAL = 0.2
# What the watcher ignores in the crate: cargo's output (and the lock file it writes), besides
# watchfiles' defaults (editor swap and backup files, .git, __pycache__).
IGNORED_DIRS = ("target",)
IGNORED_NAMES = (r"^Cargo\.lock$",)

SettingsLoader = Callable[[], tuple[RegistrySettings, DeploySettings]]


@dataclass(frozen=True)
class DevOptions:
    input_dir: Path
    output_dir: Path
    fresh: bool
    interval: float
    seed_from: Path | None  # examples copied into a new input directory, so the first deploy has work


def dev_options(project: Project, input_dir: str | None, output_dir: str | None, fresh: bool,
                interval: object) -> DevOptions:
    """The flags, checked: directories absolute, the interval a positive number of seconds."""
    try:
        seconds = DEFAULT_INTERVAL if interval is None else float(str(interval))
    except ValueError:
        raise UserError(f"--interval must be a number of seconds, not {interval!r}") from None
    if not 0 < seconds <= 60:
        raise UserError(f"--interval must be more than 0 and at most 60 seconds, not {interval}")
    examples = [project.root / "examples" / name for name in ("input", "images")]
    return DevOptions(
        input_dir=Path(input_dir).resolve() if input_dir else project.root / "out" / "dev" / "input",
        output_dir=Path(output_dir).resolve() if output_dir else project.root / "out" / "dev" / "output",
        fresh=fresh, interval=seconds, seed_from=next((e for e in examples if e.is_dir()), None))


def dev_settings(project: Project, registry: RegistrySettings, deploy: DeploySettings,
                 options: DevOptions) -> tuple[RegistrySettings, DeploySettings]:
    """The configured settings turned to the loop's: the embedded registry (whatever address is
    configured for releases) under tag `dev`, the local node, dev's directories, the digest
    pinned, no signing or verification, and the short interval unless the configuration sets
    the variable itself."""
    # Not signed, nor verified: a save's module is never released, and a key's password would stop the loop.
    registry = replace(registry, registry=None, tag=DEV_TAG, plain_http=None, insecure=False, ca_file=None,
                       sign_key=None)
    env = list(deploy.env)
    variable = f"{env_prefix(project.crate_name)}INTERVAL"
    declared = declared_env(project.crate_dir)
    if (declared is None or variable in declared) and all(e.name != variable for e in env):
        env.append(EnvVar(variable, f"{options.interval:g}"))
    deploy = replace(deploy, target="local", input_dir=str(options.input_dir), output_dir=str(options.output_dir),
                     pin=True, pull_secret=None, create_pull_secret=False, out=None, env=tuple(env),
                     create_policy=False, verify_key=None)
    return registry, deploy


def watched_paths(project: Project) -> tuple[list[Path], Path]:
    """What a save there changes: the crate and the templates (recursively), and the project's
    root (not recursively, for invoke.yaml: an editor saving by rename replaces the file, which
    a watch on the file itself would lose)."""
    recursive = [project.crate_dir] + [d for d in (project.root / "templates",) if d.is_dir()]
    return recursive, project.root


def _templates_digest(directory: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")) if directory.is_dir() else []:
        if path.is_file():
            digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _files_in(directory: Path) -> set[Path]:
    """The visible files under `directory` (hidden ones are the module's claims and temporary files)."""
    if not directory.is_dir():
        return set()
    return {p for p in directory.rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(directory).parts)}


class Console:
    """One writer for the loop's lines and the workload's, from two threads."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        with self.lock:
            print(text, file=self.out, flush=True)

    def log(self, line: LogLine) -> None:
        self.say(line.prefixed())


def _watch(paths: list[Path], recursive: bool, keep: Callable[[Path], bool], changes: "queue.Queue[set[Path]]",
           stop: threading.Event) -> None:
    """Puts each batch of relevant changed paths into `changes` until `stop`."""
    import watchfiles

    default = watchfiles.DefaultFilter(ignore_dirs=(*watchfiles.DefaultFilter.ignore_dirs, *IGNORED_DIRS),
                                       ignore_entity_patterns=(*watchfiles.DefaultFilter.ignore_entity_patterns,
                                                               *IGNORED_NAMES))
    for batch in watchfiles.watch(*paths, watch_filter=lambda change, path: default(change, path) and keep(Path(path)),
                                  recursive=recursive, stop_event=stop, step=50, rust_timeout=500,
                                  raise_interrupt=False):
        changes.put({Path(path) for _, path in batch})


class DevLoop:
    """One `invoke dev` session: its settings loader, what it deployed, its threads."""

    def __init__(self, project: Project, load_settings: SettingsLoader, options: DevOptions,
                 environ: dict[str, str], console: Console) -> None:
        self.project = project
        self.load_settings = load_settings
        self.options = options
        self.environ = environ
        self.console = console
        self.node = LocalNode(project.node_dir)
        self.deployed: DeploySettings | None = None
        self.deployed_digest: tuple[str, str] | None = None  # the module's digest and the templates'
        self.stop = threading.Event()
        self.follower: tuple[threading.Event, threading.Thread] | None = None
        self.ours_before: set[Path] = set()

    def prepare(self) -> None:
        if not self.options.input_dir.exists() and self.options.seed_from is not None:
            shutil.copytree(self.options.seed_from, self.options.input_dir)
        self.options.input_dir.mkdir(parents=True, exist_ok=True)
        self.options.output_dir.mkdir(parents=True, exist_ok=True)
        # What was in the output directory before dev started is not dev's to remove.
        self.ours_before = _files_in(self.options.output_dir)
        self.console.say(f"dev: {self.project.crate_name}: input {self.options.input_dir}, output "
                         f"{self.options.output_dir}; watching {', '.join(str(p) for p in watched_paths(self.project)[0])} "
                         f"and invoke.yaml; Ctrl-C stops and undeploys")

    def cycle(self, reason: str) -> None:
        """Build, push, redeploy; a failure is shown and leaves the running workload as it is."""
        self.console.say(f"dev: {reason}: building")
        try:
            registry, deploy = dev_settings(self.project, *self.load_settings(), self.options)
            module = build_module(self.project, BuildRequest(simd=deploy.simd, quick=True), log=sys.stderr)
            # Only the layout this deploy runs: a save pushes one artifact.
            pushed = push_module(self.project, module, registry, self.environ, runtimes=(deploy.runtime,)).pushed[0]
            # What the deploy is made of: a template saved changes the Pod with the module and settings unchanged.
            made_of = (pushed.digest, _templates_digest(deploy.templates))
            if self.deployed == deploy and self.deployed_digest == made_of:
                self.console.say(f"dev: the module and settings are unchanged ({pushed.digest[:19]}): still running")
                return
            self.console.say(f"dev: pushed {pushed.reference} ({pushed.size:,} bytes, {pushed.digest[:19]})")
            if pushed.registry_note:
                self.console.say(f"dev: {pushed.registry_note}")
            if self.deployed is not None and (self.options.fresh or (self.deployed.namespace, self.deployed.name)
                                              != (deploy.namespace, deploy.name)):
                # Stopped before its outputs go, so the old module cannot write them again.
                self.node.delete(self.deployed.namespace, self.deployed.name)
            if self.options.fresh:
                self.remove_outputs()
        except UserError as error:
            self.console.say(f"error: {error}")
            if self.deployed is not None:
                self.console.say(f"dev: {self.deployed.namespace}/{self.deployed.name} keeps running the last good "
                                 "module; fix it and save again")
            return
        try:
            report = deploy_workload(self.project, registry, deploy, self.environ, dry_run=False)
        except UserError as error:
            # The new module may be deployed and failing (an instance that exits at start): say
            # what runs now rather than promise the last good one.
            self.console.say(f"error: {error}")
            self.say_what_runs(deploy)
            return
        self.deployed, self.deployed_digest = deploy, made_of
        self.console.say(f"dev: {report.text}")
        self.follow(deploy)

    def say_what_runs(self, deploy: DeploySettings) -> None:
        try:
            state = self.node.status(deploy.namespace, deploy.name)
        except UserError:
            self.deployed, self.deployed_digest = None, None
            self.console.say(f"dev: nothing runs as {deploy.namespace}/{deploy.name} now; fix it and save again")
            return
        self.deployed, self.deployed_digest = deploy, None  # Ctrl-C undeploys it; the next save redeploys
        self.console.say(f"dev: on the local node now: {state.describe()}; fix it and save again")
        self.follow(deploy)

    def remove_outputs(self) -> None:
        removed = sorted(_files_in(self.options.output_dir) - self.ours_before)
        for path in removed:
            path.unlink(missing_ok=True)
        if removed:
            self.console.say(f"dev: --fresh: removed {len(removed)} output(s) written since dev started")

    def follow(self, deploy: DeploySettings) -> None:
        """Streams the workload's lines; across redeploys of one name the same follower goes on."""
        if self.follower is not None and self.follower[1].name == f"{deploy.namespace}/{deploy.name}":
            return
        self.stop_following()
        stop = threading.Event()
        thread = threading.Thread(target=self.node.follow, name=f"{deploy.namespace}/{deploy.name}", daemon=True,
                                  args=(deploy.namespace, deploy.name, self.console.log, stop),
                                  kwargs={"until_gone": False})
        thread.start()
        self.follower = (stop, thread)

    def stop_following(self) -> None:
        if self.follower is not None:
            self.follower[0].set()
            self.follower[1].join(timeout=5)
            self.follower = None

    def run(self) -> None:
        changes: queue.Queue[set[Path]] = queue.Queue()
        recursive, root = watched_paths(self.project)
        config_file = self.project.root / "invoke.yaml"
        watchers = [
            threading.Thread(target=_watch, args=(recursive, True, lambda p: True, changes, self.stop), daemon=True),
            threading.Thread(target=_watch, args=([root], False, lambda p: p == config_file, changes, self.stop),
                             daemon=True),
        ]
        for watcher in watchers:
            watcher.start()
        self.prepare()
        self.cycle("starting")
        while True:
            try:
                changed = changes.get(timeout=0.2)
            except queue.Empty:
                continue
            while not changes.empty():  # saves made meanwhile go into this one rebuild
                changed |= changes.get_nowait()
            self.cycle(f"{_names(changed, self.project.root)} changed")

    def close(self) -> None:
        """Stops watching and following, then undeploys what dev deployed (a second Ctrl-C
        cannot cut that short)."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop.set()
            self.stop_following()
            if self.deployed is not None:
                self.node.delete(self.deployed.namespace, self.deployed.name)
                self.console.say(f"dev: stopped; undeployed {self.deployed.namespace}/{self.deployed.name}")
            else:
                self.console.say("dev: stopped; nothing was deployed")
        finally:
            signal.signal(signal.SIGINT, previous)


def _names(paths: Iterable[Path], root: Path) -> str:
    # An editor's (or sed's) temporary file is gone by now: name what is there.
    paths = [p for p in paths if p.exists()] or list(paths)
    shown = sorted(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths)
    return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")


def run_dev_loop(project: Project, load_settings: SettingsLoader, options: DevOptions, environ: dict[str, str],
                 out: TextIO = sys.stdout) -> None:
    """`invoke dev`: until Ctrl-C (or SIGTERM), then undeploys what it deployed."""
    loop = DevLoop(project, load_settings, options, environ, Console(out))
    # SIGTERM (a closed terminal, a supervisor) ends the loop as Ctrl-C does, undeploying too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
