"""The templates: golden files, values that cannot change the YAML's structure, the schema."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wasmpod.errors import UserError
from wasmpod.manifests import (EnvVar, PullSecret, RuntimeClass, Workload, _quote, check_objects, render_documents,
                               render_manifests, volume_from)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates" / "k8s"
GOLDEN = Path(__file__).parent / "golden"

BASE = Workload(
    kind="pod", name="fractalify", namespace="default", image="foobar.azurecr.io/fractalify:v0.2.0",
    program="fractalify", env=(EnvVar("FRACTALIFY_C", "-0.8,0.156"),),
    volumes=(volume_from("/input_dir", "input-dir", "/input_dir", False),
             volume_from("/output_dir", "output-dir", "/output_dir", True)),
    pull_secret="regcred", replicas=3, parallelism=2, completions=4)
SECRET = PullSecret("regcred", "default", "foobar.azurecr.io", "user", "pass")
RUNWASI = replace(BASE, image="foobar.azurecr.io/fractalify:v0.2.0-simd-runwasi", runtime="runwasi")
RUNTIME_CLASS = RuntimeClass("wasmtime-v1", "wasmtime-v1", (("wasmtime", "true"),))

CASES = {
    "pod": (BASE, None),
    "job": (replace(BASE, kind="job", completions=1), None),
    "indexed-job": (replace(BASE, kind="job"), None),
    "deployment": (replace(BASE, kind="deployment"), None),
    "pull-secret": (BASE, SECRET),
    "runwasi-pod": (RUNWASI, None),
    "runwasi-job": (replace(RUNWASI, kind="job", completions=1), None),
    "runwasi-deployment": (replace(RUNWASI, kind="deployment"), None),
    "runwasi-runtime-class": (RUNWASI, SECRET, RUNTIME_CLASS),
}


def golden_text(case: str) -> str:
    """What the golden file of `case` holds: the rendered manifests, as deploy writes them."""
    workload, secret, *runtime_class = CASES[case]
    return "---\n".join(t for _, t, _ in render_manifests(TEMPLATES, workload, secret, *runtime_class))


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_yaml_equals_its_golden_file(case):
    text = golden_text(case)
    # Only compares: after a deliberate template change, run regenerate_golden.py and review the diff.
    assert text == (GOLDEN / f"{case}.yaml").read_text()


def test_pod_says_what_the_seed_pod_said():
    _, _, pod = render_manifests(TEMPLATES, BASE)[0]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["image"] == "foobar.azurecr.io/fractalify:v0.2.0"
    assert container["args"] == ["fractalify", "/input_dir", "/output_dir"]
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "wasm32-wasi"}
    assert {(t["key"], t.get("value"), t["effect"]) for t in spec["tolerations"]} == {
        ("node.kubernetes.io/network-unavailable", None, "NoSchedule"),
        ("kubernetes.io/arch", "wasm32-wasi", "NoExecute"), ("kubernetes.io/arch", "wasm32-wasi", "NoSchedule")}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    assert mounts == {"input-dir": "/input_dir", "output-dir": "/output_dir"} and volumes == mounts
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.mark.parametrize("kind", ["pod", "job", "deployment"])
def test_runwasi_pod_names_its_runtime_class_and_the_module_and_drops_krustlets_scheduling(kind):
    [(_, _, obj)] = render_manifests(TEMPLATES, replace(RUNWASI, kind=kind, runtime_class="wasm"))
    spec = obj["spec"] if kind == "pod" else obj["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert spec["runtimeClassName"] == "wasm"
    assert "nodeSelector" not in spec and "tolerations" not in spec
    assert container["command"] == ["fractalify.wasm"]
    once = ["--once"] if kind == "job" else []
    assert container["args"] == [*once, "/input_dir", "/output_dir"]
    # the same env, volumes and pull secret as Krustlet's
    [(_, _, krustlet)] = render_manifests(TEMPLATES, replace(BASE, kind=kind))
    krustlet_spec = krustlet["spec"] if kind == "pod" else krustlet["spec"]["template"]["spec"]
    for key in ("volumes", "imagePullSecrets", "restartPolicy"):
        assert spec[key] == krustlet_spec[key]
    assert container["env"] == krustlet_spec["containers"][0]["env"]
    assert container["volumeMounts"] == krustlet_spec["containers"][0]["volumeMounts"]


def test_the_runtime_class_is_cluster_scoped_with_its_handler_and_node_selector():
    runtime_class = render_manifests(TEMPLATES, RUNWASI, None, RUNTIME_CLASS)[0][2]
    assert runtime_class == {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                             "metadata": {"name": "wasmtime-v1", "labels": {"app.kubernetes.io/managed-by": "wasmpod"}},
                             "handler": "wasmtime-v1", "scheduling": {"nodeSelector": {"wasmtime": "true"}}}
    bare = render_manifests(TEMPLATES, RUNWASI, None, RuntimeClass("wasm", "wasm"))[0][2]
    assert "scheduling" not in bare


def test_the_runtime_class_goes_through_the_schema_check():
    runtime_class = render_manifests(TEMPLATES, RUNWASI, None, RUNTIME_CLASS)[0][2]
    check_objects([runtime_class])
    with pytest.raises(UserError, match="RuntimeClass wasmtime-v1 fails the Kubernetes 1.30 schema"):
        check_objects([{**runtime_class, "handler": 7}])
    with pytest.raises(UserError, match="not a DNS-1123 label"):  # the API server's rule, which the schema lacks
        RuntimeClass("wasm", "Not A Handler!")


def test_job_runs_once_and_indexed_job_has_parallelism():
    job = render_manifests(TEMPLATES, replace(BASE, kind="job", completions=1))[0][2]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["fractalify", "--once", "/input_dir", "/output_dir"]
    assert "completionMode" not in job["spec"] and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    indexed = render_manifests(TEMPLATES, replace(BASE, kind="job", completions=5, parallelism=3))[0][2]
    assert indexed["spec"]["completionMode"] == "Indexed"
    assert (indexed["spec"]["completions"], indexed["spec"]["parallelism"]) == (5, 3)


def test_pull_secret_carries_username_password_and_auth_under_the_registry_as_written():
    secret = render_manifests(TEMPLATES, BASE, SECRET)[0][2]
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert config == {"auths": {"foobar.azurecr.io": {"username": "user", "password": "pass",
                                                       "auth": base64.b64encode(b"user:pass").decode()}}}


ADVERSARIAL = ["a: b", "# not a comment", "'single' \"double\"", "line one\nline two", "{{ x }} {% if %}",
               "back\\slash", "ünïcødé ✓ 日本 🎉", "- item", "&anchor *alias", "[1, 2]", "null", "true", "  padded  ", "",
               "line\u2028separator", "para\u2029separator", "nel\x85here", "del\x7fchar", "\ufeffbom", "tab\there"]


def structure(value):
    if isinstance(value, dict):
        return {k: structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [structure(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("value", ADVERSARIAL)
def test_any_value_comes_out_exactly_as_given_and_keeps_the_structure(value):
    plain = render_manifests(TEMPLATES, replace(BASE, env=(EnvVar("FRACTALIFY_C", "v"), EnvVar("X", "v"))), SECRET)
    tricky_workload = replace(BASE, env=(EnvVar("FRACTALIFY_C", value), EnvVar("X", value)),
                              volumes=(volume_from(f"/in/{value}".replace("\n", "_"), "input-dir", "/input_dir", False),
                                       BASE.volumes[1]))
    tricky = render_manifests(TEMPLATES, tricky_workload, replace(SECRET, username=value or "u", password=value))
    for (_, _, a), (_, _, b) in zip(plain, tricky):
        assert structure(a) == structure(b)
    pod = tricky[1][2]
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert env == {"FRACTALIFY_C": value, "X": value}
    assert pod["spec"]["volumes"][0]["hostPath"]["path"] == f"/in/{value}".replace("\n", "_")
    auths = json.loads(base64.b64decode(tricky[0][2]["data"][".dockerconfigjson"]))["auths"]["foobar.azurecr.io"]
    assert auths["password"] == value


def test_a_value_placed_without_quoting_is_refused(tmp_path):
    broken = tmp_path / "k8s"
    shutil.copytree(TEMPLATES, broken)
    pod = broken / "pod.yaml.j2"
    pod.write_text(pod.read_text().replace("kind: Pod", "kind: Pod\n# {{ w.image }}"))
    with pytest.raises(UserError, match="without `| q`"):
        render_documents(broken, BASE, None)


def test_a_template_that_breaks_the_schema_is_refused(tmp_path):
    broken = tmp_path / "k8s"
    shutil.copytree(TEMPLATES, broken)
    pod = broken / "_pod_spec.yaml.j2"
    pod.write_text(pod.read_text().replace("imagePullPolicy:", "imagePulPolicy:"))
    with pytest.raises(UserError, match="schema"):
        render_manifests(broken, BASE)


def test_an_empty_dir_volume_is_refused_with_the_reason():
    with pytest.raises(UserError, match="emptyDir"):
        volume_from("emptyDir", "input-dir", "/input_dir", False)
    _, _, pod = render_manifests(TEMPLATES, BASE)[0]
    pod["spec"]["volumes"][0] = {"name": "input-dir", "emptyDir": {}}
    with pytest.raises(UserError, match="emptyDir.*Krustlet"):
        check_objects([pod])


@pytest.mark.parametrize("path", ["relative/dir", "./x", "~/x", ""])
def test_host_paths_must_be_absolute(path):
    with pytest.raises(UserError, match="absolute"):
        volume_from(path, "input-dir", "/input_dir", False)


@pytest.mark.parametrize("image, policy", [
    ("r.example.com/fractalify:latest", "Always"),
    ("r.example.com/fractalify", "Always"),
    ("127.0.0.1:5000/team/fractalify", "Always"),
    ("r.example.com/fractalify:v0.2.0", "IfNotPresent"),
    ("r.example.com/fractalify:latest-rc", "IfNotPresent"),
    ("127.0.0.1:5000/fractalify:5000", "IfNotPresent"),
    ("r.example.com/fractalify@sha256:" + "a" * 64, "IfNotPresent"),
    ("r.example.com/fractalify:latest@sha256:" + "b" * 64, "IfNotPresent"),
])
def test_image_pull_policy_follows_kubernetes_rule(image, policy):
    """`latest` or no tag: Always; any other tag, or a digest: IfNotPresent."""
    pod = render_manifests(TEMPLATES, replace(BASE, image=image))[0][2]
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == policy


# Any text at all (every Unicode character but lone surrogates, which are not text and are
# refused: see below), the characters YAML gives a meaning to made likely.
YAML_TEXT = st.text(st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from(list(":#'\"{}[]&*!|>%@`,-?\n\r\t\\\x85\u2028\u2029\ufeff\x00 "))),
                    max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=YAML_TEXT, username=YAML_TEXT.filter(bool))
def test_any_text_comes_out_exactly_as_given_and_never_changes_the_structure(value, username):
    plain = render_manifests(TEMPLATES, replace(BASE, env=(EnvVar("FRACTALIFY_C", "v"),)), SECRET)
    tricky = render_manifests(TEMPLATES, replace(BASE, env=(EnvVar("FRACTALIFY_C", value),)),
                              replace(SECRET, username=username, password=value))
    for (_, _, a), (_, _, b) in zip(plain, tricky):
        assert structure(a) == structure(b)
    assert tricky[1][2]["spec"]["containers"][0]["env"] == [{"name": "FRACTALIFY_C", "value": value}]
    auths = json.loads(base64.b64decode(tricky[0][2]["data"][".dockerconfigjson"]))["auths"]["foobar.azurecr.io"]
    assert (auths["username"], auths["password"]) == (username, value)


@settings(max_examples=300, deadline=None)
@given(value=YAML_TEXT)
def test_the_quoting_filter_gives_back_any_text_as_one_scalar(value):
    """`q` alone, in the places a template puts a value: a mapping value and a list item."""
    quoted = _quote(value)
    assert yaml.safe_load(f"key: {quoted}\nother: 1\n") == {"key": value, "other": 1}
    assert yaml.safe_load(f"- {quoted}\n- 2\n") == [value, 2]


@pytest.mark.parametrize("field", ["env", "password"])
def test_undecodable_bytes_are_refused_with_one_line(field):
    """What os.environ makes of bytes that are not UTF-8 (a lone surrogate) cannot go in a file."""
    undecodable = b"pass\xff".decode(errors="surrogateescape")
    with pytest.raises(UserError, match="not UTF-8 text"):
        if field == "env":
            render_manifests(TEMPLATES, replace(BASE, env=(EnvVar("FRACTALIFY_C", undecodable),)))
        else:
            render_manifests(TEMPLATES, BASE, replace(SECRET, password=undecodable))


@pytest.mark.parametrize("fault, words", [
    ("missing", "template pod.yaml.j2 is missing from"),
    ("misspelled", "uses a value that is not defined"),
    ("syntax", "template pod.yaml.j2 line"),
])
def test_a_broken_template_is_one_line_naming_what_is_wrong(tmp_path, fault, words):
    """A PoC's own templates are edited by hand: each way of breaking one is said, not a traceback."""
    from wasmpod.manifests import ImagePolicy, POLICY_TEMPLATE, render_policy

    templates = tmp_path / "k8s"
    shutil.copytree(TEMPLATES, templates)
    pod, policy = templates / "pod.yaml.j2", templates / POLICY_TEMPLATE
    if fault == "missing":
        pod.unlink()
        policy.unlink()
    elif fault == "misspelled":
        pod.write_text(pod.read_text().replace("w.runtime", "w.runtme", 1))
        policy.write_text(policy.read_text().replace("p.name", "p.nmae", 1))
    else:
        pod.write_text(pod.read_text() + "\n{% if %}\n")
        policy.write_text(policy.read_text() + "\n{% if %}\n")
    with pytest.raises(UserError, match=words):
        render_documents(templates, BASE, None)
    with pytest.raises(UserError, match=words.replace("pod.yaml.j2", POLICY_TEMPLATE)):
        render_policy(templates, ImagePolicy("p", "r.example/x", "-----BEGIN PUBLIC KEY-----\n"))
