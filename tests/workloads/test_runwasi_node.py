"""deploy --runtime runwasi: the manifests (dry run, configuration, the RuntimeClass) and the local
node running the Pod as containerd's wasmtime shim would, end to end with real wasmtime and
docker-registry: runwasi's pull rules, argv from command and args, the Pod's env, a root `/`
holding only the mounts, and the compiled-module cache."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from testkit import ROOT, invoke
from workload_kit import dry_run, images, one_line_error

from wasmpod.artifact import Provenance, compose_artifact, compose_wasm_oci_artifact, file_digest
from wasmpod.localrun import compiled_module_file
from wasmpod.oci_client import RegistryClient, Transport
from wasmpod.push import push_artifact
from wasmpod.reference import ImageReference

NODE = ROOT / ".cache" / "node"

# Prints its argv (one argument a line), then each preopened directory's guest path
# ("preopen:<path>"), in the order the runtime gave them.
ARGV_PRINTER = r"""
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $asizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $aget (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $pget (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $pname (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 32) "preopen:\n")
  (func $out (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))))
  (func (export "_start")
    (local $i i32) (local $size i32) (local $fd i32) (local $n i32)
    (drop (call $asizes (i32.const 0) (i32.const 4)))
    (drop (call $aget (i32.const 1024) (i32.const 65536)))
    (local.set $size (i32.load (i32.const 4)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $size)))
      (if (i32.eqz (i32.load8_u (i32.add (i32.const 65536) (local.get $i))))
        (then (i32.store8 (i32.add (i32.const 65536) (local.get $i)) (i32.const 10))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $out (i32.const 65536) (local.get $size))
    (local.set $fd (i32.const 3))
    (block $end (loop $more
      (br_if $end (i32.ne (call $pget (local.get $fd) (i32.const 8)) (i32.const 0)))
      (local.set $n (i32.load (i32.const 12)))
      (drop (call $pname (local.get $fd) (i32.const 131072) (local.get $n)))
      (call $out (i32.const 32) (i32.const 8))
      (call $out (i32.const 131072) (local.get $n))
      (call $out (i32.const 40) (i32.const 1))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br $more)))))
"""


@pytest.fixture
def argv_printer(tmp_path) -> Path:
    import wasmtime

    module = tmp_path / "argv-printer.wasm"
    module.write_bytes(wasmtime.wat2wasm(ARGV_PRINTER))
    return module


def client_for(address: str) -> RegistryClient:
    return RegistryClient(address, Transport.choose(address), None)


def printed(name: str, env: dict) -> list[str]:
    logs = invoke("logs", "--name", name, env=env).stdout.splitlines()
    return [line.split("] ", 1)[1] for line in logs if line.startswith("[instance-0] ")]


def deploy_job(address: str, repository: str, name: str, tmp_path: Path, *more: str, env: dict):
    (tmp_path / "in").mkdir(exist_ok=True)
    return invoke("deploy", "--registry", address, "--repository", repository, "--tag", "v1", "--name", name,
                  "--kind", "job", "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                  "--env", "FRACTALIFY_CHANNEL=red", *more, env=env)


def test_a_runwasi_pod_gets_command_then_args_and_a_root_holding_only_its_mounts(argv_printer, registry, env, tmp_path,
                                                                                  workload_names):
    push_artifact(client_for(registry.address), ImageReference(registry.address, "printer", "v1-runwasi"),
                  compose_wasm_oci_artifact(argv_printer, Provenance()))
    name = workload_names("rw-argv")
    done = deploy_job(registry.address, "printer", name, tmp_path, "--runtime", "runwasi", env=env)
    assert done.returncode == 0 and "Succeeded" in done.stdout, done.stdout + done.stderr
    lines = printed(name, env)
    assert lines == ["fractalify.wasm", "--once", "/input_dir", "/output_dir",
                     "preopen:/", "preopen:/input_dir", "preopen:/output_dir"]
    root = NODE / "default" / name / "rootfs"
    assert sorted(p.name for p in root.iterdir()) == ["input_dir", "output_dir"]
    assert not any(any(p.iterdir()) for p in root.iterdir())  # mount points only: what is written goes to the mounts


def test_a_krustlet_pod_keeps_args_as_argv_and_only_its_mounts(argv_printer, registry, env, tmp_path, workload_names):
    push_artifact(client_for(registry.address), ImageReference(registry.address, "printer", "v1"),
                  compose_artifact(argv_printer, Provenance()))
    name = workload_names("kr-argv")
    done = deploy_job(registry.address, "printer", name, tmp_path, env=env)
    assert done.returncode == 0 and "Succeeded" in done.stdout, done.stdout + done.stderr
    assert printed(name, env) == ["fractalify", "--once", "/input_dir", "/output_dir",
                                  "preopen:/input_dir", "preopen:/output_dir"]
    assert not (NODE / "default" / name / "rootfs").exists()


def test_a_runwasi_pod_gets_the_pods_env_with_its_instance_id(registry, env, tmp_path, workload_names):
    from test_local_node import ENV_PRINTER
    import wasmtime

    printer = tmp_path / "env-printer.wasm"
    printer.write_bytes(wasmtime.wat2wasm(ENV_PRINTER))
    push_artifact(client_for(registry.address), ImageReference(registry.address, "env-printer", "v1-runwasi"),
                  compose_wasm_oci_artifact(printer, Provenance()))
    name = workload_names("rw-env")
    done = deploy_job(registry.address, "env-printer", name, tmp_path, "--runtime", "runwasi",
                      env={**env, "SECRET_TOKEN": "planted-on-the-host"})
    assert done.returncode == 0, done.stdout + done.stderr
    seen = dict(line.partition("=")[::2] for line in printed(name, env))
    assert seen == {"FRACTALIFY_CHANNEL": "red", "FRACTALIFY_INSTANCE": f"{name}-0"}


def test_a_runwasi_pod_refuses_krustlets_layout_in_one_line(argv_printer, registry, env, tmp_path, workload_names):
    # Krustlet's layout under the tag a runwasi Pod asks for: the shim would not run it.
    push_artifact(client_for(registry.address), ImageReference(registry.address, "printer", "v1-runwasi"),
                  compose_artifact(argv_printer, Provenance()))
    done = deploy_job(registry.address, "printer", workload_names("rw-refuse"), tmp_path, "--runtime", "runwasi", env=env)
    one_line_error(done, "not a module runwasi's shims would run")


def test_the_chain_deploys_fractalify_on_runwasi_and_a_second_pod_starts_from_the_compiled_cache(
        registry, env, tmp_path, workload_names):
    images(tmp_path / "in", 3)
    done = invoke("build", "--simd", "push", "--registry", registry.address, "--runtime", "runwasi", env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    module = Path(invoke("build", "--simd", env=env).stdout.strip().splitlines()[-1])
    compiled = compiled_module_file(NODE / ".compiled", file_digest(module))
    compiled.unlink(missing_ok=True)  # cold, whatever earlier runs left
    first, second = workload_names("rw-cold"), workload_names("rw-cached")
    for name, out, said in ((first, "out", "compiled and cached"), (second, "out2", "from the compiled cache")):
        done = invoke("deploy", "--simd", "--runtime", "runwasi", "--registry", registry.address, "--kind", "job",
                      "--name", name, "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / out), env=env)
        assert done.returncode == 0 and "Succeeded" in done.stdout, done.stdout + done.stderr
        assert "fractalify:v0.2.0-simd-runwasi" in done.stdout
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["img00.png", "img01.png", "img02.png"]
        assert f"instance 0: module {said}" in (NODE / "default" / name / "runner.log").read_text()
    assert compiled.exists()


def test_the_dry_run_chain_prints_a_runwasi_pod_and_a_schema_valid_runtime_class(registry, env):
    done = invoke("build", "--simd", "push", "deploy", "--runtime", "runwasi", "--dry-run", "--create-runtime-class",
                  "--registry", registry.address, env=env, timeout=900)
    assert done.returncode == 0, done.stderr
    text = done.stdout[done.stdout.index("# Selects"):]  # push's lines come first
    runtime_class, pod = [doc for doc in yaml.safe_load_all(text) if doc]
    assert runtime_class["kind"] == "RuntimeClass" and runtime_class["handler"] == "wasmtime-v1"
    kubernetes_validate.validate(runtime_class, "1.30", strict=True)
    assert pod["spec"]["runtimeClassName"] == "wasmtime-v1"
    assert pod["spec"]["containers"][0]["image"] == f"{registry.address}/fractalify:v0.2.0-simd-runwasi"
    assert pod["spec"]["containers"][0]["command"] == ["fractalify.wasm"]


def test_runtime_from_the_configuration_and_bad_values_in_one_line(env, tmp_path):
    config = tmp_path / "runwasi.yaml"
    config.write_text('deploy:\n  runtime: runwasi\n  runtime_class: wasm\n  create_runtime_class: true\n'
                      '  runtime_class_node_selector: {kwasm.sh/kwasm-provisioned: "true"}\n')
    done = invoke("-f", str(config), "deploy", "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    runtime_class, pod = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert runtime_class["scheduling"] == {"nodeSelector": {"kwasm.sh/kwasm-provisioned": "true"}}
    assert pod["spec"]["runtimeClassName"] == "wasm" and pod["spec"]["containers"][0]["image"].endswith(":v0.2.0-runwasi")
    assert [d["kind"] for d in dry_run(env={**env, "INVOKE_DEPLOY_RUNTIME": "runwasi"})] == ["Pod"]
    one_line_error(invoke("deploy", "--dry-run", "--runtime", "wasmedge", env=env), "krustlet, runwasi", "wasmedge")
    one_line_error(invoke("deploy", "--dry-run", "--runtime", "all", env=env), "push only")
    one_line_error(invoke("deploy", "--dry-run", "--create-runtime-class", env=env), "--runtime runwasi")


def test_the_compiled_cache_key_names_the_layer_and_the_engine(monkeypatch, tmp_path):
    import wasmpod.localrun as localrun

    one = compiled_module_file(tmp_path, "sha256:" + "1" * 64)
    assert one == compiled_module_file(tmp_path, "sha256:" + "1" * 64)
    assert one != compiled_module_file(tmp_path, "sha256:" + "2" * 64)
    monkeypatch.setattr(localrun, "wasmtime_version", lambda: "0.0.1")
    assert one != compiled_module_file(tmp_path, "sha256:" + "1" * 64)
    monkeypatch.undo()
    monkeypatch.setattr(localrun, "RUNWASI_ENGINE_SETTINGS", "simd off")
    assert one != compiled_module_file(tmp_path, "sha256:" + "1" * 64)
