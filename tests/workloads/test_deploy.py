"""invoke deploy: configuration layers, flags, checks, the chain, kubectl, and the local node
end to end against a real registry."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import pytest
import yaml
from testkit import ROOT, invoke, wait_for
from workload_kit import dry_run, images, one_line_error, runners

from registries import PASSWORD, USER, free_port, pushed_fields
from krustlet_pull import krustlet_pull


def test_configuration_layers_in_order(env, tmp_path):
    assert dry_run(env=env)[0]["kind"] == "Pod"  # invoke.yaml
    env_layer = {**env, "INVOKE_DEPLOY_KIND": "job", "INVOKE_DEPLOY_NAMESPACE": "from-env"}
    assert [d["kind"] for d in dry_run(env=env_layer)] == ["Job"]
    file_layer = tmp_path / "override.yaml"
    file_layer.write_text("deploy:\n  kind: deployment\n  replicas: 4\n")
    done = invoke("-f", str(file_layer), "deploy", "--dry-run", env=env_layer)
    deployment = yaml.safe_load(done.stdout)
    assert deployment["kind"] == "Deployment" and deployment["spec"]["replicas"] == 4
    assert deployment["metadata"]["namespace"] == "from-env"  # lower layers still count where not overridden
    flagged = yaml.safe_load(invoke("-f", str(file_layer), "deploy", "--dry-run", "--kind", "pod", env=env_layer).stdout)
    assert flagged["kind"] == "Pod"


@pytest.mark.parametrize("content, key", [("deploy:\n  kindd: job\n", "deploy.kindd"),
                                          ("deploy:\n  replicas: many\n", "deploy.replicas"),
                                          ("deploy:\n  kind: cronjob\n", "deploy.kind"),
                                          ("registry:\n  adress: x.io\n", "registry.adress")])
def test_unknown_keys_and_bad_values_name_the_key(env, tmp_path, content, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    one_line_error(invoke("-f", str(bad), "deploy", "--dry-run", env=env), key)


@pytest.mark.parametrize("name, content, words", [
    ("missing.yaml", None, ["missing.yaml", "does not exist"]),
    ("broken.yaml", "deploy: [kind\n", ["broken.yaml", "line 1"]),
    ("broken.json", '{"deploy": ', ["cannot read the configuration", "line 1"]),
    ("settings.txt", "deploy:\n  kind: job\n", ["cannot read the configuration", "settings.txt"])])
def test_a_configuration_file_invoke_cannot_read_is_one_line_and_nothing_runs(env, tmp_path, name, content, words):
    """Invoke skips a missing `-f FILE` silently and reads the others outside any task."""
    config = tmp_path / name
    if content is not None:
        config.write_text(content)
    done = invoke("-f", str(config), "deploy", "--dry-run", env=env)
    one_line_error(done, *words)
    assert done.stdout == ""


def test_invoke_variables_are_checked_and_read_as_text(registry, env, tmp_path):
    one_line_error(invoke("deploy", "--dry-run", env={**env, "INVOKE_DEPLOY_KINDD": "job"}), "INVOKE_DEPLOY_KINDD")
    one_line_error(invoke("deploy", "--dry-run", env={**env, "INVOKE_DEPLOY_REPLICAS": "many"}), "deploy.replicas")
    assert invoke("push", "--registry", registry.address, env=env).returncode == 0
    unpinned = dry_run("--registry", registry.address, env={**env, "INVOKE_DEPLOY_PIN": "false"})[0]
    assert "@sha256:" not in unpinned["spec"]["containers"][0]["image"]  # "false" is off, not a non-empty string
    pinned = dry_run("--registry", registry.address, env={**env, "INVOKE_DEPLOY_PIN": "true"})[0]
    assert "@sha256:" in pinned["spec"]["containers"][0]["image"]


def test_env_values_from_a_file_are_quoted_text_and_flags_win(env, tmp_path):
    config = tmp_path / "env.yaml"
    config.write_text("deploy:\n  env:\n    FLAG: 'true'\n    COUNT: '010'\n    TEXT: 'a: b'\n")
    pod = yaml.safe_load(invoke("-f", str(config), "deploy", "--dry-run", "--env", "COUNT=4", env=env).stdout)
    assert {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]} == {"FLAG": "true", "COUNT": "4", "TEXT": "a: b"}
    for unquoted in ("true", "010", "1:30", "[1, 2]"):
        config.write_text(f"deploy:\n  env:\n    X: {unquoted}\n")
        one_line_error(invoke("-f", str(config), "deploy", "--dry-run", env=env), "deploy.env.X")
    config.write_text("deploy:\n  env: [A, B]\n")
    one_line_error(invoke("-f", str(config), "deploy", "--dry-run", env=env), "deploy.env")


def test_example_configurations_render(env):
    for name in ("local.yaml", "batch-job.yaml", "long-running.yaml"):
        done = invoke("-f", str(ROOT / "examples" / "config" / name), "deploy", "--dry-run", "--registry", "r.example.com",
                      env=env)
        assert done.returncode == 0, (name, done.stderr)


def test_flags_reach_the_rendered_objects(env, tmp_path):
    docs = dry_run("--registry", "r.example.com", "--repository", "team/fractal", "--tag", "rc1", "--kind", "job",
                   "--completions", "3", "--parallelism", "2", "--name", "batch", "--namespace", "imaging",
                   "--input-dir", "/srv/in", "--output-dir", "pvc:results", "--env", "FRACTALIFY_C=-0.8,0.156",
                   "--env", "FRACTALIFY_CHANNEL=red", "--pull-secret", "regcred", env=env)
    job = docs[0]
    spec = job["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert (job["metadata"]["name"], job["metadata"]["namespace"]) == ("batch", "imaging")
    assert container["image"] == "r.example.com/team/fractal:rc1"
    assert {e["name"]: e["value"] for e in container["env"]} == {"FRACTALIFY_C": "-0.8,0.156", "FRACTALIFY_CHANNEL": "red"}
    assert spec["volumes"] == [{"name": "input-dir", "hostPath": {"path": "/srv/in", "type": "Directory"}},
                               {"name": "output-dir", "persistentVolumeClaim": {"claimName": "results"}}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 2)


@pytest.mark.parametrize("args, words", [
    (("--name", "Not_DNS"), ("deploy.name",)),
    (("--input-dir", "relative/in"), ("absolute",)),
    (("--output-dir", "emptyDir"), ("emptyDir", "Krustlet")),
    (("--registry", "bad/registry"), ("registry",)),
    (("--env", "NO_EQUALS"), ("KEY=VALUE",)),
])
def test_checks_refuse_bad_input_with_one_line(env, args, words):
    one_line_error(invoke("deploy", "--dry-run", *args, env=env), *words)


def test_dry_run_prints_only_yaml_changes_nothing_and_redacts_the_secret(env, tmp_path):
    port = free_port()
    env = {**env, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    out = tmp_path / "rendered"
    done = invoke("deploy", "--dry-run", "--port", str(port), "--create-pull-secret", "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    docs = list(yaml.safe_load_all(done.stdout))
    assert [d["kind"] for d in docs] == ["Secret", "Pod"]
    assert PASSWORD not in done.stdout + done.stderr
    assert base64.b64encode(PASSWORD.encode()).decode() not in done.stdout
    assert_holds_no_password(docs[0])
    secret_file = out / "fractalify-pull.secret.yaml"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    config = json.loads(base64.b64decode(yaml.safe_load(secret_file.read_text())["data"][".dockerconfigjson"]))
    assert config["auths"][f"127.0.0.1:{port}"]["password"] == PASSWORD
    assert docs[1]["spec"]["imagePullSecrets"] == [{"name": "fractalify-pull"}]
    status = invoke("registry.status", "--port", str(port), env=env)
    assert "not running" in status.stdout  # the dry run did not start the local registry


def assert_holds_no_password(secret: dict) -> None:
    """No value of the printed Secret holds the password: not as text, not in base64, and not
    in a docker config that its base64 decodes to."""
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    for value in list((secret.get("data") or {}).values()) + list((secret.get("stringData") or {}).values()):
        assert PASSWORD not in value and encoded not in value
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except ValueError:
            continue  # not base64: nothing hides in it
        assert PASSWORD not in decoded and encoded not in decoded
        try:
            config = json.loads(decoded)
        except ValueError:
            continue
        auths = config.get("auths", {}) if isinstance(config, dict) else {}
        for entry in auths.values():
            assert PASSWORD not in json.dumps(entry)
            assert PASSWORD not in base64.b64decode(entry.get("auth", "")).decode(errors="replace")


def test_one_flag_reaches_every_task_of_the_chain(registry, env, tmp_path):
    done = invoke("build", "push", "deploy", "--registry", registry.address, "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    pushed = pushed_fields("\n".join(l for l in done.stdout.splitlines() if l.startswith(("Pushed", "Size", "Digest"))))
    assert pushed["Pushed"] == f"{registry.address}/fractalify:v0.2.0"
    module = Path(done.stdout.splitlines()[0])
    assert krustlet_pull(registry.address, "fractalify", "v0.2.0") == module.read_bytes()
    pod = yaml.safe_load(done.stdout[done.stdout.index("apiVersion"):])
    assert pod["spec"]["containers"][0]["image"] == f"{registry.address}/fractalify:v0.2.0"
    twice = invoke("push", "--registry", registry.address, "deploy", "--registry", "other.example.com", "--dry-run", env=env)
    assert twice.returncode != 0 and "given twice" in twice.stderr


def test_pin_refers_to_the_digest_the_registry_holds_and_a_missing_image_is_refused(registry, env):
    pushed = pushed_fields(invoke("push", "--registry", registry.address, env=env).stdout)
    pod = dry_run("--registry", registry.address, "--pin", env=env)[0]
    assert pod["spec"]["containers"][0]["image"] == f"{registry.address}/fractalify:v0.2.0@{pushed['Digest']}"
    missing = invoke("deploy", "--registry", registry.address, "--tag", "never-pushed", "--input-dir", "/tmp",
                     "--output-dir", "/tmp/x-out", env=env)
    one_line_error(missing, "never-pushed")


def fake_kubectl(tmp_path: Path, exit_code: int = 0) -> tuple[dict, Path]:
    """A stand-in for kubectl: no API server can run here, so this records the exact command
    line and the files it was given (the one test double in these tests)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    record = tmp_path / "kubectl-calls.jsonl"
    script = bin_dir / "kubectl"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
args = sys.argv[1:]
files = {{a: open(a).read() for i, a in enumerate(args) if i and args[i - 1] == "-f"}}
open({str(record)!r}, "a").write(json.dumps({{"argv": args, "files": files}}) + "\\n")
print("applied" if "apply" in args else "deleted")
if {exit_code}:
    print("error: the server could not find the requested resource", file=sys.stderr)
sys.exit({exit_code})
""")
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, record


def test_target_kubectl_runs_the_exact_command_lines(registry, env, tmp_path):
    path, record = fake_kubectl(tmp_path)
    env = {**env, **path}
    assert invoke("push", "--registry", registry.address, env=env).returncode == 0
    done = invoke("deploy", "--registry", registry.address, "--target", "kubectl", "--context", "prod",
                  "--namespace", "imaging", "--name", "fractal", env=env)
    assert done.returncode == 0, done.stderr
    call = json.loads(record.read_text().splitlines()[0])
    assert call["argv"][:5] == ["--context", "prod", "--namespace", "imaging", "apply"]
    files = call["argv"][5:]
    assert files[0] == "-f" and files[1].endswith("fractal.pod.yaml") and len(files) == 2
    applied = yaml.safe_load(list(call["files"].values())[0])
    assert applied["metadata"]["name"] == "fractal"
    gone = invoke("undeploy", "--target", "kubectl", "--context", "prod", "--namespace", "imaging", "--name", "fractal",
                  "--registry", registry.address, env=env)
    assert gone.returncode == 0, gone.stderr
    delete = json.loads(record.read_text().splitlines()[1])["argv"]
    assert delete[:5] == ["--context", "prod", "--namespace", "imaging", "delete"] and delete[-1] == "--ignore-not-found"


def test_a_failing_kubectl_is_one_line(registry, env, tmp_path):
    path, _ = fake_kubectl(tmp_path, exit_code=1)
    env = {**env, **path}
    assert invoke("push", "--registry", registry.address, env=env).returncode == 0
    one_line_error(invoke("deploy", "--registry", registry.address, "--target", "kubectl", env=env), "kubectl apply failed")


def test_local_node_runs_the_pod_until_undeploy(registry, env, tmp_path, workload_names):
    name = workload_names("watch")
    names = images(tmp_path / "in", 3)
    done = invoke("build", "push", "deploy", "--registry", registry.address, "--name", name,
                  "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                  "--env", "FRACTALIFY_INTERVAL=0.3", env=env)
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: all((tmp_path / "out" / n).exists() for n in names))
    later = images(tmp_path / "in", 1, start=50)[0]
    assert wait_for(lambda: (tmp_path / "out" / later).exists())
    status = invoke("status", env=env).stdout
    assert f"default/{name}" in status and "Running" in status
    (tmp_path / "in" / "broken.png").write_text("not an image")
    assert wait_for(lambda: "broken.png" in invoke("logs", "--name", name, env=env).stdout)
    logs = invoke("logs", "--name", name, env=env).stdout
    assert sum(line.count("wrote ") for line in logs.splitlines()) == 4
    assert any(line.startswith("[instance-0 stderr]") and "broken.png" in line for line in logs.splitlines())
    gone = invoke("undeploy", "--name", name, env=env)
    assert gone.returncode == 0 and "stopped" in gone.stdout
    assert f"default/{name}" not in invoke("status", env=env).stdout
    assert str(ROOT / ".cache" / "node" / "default" / name) not in runners()
    after = images(tmp_path / "in", 1, start=80)[0]
    time.sleep(1.5)
    assert not (tmp_path / "out" / after).exists()
    assert [p for p in (tmp_path / "out").rglob(".*")] == []


def test_a_redeploy_the_node_cannot_pull_leaves_the_running_workload_running(auth_registry, env, tmp_path,
                                                                            workload_names):
    name = workload_names("keep")
    images(tmp_path / "in", 1)
    credentials = {**env, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    common = ["--registry", auth_registry.address, "--name", name, "--input-dir", str(tmp_path / "in"),
              "--output-dir", str(tmp_path / "out"), "--env", "FRACTALIFY_INTERVAL=0.3"]
    assert invoke("push", "--registry", auth_registry.address, env=credentials).returncode == 0
    assert invoke("deploy", *common, "--create-pull-secret", env=credentials).returncode == 0
    one_line_error(invoke("deploy", *common, env=credentials), "--create-pull-secret")
    assert "Running" in invoke("status", env=env).stdout
    later = images(tmp_path / "in", 1, start=60)[0]
    assert wait_for(lambda: (tmp_path / "out" / later).exists())


def test_local_job_runs_to_completion_and_an_indexed_job_writes_each_image_once(registry, env, tmp_path, workload_names):
    assert invoke("push", "--registry", registry.address, env=env).returncode == 0
    name = workload_names("batch")
    names = images(tmp_path / "in", 12)
    done = invoke("deploy", "--registry", registry.address, "--name", name, "--kind", "job", "--completions", "3",
                  "--parallelism", "3", "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), env=env)
    assert done.returncode == 0, done.stderr
    assert "Succeeded" in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
    logs = invoke("logs", "--name", name, env=env).stdout
    wrote = [line.split("wrote ", 1)[1].split(" (")[0] for line in logs.splitlines() if "wrote " in line]
    assert sorted(wrote) == names


def test_local_deployment_replicas_write_each_image_once(registry, env, tmp_path, workload_names):
    assert invoke("push", "--registry", registry.address, env=env).returncode == 0
    name = workload_names("replicas")
    names = images(tmp_path / "in", 16)
    done = invoke("deploy", "--registry", registry.address, "--name", name, "--kind", "deployment", "--replicas", "2",
                  "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                  "--env", "FRACTALIFY_INTERVAL=0.3", env=env)
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: all((tmp_path / "out" / n).exists() for n in names))
    time.sleep(0.8)
    logs = invoke("logs", "--name", name, env=env).stdout
    assert "[instance-0]" in logs and "[instance-1]" in logs
    wrote = [line.split("wrote ", 1)[1].split(" (")[0] for line in logs.splitlines() if "wrote " in line]
    assert sorted(wrote) == names


def test_local_node_pulls_with_the_pull_secret(auth_registry, env, tmp_path, workload_names):
    name = workload_names("secret")
    images(tmp_path / "in", 2)
    with_credentials = {**env, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    assert invoke("push", "--registry", auth_registry.address, env=with_credentials).returncode == 0
    without = invoke("deploy", "--registry", auth_registry.address, "--name", name, "--kind", "job",
                     "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), env=env)
    one_line_error(without, "credentials")
    # The toolchain has credentials, the Pod has no pull secret: the node cannot pull, and says why.
    no_secret = invoke("deploy", "--registry", auth_registry.address, "--name", name, "--kind", "job",
                       "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), env=with_credentials)
    one_line_error(no_secret, "--create-pull-secret")
    done = invoke("deploy", "--registry", auth_registry.address, "--name", name, "--kind", "job", "--create-pull-secret",
                  "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), env=with_credentials)
    assert done.returncode == 0, done.stderr
    assert "Succeeded" in done.stdout and PASSWORD not in done.stdout + done.stderr
    assert len(list((tmp_path / "out").iterdir())) == 2
