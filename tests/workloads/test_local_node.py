"""The local node's own guarantees, end to end with the real module, wasmtime and docker-registry:
it signals only processes it started, serialises one workload's commands, says plainly when its
state is damaged (and undeploy still cleans up), reports dead runners and failing instances
honestly, and leaves no claims behind."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from testkit import ROOT, invoke, wait_for
from workload_kit import LARGE_IMAGE_BUDGET, images, large_images, leftovers, one_line_error

from registries import PASSWORD, USER

from wasmpod.artifact import Provenance, compose_artifact
from wasmpod.local_node import LocalNode, runner_command
from wasmpod.localrun import run_on_directories
from wasmpod.manifests import GUEST_INPUT, GUEST_OUTPUT, PullSecret, Workload, render_manifests, volume_from
from wasmpod.oci_client import RegistryClient, Transport
from wasmpod.push import push_artifact
from wasmpod.reference import ImageReference
from wasmpod.processes import ProcessIdentity, find_processes

NODE = ROOT / ".cache" / "node" / "default"
TEMPLATES = ROOT / "templates" / "k8s"


@pytest.fixture
def pushed(registry, env) -> str:
    """The module built and pushed to a fresh registry; its address."""
    done = invoke("build", "push", "--registry", registry.address, env=env)
    assert done.returncode == 0, done.stderr
    return registry.address


def deploy(address: str, name: str, tmp_path: Path, *more: str, env: dict) -> subprocess.CompletedProcess:
    return invoke("deploy", "--registry", address, "--name", name, "--input-dir", str(tmp_path / "in"),
                  "--output-dir", str(tmp_path / "out"), "--env", "FRACTALIFY_INTERVAL=0.3", *more, env=env)


def recorded_runner(name: str) -> ProcessIdentity:
    return ProcessIdentity.from_json(json.loads((NODE / name / "runner.json").read_text()))


def our_runners(name: str) -> list[ProcessIdentity]:
    return find_processes(runner_command(NODE / name))


@pytest.fixture
def bystander():
    """A process that is not ours, leading a process group of its own, as a runner does."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def test_deploys_of_one_workload_at_once_all_end_cleanly_and_it_runs_once(pushed, env, tmp_path, workload_names):
    name = workload_names("twice")
    names = images(tmp_path / "in", 3)
    command = [str(ROOT / ".venv" / "bin" / "invoke"), "deploy", "--registry", pushed, "--name", name,
               "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
               "--env", "FRACTALIFY_INTERVAL=0.3"]
    # Several at once: without the lock their steps interleave (one removes what another just made).
    for process in [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for _ in range(6)]:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "Traceback" not in err, err
        assert "Running" in out
    assert len(our_runners(name)) == 1
    assert wait_for(lambda: all((tmp_path / "out" / n).exists() for n in names))
    assert f"default/{name}  Pod  Running" in invoke("status", env=env).stdout


def test_deploys_and_undeploys_of_one_workload_at_once_all_end_cleanly(pushed, env, tmp_path, workload_names):
    """undeploy removes the lock file under the lock: one waiting meanwhile locks again the file
    that now has that name, so no two of them ever hold the workload at once."""
    name = workload_names("churn")
    images(tmp_path / "in", 1)
    deploy_command = [str(ROOT / ".venv" / "bin" / "invoke"), "deploy", "--registry", pushed, "--name", name,
                      "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                      "--env", "FRACTALIFY_INTERVAL=0.3"]
    undeploy_command = [str(ROOT / ".venv" / "bin" / "invoke"), "undeploy", "--name", name]
    for process in [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for _ in range(8) for command in (deploy_command, undeploy_command)]:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "Traceback" not in err, err
    assert len(our_runners(name)) <= 1
    assert deploy(pushed, name, tmp_path, env=env).returncode == 0
    assert len(our_runners(name)) == 1


@pytest.mark.parametrize("state_file, content", [("status.json", ""), ("workload.json", '{"kind": "Pod", "na'),
                                                 ("runner.json", "[1, 2]"), ("status.json", '{"phase": "Running"}')])
def test_a_damaged_state_file_is_one_line_naming_it_and_undeploy_still_cleans_up(pushed, env, tmp_path, workload_names,
                                                                                 state_file, content):
    name = workload_names("damaged")
    images(tmp_path / "in", 1)
    assert deploy(pushed, name, tmp_path, env=env).returncode == 0
    path = NODE / name / state_file
    path.write_text(content)
    status = invoke("status", env=env)
    assert status.returncode == 0 and "Traceback" not in status.stderr
    line = next(line for line in status.stdout.splitlines() if name in line)
    assert str(path) in line and "undeploy" in line
    if state_file == "workload.json":
        one_line_error(invoke("logs", "--name", name, env=env), str(path))
    gone = invoke("undeploy", "--name", name, env=env)
    assert gone.returncode == 0 and "stopped and removed" in gone.stdout, gone.stderr
    assert not (NODE / name).exists() and our_runners(name) == []


@pytest.mark.parametrize("record", ["identity", "garbage"])
def test_a_runner_record_naming_another_process_never_signals_it_nor_orphans_the_runner(
        pushed, env, tmp_path, workload_names, bystander, record):
    name = workload_names("planted")
    images(tmp_path / "in", 1)
    assert deploy(pushed, name, tmp_path, env=env).returncode == 0
    runner = recorded_runner(name)
    if record == "identity":
        # The bystander's true pid and start time, claiming to be this workload's runner.
        planted = ProcessIdentity(bystander.pid, ProcessIdentity.of(bystander.pid, ("300",)).start_time,
                                  runner_command(NODE / name))
        (NODE / name / "runner.json").write_text(json.dumps(planted.as_json()))
    else:
        (NODE / name / "runner.json").write_text(f"{bystander.pid}\n")
    invoke("status", env=env)
    assert invoke("undeploy", "--name", name, env=env).returncode == 0
    assert bystander.poll() is None  # neither it nor its group got a signal
    assert not runner.is_running() and our_runners(name) == []  # the real runner was found and stopped


def test_a_killed_runner_is_not_running_and_a_redeploy_takes_its_claims_back(pushed, env, tmp_path, workload_names):
    name = workload_names("killed")
    large = large_images(tmp_path / "in", 2)
    common = ("--env", "FRACTALIFY_C=0,0", "--env", LARGE_IMAGE_BUDGET, "--env", LARGE_IMAGE_BUDGET)
    assert deploy(pushed, name, tmp_path, *common, env=env).returncode == 0
    assert wait_for(lambda: leftovers(tmp_path / "out"))
    os.kill(recorded_runner(name).pid, signal.SIGKILL)
    assert wait_for(lambda: "runner not running" in invoke("status", env=env).stdout, 30)
    status = next(line for line in invoke("status", env=env).stdout.splitlines() if name in line)
    assert "Running" not in status and "Failed" in status
    done = deploy(pushed, name, tmp_path, *common, env=env)
    assert done.returncode == 0, done.stderr
    # Without the claims taken back, an image would wait ten minutes for its claim to go stale.
    assert wait_for(lambda: all((tmp_path / "out" / n).exists() for n in large), 180)


def test_undeploy_while_an_instance_works_on_an_image_leaves_no_claims(pushed, env, tmp_path, workload_names):
    name = workload_names("midway")
    large_images(tmp_path / "in", 2)
    assert deploy(pushed, name, tmp_path, "--kind", "deployment", "--replicas", "2", "--env", "FRACTALIFY_C=0,0", "--env", LARGE_IMAGE_BUDGET,
                  env=env).returncode == 0
    assert wait_for(lambda: len([p for p in leftovers(tmp_path / "out") if p.suffix == ".claim"]) == 2)
    assert invoke("undeploy", "--name", name, env=env).returncode == 0
    assert leftovers(tmp_path / "out") == []


def test_an_instance_that_exits_at_once_fails_deploy_with_its_own_line(pushed, env, tmp_path, workload_names):
    name = workload_names("badvar")
    images(tmp_path / "in", 1)
    began = time.monotonic()
    done = deploy(pushed, name, tmp_path, "--env", "FRACTALIFY_MAX_ITER=999", env=env)
    one_line_error(done, "FRACTALIFY_MAX_ITER", "exited with status 2", "fractalify:", "it stays deployed",
                   f"`invoke undeploy --name {name}`")

    def status_line() -> str:
        return next((line for line in invoke("status", env=env).stdout.splitlines() if name in line), "")

    # Shown as kubectl shows it: restarted with back-off, its exit status and its last line (read
    # while it waits in back-off: between two exits it runs again for a moment).
    seen: list[str] = []

    def in_back_off() -> bool:
        seen.append(status_line())
        return "CrashLoopBackOff (exit 2" in seen[-1] and re.search(r"\d+ restarts", seen[-1]) is not None

    assert wait_for(in_back_off, 60), seen[-1:]
    status = seen[-1]
    restarts = int(re.search(r"(\d+) restarts", status).group(1))
    # Counted at each exit, and back-off doubles from 1 s: the n-th cannot come before 2**(n-1) - 1 s.
    assert 2 ** (restarts - 1) - 1 <= time.monotonic() - began, status
    assert "CrashLoopBackOff (exit 2" in status and "FRACTALIFY_MAX_ITER" in status and "Running" not in status.split("[")[0]


@pytest.mark.parametrize("which, path", [("--output-dir", "a-file"), ("--output-dir", "/proc/fractalify-out"),
                                         ("--input-dir", "a-file")])
def test_a_host_directory_that_is_a_file_or_cannot_be_made_is_one_line_and_nothing_is_deployed(
        pushed, env, tmp_path, workload_names, which, path):
    name = workload_names("paths")
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "in").mkdir()
    dirs = {"--input-dir": str(tmp_path / "in"), "--output-dir": str(tmp_path / "out"), which: str(tmp_path / path)}
    done = invoke("deploy", "--registry", pushed, "--name", name, *[x for pair in dirs.items() for x in pair], env=env)
    one_line_error(done, "a-file" if path == "a-file" else path)
    assert "is a file, not a directory" in done.stderr or "cannot create" in done.stderr
    assert name not in invoke("status", env=env).stdout
    assert not (tmp_path / "out").exists() or which == "--output-dir"


def test_a_variable_with_the_workloads_prefix_the_module_does_not_read_is_refused(env, tmp_path):
    one_line_error(invoke("deploy", "--dry-run", "--env", "FRACTALIFY_MAXITER=5", env=env),
                   "FRACTALIFY_MAXITER", "did you mean FRACTALIFY_MAX_ITER")
    config = tmp_path / "env.yaml"
    config.write_text("deploy:\n  env:\n    FRACTALIFY_CHANEL: red\n")
    one_line_error(invoke("-f", str(config), "deploy", "--dry-run", env=env), "did you mean FRACTALIFY_CHANNEL")
    fine = invoke("deploy", "--dry-run", "--env", "FRACTALIFY_MAX_BYTES=1000", "--env", "OTHER_THING=1", env=env)
    assert fine.returncode == 0, fine.stderr


def test_a_job_with_a_failed_instance_is_failed(pushed, env, tmp_path, workload_names):
    name = workload_names("corrupt")
    names = images(tmp_path / "in", 6)
    (tmp_path / "in" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    done = deploy(pushed, name, tmp_path, "--kind", "job", "--completions", "3", "--parallelism", "3", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"Job default/{name}" in done.stdout and ": Failed" in done.stdout
    # Today's module gives up a claim on an image it cannot read, so each instance meets the corrupt one.
    assert "Error (exit 1): fractalify: corrupt.png" in done.stdout
    assert all((tmp_path / "out" / n).exists() for n in names)
    assert "Failed" in next(line for line in invoke("status", env=env).stdout.splitlines() if name in line)


def test_the_pull_secret_entry_is_chosen_by_the_images_registry(auth_registry, env, tmp_path):
    """A Secret with entries for two registries, the wrong one first: the node pulls with the
    entry under the image's registry (taking the first entry would be refused by the registry)."""
    with_credentials = {**env, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    assert invoke("push", "--registry", auth_registry.address, env=with_credentials).returncode == 0
    images(tmp_path / "in", 1)
    workload = Workload(kind="job", name="two-entries", namespace="default",
                        image=f"{auth_registry.address}/fractalify:v0.2.0", program="fractalify",
                        volumes=(volume_from(str(tmp_path / "in"), "input-dir", GUEST_INPUT, create=False),
                                 volume_from(str(tmp_path / "out"), "output-dir", GUEST_OUTPUT, create=True)),
                        pull_secret="regcred", completions=1)
    secret = PullSecret("regcred", "default", auth_registry.address, USER, PASSWORD)
    objects = [obj for _, _, obj in render_manifests(TEMPLATES, workload, secret)]
    entries = {"other.example.com:5000": {"username": "someone-else", "password": "not-the-password"},
               auth_registry.address: {"username": USER, "password": PASSWORD}}
    objects[0]["data"][".dockerconfigjson"] = base64.b64encode(json.dumps({"auths": entries}).encode()).decode()
    node = LocalNode(tmp_path / "node")
    state = node.apply(objects, lambda address: Transport.choose(address, None, False, None))
    assert state.phase == "Succeeded", state.describe()
    assert (tmp_path / "out" / "img00.png").exists()


ENV_PRINTER = """
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  ;; Writes its environment on stdout, one NAME=value a line.
  (func (export "_start")
    (local $i i32) (local $size i32)
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 65536)))
    (local.set $size (i32.load (i32.const 4)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $size)))
      (if (i32.eqz (i32.load8_u (i32.add (i32.const 65536) (local.get $i))))
        (then (i32.store8 (i32.add (i32.const 65536) (local.get $i)) (i32.const 10))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.store (i32.const 16) (i32.const 65536))
    (i32.store (i32.const 20) (local.get $size))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"""
HOST_SECRET = {"SECRET_TOKEN": "planted-on-the-host", "FRACTALIFY_C": "-0.8,0.156"}


@pytest.fixture
def env_printer(tmp_path) -> Path:
    import wasmtime

    module = tmp_path / "env-printer.wasm"
    module.write_bytes(wasmtime.wat2wasm(ENV_PRINTER))
    return module


def printed_env(lines: list[str]) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in lines if "=" in line)


def test_invoke_run_passes_the_module_only_its_own_variables(env_printer, tmp_path, capfd):
    (tmp_path / "in").mkdir()
    result = run_on_directories(env_printer, "fractalify", tmp_path / "in", tmp_path / "out", [],
                                {**os.environ, **HOST_SECRET})
    assert result.status == 0
    seen = printed_env(capfd.readouterr().out.splitlines())
    assert seen["FRACTALIFY_C"] == "-0.8,0.156" and "FRACTALIFY_INSTANCE" in seen
    assert set(seen) == {"FRACTALIFY_C", "FRACTALIFY_INSTANCE"}  # no SECRET_TOKEN, PATH, HOME...


def test_the_local_node_passes_the_module_only_the_pods_variables(env_printer, registry, env, tmp_path, workload_names):
    client = RegistryClient(registry.address, Transport.choose(registry.address, None, False, None), None)
    push_artifact(client, ImageReference(registry.address, "env-printer", "v1"), compose_artifact(env_printer, Provenance()))
    name = workload_names("env")
    (tmp_path / "in").mkdir()
    done = invoke("deploy", "--registry", registry.address, "--repository", "env-printer", "--tag", "v1", "--name", name,
                  "--kind", "job", "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                  "--env", "FRACTALIFY_CHANNEL=red", env={**env, **HOST_SECRET})
    assert done.returncode == 0 and "Succeeded" in done.stdout, done.stdout + done.stderr
    logs = invoke("logs", "--name", name, env=env).stdout.splitlines()
    seen = printed_env([line.split("] ", 1)[1] for line in logs if line.startswith("[instance-0]")])
    assert set(seen) == {"FRACTALIFY_CHANNEL", "FRACTALIFY_INSTANCE"} and seen["FRACTALIFY_CHANNEL"] == "red"


def test_an_instance_that_ends_is_restarted_on_a_recreated_output_directory(env_printer, registry, env, tmp_path,
                                                                             workload_names):
    """restartPolicy Always: an instance that ends is started again after a back-off, and each
    start makes the DirectoryOrCreate host paths again (the module exits when its output directory
    is removed, so that its restart writes into the new one). The environment printer ends at once."""
    client = RegistryClient(registry.address, Transport.choose(registry.address, None, False, None), None)
    push_artifact(client, ImageReference(registry.address, "env-printer", "v1"), compose_artifact(env_printer, Provenance()))
    name = workload_names("restart")
    (tmp_path / "in").mkdir()
    done = invoke("deploy", "--registry", registry.address, "--repository", "env-printer", "--tag", "v1", "--name", name,
                  "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), env=env)
    assert done.returncode == 0, done.stderr

    def restarts() -> int:
        line = next(line for line in invoke("status", env=env).stdout.splitlines() if name in line)
        found = re.search(r"(\d+) restarts", line)
        return int(found.group(1)) if found else 0

    assert wait_for(lambda: restarts() >= 1, 60)
    (tmp_path / "out").rmdir()
    before = restarts()
    assert wait_for(lambda: restarts() >= before + 1, 90)
    assert (tmp_path / "out").is_dir()


def test_a_killed_instance_is_not_running_and_is_restarted(pushed, env, tmp_path, workload_names):
    name = workload_names("instance")
    images(tmp_path / "in", 1)
    assert deploy(pushed, name, tmp_path, env=env).returncode == 0
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(recorded_runner(name).pid)],
                              capture_output=True, text=True).stdout.split()
    assert len(children) == 1  # the instance's process (python -m wasmpod.localrun)
    os.kill(int(children[0]), signal.SIGKILL)
    node = LocalNode(NODE.parent)
    # Polled through the node's own reader: the back-off before the restart lasts a second.
    assert wait_for(lambda: node.status("default", name).instances[0].state == "CrashLoopBackOff", 30)
    instance = node.status("default", name).instances[0]
    assert (instance.exit_code, instance.restarts, instance.last_error) == (130, 1, "killed by a signal")
    # Running again, with how its last run ended (as kubectl's Last State).
    assert wait_for(lambda: f"{name}  Pod  Running  [#0 Running (1 restarts, last exit 130)]" in invoke("status", env=env).stdout, 30)


# A module that fails only as the Indexed Job's second Pod: exit status 3 when its environment
# holds JOB_COMPLETION_INDEX=1, success otherwise.
FAILS_AS_INDEX_ONE = """
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 4)
  (data (i32.const 512) "JOB_COMPLETION_INDEX=1\\00")
  (func (export "_start")
    (local $i i32) (local $j i32) (local $size i32)
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 1024) (i32.const 65536)))
    (local.set $size (i32.load (i32.const 4)))
    (block $done (loop $next
      (br_if $done (i32.gt_u (i32.add (local.get $i) (i32.const 23)) (local.get $size)))
      (local.set $j (i32.const 0))
      (block $differ (loop $compare
        (br_if $differ (i32.ne (i32.load8_u (i32.add (i32.const 65536) (i32.add (local.get $i) (local.get $j))))
                               (i32.load8_u (i32.add (i32.const 512) (local.get $j)))))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (if (i32.eq (local.get $j) (i32.const 23)) (then (call $exit (i32.const 3))))
        (br $compare)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))))
"""


def test_a_job_is_failed_when_one_instance_fails_and_the_others_succeed(registry, env, tmp_path, workload_names):
    import wasmtime

    module = tmp_path / "fails-as-one.wasm"
    module.write_bytes(wasmtime.wat2wasm(FAILS_AS_INDEX_ONE))
    client = RegistryClient(registry.address, Transport.choose(registry.address, None, False, None), None)
    push_artifact(client, ImageReference(registry.address, "fails-as-one", "v1"), compose_artifact(module, Provenance()))
    name = workload_names("one-fails")
    (tmp_path / "in").mkdir()
    done = invoke("deploy", "--registry", registry.address, "--repository", "fails-as-one", "--tag", "v1", "--name", name,
                  "--kind", "job", "--completions", "3", "--parallelism", "3", "--input-dir", str(tmp_path / "in"),
                  "--output-dir", str(tmp_path / "out"), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert ": Failed" in done.stdout
    assert "#0 Succeeded" in done.stdout and "#2 Succeeded" in done.stdout and "#1 Error (exit 3)" in done.stdout
